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
//! Each network with external access gets its gateway port from
//! [`HostNet::gateway_port`]: the port answers ARP and ping for the gateway address on
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

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use rtrb::{Consumer, Producer, RingBuffer};
use tapnet_nat::relay::{
    ConnectError, Event, FlowId, FlowLimits, HostStream, Isolation, Proto, Pumped, Relay,
    RelayConfig, RelayCounters, RelayStats,
};
use tapnet_nat::{GatewayConfig, icmp};
use tapnet_wire::VnetHdr;

use crate::pool::{BufferPool, HEADROOM, Handle};
use crate::port::gateway::{GatewayHandle, GatewayPort, Uplink};
use crate::wake::Notifier;

mod splice;

use splice::{Dir, NsConnector, Pipe, SpliceCounters, Spliced, Step};

/// Frames waiting in each direction between the engine and the host thread, per
/// network.
const RING: usize = 4096;
/// Frames taken from one network's ring per pass of the host thread.
const BATCH: usize = 512;
const WAKER: Token = Token(0);
/// Longest sleep of the host thread with flows open (their timers are checked then).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Retry delay when the pool or the engine's ring is full.
const BACKOFF: Duration = Duration::from_millis(1);

/// Bounds and buffer sizes of host networking.
#[derive(Clone, Debug)]
pub struct HostNetConfig {
    /// Flow bounds, per network: a SYN beyond them is answered with a reset, a
    /// datagram dropped; each is counted.
    pub limits: FlowLimits,
    /// Buffer per direction of one TCP connection, in bytes.
    pub tcp_buffer: usize,
    /// After an event, keep polling this long before sleeping (zero: sleep at once).
    pub busy_poll: Duration,
}

impl Default for HostNetConfig {
    fn default() -> Self {
        HostNetConfig {
            limits: FlowLimits::default(),
            busy_poll: Duration::from_micros(50),
            tcp_buffer: 1024 * 1024,
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNetStats {
    /// Networks attached.
    pub networks: u64,
    /// Published ports.
    pub published: u64,
    /// Host sockets open now (flows and listeners).
    pub sockets: u64,
    /// Pipes open now (two per spliced connection).
    pub pipes: u64,
    /// Loopback connections carried by splice on spliced ports, so far.
    pub spliced: u64,
    /// Loopback connections on spliced ports that took the relay path because no
    /// connection could be made from inside the namespace, so far.
    pub splice_fallback: u64,
    /// The relays' counters, all networks summed.
    pub relay: RelayStats,
}

/// What the handle asks of the host thread. `done` is answered once the change is live.
enum Ctl {
    /// Carry network `key` through `relay`; its subnet joins the isolation table.
    Attach {
        key: String,
        relay: Box<Relay>,
        to_engine: Producer<Handle>,
        from_engine: Consumer<Handle>,
        notifier: Arc<OnceLock<Notifier>>,
        done: Sender<()>,
    },
    /// Network `key` (one without a relay) has subnet `addr/prefix`.
    Isolate {
        key: String,
        addr: Ipv4Addr,
        prefix: u8,
        done: Sender<()>,
    },
    /// Forget network `key`: its subnet, and its relay, flows and published ports.
    Detach {
        key: String,
        done: Sender<()>,
    },
    Publish {
        key: String,
        id: PublishId,
        listener: HostListener,
        ctr: SocketAddrV4,
        splice: Option<Arc<NsConnector>>,
    },
    Unpublish(PublishId),
    Stop,
}

#[derive(Default)]
struct Shared {
    nets: HashMap<String, Arc<RelayCounters>>,
    published: HashMap<PublishId, String>,
    /// The connector of each namespace with spliced ports, by device and inode.
    connectors: HashMap<(u64, u64), Weak<NsConnector>>,
}

/// The engine's host networking (see the module docs).
pub struct HostNet {
    pool: Arc<BufferPool>,
    cfg: HostNetConfig,
    start: Instant,
    ctl: Sender<Ctl>,
    waker: Arc<Waker>,
    shared: Mutex<Shared>,
    sockets: Arc<AtomicU64>,
    splice: Arc<SpliceCounters>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl HostNet {
    /// Start host networking for an engine whose pool is `pool`.
    pub fn start(pool: Arc<BufferPool>, cfg: HostNetConfig) -> io::Result<HostNet> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (ctl, rx) = crossbeam_channel::unbounded();
        let start = Instant::now();
        let sockets = Arc::new(AtomicU64::new(0));
        let splice = Arc::new(SpliceCounters::default());
        let mut host = Host {
            poll,
            ctl: rx,
            pool: pool.clone(),
            start,
            nets: Vec::new(),
            socks: Vec::new(),
            free_tokens: Vec::new(),
            published: HashMap::new(),
            open: Arc::clone(&sockets),
            out_frames_blocked: false,
            busy_poll: cfg.busy_poll,
            again: Vec::new(),
            busy: false,
            backoff: false,
            splice: Arc::clone(&splice),
            splice_again: Vec::new(),
            max_spliced: cfg.limits.tcp,
            pipe_size: cfg.tcp_buffer,
            isolation: Isolation::default(),
        };
        let thread = std::thread::Builder::new()
            .name("tapnet-host".into())
            .spawn(move || host.run())?;
        Ok(HostNet {
            pool,
            cfg,
            start,
            ctl,
            waker,
            shared: Mutex::default(),
            sockets,
            splice,
            next_id: AtomicU64::new(1),
            thread: Some(thread),
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

    /// The gateway port of network `net` (any stable key, e.g. its id), with egress
    /// through the host. Attach it with `Engine::add_gateway_port`. Attaching a key
    /// again replaces its relay (its flows end).
    pub fn gateway_port(
        &self,
        net: &str,
        attach: NetAttach,
    ) -> Result<(GatewayPort, GatewayHandle), HostNetError> {
        let relay = Relay::new(
            RelayConfig {
                gateway: attach.gateway,
                mtu: attach.mtu,
                host_loopback: attach.host_loopback,
                limits: self.cfg.limits,
                tcp_buffer: self.cfg.tcp_buffer,
            },
            self.start.elapsed(),
        );
        let counters = relay.counters();
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
            },
        ))
    }

    /// Network `net` (one without external access, which takes no gateway port from
    /// here) has subnet `addr/prefix`: no other network's flow may reach it through
    /// the host. [`HostNet::detach`] forgets it.
    pub fn isolate(&self, net: &str, addr: Ipv4Addr, prefix: u8) {
        let _ = self.call(|done| Ctl::Isolate {
            key: net.to_string(),
            addr,
            prefix,
            done,
        });
    }

    /// Forget network `net`: its flows end and its published ports close.
    pub fn detach(&self, net: &str) {
        let mut sh = self.lock();
        if sh.nets.remove(net).is_some() {
            sh.published.retain(|_, n| n != net);
        }
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
        if !self.lock().nets.contains_key(net) {
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
        if !sh.nets.contains_key(net) {
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
        for c in sh.nets.values() {
            relay = relay.sum(&c.snapshot());
        }
        HostNetStats {
            networks: sh.nets.len() as u64,
            published: sh.published.len() as u64,
            sockets: self.sockets.load(Ordering::Relaxed),
            pipes: self.splice.pipes.load(Ordering::Relaxed),
            spliced: self.splice.spliced.load(Ordering::Relaxed),
            splice_fallback: self.splice.fallback.load(Ordering::Relaxed),
            relay,
        }
    }

    /// The relay counters of network `net`.
    pub fn relay_stats(&self, net: &str) -> Option<RelayStats> {
        self.lock().nets.get(net).map(|c| c.snapshot())
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

/// A network on the host thread.
struct Net {
    key: String,
    relay: Box<Relay>,
    to_engine: Producer<Handle>,
    from_engine: Consumer<Handle>,
    notifier: Arc<OnceLock<Notifier>>,
    /// Host socket of each flow.
    flows: HashMap<FlowId, Token>,
    /// Inbound UDP flows: the listener and the client their replies go to.
    udp_clients: HashMap<FlowId, (Token, SocketAddr)>,
    /// Spliced connections open (bounded like the relay's TCP flows).
    spliced: usize,
}

enum Sock {
    Stream {
        net: usize,
        id: FlowId,
        s: mio::net::TcpStream,
        connecting: bool,
    },
    Dgram {
        net: usize,
        id: FlowId,
        s: mio::net::UdpSocket,
        /// A raw ICMP socket (no ping sockets allowed here) and the echo identifier
        /// this flow uses on it.
        raw_ident: Option<u16>,
    },
    TcpListen {
        net: usize,
        l: mio::net::TcpListener,
        ctr: SocketAddrV4,
        /// Loopback clients are spliced through this namespace's sockets.
        splice: Option<Arc<NsConnector>>,
    },
    /// A spliced connection, under the token of its client stream.
    Splice { net: usize, sp: Box<Spliced> },
    /// The token of a spliced connection's stream to the container.
    SpliceInner { net: usize, main: Token },
    UdpListen {
        net: usize,
        s: mio::net::UdpSocket,
        ctr: SocketAddrV4,
    },
}

impl Sock {
    fn net(&self) -> usize {
        match self {
            Sock::Stream { net, .. }
            | Sock::Dgram { net, .. }
            | Sock::TcpListen { net, .. }
            | Sock::UdpListen { net, .. }
            | Sock::Splice { net, .. }
            | Sock::SpliceInner { net, .. } => *net,
        }
    }
}

struct StreamIo<'a>(&'a mio::net::TcpStream);

impl HostStream for StreamIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

/// The host thread's state.
struct Host {
    poll: Poll,
    ctl: Receiver<Ctl>,
    pool: Arc<BufferPool>,
    start: Instant,
    nets: Vec<Option<Net>>,
    socks: Vec<Option<Sock>>,
    free_tokens: Vec<usize>,
    published: HashMap<PublishId, Token>,
    open: Arc<AtomicU64>,
    /// The last pass could not hand every frame to the engine.
    out_frames_blocked: bool,
    /// See [`HostNetConfig::busy_poll`].
    busy_poll: Duration,
    /// Sockets whose last read stopped at its budget, not at "would block": with
    /// edge-triggered readiness no event comes for what is still queued.
    again: Vec<Token>,
    /// A network's ring from the engine still held frames after a batch.
    busy: bool,
    /// A socket call failed for want of a resource (descriptors): retry shortly.
    backoff: bool,
    splice: Arc<SpliceCounters>,
    /// Spliced connections whose budget ran out, to pump again.
    splice_again: Vec<Token>,
    /// Spliced connections allowed per network.
    max_spliced: usize,
    /// Pipe size asked for spliced connections.
    pipe_size: usize,
    /// Every network's subnet: no flow crosses from one network to another.
    isolation: Isolation,
}

impl Host {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        // When the last event was moments ago, poll without sleeping for a while: on a
        // VM, waking a halted vCPU costs tens of microseconds, and a request/response
        // or a connection setup crosses this thread several times in a row.
        let mut last_event = Instant::now();
        loop {
            let spinning = self.busy_poll > Duration::ZERO && last_event.elapsed() < self.busy_poll;
            let timeout =
                if !self.splice_again.is_empty() || !self.again.is_empty() || self.busy || spinning
                {
                    Some(Duration::ZERO)
                } else if self.out_frames_blocked || self.backoff {
                    Some(BACKOFF)
                } else {
                    let now = self.now();
                    let mut t: Option<Duration> = None;
                    for n in self.nets.iter_mut().flatten() {
                        if let Some(d) = n.relay.poll_in(now) {
                            t = Some(t.map_or(d, |t| t.min(d)));
                        }
                    }
                    t.map(|t| t.min(MAX_SLEEP))
                };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "host networking: poll failed");
                    std::thread::sleep(BACKOFF);
                }
            }
            if !events.is_empty() {
                last_event = Instant::now();
            } else if spinning {
                std::hint::spin_loop();
            }
            while let Ok(c) = self.ctl.try_recv() {
                if !self.control(c) {
                    self.close_all();
                    return;
                }
            }
            for t in std::mem::take(&mut self.splice_again) {
                self.splice_event(t);
            }
            self.busy = false;
            self.backoff = false;
            self.out_frames_blocked = false;
            for t in std::mem::take(&mut self.again) {
                self.socket_event(t);
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.socket_event(ev.token());
                }
            }
            for i in 0..self.nets.len() {
                self.service(i);
            }
        }
    }

    fn control(&mut self, c: Ctl) -> bool {
        match c {
            Ctl::Attach {
                key,
                relay,
                to_engine,
                from_engine,
                notifier,
                done,
            } => {
                self.detach(&key);
                let gw = relay.config().gateway;
                self.isolation.insert(&key, gw.ip, gw.prefix_len);
                let net = Net {
                    key,
                    relay,
                    to_engine,
                    from_engine,
                    notifier,
                    flows: HashMap::new(),
                    udp_clients: HashMap::new(),
                    spliced: 0,
                };
                match self.nets.iter().position(Option::is_none) {
                    Some(i) => self.nets[i] = Some(net),
                    None => self.nets.push(Some(net)),
                }
                let _ = done.send(());
            }
            Ctl::Isolate {
                key,
                addr,
                prefix,
                done,
            } => {
                self.isolation.insert(&key, addr, prefix);
                let _ = done.send(());
            }
            Ctl::Detach { key, done } => {
                self.isolation.remove(&key);
                self.detach(&key);
                let _ = done.send(());
            }
            Ctl::Publish {
                key,
                id,
                listener,
                ctr,
                splice,
            } => {
                let Some(net) = self.net_index(&key) else {
                    return true;
                };
                let sock = match listener {
                    HostListener::Tcp(l) => Sock::TcpListen {
                        net,
                        l: mio::net::TcpListener::from_std(l),
                        ctr,
                        splice,
                    },
                    HostListener::Udp(s) => Sock::UdpListen {
                        net,
                        s: mio::net::UdpSocket::from_std(s),
                        ctr,
                    },
                };
                match self.add_sock(sock) {
                    Ok(t) => {
                        self.published.insert(id, t);
                        // Connections may already wait in the backlog.
                        self.socket_event(t);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch a published port"),
                }
            }
            Ctl::Unpublish(id) => {
                if let Some(t) = self.published.remove(&id) {
                    // Inbound UDP flows answer through this listener: they end with it,
                    // before its token can name another listener.
                    let now = self.now();
                    for n in self.nets.iter_mut().flatten() {
                        let gone: Vec<FlowId> = n
                            .udp_clients
                            .iter()
                            .filter(|(_, (lt, _))| *lt == t)
                            .map(|(id, _)| *id)
                            .collect();
                        for id in gone {
                            n.udp_clients.remove(&id);
                            n.relay.end_flow(now, id);
                        }
                    }
                    self.remove_sock(t, false);
                }
            }
            Ctl::Stop => return false,
        }
        true
    }

    fn net_index(&self, key: &str) -> Option<usize> {
        self.nets
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.key == key))
    }

    fn detach(&mut self, key: &str) {
        let Some(i) = self.net_index(key) else {
            return;
        };
        let tokens: Vec<usize> = self
            .socks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.net() == i))
            .map(|(t, _)| t)
            .collect();
        for t in tokens {
            self.remove_sock(Token(t + 1), false);
        }
        self.published
            .retain(|_, t| t.0 > 0 && self.socks.get(t.0 - 1).is_some_and(Option::is_some));
        if let Some(mut net) = self.nets[i].take() {
            while let Ok(h) = net.from_engine.pop() {
                self.pool.free(h);
            }
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<String> = self.nets.iter().flatten().map(|n| n.key.clone()).collect();
        for k in keys {
            self.detach(&k);
        }
    }

    /// A free slot of `socks` (left empty) and its token.
    fn slot(&mut self) -> (usize, Token) {
        let slot = self.free_tokens.pop().unwrap_or_else(|| {
            self.socks.push(None);
            self.socks.len() - 1
        });
        (slot, Token(slot + 1))
    }

    fn add_sock(&mut self, mut sock: Sock) -> io::Result<Token> {
        let (slot, token) = self.slot();
        let reg = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = match &mut sock {
            Sock::Stream { s, .. } => reg.register(s, token, both),
            Sock::Dgram { s, .. } => reg.register(s, token, Interest::READABLE),
            Sock::TcpListen { l, .. } => reg.register(l, token, Interest::READABLE),
            Sock::UdpListen { s, .. } => reg.register(s, token, Interest::READABLE),
            Sock::Splice { .. } | Sock::SpliceInner { .. } => Err(io::Error::other(
                "spliced connections are added by add_splice",
            )),
        };
        if let Err(e) = registered {
            self.free_tokens.push(slot);
            return Err(e);
        }
        self.socks[slot] = Some(sock);
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(token)
    }

    /// Watch a spliced connection: its two streams under two tokens.
    fn add_splice(&mut self, net: usize, mut sp: Box<Spliced>) -> io::Result<Token> {
        let (a, ta) = self.slot();
        let (b, tb) = self.slot();
        let reg = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = reg.register(&mut sp.client, ta, both).and_then(|()| {
            reg.register(&mut sp.inner, tb, both).inspect_err(|_| {
                let _ = reg.deregister(&mut sp.client);
            })
        });
        if let Err(e) = registered {
            self.free_tokens.push(b);
            self.free_tokens.push(a);
            return Err(e);
        }
        sp.inner_token = tb;
        self.socks[a] = Some(Sock::Splice { net, sp });
        self.socks[b] = Some(Sock::SpliceInner { net, main: ta });
        self.open.fetch_add(2, Ordering::Relaxed);
        if let Some(Some(n)) = self.nets.get_mut(net) {
            n.spliced += 1;
        }
        Ok(ta)
    }

    /// Stop watching the spliced connection of token `t` and hand it back.
    fn take_splice(&mut self, t: Token) -> Option<(usize, Box<Spliced>)> {
        let slot = t.0.checked_sub(1)?;
        let Some(Some(Sock::Splice { .. })) = self.socks.get(slot) else {
            return None;
        };
        let Some(Sock::Splice { net, mut sp }) = self.socks[slot].take() else {
            return None;
        };
        let reg = self.poll.registry();
        let _ = reg.deregister(&mut sp.client);
        let _ = reg.deregister(&mut sp.inner);
        if let Some(b) = sp.inner_token.0.checked_sub(1) {
            if let Some(s) = self.socks.get_mut(b) {
                *s = None;
            }
            self.free_tokens.push(b);
        }
        self.free_tokens.push(slot);
        self.open.fetch_sub(2, Ordering::Relaxed);
        if let Some(Some(n)) = self.nets.get_mut(net) {
            n.spliced = n.spliced.saturating_sub(1);
        }
        Some((net, sp))
    }

    fn remove_sock(&mut self, t: Token, reset: bool) {
        let Some(slot) = t.0.checked_sub(1) else {
            return;
        };
        match self.socks.get(slot) {
            Some(Some(Sock::SpliceInner { main, .. })) => return self.remove_sock(*main, reset),
            Some(Some(Sock::Splice { .. })) => {
                if let Some((_, sp)) = self.take_splice(t) {
                    if reset {
                        set_linger0(&sp.client);
                        set_linger0(&sp.inner);
                    }
                }
                return;
            }
            _ => {}
        }
        let Some(mut sock) = self.socks.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let reg = self.poll.registry();
        let _ = match &mut sock {
            Sock::Stream { s, .. } => {
                if reset {
                    set_linger0(s);
                }
                reg.deregister(s)
            }
            Sock::Dgram { s, .. } | Sock::UdpListen { s, .. } => reg.deregister(s),
            Sock::TcpListen { l, .. } => reg.deregister(l),
            Sock::Splice { .. } | Sock::SpliceInner { .. } => Ok(()),
        };
        if let Sock::Stream { net, id, .. } | Sock::Dgram { net, id, .. } = &sock {
            if let Some(Some(n)) = self.nets.get_mut(*net) {
                n.flows.remove(id);
            }
        }
        self.free_tokens.push(slot);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Readiness on a host socket.
    fn socket_event(&mut self, t: Token) {
        let Some(slot) = t.0.checked_sub(1) else {
            return;
        };
        let now = self.now();
        let Some(Some(sock)) = self.socks.get_mut(slot) else {
            return;
        };
        match sock {
            Sock::Splice { .. } | Sock::SpliceInner { .. } => self.splice_event(t),
            Sock::Stream {
                net,
                id,
                s,
                connecting,
            } => {
                let (net, id) = (*net, *id);
                let Some(Some(n)) = self.nets.get_mut(net) else {
                    return;
                };
                if *connecting {
                    match s.take_error() {
                        Ok(Some(e)) | Err(e) => {
                            let why = if e.kind() == io::ErrorKind::ConnectionRefused {
                                ConnectError::Refused
                            } else {
                                ConnectError::Failed
                            };
                            n.relay.connected(now, id, Err(why));
                            n.flows.remove(&id);
                            self.remove_sock(t, false);
                            return;
                        }
                        Ok(None) => {}
                    }
                    match s.peer_addr() {
                        Ok(_) => {
                            *connecting = false;
                            n.relay.connected(now, id, Ok(()));
                        }
                        // Not connected yet (a spurious wake-up).
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                        Err(_) => {
                            n.relay.connected(now, id, Err(ConnectError::Failed));
                            n.flows.remove(&id);
                            self.remove_sock(t, false);
                            return;
                        }
                    }
                }
                if let Pumped::Closed { reset } = n.relay.pump(now, id, &mut StreamIo(s)) {
                    self.remove_sock(t, reset);
                }
            }
            Sock::Dgram {
                net,
                id,
                s,
                raw_ident,
            } => {
                let (net, id, raw_ident) = (*net, *id, *raw_ident);
                let Some(Some(n)) = self.nets.get_mut(net) else {
                    return;
                };
                let mut buf = [0u8; 65536];
                let mut drained = false;
                for _ in 0..BATCH {
                    match s.recv(&mut buf) {
                        Ok(k) => {
                            let msg = match raw_ident {
                                None => &buf[..k],
                                // A raw socket sees every echo reply to this host, IP
                                // header included: keep this flow's.
                                Some(ident) => match icmp::raw_echo_reply(&buf[..k], ident) {
                                    Some(m) => m,
                                    None => continue,
                                },
                            };
                            if !n.relay.datagram_from_host(now, id, msg) {
                                drained = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        // An ICMP error reported on the socket (ECONNREFUSED after a
                        // port unreachable): the datagrams behind it still count.
                        Err(_) => {}
                    }
                }
                if !drained {
                    // Edge-triggered: no new event comes for what is still queued.
                    self.again.push(t);
                }
            }
            Sock::TcpListen {
                net,
                l,
                ctr,
                splice,
                ..
            } => {
                let (net, ctr, splice) = (*net, *ctr, splice.clone());
                let mut accepted = Vec::new();
                let mut drained = false;
                for _ in 0..BATCH {
                    match l.accept() {
                        Ok((s, client)) => accepted.push((s, client)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                        Err(e) => {
                            // Out of descriptors, say: try again shortly.
                            tracing::debug!(error = %e, "accept on a published port failed");
                            self.backoff = true;
                            break;
                        }
                    }
                }
                if !drained {
                    self.again.push(t);
                }
                for (s, client) in accepted {
                    let _ = s.set_nodelay(true);
                    let s = match &splice {
                        Some(c) if client.ip().is_loopback() => {
                            match self.start_splice(net, s, client, ctr, c) {
                                Some(s) => {
                                    self.splice.fallback.fetch_add(1, Ordering::Relaxed);
                                    s
                                }
                                None => continue,
                            }
                        }
                        _ => s,
                    };
                    self.relay_inbound(net, now, s, client, ctr);
                }
            }
            Sock::UdpListen { net, s, ctr, .. } => {
                let (net, ctr) = (*net, *ctr);
                let Some(Some(n)) = self.nets.get_mut(net) else {
                    return;
                };
                let mut buf = [0u8; 65536];
                let mut drained = false;
                for _ in 0..BATCH {
                    match s.recv_from(&mut buf) {
                        Ok((k, client)) => {
                            if let Some(id) = n.relay.udp_inbound(now, client, ctr, &buf[..k]) {
                                n.udp_clients.insert(id, (t, client));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        Err(_) => {}
                    }
                }
                if !drained {
                    self.again.push(t);
                }
            }
        }
    }

    /// Carry the accepted stream `s` of `client` to `ctr` through the relay.
    fn relay_inbound(
        &mut self,
        net: usize,
        now: Duration,
        s: mio::net::TcpStream,
        client: SocketAddr,
        ctr: SocketAddrV4,
    ) {
        let Some(Some(n)) = self.nets.get_mut(net) else {
            return;
        };
        // Refused (the flow bound, or no address to show the client): the client is
        // reset, as by a full listener.
        let Some(id) = n.relay.tcp_inbound(now, client, ctr) else {
            set_linger0(&s);
            return;
        };
        let sock = Sock::Stream {
            net,
            id,
            s,
            connecting: false,
        };
        match self.add_sock(sock) {
            Ok(tok) => {
                if let Some(Some(n)) = self.nets.get_mut(net) {
                    n.flows.insert(id, tok);
                }
            }
            Err(_) => {
                if let Some(Some(n)) = self.nets.get_mut(net) {
                    n.relay.host_reset(now, id);
                }
            }
        }
    }

    /// Splice the loopback client `s` to `ctr` through a socket of `conn`'s namespace.
    /// `None` when done with it (spliced, or closed); the stream back when it should
    /// take the relay path instead.
    fn start_splice(
        &mut self,
        net: usize,
        s: mio::net::TcpStream,
        client: SocketAddr,
        ctr: SocketAddrV4,
        conn: &NsConnector,
    ) -> Option<mio::net::TcpStream> {
        let n = self.nets.get(net)?.as_ref()?;
        if n.spliced >= self.max_spliced {
            // Over the bound, like the relay's refusal: closed with a reset.
            tracing::debug!(%client, "spliced connection bound reached");
            set_linger0(&s);
            return None;
        }
        let made = (|| {
            let pipes = [
                Pipe::new(self.pipe_size, &self.splice)?,
                Pipe::new(self.pipe_size, &self.splice)?,
            ];
            let fd = conn.take()?;
            splice::connect(&fd, ctr)?;
            Ok::<_, io::Error>((pipes, fd))
        })();
        let (pipes, fd) = match made {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                set_linger0(&s);
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, %ctr, "cannot splice a published port; relaying");
                return Some(s);
            }
        };
        let inner = mio::net::TcpStream::from_std(std::net::TcpStream::from(fd));
        let _ = inner.set_nodelay(true);
        let [up, down] = pipes;
        let sp = Box::new(Spliced {
            client: s,
            inner,
            inner_token: Token(0),
            client_addr: client,
            ctr,
            connecting: true,
            dirs: [Dir::new(up), Dir::new(down)],
        });
        match self.add_splice(net, sp) {
            Ok(t) => {
                // The connect may have completed already: look now.
                self.splice_again.push(t);
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch a spliced connection");
                None
            }
        }
    }

    /// Readiness on either stream of a spliced connection (or its budget renewed).
    fn splice_event(&mut self, t: Token) {
        let Some(slot) = t.0.checked_sub(1) else {
            return;
        };
        let main = match self.socks.get(slot) {
            Some(Some(Sock::SpliceInner { main, .. })) => *main,
            Some(Some(Sock::Splice { .. })) => t,
            _ => return,
        };
        let Some(Some(Sock::Splice { sp, .. })) = self.socks.get_mut(main.0 - 1) else {
            return;
        };
        if sp.connecting {
            let failed = match sp.inner.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match sp.inner.peer_addr() {
                    Ok(_) => None,
                    // Not connected yet.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failed {
                let Some((net, sp)) = self.take_splice(main) else {
                    return;
                };
                match e.kind() {
                    // The container refused: so is the client.
                    io::ErrorKind::ConnectionRefused => {
                        set_linger0(&sp.client);
                        return;
                    }
                    // Connected, then reset before this event: the client too.
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                        self.splice.spliced.fetch_add(1, Ordering::Relaxed);
                        set_linger0(&sp.client);
                        return;
                    }
                    _ => {}
                }
                tracing::debug!(error = %e, ctr = %sp.ctr, "cannot splice a published port; relaying");
                self.splice.fallback.fetch_add(1, Ordering::Relaxed);
                let Spliced {
                    client,
                    client_addr,
                    ctr,
                    ..
                } = *sp;
                let now = self.now();
                self.relay_inbound(net, now, client, client_addr, ctr);
                return;
            }
            sp.connecting = false;
            self.splice.spliced.fetch_add(1, Ordering::Relaxed);
        }
        match sp.pump() {
            Step::Broken => self.remove_sock(main, true),
            Step::More => self.splice_again.push(main),
            Step::Idle => {
                if sp.finished() {
                    self.remove_sock(main, false);
                }
            }
        }
    }

    /// Move one network's frames and events.
    fn service(&mut self, i: usize) {
        let now = self.now();
        let Some(Some(n)) = self.nets.get_mut(i) else {
            return;
        };
        for _ in 0..BATCH {
            let Ok(h) = n.from_engine.pop() else {
                break;
            };
            let gso = self.pool.meta(&h).vnet.is_gso();
            n.relay
                .input(now, self.pool.frame(&h), gso, &self.isolation);
            self.pool.free(h);
        }
        if !n.from_engine.is_empty() {
            // More than one batch waits: come back at once, the engine rang only once.
            self.busy = true;
        }
        n.relay.poll(now);
        // Events: sockets to open and close.
        let mut opens = Vec::new();
        let mut closes = Vec::new();
        while let Some(e) = n.relay.poll_event() {
            match e {
                Event::Connect { id, proto, dst } => opens.push((id, proto, dst)),
                Event::Close { id, reset } => {
                    n.udp_clients.remove(&id);
                    if let Some(t) = n.flows.remove(&id) {
                        closes.push((t, reset));
                    }
                }
            }
        }
        for (t, reset) in closes {
            self.remove_sock(t, reset);
        }
        for (id, proto, dst) in opens {
            self.open_flow(i, now, id, proto, dst);
        }
        let Some(Some(n)) = self.nets.get_mut(i) else {
            return;
        };
        // TCP flows whose container side moved.
        let mut ready = Vec::new();
        n.relay.take_ready(&mut ready);
        let mut closed = Vec::new();
        for id in ready {
            let Some(&t) = n.flows.get(&id) else {
                continue;
            };
            if let Some(Some(Sock::Stream {
                s,
                connecting: false,
                ..
            })) = self.socks.get(t.0 - 1)
            {
                if let Pumped::Closed { reset } = n.relay.pump(now, id, &mut StreamIo(s)) {
                    closed.push((t, reset));
                }
            }
        }
        // Datagrams for host sockets.
        while let Some((id, data)) = n.relay.next_datagram() {
            if let Some(&(lt, client)) = n.udp_clients.get(&id) {
                if let Some(Some(Sock::UdpListen { s, .. })) = self.socks.get(lt.0 - 1) {
                    let _ = s.send_to(&data, client);
                }
            } else if let Some(&t) = n.flows.get(&id) {
                if let Some(Some(Sock::Dgram { s, raw_ident, .. })) = self.socks.get(t.0 - 1) {
                    match raw_ident {
                        None => {
                            let _ = s.send(&data);
                        }
                        Some(ident) => {
                            let mut m = data;
                            if icmp::set_echo_ident(&mut m, *ident) {
                                let _ = s.send(&m);
                            }
                        }
                    }
                }
            }
        }
        n.relay.poll(now);
        // Frames for the engine, straight into pool slots.
        let mut sent = false;
        let mut blocked = false;
        while let Some(len) = n.relay.peek_frame_len() {
            if n.to_engine.is_abandoned() {
                // The gateway port left the engine (its network is going): nobody
                // would free what is pushed now.
                break;
            }
            if n.to_engine.is_full() {
                blocked = true;
                break;
            }
            let Some(mut h) = self.pool.alloc_for(len) else {
                blocked = true;
                break;
            };
            let written = {
                let p = self.pool.get_mut(&mut h);
                match n.relay.next_frame(&mut p.slot[HEADROOM..]) {
                    Some(f) => {
                        p.meta.head = HEADROOM as u32;
                        p.meta.len = f.len as u32;
                        p.meta.vnet = vnet_for(&f);
                        true
                    }
                    None => false,
                }
            };
            if !written {
                self.pool.free(h);
                break;
            }
            if let Err(rtrb::PushError::Full(h)) = n.to_engine.push(h) {
                self.pool.free(h);
                blocked = true;
                break;
            }
            sent = true;
        }
        if sent {
            if let Some(notifier) = n.notifier.get() {
                notifier.notify();
            }
        }
        self.out_frames_blocked |= blocked;
        for (t, reset) in closed {
            self.remove_sock(t, reset);
        }
    }

    /// Open the host socket of a new outbound flow.
    fn open_flow(
        &mut self,
        net: usize,
        now: Duration,
        id: FlowId,
        proto: Proto,
        dst: SocketAddrV4,
    ) {
        let opened: io::Result<(Sock, bool)> = match proto {
            Proto::Tcp => mio::net::TcpStream::connect(SocketAddr::V4(dst)).map(|s| {
                let _ = s.set_nodelay(true);
                (
                    Sock::Stream {
                        net,
                        id,
                        s,
                        connecting: true,
                    },
                    false,
                )
            }),
            Proto::Udp => udp_connected(dst).map(|s| {
                (
                    Sock::Dgram {
                        net,
                        id,
                        s,
                        raw_ident: None,
                    },
                    true,
                )
            }),
            Proto::Icmp => icmp_socket(dst, id).map(|(s, raw_ident)| {
                (
                    Sock::Dgram {
                        net,
                        id,
                        s,
                        raw_ident,
                    },
                    true,
                )
            }),
        };
        let Some(Some(n)) = self.nets.get_mut(net) else {
            return;
        };
        match opened {
            Ok((sock, ready_now)) => match self.add_sock(sock) {
                Ok(t) => {
                    let Some(Some(n)) = self.nets.get_mut(net) else {
                        return;
                    };
                    n.flows.insert(id, t);
                    if ready_now {
                        n.relay.connected(now, id, Ok(()));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch a host socket");
                    if let Some(Some(n)) = self.nets.get_mut(net) {
                        n.relay.connected(now, id, Err(ConnectError::Failed));
                    }
                }
            },
            Err(e) => {
                let why = if e.kind() == io::ErrorKind::ConnectionRefused {
                    ConnectError::Refused
                } else {
                    ConnectError::Failed
                };
                tracing::debug!(error = %e, %dst, ?proto, "cannot open a host socket");
                n.relay.connected(now, id, Err(why));
            }
        }
    }
}

/// Make closing `s` reset the connection.
fn set_linger0(s: &mio::net::TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        &s.as_fd(),
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

fn udp_connected(dst: SocketAddrV4) -> io::Result<mio::net::UdpSocket> {
    let s = mio::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    s.connect(SocketAddr::V4(dst))?;
    Ok(s)
}

/// A socket for ICMP echo to `dst`: an unprivileged ping socket where
/// `net.ipv4.ping_group_range` admits the daemon's group (the kernel then picks the
/// echo identifier), else a raw ICMP socket (needs CAP_NET_RAW) with an identifier of
/// the flow's own.
fn icmp_socket(dst: SocketAddrV4, id: FlowId) -> io::Result<(mio::net::UdpSocket, Option<u16>)> {
    match icmp_fd(dst, libc::SOCK_DGRAM) {
        Ok(s) => Ok((s, None)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            let ident = icmp::raw_echo_ident(id);
            icmp_fd(dst, libc::SOCK_RAW).map(|s| (s, Some(ident)))
        }
        Err(e) => Err(e),
    }
}

fn icmp_fd(dst: SocketAddrV4, kind: libc::c_int) -> io::Result<mio::net::UdpSocket> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let s = mio::net::UdpSocket::from_std(UdpSocket::from(owned));
    s.connect(SocketAddr::V4(SocketAddrV4::new(*dst.ip(), 0)))?;
    Ok(s)
}

/// The virtio-net header of a relay frame.
fn vnet_for(f: &tapnet_nat::relay::FrameOut) -> VnetHdr {
    let mut v = VnetHdr::default();
    if f.csum_partial {
        v.flags = VnetHdr::F_NEEDS_CSUM;
        v.csum_start = f.l4_offset;
        v.csum_offset = 16;
    }
    if f.gso_size > 0 {
        v.gso_type = VnetHdr::GSO_TCPV4;
        v.gso_size = f.gso_size;
        v.hdr_len = f.hdr_len;
    }
    v
}

#[cfg(test)]
mod tests;
