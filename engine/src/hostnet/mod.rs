//! Host networking: egress NAT and published ports over ordinary host sockets.
//!
//! One [`HostNet`] per engine runs a thread of its own (`tapnet-host`) that owns every
//! host socket. Each network with external access gets its gateway port from
//! [`HostNet::gateway_port`]: that port answers ARP and ping for the gateway address
//! inline (like [`GatewayPort::new`]) and hands every routed frame to the host thread,
//! which terminates it (`tapnet_nat::relay`) and carries the payload over a host socket.
//! Published ports are host listeners the daemon binds (so that "port is already
//! allocated" is known at once) and gives to [`HostNet::publish`].
//!
//! NOTE: this first cut fixes the API; the relay thread is wired in next.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tapnet_nat::GatewayConfig;

use crate::pool::BufferPool;
use crate::port::gateway::{GatewayHandle, GatewayPort};

/// Bounds and buffer sizes of host networking.
#[derive(Clone, Debug)]
pub struct HostNetConfig {
    /// Tracked TCP connections, all networks together; a SYN beyond it is answered
    /// with a reset and counted.
    pub max_tcp_flows: usize,
    /// Tracked UDP flows; a datagram opening one more is dropped and counted.
    pub max_udp_flows: usize,
    /// Tracked ICMP echo flows.
    pub max_icmp_flows: usize,
    /// Buffer per direction of one TCP connection, in bytes.
    pub tcp_buffer: usize,
}

impl Default for HostNetConfig {
    fn default() -> Self {
        HostNetConfig {
            max_tcp_flows: 4096,
            max_udp_flows: 4096,
            max_icmp_flows: 256,
            tcp_buffer: 256 * 1024,
        }
    }
}

/// How one network reaches the host.
#[derive(Clone, Copy, Debug)]
pub struct NetAttach {
    /// The network's gateway (MAC, address, prefix). `internal` must be false: an
    /// internal network has no external access and takes [`GatewayPort::new`].
    pub gateway: GatewayConfig,
    /// The network's MTU.
    pub mtu: u32,
    /// `-o tapnet.host_loopback=true`: TCP and UDP to the gateway address go to the
    /// host's 127.0.0.1.
    pub host_loopback: bool,
}

/// A host socket a published port listens on, bound by the caller.
#[derive(Debug)]
pub enum HostListener {
    /// `-p …/tcp`.
    Tcp(TcpListener),
    /// `-p …/udp`.
    Udp(UdpSocket),
}

/// Names one published port, for [`HostNet::unpublish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublishId(u64);

/// Why a host networking call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    /// The network was never attached (or was detached).
    #[error("network {0} has no external access")]
    UnknownNetwork(String),
    /// The host thread has stopped.
    #[error("host networking has stopped")]
    Stopped,
    /// A host socket call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Host networking counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostNetStats {
    /// Networks attached.
    pub networks: u64,
    /// Published ports.
    pub published: u64,
}

#[derive(Default)]
struct Shared {
    nets: HashMap<String, NetAttach>,
    published: HashMap<PublishId, (String, HostListener, SocketAddrV4)>,
}

/// The engine's host networking (see the module docs).
pub struct HostNet {
    pool: Arc<BufferPool>,
    shared: Mutex<Shared>,
    next_id: AtomicU64,
}

impl HostNet {
    /// Start host networking for an engine whose pool is `pool`.
    pub fn start(pool: Arc<BufferPool>, cfg: HostNetConfig) -> io::Result<HostNet> {
        let _ = cfg;
        Ok(HostNet {
            pool,
            shared: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The gateway port of network `net` (any stable key, e.g. its id), with egress
    /// through the host. Attach it with `Engine::add_gateway_port`.
    pub fn gateway_port(
        &self,
        net: &str,
        attach: NetAttach,
    ) -> Result<(GatewayPort, GatewayHandle), HostNetError> {
        self.lock().nets.insert(net.to_string(), attach);
        Ok(GatewayPort::new(
            attach.gateway,
            self.pool.clone(),
            attach.mtu,
        ))
    }

    /// Forget network `net`: its flows end and its published ports close.
    pub fn detach(&self, net: &str) {
        let mut sh = self.lock();
        sh.nets.remove(net);
        sh.published.retain(|_, (n, _, _)| n != net);
    }

    /// Publish `listener` to `ctr` on network `net`: connections (TCP) and datagrams
    /// (UDP) reaching it are carried to the container, from the client's own address.
    pub fn publish(
        &self,
        net: &str,
        listener: HostListener,
        ctr: SocketAddrV4,
    ) -> Result<PublishId, HostNetError> {
        let mut sh = self.lock();
        if !sh.nets.contains_key(net) {
            return Err(HostNetError::UnknownNetwork(net.to_string()));
        }
        let id = PublishId(self.next_id.fetch_add(1, Ordering::Relaxed));
        sh.published.insert(id, (net.to_string(), listener, ctr));
        Ok(id)
    }

    /// Close a published port. Connections already carried through it go on.
    pub fn unpublish(&self, id: PublishId) {
        self.lock().published.remove(&id);
    }

    /// Counters.
    pub fn stats(&self) -> HostNetStats {
        let sh = self.lock();
        HostNetStats {
            networks: sh.nets.len() as u64,
            published: sh.published.len() as u64,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}
