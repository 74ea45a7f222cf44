//! The in-process rig: many virtual hosts, each with its own smoltcp TCP/IP stack, on
//! memory ports of a real engine, all driven by one simulated clock.
//!
//! Nothing here sleeps or reads the wall clock. [`Rig::step`] advances the clock by one
//! tick and, at the new time, delivers the frames whose link delay has passed, polls every
//! host's interface, offers what the hosts sent to their links (loss, delay, jitter,
//! partition, drawn from one ChaCha8 generator seeded by [`RigConfig::seed`]), runs the
//! engine's stages until they are empty, and offers what the engine sent back to the
//! links. The same seed and the same calls therefore give the same frames at the same
//! times, which [`Rig::digest`] summarises in one number.
//!
//! The driving loops ([`Rig::run_until`] and the traffic helpers) skip idle time: when no
//! frame is queued anywhere, the clock jumps to the earliest of the hosts' smoltcp timers,
//! the next in-flight frame and any [`Rig::wake_at`], so a retransmission timeout of
//! seconds costs one step, not thousands.
//!
//! ```
//! use std::time::Duration;
//! use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
//! use tapnet_engine::rig::Rig;
//!
//! let mut rig = Rig::new(7);
//! let net = rig.add_network("red").unwrap();
//! let a = rig.add_host("a", net, Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 2), 24), None).unwrap();
//! let _b = rig.add_host("b", net, Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 3), 24), None).unwrap();
//! let report = rig.ping(a, Ipv4Address::new(10, 0, 0, 3), 3, Duration::from_secs(1));
//! assert_eq!(report.received, 3);
//! ```
//!
//! # Several engines
//!
//! A rig starts with one engine, site 0 (what [`Rig::engine`] returns). [`Rig::add_site`]
//! adds another engine in manual mode with its own pool, stepped by the same
//! [`Rig::step`]. A site that serves an overlay network has a VTEP
//! ([`Overlay`](crate::overlay::Overlay)) over an in-memory underlay at address
//! [`Rig::vtep`]. What a VTEP sends crosses its site's underlay link
//! ([`Rig::set_underlay_faults`]: loss, delay, jitter from the same seeded generator,
//! [`Rig::partition_underlay`]) and is delivered when due to the VTEP holding the
//! destination address, within the same step when it is due at once. The rig plays the
//! control plane: [`Rig::add_overlay_network`] makes every site of a network a peer of
//! every other, and [`Rig::add_overlay_host`] places a host on one site and its entry
//! (MAC, address for proxy ARP, VTEP) on all the others. Underlay events go into the
//! digest and into [`Rig::underlay_trace`].
//!
//! ```
//! use std::time::Duration;
//! use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
//! use tapnet_engine::overlay::Vni;
//! use tapnet_engine::rig::{Rig, SiteId};
//!
//! let mut rig = Rig::new(7);
//! let east = rig.add_site("east").unwrap();
//! let sites = [SiteId(0), east];
//! let net = rig.add_overlay_network("blue", Vni::new(100).unwrap(), &sites).unwrap();
//! let cidr = |last| Ipv4Cidr::new(Ipv4Address::new(10, 1, 0, last), 24);
//! let a = rig.add_overlay_host("a", net, SiteId(0), cidr(2), None).unwrap();
//! let _b = rig.add_overlay_host("b", net, east, cidr(3), None).unwrap();
//! let report = rig.ping(a, Ipv4Address::new(10, 1, 0, 3), 3, Duration::from_secs(1));
//! // a's ARP is answered by its own VTEP (proxy ARP), so b has not heard of a, and
//! // smoltcp drops the first reply while b asks in turn.
//! assert_eq!(report.rtts[0], None);
//! assert_eq!(report.received, 2);
//! ```

mod apps;
mod config;
mod host;
mod host_id;
mod link;
mod sim;
mod site;
mod site_id;
mod sites;
mod time;
mod underlay;

use std::collections::BTreeSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use tapnet_switch::{DomainConfig, DomainId, MacAddr};

pub use apps::{PingReport, TransferReport, UdpReport};
pub use config::{RigConfig, RigError};
pub use host::HostInfo;
pub use link::{DirStats, Direction, Fate, LinkEvent, LinkFaults, LinkStats};
pub use site_id::{OverlayId, SiteId};
pub use underlay::{UnderlayEvent, UnderlayStats};

use host::{Host, HostDevice};
pub use host_id::HostId;
use link::{Digest, Wire};
use time::instant;

use crate::port::MemPort;
use crate::runtime::Engine;
use site::{OverlayNet, Site};

/// Smallest IP MTU (RFC 791: every host takes 68-byte datagrams).
const MIN_MTU: u32 = 68;
/// Largest IP MTU: an Ethernet frame of it fits a small pool slot.
const MAX_MTU: u32 = 1800;

/// A simulated multi-host network around a real engine in manual mode (or several,
/// joined by a simulated underlay: see [`Rig::add_site`]).
pub struct Rig {
    cfg: RigConfig,
    now: Duration,
    rng: ChaCha8Rng,
    hosts: Vec<Host>,
    /// Every bridge domain made through the rig: site, domain, name.
    networks: Vec<(usize, DomainId, String)>,
    overlays: Vec<OverlayNet>,
    underlay_offloads: bool,
    wakes: BTreeSet<Duration>,
    engine_idle: bool,
    digest: Digest,
    trace: Option<Vec<LinkEvent>>,
    underlay_trace: Option<Vec<UnderlayEvent>>,
    // Last: hosts' ports and VTEPs go before the engines do.
    sites: Vec<Site>,
}

impl Rig {
    /// A rig with [`RigConfig::new`]`(seed)`.
    ///
    /// # Panics
    /// If the engine cannot start (the process cannot create an epoll instance).
    pub fn new(seed: u64) -> Rig {
        match Rig::with_config(RigConfig::new(seed)) {
            Ok(r) => r,
            Err(e) => panic!("cannot start the rig's engine: {e:?}"),
        }
    }

    /// A rig built as `cfg` says.
    pub fn with_config(cfg: RigConfig) -> Result<Rig, RigError> {
        if cfg.tick.is_zero() {
            return Err(RigError::Invalid(
                "the tick must be longer than zero".into(),
            ));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&cfg.mtu) {
            return Err(RigError::Invalid(format!(
                "MTU {} is outside {MIN_MTU}..={MAX_MTU} (frames must fit the pool's small slots)",
                cfg.mtu
            )));
        }
        if cfg.port_capacity == 0 || cfg.host_queue == 0 {
            return Err(RigError::Invalid(
                "port rings and host queues need room for at least one frame".into(),
            ));
        }
        let site = Site::start("site0", &cfg)?;
        Ok(Rig {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            now: Duration::ZERO,
            hosts: Vec::new(),
            networks: Vec::new(),
            overlays: Vec::new(),
            underlay_offloads: false,
            wakes: BTreeSet::new(),
            engine_idle: true,
            digest: Digest::default(),
            trace: None,
            underlay_trace: None,
            sites: vec![site],
        })
    }

    /// How it was built.
    pub fn config(&self) -> &RigConfig {
        &self.cfg
    }

    /// The engine (site 0's), for its counters ([`Engine::stats`]) and control calls.
    pub fn engine(&self) -> &Engine {
        &self.sites[0].engine
    }

    /// Create a network: one bridge domain of the engine (site 0's).
    pub fn add_network(&mut self, name: &str) -> Result<DomainId, RigError> {
        self.add_network_with(name, DomainConfig::default())
    }

    /// Create a network whose bridge domain has the settings `cfg` (ICC, MAC table).
    pub fn add_network_with(
        &mut self,
        name: &str,
        cfg: DomainConfig,
    ) -> Result<DomainId, RigError> {
        let d = self.sites[0].engine.add_domain(cfg)?;
        self.networks.push((0, d, name.to_string()));
        Ok(d)
    }

    /// The name a network of site 0 was created with.
    pub fn network_name(&self, net: DomainId) -> Option<&str> {
        self.site_network_name(SiteId(0), net)
    }

    /// The name a network of site `s` was created with.
    pub fn site_network_name(&self, s: SiteId, net: DomainId) -> Option<&str> {
        self.networks
            .iter()
            .find(|(i, d, _)| *i == s.0 && *d == net)
            .map(|(_, _, n)| n.as_str())
    }

    /// Add a host on `net` (of site 0) with address `cidr` and an optional default
    /// gateway. Its MAC is `02:42` followed by the address (as tapnet assigns endpoint
    /// MACs), pinned in the network as a static entry.
    pub fn add_host(
        &mut self,
        name: &str,
        net: DomainId,
        cidr: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
    ) -> Result<HostId, RigError> {
        self.add_host_at(0, name, net, cidr, gateway)
    }

    /// Add a host on `net` of site `site` (see [`Rig::add_host`]).
    fn add_host_at(
        &mut self,
        site: usize,
        name: &str,
        net: DomainId,
        cidr: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
    ) -> Result<HostId, RigError> {
        let mac = MacAddr::from_ipv4(cidr.address());
        if !mac.is_unicast() || cidr.address().is_unspecified() {
            return Err(RigError::Invalid(format!("{cidr} is not a host address")));
        }
        let mut dev = HostDevice::new(self.cfg.mtu as usize);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        config.random_seed = self.rng.next_u64();
        let mut iface = Interface::new(config, &mut dev, instant(self.now));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::Ipv4(cidr));
        });
        if let Some(gw) = gateway {
            if iface.routes_mut().add_default_ipv4_route(gw).is_err() {
                return Err(RigError::Invalid("smoltcp's route table is full".into()));
            }
        }
        let engine = &self.sites[site].engine;
        let (port, peer) = MemPort::pair(
            name,
            engine.pool().clone(),
            self.cfg.port_capacity,
            self.cfg.mtu,
            false,
        );
        let port = engine.add_port(Box::new(port), net)?;
        if let Err(e) = engine.add_static_mac(net, mac, port) {
            let _ = engine.remove_port(port);
            return Err(e.into());
        }
        self.hosts.push(Host {
            info: HostInfo {
                name: name.to_string(),
                cidr,
                gateway,
                mac,
                net,
                port,
                site: SiteId(site),
            },
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            peer,
            faults: LinkFaults::NONE,
            cut: false,
            up: Wire::default(),
            down: Wire::default(),
            arp_from: BTreeSet::new(),
        });
        Ok(HostId(self.hosts.len() - 1))
    }

    /// Every host, in the order they were added.
    pub fn host_ids(&self) -> impl Iterator<Item = HostId> + use<> {
        (0..self.hosts.len()).map(HostId)
    }

    /// Name, address, MAC, network and engine port of a host.
    pub fn host(&self, h: HostId) -> &HostInfo {
        &self.hosts[h.0].info
    }

    /// A host's IPv4 address.
    pub fn ip(&self, h: HostId) -> Ipv4Address {
        self.hosts[h.0].ip()
    }

    /// A host's stack, for traffic the helpers don't cover: add sockets to the set, use
    /// them between steps (pass [`Rig::instant`] where smoltcp wants the time), and
    /// remove them when done.
    pub fn stack(&mut self, h: HostId) -> (&mut Interface, &mut SocketSet<'static>) {
        let host = &mut self.hosts[h.0];
        (&mut host.iface, &mut host.sockets)
    }

    /// Set the faults of a host's link (both directions). Frames already in flight keep
    /// the fate they were given.
    pub fn set_faults(&mut self, h: HostId, faults: LinkFaults) {
        self.hosts[h.0].faults = faults;
    }

    /// The faults of a host's link.
    pub fn faults(&self, h: HostId) -> LinkFaults {
        self.hosts[h.0].faults
    }

    /// Cut (`true`) or heal (`false`) a host's link. While cut, every frame sent either
    /// way is dropped, and so is every frame in flight that arrives.
    pub fn partition(&mut self, h: HostId, cut: bool) {
        self.hosts[h.0].cut = cut;
    }

    /// Whether a host's link is cut.
    pub fn is_partitioned(&self, h: HostId) -> bool {
        self.hosts[h.0].cut
    }

    /// Counters of a host's link.
    pub fn link_stats(&self, h: HostId) -> LinkStats {
        let host = &self.hosts[h.0];
        LinkStats {
            up: host.up.stats,
            down: host.down.stats,
        }
    }

    /// Whether host `h` has received an ARP request or reply from `ip` aimed at its own
    /// address, which is when smoltcp puts `ip` in its neighbour cache. Read from the
    /// wire: smoltcp does not expose the cache itself (whose entries expire after 60 s).
    pub fn arp_seen(&self, h: HostId, ip: Ipv4Address) -> bool {
        self.hosts[h.0].arp_from.contains(&ip)
    }

    /// Simulated time since the rig was made.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The simulated time as smoltcp counts it.
    pub fn instant(&self) -> Instant {
        instant(self.now)
    }

    /// Make the driving loops stop skipping idle time at `at`, so a caller's own timer
    /// (the next packet of a paced sender, say) fires on time.
    pub fn wake_at(&mut self, at: Duration) {
        if at > self.now {
            self.wakes.insert(at);
        }
    }

    /// Record every link event, and every underlay event, from now on (`true`), or stop
    /// and discard (`false`).
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on.then(Vec::new);
        self.underlay_trace = on.then(Vec::new);
    }

    /// Link events recorded since [`Rig::set_trace`]`(true)`.
    pub fn trace(&self) -> &[LinkEvent] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Underlay events (datagrams between sites) recorded since
    /// [`Rig::set_trace`]`(true)`.
    pub fn underlay_trace(&self) -> &[UnderlayEvent] {
        self.underlay_trace.as_deref().unwrap_or(&[])
    }

    /// A hash of every link event so far: time, host, direction, length, fate and the
    /// first 64 bytes of the frame, and of every underlay event likewise (site, VTEP,
    /// direction, length, fate, first 64 bytes of the datagram). Equal digests mean (with
    /// overwhelming probability) identical runs.
    pub fn digest(&self) -> u64 {
        self.digest.value()
    }

    /// Advance the clock by one tick and run everything once at the new time.
    pub fn step(&mut self) {
        self.now += self.cfg.tick;
        self.run_at();
    }

    /// Step until `done` returns true (checked before the first step and after each) or
    /// `limit` of simulated time has passed; returns whether `done` was reached. Idle time
    /// is skipped (see the module docs).
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Rig) -> bool) -> bool {
        let deadline = self.now + limit;
        self.drive(deadline, |rig| Ok(done(rig))).unwrap_or(false)
    }

    /// Run for `limit` of simulated time.
    pub fn run_for(&mut self, limit: Duration) {
        self.run_until(limit, |_| false);
    }
}
