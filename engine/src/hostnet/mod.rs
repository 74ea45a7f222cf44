//! Host networking: egress NAT and published ports over ordinary host sockets.
//!
//! One [`HostNet`] per engine runs a thread of its own (`tapnet-host`) that owns every
//! host socket, so the datapath workers never make a socket call:
//!
//! ```text
//!  container ─ TAP ─▶ engine ─▶ gateway port ── routed frames (rtrb) ──▶ tapnet-host
//!                                  │ ARP, ping to the gateway answered inline   │ Relay (per network)
//!  container ◀ TAP ◀─ engine ◀─────┴──────── relay frames (rtrb) ◀──────────────┤ host sockets (mio)
//! ```
//!
//! Each network gets its gateway port from [`HostNet::gateway_port`] (an internal one
//! gets a relay that answers DNS and nothing else): the port answers ARP and ping for
//! the gateway address on
//! the engine's thread, like [`GatewayPort::new`], and hands every routed frame, without
//! copying it, to the host thread. There the network's [`Relay`] terminates it and says
//! which host socket to open; the thread moves the bytes and hands the relay's frames
//! back through a second ring, then rings the engine's doorbell. Published ports are
//! host listeners the daemon binds itself (so that "port is already allocated" is known
//! at once) and gives to [`HostNet::publish`].
//!
//! The relay's frames go straight into pool slots; TCP toward the container leaves as
//! superframes with a virtio-net GSO header, cut by the container's TAP or by the
//! engine's software segmentation for ports that cannot take them.
//!
//! A published TCP port given with its container's network namespace
//! ([`HostNet::publish_spliced`]) carries loopback clients on a faster path: a socket
//! made inside that namespace connects to the container and `splice(2)` moves the bytes
//! between the two sockets (see the `splice` module). Other clients keep the relay path
//! and so their own address.
//!
//! Every network's relay answers DNS at the gateway address (UDP and TCP port 53) from
//! the names given to [`HostNet::set_names`]; what it forwards leaves from one
//! unconnected UDP socket per network and address family, to the resolvers of the
//! host's `resolv.conf` ([`HostNetConfig::resolv_conf`], followed as it changes).
//!
//! The files: this one holds the handle; `api` its public types; `ctl` the messages it
//! sends the host thread; `thread` the thread's state and loop; `socks` its socket
//! table; `events` what it does when a socket is ready; `service` its pass over each
//! network; `splice` the spliced connections; `resolv` the host's resolvers.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::{Poll, Waker};
use rtrb::RingBuffer;
use tapnet_nat::dns::{DnsConfig, DnsCounters, DnsStats, Names};
use tapnet_nat::relay::{Relay, RelayConfig, RelayCounters, RelayStats};
use tapnet_switch::MacAddr;

use crate::pool::BufferPool;
use crate::port::gateway::{DnsLimit, GatewayHandle, GatewayPort, Uplink};
use crate::runtime::panic_message;

mod api;
mod clock;
mod ctl;
mod events;
mod resolv;
mod service;
mod socks;
mod splice;
mod thread;

pub use api::{HostListener, HostNetConfig, HostNetError, HostNetStats, NetAttach, PublishId};
pub use clock::{Clock, ManualClock};

use clock::Time;
use ctl::Ctl;
use splice::{NsConnector, SpliceCounters};
use thread::{Host, WAKER};

/// Frames waiting in each direction between the engine and the host thread, per
/// network.
const RING: usize = 4096;

/// What the handle keeps of an attached network.
struct NetShared {
    relay: Arc<RelayCounters>,
    dns: Arc<DnsCounters>,
    /// An internal network: no published ports.
    internal: bool,
}

/// What the handle keeps for its own answers: the networks attached (with their relays'
/// counters), the published ports, the namespace connectors.
#[derive(Default)]
struct Shared {
    nets: HashMap<String, NetShared>,
    published: HashMap<PublishId, String>,
    /// The connector of each namespace with spliced ports, by device and inode.
    connectors: HashMap<(u64, u64), Weak<NsConnector>>,
    /// Every endpoint by its key: its network, address and MAC (a relay made again for
    /// a network starts with its endpoints).
    endpoints: HashMap<String, (String, Ipv4Addr, MacAddr)>,
}

/// The engine's host networking (see the module docs).
pub struct HostNet {
    pool: Arc<BufferPool>,
    cfg: HostNetConfig,
    time: Time,
    ctl: Sender<Ctl>,
    waker: Arc<Waker>,
    shared: Mutex<Shared>,
    sockets: Arc<AtomicU64>,
    splice: Arc<SpliceCounters>,
    /// Bytes the relays hold in flow buffers.
    flow_memory: Arc<AtomicU64>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
    /// Why the host thread failed, if it did.
    failure: Arc<OnceLock<String>>,
    /// Test hook: the host thread panics when it sees this set.
    fault: Arc<AtomicBool>,
}

impl HostNet {
    /// Start host networking for an engine whose pool is `pool`.
    pub fn start(pool: Arc<BufferPool>, cfg: HostNetConfig) -> io::Result<HostNet> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (ctl, rx) = crossbeam_channel::unbounded();
        let time = Time::new(cfg.clock.clone(), &waker);
        let sockets = Arc::new(AtomicU64::new(0));
        let splice = Arc::new(SpliceCounters::default());
        let mut host = Host::new(
            poll,
            rx,
            pool.clone(),
            &cfg,
            time.clone(),
            Arc::clone(&sockets),
            Arc::clone(&splice),
        );
        let flow_memory = Arc::clone(&host.flow_memory);
        let failure = Arc::new(OnceLock::new());
        let fault = Arc::new(AtomicBool::new(false));
        host.fault = Arc::clone(&fault);
        let failed = Arc::clone(&failure);
        let thread = std::thread::Builder::new()
            .name("tapnet-host".into())
            .spawn(move || {
                // A panic ends host networking: it is recorded before the thread's
                // control queue drops, so a caller woken by its end can read why.
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| host.run())) {
                    let _ = failed.set(format!(
                        "host networking thread tapnet-host panicked: {}",
                        panic_message(&*p)
                    ));
                }
                drop(host);
            })?;
        Ok(HostNet {
            pool,
            cfg,
            time,
            ctl,
            waker,
            shared: Mutex::default(),
            sockets,
            splice,
            flow_memory,
            next_id: AtomicU64::new(1),
            thread: Some(thread),
            failure,
            fault,
        })
    }

    fn send(&self, c: Ctl) -> Result<(), HostNetError> {
        self.ctl.send(c).map_err(|_| HostNetError::Stopped)?;
        self.waker.wake()?;
        Ok(())
    }

    /// Send the message `make` builds around a reply channel, and wait until the host
    /// thread has made it live.
    fn call(&self, make: impl FnOnce(Sender<()>) -> Ctl) -> Result<(), HostNetError> {
        let (done, live) = crossbeam_channel::bounded(1);
        self.send(make(done))?;
        live.recv().map_err(|_| HostNetError::Stopped)
    }

    /// The gateway port of network `net` (any stable key, e.g. its id, and the key
    /// of the network in the [`Names`] given to [`HostNet::set_names`]), with egress
    /// through the host and a DNS server at the gateway address. An internal network
    /// (`attach.gateway.internal`) gets the DNS server only: its names are answered,
    /// nothing is forwarded, nothing else reaches the host. Attach it with
    /// `Engine::add_gateway_port`. Attaching a key again replaces its relay (its flows
    /// end).
    pub fn gateway_port(
        &self,
        net: &str,
        attach: NetAttach,
    ) -> Result<(GatewayPort, GatewayHandle), HostNetError> {
        let internal = attach.gateway.internal;
        let mut relay = Relay::with_dns(
            RelayConfig {
                gateway: attach.gateway,
                mtu: attach.mtu,
                host_loopback: attach.host_loopback && !internal,
                limits: self.cfg.limits,
                tcp_buffer: self.cfg.tcp_buffer,
                dns: DnsConfig {
                    rate: self.cfg.dns_rate,
                    burst: self.cfg.dns_burst,
                    ..tapnet_nat::relay::dns_config(net, !internal)
                },
            },
            self.time.now(),
            // The host thread gives it the current names and resolvers as it attaches.
            Arc::new(Names::new()),
            Vec::new(),
            resolv::random_seed(),
        );
        for (n, ip, mac) in self.lock().endpoints.values() {
            if n == net {
                relay.set_endpoint(*ip, *mac);
            }
        }
        let counters = NetShared {
            relay: relay.counters(),
            dns: relay.dns_counters(),
            internal,
        };
        let dns = relay.dns_counters();
        let (to_host, from_engine) = RingBuffer::new(RING);
        let (to_engine, from_host) = RingBuffer::new(RING);
        let notifier = Arc::new(OnceLock::new());
        self.call(|done| Ctl::Attach {
            key: net.to_string(),
            relay: Box::new(relay),
            to_engine,
            from_engine,
            notifier: Arc::clone(&notifier),
            done,
        })?;
        self.lock().nets.insert(net.to_string(), counters);
        Ok(GatewayPort::with_uplink(
            attach.gateway,
            self.pool.clone(),
            attach.mtu,
            Uplink {
                to_host,
                from_host,
                wake_host: Arc::clone(&self.waker),
                notifier,
                dns_limit: Some(DnsLimit {
                    rate: self.cfg.dns_rate,
                    burst: self.cfg.dns_burst,
                    counters: dns,
                }),
            },
        ))
    }

    /// Network `net` (one that takes no gateway port from here) has subnet
    /// `addr/prefix`: no other network's flow may reach it through
    /// the host. [`HostNet::detach`] forgets it.
    pub fn isolate(&self, net: &str, addr: Ipv4Addr, prefix: u8) {
        let _ = self.call(|done| Ctl::Isolate {
            key: net.to_string(),
            addr,
            prefix,
            done,
        });
    }

    /// Endpoint `endpoint` (any stable key, e.g. its id) of network `net` has address
    /// `ip` and MAC `mac`. The relay sends frames for `ip` to `mac` only, and relays
    /// frames from `ip` only when they come from `mac`: an address that is no endpoint
    /// gets no egress and no published ports. Endpoint MACs are the daemon's to know,
    /// never learned from frames (a spoofed source would divert a neighbour's replies).
    pub fn add_endpoint(&self, net: &str, endpoint: &str, ip: Ipv4Addr, mac: MacAddr) {
        self.lock()
            .endpoints
            .insert(endpoint.to_string(), (net.to_string(), ip, mac));
        let _ = self.call(|done| Ctl::Endpoint {
            key: net.to_string(),
            ip,
            mac: Some(mac),
            done,
        });
    }

    /// Endpoint `endpoint` is gone: nothing more is relayed from or to its address.
    pub fn remove_endpoint(&self, endpoint: &str) {
        let mut sh = self.lock();
        let Some((net, ip, _)) = sh.endpoints.remove(endpoint) else {
            return;
        };
        if sh.endpoints.values().any(|(n, a, _)| *n == net && *a == ip) {
            // Another endpoint has the address now.
            return;
        }
        drop(sh);
        let _ = self.call(|done| Ctl::Endpoint {
            key: net,
            ip,
            mac: None,
            done,
        });
    }

    /// Forget network `net`: its flows end and its published ports close.
    pub fn detach(&self, net: &str) {
        let mut sh = self.lock();
        if sh.nets.remove(net).is_some() {
            sh.published.retain(|_, n| n != net);
        }
        sh.endpoints.retain(|_, (n, _, _)| n != net);
        drop(sh);
        let _ = self.call(|done| Ctl::Detach {
            key: net.to_string(),
            done,
        });
    }

    /// Publish `listener` (IPv4 or IPv6) to `ctr` on network `net`: connections (TCP)
    /// and datagrams (UDP) reaching it are carried to the container, from the client's
    /// own address (a loopback or an IPv6 client appears as the gateway address, with
    /// its port).
    pub fn publish(
        &self,
        net: &str,
        listener: HostListener,
        ctr: SocketAddrV4,
    ) -> Result<PublishId, HostNetError> {
        self.publish_with(net, listener, ctr, None)
    }

    /// Like [`HostNet::publish`], and TCP clients from 127.0.0.0/8 or ::1 are spliced: a
    /// socket made inside `netns` (the container's network namespace, e.g.
    /// `/run/netns/NAME` opened) connects to `ctr`, and the bytes move between the two
    /// sockets with `splice(2)`. `netns` may be closed after the call. The container
    /// sees such a client coming from its 127.0.0.1. When no such connection can be made (but the container did not refuse
    /// it) the client takes the relay path. Other clients, and UDP, always take the
    /// relay path. Fails when `netns` cannot be entered (not a network namespace, or no
    /// CAP_SYS_ADMIN over it); nothing is published then.
    pub fn publish_spliced(
        &self,
        net: &str,
        listener: HostListener,
        ctr: SocketAddrV4,
        netns: impl AsFd,
    ) -> Result<PublishId, HostNetError> {
        if self.lock().nets.get(net).is_none_or(|n| n.internal) {
            return Err(HostNetError::UnknownNetwork(net.to_string()));
        }
        let conn = match &listener {
            HostListener::Tcp(_) => Some(self.connector(netns.as_fd())?),
            HostListener::Udp(_) => None,
        };
        self.publish_with(net, listener, ctr, conn)
    }

    /// The connector of namespace `netns`, shared by its spliced ports.
    fn connector(&self, netns: BorrowedFd<'_>) -> Result<Arc<NsConnector>, HostNetError> {
        let st = nix::sys::stat::fstat(netns).map_err(io::Error::from)?;
        let id = (st.st_dev, st.st_ino);
        if let Some(c) = self.lock().connectors.get(&id).and_then(Weak::upgrade) {
            return Ok(c);
        }
        // Started unlocked: it waits for its thread to enter the namespace.
        let c = Arc::new(NsConnector::start(netns, id)?);
        let mut sh = self.lock();
        sh.connectors.retain(|_, w| w.strong_count() > 0);
        if let Some(other) = sh.connectors.get(&id).and_then(Weak::upgrade) {
            // Another caller started one meanwhile.
            return Ok(other);
        }
        sh.connectors.insert(c.id, Arc::downgrade(&c));
        Ok(c)
    }

    fn publish_with(
        &self,
        net: &str,
        listener: HostListener,
        ctr: SocketAddrV4,
        splice: Option<Arc<NsConnector>>,
    ) -> Result<PublishId, HostNetError> {
        match &listener {
            HostListener::Tcp(l) => l.set_nonblocking(true)?,
            HostListener::Udp(s) => s.set_nonblocking(true)?,
        }
        let mut sh = self.lock();
        if sh.nets.get(net).is_none_or(|n| n.internal) {
            return Err(HostNetError::UnknownNetwork(net.to_string()));
        }
        let id = PublishId(self.next_id.fetch_add(1, Ordering::Relaxed));
        sh.published.insert(id, net.to_string());
        drop(sh);
        self.send(Ctl::Publish {
            key: net.to_string(),
            id,
            listener,
            ctr,
            splice,
        })?;
        Ok(id)
    }

    /// Close a published port. Connections already carried through it go on.
    pub fn unpublish(&self, id: PublishId) {
        if self.lock().published.remove(&id).is_some() {
            let _ = self.send(Ctl::Unpublish(id));
        }
    }

    /// Counters.
    pub fn stats(&self) -> HostNetStats {
        let sh = self.lock();
        let mut relay = RelayStats::default();
        let mut dns = DnsStats::default();
        for n in sh.nets.values() {
            relay = relay.sum(&n.relay.snapshot());
            dns = dns.sum(&n.dns.snapshot());
        }
        HostNetStats {
            networks: sh.nets.len() as u64,
            published: sh.published.len() as u64,
            sockets: self.sockets.load(Ordering::Relaxed),
            pipes: self.splice.pipes.load(Ordering::Relaxed),
            spliced: self.splice.spliced.load(Ordering::Relaxed),
            splice_fallback: self.splice.fallback.load(Ordering::Relaxed),
            relay,
            flow_memory: self.flow_memory.load(Ordering::Relaxed),
            flow_memory_limit: self.cfg.flow_memory as u64,
            dns,
        }
    }

    /// The relay counters of network `net`.
    pub fn relay_stats(&self, net: &str) -> Option<RelayStats> {
        self.lock().nets.get(net).map(|n| n.relay.snapshot())
    }

    /// The DNS server counters of network `net`.
    pub fn dns_stats(&self, net: &str) -> Option<DnsStats> {
        self.lock().nets.get(net).map(|n| n.dns.snapshot())
    }

    /// Every network's DNS server answers from `names` from its next query on (a
    /// network attached later too). Returns once that is so. Network keys in `names`
    /// are those given to [`HostNet::gateway_port`].
    pub fn set_names(&self, names: Arc<Names>) {
        let _ = self.call(|done| Ctl::Names { names, done });
    }

    /// Why the host thread failed (it panicked, with this message), if it did. Host
    /// networking then carries nothing more and refuses every change.
    pub fn failed(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// **Test hook**, not an API: make the host thread panic at its next pass, to show
    /// what its owner does then.
    #[doc(hidden)]
    pub fn inject_panic(&self) {
        self.fault.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        let _ = self.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
