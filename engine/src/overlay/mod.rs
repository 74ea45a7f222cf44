//! Overlay networks: the engine's VXLAN tunnel endpoint (VTEP).
//!
//! An overlay network is one L2 domain spanning engines. On each engine it is a bridge
//! domain like any other, with one more member: the network's *overlay port*, which
//! stands for every endpoint the network has on other engines. The decisions (which
//! VTEP holds a MAC, whether a datagram is acceptable) are the sans-IO `tapnet_vxlan`
//! crate's; this module does the I/O around them:
//!
//! ```text
//!   TAPs ─▶ switch ─▶ tx stage ─▶ OverlayTx (one per VNI): Tables::egress
//!                     (segments to      ├─ Encap(vtep): VXLAN header into the slot's
//!                      the inner MTU,   │   headroom; runs to one VTEP leave as one
//!                      checksums)       │   UDP GSO message; one sendmmsg per batch
//!                                       ├─ Flood(peers): head-end replication, rate-limited
//!                                       ├─ ProxyArp(mac): the reply goes back through
//!                                       │   the port's rx ring; nothing crosses
//!                                       └─ Drop(reason): counted
//!   underlay socket ─▶ UnderlayRx: recvmmsg (+UDP GRO) ─▶ Tables::ingress per datagram
//!        ─▶ software GRO (inner TCP segments merged into a superframe in place)
//!        ─▶ frames stamped with the VNI's overlay port as their ingress ─▶ switch
//! ```
//!
//! - **One underlay socket per engine** receives every VNI (default port 4789). Sends
//!   leave from [`OverlayConfig::source_sockets`] more sockets bound to free ports of
//!   the same address: the inner flow's hash (RFC 7348 §5) picks one, so the outer
//!   source port, and with it an underlay's ECMP path, follows the inner flow. A socket
//!   unprivileged users can bind works: rootless engines pick their own address and
//!   port.
//! - **No flood-and-learn.** The tables come from [`Overlay`]'s API (the control plane
//!   next): unknown unicast is dropped and counted; ARP for a remote endpoint is
//!   answered here (proxy ARP); other broadcast and multicast go to the network's peer
//!   VTEPs, one copy each, at most [`OverlayConfig::flood_rate`] per second.
//! - **Accepted only from peers.** A datagram for a VNI this engine does not serve, from
//!   a VTEP not in that network's peer list, or whose inner source MAC the table does
//!   not place on that VTEP, is dropped and counted. The inner frame then meets the
//!   switch's own checks (icc policy) as a frame from a TAP does.
//! - **Tables** are one immutable [`Tables`] value the API replaces and the datapath
//!   reads without waiting ([`published`]).
//! - **MTU.** The overlay port's MTU is the underlay's less [`OVERHEAD`] (1450 on a
//!   1500-byte underlay); the tx stage segments larger frames (TSO superframes) to it
//!   before the port sees them, and completes their checksums.

mod io;
mod port;
mod published;
mod shared;
mod underlay;

pub use io::Underlay;
use shared::Senders;
pub use shared::{OverlayCounters, OverlayStats};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use tapnet_switch::{DomainId, MacAddr, PortId};
pub use tapnet_vxlan::{Entry, OVERHEAD, TableError, Tables, VXLAN_PORT, Vni};

use crate::runtime::{Engine, EngineError};
use crate::sys::udp::UnderlaySocket;
use published::Published;

/// How an engine's VTEP is set up.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// The underlay address and port VXLAN datagrams arrive at (port 4789 by default).
    pub local: SocketAddrV4,
    /// The port peer VTEPs listen on (their `dstport`; 4789 by default).
    pub peer_port: u16,
    /// Sockets on free ports that sends leave from, picked by the inner flow's hash for
    /// outer source-port entropy; 0 sends from the receiving socket (source port =
    /// `local`'s).
    pub source_sockets: usize,
    /// Inner MTU; `None`: the underlay interface's MTU less [`OVERHEAD`] (1450 for 1500).
    pub mtu: Option<u32>,
    /// Broadcast and multicast frames per second one network may replicate to its peers.
    pub flood_rate: u32,
    /// Burst of the above.
    pub flood_burst: u32,
    /// Use UDP GSO and GRO where the kernel has them (false: one datagram per message,
    /// to measure or test the fallback).
    pub offloads: bool,
    /// Merge inner TCP segments into superframes on receive (software GRO).
    pub merge: bool,
    /// Socket buffer bytes asked for (the kernel caps them at `net.core.rmem_max` and
    /// `wmem_max`).
    pub socket_buffer: usize,
}

impl OverlayConfig {
    /// Defaults for a VTEP at `local`.
    pub fn new(local: SocketAddrV4) -> OverlayConfig {
        OverlayConfig {
            local,
            peer_port: VXLAN_PORT,
            source_sockets: 4,
            mtu: None,
            flood_rate: tapnet_vxlan::FLOOD_RATE,
            flood_burst: tapnet_vxlan::FLOOD_BURST,
            offloads: true,
            merge: true,
            socket_buffer: 8 << 20,
        }
    }
}

/// Why an overlay call failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The tables refused the change.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The engine refused it.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A socket could not be made.
    #[error("VXLAN underlay socket at {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddrV4,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The network is not served here.
    #[error("no overlay network with VNI {0} on this engine")]
    NoNetwork(Vni),
    /// The VNI is served already.
    #[error("VNI {0} is served already on this engine")]
    VniTaken(Vni),
}

/// A network this engine serves.
#[derive(Clone, Copy, Debug)]
struct Served {
    port: PortId,
    domain: DomainId,
}

/// An engine's VTEP (see the module docs): its sockets and tables, and the API that
/// changes them at run time.
pub struct Overlay {
    tables: Arc<Published<Tables>>,
    /// Serialises changes (read, change, publish) and keeps the networks' ports.
    state: Mutex<HashMap<Vni, Served>>,
    counters: Arc<OverlayCounters>,
    senders: Arc<Senders>,
    local: SocketAddrV4,
    mtu: u32,
    gro: bool,
    cfg: OverlayConfig,
    underlay_port: PortId,
}

impl Overlay {
    /// Bind the underlay sockets at `cfg.local` (in the calling thread's network
    /// namespace) and give `engine` the underlay port.
    pub fn start(engine: &Engine, cfg: OverlayConfig) -> Result<Overlay, OverlayError> {
        let sock_err = |addr, source| OverlayError::Socket { addr, source };
        let rx = UdpSocket::bind(cfg.local).map_err(|e| sock_err(cfg.local, e))?;
        let src = SocketAddrV4::new(*cfg.local.ip(), 0);
        let mut tx = Vec::new();
        for _ in 0..cfg.source_sockets {
            tx.push(UdpSocket::bind(src).map_err(|e| sock_err(src, e))?);
        }
        Overlay::with_sockets(engine, cfg, rx, tx)
    }

    /// As [`Overlay::start`], with sockets made elsewhere (in another namespace): `rx`
    /// receives, `tx` (may be empty: then `rx`) send.
    pub fn with_sockets(
        engine: &Engine,
        cfg: OverlayConfig,
        rx: UdpSocket,
        tx: Vec<UdpSocket>,
    ) -> Result<Overlay, OverlayError> {
        let prep = |s: UdpSocket| -> Result<Arc<dyn Underlay>, OverlayError> {
            let addr = match s.local_addr() {
                Ok(std::net::SocketAddr::V4(a)) => a,
                _ => cfg.local,
            };
            let u = UnderlaySocket::from_std(s)
                .and_then(|u| u.with_buffers(cfg.socket_buffer))
                .map_err(|source| OverlayError::Socket { addr, source })?;
            Ok(Arc::new(if cfg.offloads {
                u
            } else {
                u.without_offloads()
            }))
        };
        let rx = prep(rx)?;
        let tx = tx.into_iter().map(prep).collect::<Result<Vec<_>, _>>()?;
        Overlay::with_underlay(engine, cfg, rx, tx)
    }

    /// As [`Overlay::start`], over any [`Underlay`]: `rx` receives, `tx` (may be empty:
    /// then `rx`) send. The rig's in-memory underlay comes this way.
    pub fn with_underlay(
        engine: &Engine,
        cfg: OverlayConfig,
        rx: Arc<dyn Underlay>,
        mut socks: Vec<Arc<dyn Underlay>>,
    ) -> Result<Overlay, OverlayError> {
        let local = rx.local_addr().map_err(|source| OverlayError::Socket {
            addr: cfg.local,
            source,
        })?;
        if socks.is_empty() {
            socks.push(rx.clone());
        }
        let mtu = cfg
            .mtu
            .unwrap_or_else(|| underlay_mtu(*local.ip(), rx.raw_fd()).saturating_sub(OVERHEAD));
        let tables = Arc::new(Published::new(Tables::default()));
        let counters = Arc::new(OverlayCounters::default());
        let gro = rx.gro();
        let port = underlay::UnderlayPort::new(
            rx,
            tables.clone(),
            counters.clone(),
            engine.pool().clone(),
            cfg.merge,
        );
        let underlay_port = engine.add_unattached_port(Box::new(port))?;
        Ok(Overlay {
            tables,
            state: Mutex::new(HashMap::new()),
            counters,
            senders: Arc::new(Senders {
                socks,
                peer_port: cfg.peer_port,
            }),
            local,
            mtu,
            gro,
            cfg,
            underlay_port,
        })
    }

    /// The address and port the VTEP receives at.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The inner MTU of its networks.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Whether sends use UDP GSO and reads UDP GRO.
    pub fn offloads(&self) -> (bool, bool) {
        (self.senders.socks.iter().all(|s| s.gso()), self.gro)
    }

    /// The VTEP's counters now.
    pub fn stats(&self) -> OverlayStats {
        self.counters.snapshot()
    }

    /// The tables now.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.load()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vni, Served>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serve overlay network `vni` on `engine`'s bridge domain `domain`: its overlay
    /// port joins the domain. Returns the port.
    pub fn add_network(
        &self,
        engine: &Engine,
        vni: Vni,
        domain: DomainId,
    ) -> Result<PortId, OverlayError> {
        let mut st = self.lock();
        if st.contains_key(&vni) {
            return Err(OverlayError::VniTaken(vni));
        }
        let p = port::OverlayPort::new(
            vni,
            self.mtu,
            self.tables.clone(),
            self.senders.clone(),
            self.counters.clone(),
            engine.pool().clone(),
            self.cfg.flood_rate,
            self.cfg.flood_burst,
        );
        let id = engine.add_port(Box::new(p), domain)?;
        let mut t = (*self.tables.load()).clone();
        if let Err(e) = t.add_vni(vni, id.0) {
            let _ = engine.remove_port(id);
            return Err(e.into());
        }
        self.tables.store(t);
        st.insert(vni, Served { port: id, domain });
        Ok(id)
    }

    /// Stop serving `vni`: its tables go, then its port (and with it the switch's
    /// entries for its remote endpoints).
    pub fn remove_network(&self, engine: &Engine, vni: Vni) -> Result<(), OverlayError> {
        let mut st = self.lock();
        let s = *st.get(&vni).ok_or(OverlayError::NoNetwork(vni))?;
        let mut t = (*self.tables.load()).clone();
        t.remove_vni(vni)?;
        self.tables.store(t);
        st.remove(&vni);
        engine.remove_port(s.port)?;
        Ok(())
    }

    /// Add `vtep` to network `vni`'s peers: broadcast reaches it, its datagrams are
    /// accepted.
    pub fn add_peer(&self, vni: Vni, vtep: Ipv4Addr) -> Result<(), OverlayError> {
        let st = self.lock();
        st.get(&vni).ok_or(OverlayError::NoNetwork(vni))?;
        let mut t = (*self.tables.load()).clone();
        t.add_peer(vni, vtep)?;
        self.tables.store(t);
        Ok(())
    }

    /// Remove `vtep` from network `vni`'s peers, and every entry it held.
    pub fn remove_peer(
        &self,
        engine: &Engine,
        vni: Vni,
        vtep: Ipv4Addr,
    ) -> Result<(), OverlayError> {
        let st = self.lock();
        let s = *st.get(&vni).ok_or(OverlayError::NoNetwork(vni))?;
        let old = self.tables.load();
        let gone: Vec<MacAddr> = old
            .network(vni)
            .map(|n| {
                n.entries()
                    .filter(|e| e.vtep == vtep)
                    .map(|e| e.mac)
                    .collect()
            })
            .unwrap_or_default();
        let mut t = (*old).clone();
        t.remove_peer(vni, vtep)?;
        self.tables.store(t);
        for mac in gone {
            let _ = engine.remove_static_mac(s.domain, mac);
        }
        Ok(())
    }

    /// Place a remote endpoint (MAC, address for proxy ARP) on one of `vni`'s peers. The
    /// switch learns the MAC as the overlay port's, so frames to it go nowhere else.
    pub fn add_entry(&self, engine: &Engine, vni: Vni, entry: Entry) -> Result<(), OverlayError> {
        let st = self.lock();
        let s = *st.get(&vni).ok_or(OverlayError::NoNetwork(vni))?;
        let mut t = (*self.tables.load()).clone();
        let mac = entry.mac;
        t.add_entry(vni, entry)?;
        engine.add_static_mac(s.domain, mac, s.port)?;
        self.tables.store(t);
        Ok(())
    }

    /// Forget the remote endpoint `mac` of `vni`.
    pub fn remove_entry(
        &self,
        engine: &Engine,
        vni: Vni,
        mac: MacAddr,
    ) -> Result<(), OverlayError> {
        let st = self.lock();
        let s = *st.get(&vni).ok_or(OverlayError::NoNetwork(vni))?;
        let mut t = (*self.tables.load()).clone();
        t.remove_entry(vni, mac)?;
        self.tables.store(t);
        let _ = engine.remove_static_mac(s.domain, mac);
        Ok(())
    }

    /// The overlay port of `vni`, if served.
    pub fn port(&self, vni: Vni) -> Option<PortId> {
        self.lock().get(&vni).map(|s| s.port)
    }

    /// The engine port that reads the underlay socket.
    pub fn underlay_port(&self) -> PortId {
        self.underlay_port
    }

    /// Take the VTEP out of `engine`: every network's overlay port (and with it the
    /// switch's entries for remote endpoints), then the underlay port. The sockets close
    /// when the last port half holding them goes; every pool slot the ports held is
    /// given back. Returns the first error; the rest is removed all the same.
    pub fn close(self, engine: &Engine) -> Result<(), OverlayError> {
        let served: Vec<Served> = self.lock().drain().map(|(_, s)| s).collect();
        let mut first = None;
        for s in served {
            if let Err(e) = engine.remove_port(s.port) {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = engine.remove_port(self.underlay_port) {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), |e| Err(e.into()))
    }
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("local", &self.local)
            .field("mtu", &self.mtu)
            .field("networks", &*self.lock())
            .finish_non_exhaustive()
    }
}

/// The MTU of the interface holding `ip` (1500 when none does, or for the wildcard).
///
/// Asked through `fd`, the underlay socket, when there is one: the kernel answers those
/// requests for the socket's network namespace, which need not be the calling thread's
/// ([`Overlay::with_sockets`] takes sockets bound inside another namespace). Without a
/// socket (an in-memory underlay), the calling thread's interfaces.
fn underlay_mtu(ip: Ipv4Addr, fd: Option<RawFd>) -> u32 {
    const DEFAULT: u32 = 1500;
    if ip.is_unspecified() {
        return DEFAULT;
    }
    match fd {
        Some(fd) => socket_if_mtu(fd, ip),
        None => thread_if_mtu(ip),
    }
    .unwrap_or(DEFAULT)
}

/// The MTU of the interface holding `ip` in the network namespace of socket `fd`
/// (`SIOCGIFCONF` for the interface, `SIOCGIFMTU` for its MTU; netdevice(7)).
fn socket_if_mtu(fd: RawFd, ip: Ipv4Addr) -> Option<u32> {
    const SIZE: usize = std::mem::size_of::<libc::ifreq>();
    let zeroed = || {
        // SAFETY: `ifreq` is plain C data (a name, and a union of integers, addresses
        // and a pointer), for which all-zero bytes are a valid value.
        unsafe { std::mem::zeroed::<libc::ifreq>() }
    };
    let mut cap = 64;
    loop {
        let mut reqs: Vec<libc::ifreq> = (0..cap).map(|_| zeroed()).collect();
        let mut conf = libc::ifconf {
            ifc_len: libc::c_int::try_from(cap * SIZE).ok()?,
            ifc_ifcu: libc::__c_anonymous_ifc_ifcu {
                ifcu_req: reqs.as_mut_ptr(),
            },
        };
        // SAFETY: SIOCGIFCONF writes at most `ifc_len` bytes of `ifreq`s to `ifcu_req`,
        // which points at `cap` of them alive for the call, and sets `ifc_len` to the
        // bytes written.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFCONF as _, &mut conf) } < 0 {
            return None;
        }
        let n = usize::try_from(conf.ifc_len).ok()? / SIZE;
        if n >= cap && cap < 4096 {
            // Perhaps more than fitted: ask again with more room.
            cap *= 4;
            continue;
        }
        for r in &reqs[..n.min(cap)] {
            // SAFETY: SIOCGIFCONF fills the address of every entry it returns.
            let sa = unsafe { r.ifr_ifru.ifru_addr };
            if i32::from(sa.sa_family) != libc::AF_INET {
                continue;
            }
            // `sockaddr_in`: the port in `sa_data[0..2]`, the address in `[2..6]`.
            let b = |i: usize| sa.sa_data[i].to_ne_bytes()[0];
            if Ipv4Addr::new(b(2), b(3), b(4), b(5)) != ip {
                continue;
            }
            let mut q = zeroed();
            q.ifr_name = r.ifr_name;
            // SAFETY: SIOCGIFMTU reads the name (NUL-terminated: the kernel wrote it)
            // of this `ifreq`, alive for the call, and writes its `ifru_mtu`.
            if unsafe { libc::ioctl(fd, libc::SIOCGIFMTU as _, &mut q) } < 0 {
                return None;
            }
            // SAFETY: SIOCGIFMTU succeeded, so `ifru_mtu` holds the MTU.
            return u32::try_from(unsafe { q.ifr_ifru.ifru_mtu }).ok();
        }
        return None;
    }
}

/// The MTU of the interface holding `ip` among the calling thread's.
fn thread_if_mtu(ip: Ipv4Addr) -> Option<u32> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) else {
            continue;
        };
        if sin.ip() == ip {
            let path = format!("/sys/class/net/{}/mtu", a.interface_name);
            return std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
    }
    None
}

#[cfg(test)]
mod tests;
