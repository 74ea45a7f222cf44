//! Bridge domains and the per-frame forwarding decision.

use std::sync::Arc;
use std::time::Duration;

use tapnet_wire::EthernetFrame;

use crate::counters::{DomainCounters, PortGuardCounters, SwitchCounters};
use crate::error::SwitchError;
use crate::guard::{FloodLimit, PortBinding, TokenBucket};
use crate::table::{LearnOutcome, MacTable, TableConfig};
use crate::{DomainId, MacAddr, PortId};

/// Settings of one bridge domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainConfig {
    /// Its MAC table.
    pub table: TableConfig,
    /// Inter-container communication: Docker's
    /// `com.docker.network.bridge.enable_icc` (default true). When false,
    /// frames from [`PortRole::Endpoint`] ports reach only
    /// [`PortRole::Gateway`] ports, as Docker's `-i br -o br -j DROP` rule
    /// lets containers reach the host but not each other.
    pub icc: bool,
    /// How fast each [`PortRole::Endpoint`] port may make the domain flood
    /// (default [`FloodLimit::default`]); `None`: no limit. Gateway ports,
    /// the engine's own, are not limited.
    pub flood_limit: Option<FloodLimit>,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            table: TableConfig::default(),
            icc: true,
            flood_limit: Some(FloodLimit::default()),
        }
    }
}

/// What a port is to its domain; decides what the ICC policy lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PortRole {
    /// A container's interface (the default of [`Switch::attach`]).
    #[default]
    Endpoint,
    /// The network's gateway (the engine's ARP/ICMP/DNS/NAT port): reachable
    /// from every endpoint and able to reach every endpoint, whatever
    /// [`DomainConfig::icc`] says.
    Gateway,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Send it to this one port (never the ingress port, always in the same
    /// domain).
    Forward(PortId),
    /// Send a copy to every port [`Switch::flood_targets`] names: the
    /// domain's ports except the ingress (only its gateways when the ICC
    /// policy isolates the ingress).
    Flood(DomainId),
    /// Discard it; the reason has been counted.
    Drop(DropReason),
}

/// Why [`Switch::process`] dropped a frame. Each has a counter of the same
/// name (`drop_*`) in [`SwitchCounters`] or [`DomainCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than the 14-byte Ethernet header.
    Malformed,
    /// The ingress port is not attached to any domain.
    NoDomain,
    /// Source MAC is multicast, broadcast or all-zero, which no station may
    /// send from (IEEE 802.1Q-2018 §8.7; Linux's bridge drops these too).
    BadSource,
    /// The destination was learned on the ingress port itself: the frame
    /// would go back where it came from. (A Linux bridge port without hairpin
    /// mode does the same.)
    Hairpin,
    /// The domain has inter-container communication off
    /// ([`DomainConfig::icc`] false) and the frame goes from one endpoint to
    /// another (known unicast), or it would be flooded but the domain has no
    /// gateway port to receive it.
    Isolated,
    /// The ingress port has a [`PortBinding`] and the frame's source MAC, IP
    /// source or ARP sender is not the port's own.
    Spoofed,
    /// The frame would be flooded but its ingress port is over the domain's
    /// [`FloodLimit`].
    FloodRate,
}

struct Domain {
    table: MacTable,
    /// Inter-container communication allowed.
    icc: bool,
    flood_limit: Option<FloodLimit>,
    /// Attached ports in attach order (the flood order).
    ports: Vec<PortId>,
    /// The part of `ports` with [`PortRole::Gateway`], in the same order: the
    /// whole flood list of an isolated endpoint.
    gateways: Vec<PortId>,
    counters: Arc<DomainCounters>,
}

impl Domain {
    /// Whether frames from a port with `role` are restricted to gateways.
    #[inline]
    fn isolates(&self, role: PortRole) -> bool {
        !self.icc && role == PortRole::Endpoint
    }
}

/// Where a port is attached and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attachment {
    domain: DomainId,
    role: PortRole,
}

/// A port's ingress guards: what it may send from, its flood budget, and
/// what they dropped.
struct PortGuard {
    binding: Option<PortBinding>,
    bucket: TokenBucket,
    counters: Arc<PortGuardCounters>,
}

/// A set of isolated learning bridges sharing one port namespace.
///
/// One `Switch` is owned by one worker thread; counters can be read from any
/// thread through the `Arc`s returned by [`counters`](Self::counters) and
/// [`domain_counters`](Self::domain_counters).
#[derive(Default)]
pub struct Switch {
    /// Indexed by `DomainId`.
    domains: Vec<Option<Domain>>,
    /// Indexed by `PortId`.
    port_domain: Vec<Option<Attachment>>,
    /// Indexed by `PortId`; `Some` exactly for attached ports.
    guards: Vec<Option<PortGuard>>,
    counters: Arc<SwitchCounters>,
}

impl Switch {
    /// Exclusive upper bound on domain ids.
    pub const MAX_DOMAINS: u32 = 4096;
    /// Exclusive upper bound on port ids.
    pub const MAX_PORTS: u32 = 1 << 16;

    /// A switch with no domains.
    pub fn new() -> Switch {
        Switch::default()
    }

    fn domain(&self, id: DomainId) -> Option<&Domain> {
        self.domains.get(id.0 as usize)?.as_ref()
    }

    fn domain_mut(&mut self, id: DomainId) -> Result<&mut Domain, SwitchError> {
        self.domains
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(SwitchError::UnknownDomain(id))
    }

    /// Creates an empty domain, allocating its MAC table.
    pub fn add_domain(&mut self, id: DomainId, config: DomainConfig) -> Result<(), SwitchError> {
        if id.0 >= Self::MAX_DOMAINS {
            return Err(SwitchError::DomainIdOutOfRange {
                domain: id,
                max: Self::MAX_DOMAINS,
            });
        }
        if config.table.capacity > TableConfig::MAX_CAPACITY {
            return Err(SwitchError::CapacityTooLarge {
                capacity: config.table.capacity,
                max: TableConfig::MAX_CAPACITY,
            });
        }
        let idx = id.0 as usize;
        if self.domains.len() <= idx {
            self.domains.resize_with(idx + 1, || None);
        }
        if self.domains[idx].is_some() {
            return Err(SwitchError::DomainExists(id));
        }
        self.domains[idx] = Some(Domain {
            table: MacTable::new(config.table),
            icc: config.icc,
            flood_limit: config.flood_limit,
            ports: Vec::new(),
            gateways: Vec::new(),
            counters: Arc::default(),
        });
        Ok(())
    }

    /// Removes a domain that has no ports attached.
    pub fn remove_domain(&mut self, id: DomainId) -> Result<(), SwitchError> {
        let d = self.domain_mut(id)?;
        if !d.ports.is_empty() {
            return Err(SwitchError::DomainNotEmpty {
                domain: id,
                ports: d.ports.len(),
            });
        }
        self.domains[id.0 as usize] = None;
        Ok(())
    }

    /// Attaches `port` to domain `id` as a [`PortRole::Endpoint`]. A port is
    /// in at most one domain.
    pub fn attach(&mut self, port: PortId, id: DomainId) -> Result<(), SwitchError> {
        self.attach_as(port, id, PortRole::Endpoint)
    }

    /// Attaches `port` to domain `id` with `role`. A port is in at most one
    /// domain.
    pub fn attach_as(
        &mut self,
        port: PortId,
        id: DomainId,
        role: PortRole,
    ) -> Result<(), SwitchError> {
        if port.0 >= Self::MAX_PORTS {
            return Err(SwitchError::PortIdOutOfRange {
                port,
                max: Self::MAX_PORTS,
            });
        }
        self.domain_mut(id)?;
        match self.domain_of(port) {
            Some(d) if d == id => {
                return Err(SwitchError::PortAlreadyAttached { port, domain: id });
            }
            Some(attached) => {
                return Err(SwitchError::PortInOtherDomain {
                    port,
                    domain: id,
                    attached,
                });
            }
            None => {}
        }
        let idx = port.0 as usize;
        if self.port_domain.len() <= idx {
            self.port_domain.resize(idx + 1, None);
        }
        self.port_domain[idx] = Some(Attachment { domain: id, role });
        if self.guards.len() <= idx {
            self.guards.resize_with(idx + 1, || None);
        }
        self.guards[idx] = Some(PortGuard {
            binding: None,
            bucket: TokenBucket::new(),
            counters: Arc::default(),
        });
        let d = self.domain_mut(id)?;
        d.table.reserve_port(port);
        d.ports.push(port);
        if role == PortRole::Gateway {
            d.gateways.push(port);
        }
        Ok(())
    }

    /// Detaches `port` from its domain, removing every MAC entry (learned and
    /// static) that points at it.
    pub fn detach(&mut self, port: PortId) -> Result<(), SwitchError> {
        let id = self.domain_of(port).ok_or(SwitchError::UnknownPort(port))?;
        self.port_domain[port.0 as usize] = None;
        self.guards[port.0 as usize] = None;
        let d = self.domain_mut(id)?;
        d.ports.retain(|&p| p != port);
        d.gateways.retain(|&p| p != port);
        let flushed = d.table.flush_port(port) + d.table.remove_port_statics(port);
        d.table.release_port(port);
        d.counters.flushed.add(flushed as u64);
        Ok(())
    }

    /// Pins `mac` to `port` in domain `id`; learning never overrides it.
    /// `port` must be attached to `id`.
    pub fn add_static(
        &mut self,
        id: DomainId,
        mac: MacAddr,
        port: PortId,
    ) -> Result<(), SwitchError> {
        if mac.is_multicast() || mac.is_zero() {
            return Err(SwitchError::InvalidStaticMac(mac));
        }
        self.domain_mut(id)?;
        match self.domain_of(port) {
            Some(d) if d == id => {}
            Some(attached) => {
                return Err(SwitchError::PortInOtherDomain {
                    port,
                    domain: id,
                    attached,
                });
            }
            None => return Err(SwitchError::UnknownPort(port)),
        }
        self.domain_mut(id)?.table.add_static(mac, port)
    }

    /// Removes the static entry for `mac` in domain `id`. Succeeds (doing
    /// nothing) if there is none, so callers can retry or race with
    /// [`detach`](Self::detach) freely.
    pub fn remove_static(&mut self, id: DomainId, mac: MacAddr) -> Result<(), SwitchError> {
        self.domain_mut(id)?.table.remove_static(mac);
        Ok(())
    }

    /// Restricts what `port` may send from ([`PortBinding`]), or lifts the
    /// restriction (`None`). A port starts without a binding; detaching it
    /// drops its binding.
    pub fn set_binding(
        &mut self,
        port: PortId,
        binding: Option<PortBinding>,
    ) -> Result<(), SwitchError> {
        if let Some(b) = &binding {
            b.validate()?;
        }
        let g = self
            .guards
            .get_mut(port.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(SwitchError::UnknownPort(port))?;
        g.binding = binding;
        Ok(())
    }

    /// The binding of `port`, if it has one.
    pub fn binding(&self, port: PortId) -> Option<&PortBinding> {
        self.guards.get(port.0 as usize)?.as_ref()?.binding.as_ref()
    }

    /// The guard counters of `port` (while it stays attached), shareable
    /// with other threads.
    pub fn port_counters(&self, port: PortId) -> Option<Arc<PortGuardCounters>> {
        let g = self.guards.get(port.0 as usize)?.as_ref()?;
        Some(Arc::clone(&g.counters))
    }

    /// Where `port` is attached and as what.
    #[inline]
    fn attachment(&self, port: PortId) -> Option<Attachment> {
        self.port_domain.get(port.0 as usize).copied().flatten()
    }

    /// The domain `port` is attached to.
    #[inline]
    pub fn domain_of(&self, port: PortId) -> Option<DomainId> {
        self.attachment(port).map(|a| a.domain)
    }

    /// The role `port` was attached with.
    #[inline]
    pub fn role_of(&self, port: PortId) -> Option<PortRole> {
        self.attachment(port).map(|a| a.role)
    }

    /// Ports attached to domain `id` as [`PortRole::Gateway`], in attach
    /// order; empty if it does not exist.
    pub fn gateways(&self, id: DomainId) -> &[PortId] {
        self.domain(id).map_or(&[], |d| &d.gateways)
    }

    /// Whether domain `id` allows inter-container communication
    /// ([`DomainConfig::icc`]); `None` if it does not exist.
    pub fn icc(&self, id: DomainId) -> Option<bool> {
        self.domain(id).map(|d| d.icc)
    }

    /// Ports attached to domain `id`, in attach order; empty if it does not
    /// exist.
    pub fn ports(&self, id: DomainId) -> &[PortId] {
        self.domain(id).map_or(&[], |d| &d.ports)
    }

    /// Where a [`Decision::Flood`] from `ingress` goes: every port of the
    /// domain except `ingress`. When the domain has ICC off and `ingress` is
    /// not one of its gateways, only the domain's gateway ports.
    pub fn flood_targets(
        &self,
        id: DomainId,
        ingress: PortId,
    ) -> impl Iterator<Item = PortId> + '_ {
        let list: &[PortId] = match self.domain(id) {
            None => &[],
            Some(d) => {
                let role = match self.attachment(ingress) {
                    Some(a) if a.domain == id => a.role,
                    // A stranger to the domain gets the restrictive answer.
                    _ => PortRole::Endpoint,
                };
                if d.isolates(role) {
                    &d.gateways
                } else {
                    &d.ports
                }
            }
        };
        list.iter().copied().filter(move |&p| p != ingress)
    }

    /// Ids of all existing domains, ascending.
    pub fn domains(&self) -> impl Iterator<Item = DomainId> + '_ {
        self.domains
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_some())
            .map(|(i, _)| DomainId(i as u32))
    }

    /// The MAC table of domain `id` (for inspection).
    pub fn table(&self, id: DomainId) -> Option<&MacTable> {
        self.domain(id).map(|d| &d.table)
    }

    /// Switch-wide counters, shareable with other threads.
    pub fn counters(&self) -> Arc<SwitchCounters> {
        Arc::clone(&self.counters)
    }

    /// Counters of domain `id`, shareable with other threads. A domain that
    /// is removed and re-added gets fresh counters.
    pub fn domain_counters(&self, id: DomainId) -> Option<Arc<DomainCounters>> {
        self.domain(id).map(|d| Arc::clone(&d.counters))
    }

    /// Decides where `frame`, received on `ingress` at `now`, goes, learning
    /// its source MAC on the way. Never allocates; every drop is counted.
    ///
    /// 1. Shorter than 14 bytes → `Drop(Malformed)`.
    /// 2. `ingress` in no domain → `Drop(NoDomain)`.
    /// 3. Source multicast, broadcast or zero → `Drop(BadSource)`.
    /// 4. `ingress` has a [`PortBinding`] that does not allow the frame →
    ///    `Drop(Spoofed)`.
    /// 5. Learn the source on `ingress` (unless the port is at its learning
    ///    limit, [`TableConfig::port_capacity`]).
    /// 6. Destination multicast or broadcast → `Flood`.
    /// 7. Destination known on `ingress` → `Drop(Hairpin)`; known elsewhere →
    ///    `Forward`; unknown → `Flood`.
    ///
    /// A `Flood` from an endpoint port over the domain's [`FloodLimit`] becomes
    /// `Drop(FloodRate)`.
    ///
    /// With ICC off ([`DomainConfig::icc`] false) and an
    /// [`Endpoint`](PortRole::Endpoint) ingress, step 7 turns a `Forward` to
    /// another endpoint into `Drop(Isolated)`, and a `Flood` (whose targets
    /// are then only the gateways) into `Drop(Isolated)` if the domain has no
    /// gateway.
    #[inline]
    pub fn process(&mut self, ingress: PortId, frame: &[u8], now: Duration) -> Decision {
        self.counters.processed.inc();
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drop_malformed.inc();
            return Decision::Drop(DropReason::Malformed);
        };
        let Some(Attachment { domain: id, role }) = self.attachment(ingress) else {
            self.counters.drop_no_domain.inc();
            return Decision::Drop(DropReason::NoDomain);
        };
        let Some(d) = self.domains.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            // Unreachable: attach requires the domain and remove_domain
            // requires it to be empty. Counted rather than trusted.
            self.counters.drop_no_domain.inc();
            return Decision::Drop(DropReason::NoDomain);
        };
        let Some(guard) = self
            .guards
            .get_mut(ingress.0 as usize)
            .and_then(Option::as_mut)
        else {
            // Unreachable: attach makes the guard, detach removes both.
            self.counters.drop_no_domain.inc();
            return Decision::Drop(DropReason::NoDomain);
        };
        let c = &*d.counters;
        c.received.inc();
        let isolated = d.isolates(role);

        let src = eth.src_addr();
        if src.is_multicast() || src.is_zero() {
            c.drop_bad_source.inc();
            return Decision::Drop(DropReason::BadSource);
        }
        if let Some(b) = &guard.binding {
            if !b.allows(frame) {
                c.spoof_drops.inc();
                guard.counters.spoof_drops.inc();
                return Decision::Drop(DropReason::Spoofed);
            }
        }
        match d.table.learn(src, ingress, now) {
            LearnOutcome::New => c.learned.inc(),
            LearnOutcome::Moved => c.moved.inc(),
            LearnOutcome::TableFull => c.table_full.inc(),
            LearnOutcome::PortLimit => {
                c.learn_limit_drops.inc();
                guard.counters.learn_limit_drops.inc();
            }
            LearnOutcome::Refreshed | LearnOutcome::StaticIgnored => {}
        }
        // Floods from endpoints spend the port's budget; the gateway is ours.
        let limit = d.flood_limit.filter(|_| role == PortRole::Endpoint);
        let mut flood = |unknown: bool| {
            if isolated && d.gateways.is_empty() {
                c.drop_isolated.inc();
                return Decision::Drop(DropReason::Isolated);
            }
            if let Some(l) = limit {
                if !guard.bucket.take(l, now) {
                    c.flood_rate_drops.inc();
                    guard.counters.flood_rate_drops.inc();
                    return Decision::Drop(DropReason::FloodRate);
                }
            }
            c.flooded.inc();
            if unknown {
                c.flooded_unknown.inc();
            }
            Decision::Flood(id)
        };

        let dst = eth.dst_addr();
        if dst.is_multicast() {
            return flood(false);
        }
        match d.table.lookup(dst, now) {
            Some(p) if p == ingress => {
                c.drop_hairpin.inc();
                Decision::Drop(DropReason::Hairpin)
            }
            Some(p) => {
                // Only an isolated ingress pays for the egress port's role.
                if isolated && role_at(&self.port_domain, p) != Some(PortRole::Gateway) {
                    c.drop_isolated.inc();
                    return Decision::Drop(DropReason::Isolated);
                }
                c.forwarded.inc();
                Decision::Forward(p)
            }
            None => flood(true),
        }
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work:
    /// the soonest [`MacTable::next_expiry`] over all domains.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.domains
            .iter()
            .flatten()
            .filter_map(|d| d.table.next_expiry())
            .min()
    }

    /// Ages every domain's MAC table at `now`. Safe to call at any time;
    /// cheap for tables with nothing due.
    pub fn handle_timeout(&mut self, now: Duration) {
        for d in self.domains.iter_mut().flatten() {
            let aged = d.table.age(now);
            d.counters.aged.add(aged as u64);
        }
    }
}

/// The role of `port` in a port table (a free function so that it can be
/// called while a domain is borrowed mutably).
#[inline]
fn role_at(ports: &[Option<Attachment>], port: PortId) -> Option<PortRole> {
    ports
        .get(port.0 as usize)
        .copied()
        .flatten()
        .map(|a| a.role)
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for id in self.domains() {
            m.entry(&id, &self.ports(id));
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests;
