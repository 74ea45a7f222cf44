//! The host thread (`tapnet-host`): its state, its loop, and the control messages it
//! takes between passes. What it does on a socket's readiness is in `events`, the pass
//! over each network in `service`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Poll, Token};
use rtrb::{Consumer, Producer};
use tapnet_nat::dns::Names;
use tapnet_nat::icmp::RawIdents;
use tapnet_nat::relay::{Budget, FlowId, Isolation, Relay};

use super::api::{HostListener, HostNetConfig, PublishId};
use super::clock::Time;
use super::ctl::Ctl;
use super::resolv::ResolvWatch;
use super::socks::{Removed, Sock, Socks};
use super::splice::{SpliceCounters, Spliced};
use crate::pool::{BufferPool, Handle};
use crate::wake::Notifier;

/// Frames taken from one network's ring per pass of the host thread, and reads from one
/// socket per event.
pub(super) const BATCH: usize = 512;
/// The token of the thread's waker.
pub(super) const WAKER: Token = Token(0);
/// Longest sleep of the host thread with flows open (their timers are checked then).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Retry delay when the pool or the engine's ring is full.
const BACKOFF: Duration = Duration::from_millis(1);

/// A network on the host thread.
pub(super) struct Net {
    pub(super) key: String,
    pub(super) relay: Box<Relay>,
    pub(super) to_engine: Producer<Handle>,
    pub(super) from_engine: Consumer<Handle>,
    pub(super) notifier: Arc<OnceLock<Notifier>>,
    /// Host socket of each flow.
    pub(super) flows: HashMap<FlowId, Token>,
    /// Inbound UDP flows: the listener and the client their replies go to.
    pub(super) udp_clients: HashMap<FlowId, (Token, SocketAddr)>,
    /// Spliced connections open (bounded like the relay's TCP flows).
    pub(super) spliced: usize,
    /// The network's DNS forwarding sockets (unconnected UDP), IPv4 and IPv6, made when
    /// a query first goes to a resolver of that family.
    pub(super) dns_socks: [Option<Token>; 2],
}

/// The host thread's state.
pub(super) struct Host {
    pub(super) poll: Poll,
    ctl: Receiver<Ctl>,
    pub(super) pool: Arc<BufferPool>,
    time: Time,
    pub(super) nets: Vec<Option<Net>>,
    pub(super) socks: Socks,
    published: HashMap<PublishId, Token>,
    /// The last pass could not hand every frame to the engine.
    pub(super) out_frames_blocked: bool,
    /// See [`HostNetConfig::busy_poll`].
    busy_poll: Duration,
    /// Sockets whose last read stopped at its budget, not at "would block": with
    /// edge-triggered readiness no event comes for what is still queued.
    pub(super) again: Vec<Token>,
    /// A network's ring from the engine still held frames after a batch.
    pub(super) busy: bool,
    /// A socket call failed for want of a resource (descriptors): retry shortly.
    pub(super) backoff: bool,
    pub(super) splice: Arc<SpliceCounters>,
    /// Spliced connections whose budget ran out, to pump again.
    pub(super) splice_again: Vec<Token>,
    /// Spliced connections allowed per network (published-port connections, like the
    /// relay's inbound TCP budget).
    pub(super) max_spliced: usize,
    /// Pipe size asked for spliced connections.
    pub(super) pipe_size: usize,
    /// Every network's subnet: no flow crosses from one network to another.
    pub(super) isolation: Isolation,
    /// Echo identifiers of raw ICMP sockets, unique across every network.
    pub(super) raw_idents: RawIdents,
    /// Memory for every relay's flow buffers.
    pub(super) budget: Budget,
    /// What `budget` has given out, for the handle's statistics.
    pub(super) flow_memory: Arc<AtomicU64>,
    /// Test hook ([`super::HostNet::inject_panic`]): panic at the next pass when set.
    pub(super) fault: Arc<AtomicBool>,
    /// The names every network's DNS server answers from.
    names: Arc<Names>,
    /// The host's resolvers, from its `resolv.conf`.
    resolv: ResolvWatch,
}

impl Host {
    /// The thread's state, polling with `poll` and taking control messages from `ctl`;
    /// `open` counts its sockets, `splice` its spliced connections.
    pub(super) fn new(
        poll: Poll,
        ctl: Receiver<Ctl>,
        pool: Arc<BufferPool>,
        cfg: &HostNetConfig,
        time: Time,
        open: Arc<AtomicU64>,
        splice: Arc<SpliceCounters>,
    ) -> Host {
        Host {
            poll,
            ctl,
            pool,
            time,
            nets: Vec::new(),
            socks: Socks::new(open),
            published: HashMap::new(),
            out_frames_blocked: false,
            busy_poll: cfg.busy_poll,
            again: Vec::new(),
            busy: false,
            backoff: false,
            splice,
            splice_again: Vec::new(),
            max_spliced: cfg.limits.tcp_inbound,
            pipe_size: cfg.tcp_buffer,
            isolation: Isolation::default(),
            raw_idents: RawIdents::default(),
            budget: Budget::new(cfg.flow_memory),
            flow_memory: Arc::default(),
            fault: Arc::default(),
            names: Arc::new(Names::new()),
            resolv: ResolvWatch::new(cfg.resolv_conf.clone(), cfg.dns_port),
        }
    }

    /// The time the relays run on.
    pub(super) fn now(&self) -> Duration {
        self.time.now()
    }

    /// The thread's loop, until [`Ctl::Stop`].
    pub(super) fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        // When the last event was moments ago, poll without sleeping for a while: on a
        // VM, waking a halted vCPU costs tens of microseconds, and a request/response
        // or a connection setup crosses this thread several times in a row.
        let mut last_event = Instant::now();
        // The host's resolvers, before any network asks.
        self.check_resolv();
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
            if self.fault.load(Ordering::Relaxed) {
                panic!("fault injected by a test");
            }
            let pass = self.time.pass_start();
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
            self.check_resolv();
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
            self.time.passed(pass);
        }
    }

    /// Apply control message `c`; false for [`Ctl::Stop`].
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
                let mut relay = relay;
                self.check_resolv();
                relay.set_dns_names(Arc::clone(&self.names));
                relay.set_dns_upstreams(self.resolv.upstreams().to_vec());
                let net = Net {
                    key,
                    relay,
                    to_engine,
                    from_engine,
                    notifier,
                    flows: HashMap::new(),
                    udp_clients: HashMap::new(),
                    spliced: 0,
                    dns_socks: [None, None],
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
                match self.socks.add(self.poll.registry(), sock) {
                    Ok(t) => {
                        self.published.insert(id, t);
                        // Connections may already wait in the backlog.
                        self.socket_event(t);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch a published port"),
                }
            }
            Ctl::Endpoint { key, ip, mac, done } => {
                if let Some(Some(n)) = self.net_index(&key).map(|i| &mut self.nets[i]) {
                    match mac {
                        Some(mac) => n.relay.set_endpoint(ip, mac),
                        None => n.relay.remove_endpoint(ip),
                    }
                }
                let _ = done.send(());
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
            Ctl::Names { names, done } => {
                for n in self.nets.iter_mut().flatten() {
                    n.relay.set_dns_names(Arc::clone(&names));
                }
                self.names = names;
                let _ = done.send(());
            }
            Ctl::Stop => return false,
        }
        true
    }

    /// Read the host's `resolv.conf` again if it changed (looked at once a second at
    /// most), and give every network's server the resolvers it names.
    fn check_resolv(&mut self) {
        let now = self.now();
        if let Some(up) = self.resolv.check(now) {
            for n in self.nets.iter_mut().flatten() {
                n.relay.set_dns_upstreams(up.to_vec());
            }
        }
    }

    /// The index of network `key`.
    fn net_index(&self, key: &str) -> Option<usize> {
        self.nets
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.key == key))
    }

    /// Forget network `key`: close its sockets, free the frames it still holds.
    fn detach(&mut self, key: &str) {
        let Some(i) = self.net_index(key) else {
            return;
        };
        for t in self.socks.of_net(i) {
            self.remove_sock(t, false);
        }
        self.published.retain(|_, t| self.socks.get(*t).is_some());
        if let Some(mut net) = self.nets[i].take() {
            self.budget.give(net.relay.reserved());
            while let Ok(h) = net.from_engine.pop() {
                self.pool.free(h);
            }
        }
    }

    /// Forget every network.
    fn close_all(&mut self) {
        let keys: Vec<String> = self.nets.iter().flatten().map(|n| n.key.clone()).collect();
        for k in keys {
            self.detach(&k);
        }
    }

    /// Watch the spliced connection `sp` of network `net`.
    pub(super) fn add_splice(&mut self, net: usize, sp: Box<Spliced>) -> io::Result<Token> {
        let t = self.socks.add_splice(self.poll.registry(), net, sp)?;
        if let Some(Some(n)) = self.nets.get_mut(net) {
            n.spliced += 1;
        }
        Ok(t)
    }

    /// Stop watching the spliced connection of token `t` and hand it back.
    pub(super) fn take_splice(&mut self, t: Token) -> Option<(usize, Box<Spliced>)> {
        let (net, sp) = self.socks.take_splice(self.poll.registry(), t)?;
        if let Some(Some(n)) = self.nets.get_mut(net) {
            n.spliced = n.spliced.saturating_sub(1);
        }
        Some((net, sp))
    }

    /// Close the socket of token `t` (abortively with `reset`) and forget it.
    pub(super) fn remove_sock(&mut self, t: Token, reset: bool) {
        match self.socks.remove(self.poll.registry(), t, reset) {
            Some(Removed::Flow { net, id, raw_ident }) => {
                if let Some(i) = raw_ident {
                    self.raw_idents.free(i);
                }
                if let Some(Some(n)) = self.nets.get_mut(net) {
                    n.flows.remove(&id);
                }
            }
            Some(Removed::Splice { net }) => {
                if let Some(Some(n)) = self.nets.get_mut(net) {
                    n.spliced = n.spliced.saturating_sub(1);
                }
            }
            Some(Removed::Dns { net, v6 }) => {
                if let Some(Some(n)) = self.nets.get_mut(net) {
                    n.dns_socks[usize::from(v6)] = None;
                }
            }
            Some(Removed::Listener) | None => {}
        }
    }
}
