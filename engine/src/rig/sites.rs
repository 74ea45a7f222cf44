//! The rig's calls for sites and overlay networks (see the module docs of the rig).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use tapnet_switch::{DomainConfig, DomainId};

use super::link::LinkFaults;
use super::site::{OverlayNet, Site, Vtep, vtep_ip};
use super::site_id::{OverlayId, SiteId};
use super::underlay::{MemUnderlay, UnderlayStats};
use super::{HostId, Rig, RigError};
use crate::overlay::{Entry, Overlay, OverlayConfig, VXLAN_PORT, Vni};
use crate::runtime::Engine;

impl Rig {
    /// Add a site: another engine in manual mode with its own pool (as
    /// [`RigConfig::pool`] says), stepped with the others.
    pub fn add_site(&mut self, name: &str) -> Result<SiteId, RigError> {
        if self.sites.len() >= (1 << 16) {
            return Err(RigError::Invalid("too many sites".into()));
        }
        let site = Site::start(name, &self.cfg)?;
        self.sites.push(site);
        Ok(SiteId(self.sites.len() - 1))
    }

    /// Every site, in the order they were added (site 0 first).
    pub fn site_ids(&self) -> impl Iterator<Item = SiteId> + use<> {
        (0..self.sites.len()).map(SiteId)
    }

    /// The name a site was added with (`"site0"` for the first).
    pub fn site_name(&self, s: SiteId) -> &str {
        &self.sites[s.0].name
    }

    /// A site's engine, for its counters and control calls.
    pub fn site_engine(&self, s: SiteId) -> &Engine {
        &self.sites[s.0].engine
    }

    /// A site's VTEP, once it serves an overlay network.
    pub fn overlay(&self, s: SiteId) -> Option<&Overlay> {
        self.sites[s.0].vtep.as_ref().map(|v| &v.overlay)
    }

    /// The underlay address of a site's VTEP (198.18.0.1 for site 0, and so on).
    pub fn vtep(&self, s: SiteId) -> Ipv4Addr {
        vtep_ip(s.0)
    }

    /// Whether the VTEPs made from now on (a site's VTEP is made with the first overlay
    /// network it serves) have UDP GSO and GRO on their simulated underlay: runs of
    /// equal-sized datagrams to one VTEP leave as one message, and the datagrams of one
    /// sender that arrive together are read as one run, then merged by software GRO.
    /// Off by default.
    pub fn set_underlay_offloads(&mut self, on: bool) {
        self.underlay_offloads = on;
    }

    /// Set the faults of a site's underlay link: each datagram its VTEP sends is lost,
    /// delayed and jittered once, as drawn at sending. Datagrams in flight keep their
    /// fate.
    pub fn set_underlay_faults(&mut self, s: SiteId, faults: LinkFaults) {
        self.sites[s.0].faults = faults;
    }

    /// The same faults on every site's underlay link.
    pub fn set_all_underlay_faults(&mut self, faults: LinkFaults) {
        for s in &mut self.sites {
            s.faults = faults;
        }
    }

    /// The faults of a site's underlay link.
    pub fn underlay_faults(&self, s: SiteId) -> LinkFaults {
        self.sites[s.0].faults
    }

    /// Cut (`true`) or heal (`false`) a site's underlay link: while cut, every datagram
    /// it sends, and every datagram that arrives for it, is dropped.
    pub fn partition_underlay(&mut self, s: SiteId, cut: bool) {
        self.sites[s.0].cut = cut;
    }

    /// Counters of a site's underlay link.
    pub fn underlay_stats(&self, s: SiteId) -> UnderlayStats {
        let site = &self.sites[s.0];
        UnderlayStats {
            sent: site.up.stats,
            received: site.down,
            unroutable: site.unroutable,
        }
    }

    /// Create a plain network (one bridge domain, no overlay) on site `s`; place hosts
    /// on it with [`Rig::add_site_host`].
    pub fn add_site_network(&mut self, s: SiteId, name: &str) -> Result<DomainId, RigError> {
        self.site_index(s)?;
        let d = self.sites[s.0].engine.add_domain(DomainConfig::default())?;
        self.networks.push((s.0, d, name.to_string()));
        Ok(d)
    }

    /// As [`Rig::add_host`], on network `net` of site `s`.
    pub fn add_site_host(
        &mut self,
        s: SiteId,
        name: &str,
        net: DomainId,
        cidr: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
    ) -> Result<HostId, RigError> {
        self.site_index(s)?;
        self.add_host_at(s.0, name, net, cidr, gateway)
    }

    /// Create overlay network `vni` spanning `sites`: on each, a bridge domain and the
    /// site VTEP's network for it (the VTEP is made on first use), with every other
    /// site's VTEP as a peer.
    pub fn add_overlay_network(
        &mut self,
        name: &str,
        vni: Vni,
        sites: &[SiteId],
    ) -> Result<OverlayId, RigError> {
        if sites.is_empty() {
            return Err(RigError::Invalid("an overlay network needs a site".into()));
        }
        for (i, s) in sites.iter().enumerate() {
            self.site_index(*s)?;
            if sites[..i].contains(s) {
                return Err(RigError::Invalid(format!("{s} is listed twice")));
            }
        }
        if self.overlays.iter().any(|o| o.vni == vni) {
            return Err(RigError::Invalid(format!("VNI {vni} is in use already")));
        }
        let mut members = Vec::with_capacity(sites.len());
        for s in sites {
            self.ensure_vtep(s.0)?;
            let site = &self.sites[s.0];
            let d = site.engine.add_domain(DomainConfig::default())?;
            let Some(v) = &site.vtep else {
                unreachable!("made above");
            };
            v.overlay.add_network(&site.engine, vni, d)?;
            for other in sites.iter().filter(|o| *o != s) {
                v.overlay.add_peer(vni, vtep_ip(other.0))?;
            }
            self.networks.push((s.0, d, name.to_string()));
            members.push((s.0, d));
        }
        self.overlays.push(OverlayNet {
            name: name.to_string(),
            vni,
            members,
        });
        Ok(OverlayId(self.overlays.len() - 1))
    }

    /// The name and VNI of an overlay network.
    pub fn overlay_network(&self, o: OverlayId) -> (&str, Vni) {
        let net = &self.overlays[o.0];
        (&net.name, net.vni)
    }

    /// The bridge domain serving overlay network `o` on site `s`, if it spans `s`.
    pub fn overlay_domain(&self, o: OverlayId, s: SiteId) -> Option<DomainId> {
        self.overlays[o.0]
            .members
            .iter()
            .find(|(i, _)| *i == s.0)
            .map(|(_, d)| *d)
    }

    /// Place a host on overlay network `o` at site `s` (as [`Rig::add_host`] does on a
    /// plain network), and tell every other site of the network where it is.
    pub fn add_overlay_host(
        &mut self,
        name: &str,
        o: OverlayId,
        s: SiteId,
        cidr: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
    ) -> Result<HostId, RigError> {
        let Some(net) = self.overlays.get(o.0) else {
            return Err(RigError::Invalid(format!("no overlay network {}", o.0)));
        };
        let Some(domain) = self.overlay_domain(o, s) else {
            return Err(RigError::Invalid(format!(
                "overlay network {} does not span {s}",
                net.name
            )));
        };
        let (vni, others): (Vni, Vec<usize>) = (
            net.vni,
            net.members
                .iter()
                .map(|(i, _)| *i)
                .filter(|i| *i != s.0)
                .collect(),
        );
        let h = self.add_host_at(s.0, name, domain, cidr, gateway)?;
        let entry = Entry {
            mac: self.hosts[h.0].info.mac,
            ip: Some(cidr.address()),
            vtep: vtep_ip(s.0),
        };
        for i in others {
            let site = &self.sites[i];
            if let Some(v) = &site.vtep {
                v.overlay.add_entry(&site.engine, vni, entry)?;
            }
        }
        Ok(h)
    }

    fn site_index(&self, s: SiteId) -> Result<usize, RigError> {
        if s.0 < self.sites.len() {
            Ok(s.0)
        } else {
            Err(RigError::Invalid(format!("no {s}")))
        }
    }

    /// Give site `i` its VTEP if it has none.
    fn ensure_vtep(&mut self, i: usize) -> Result<(), RigError> {
        if self.sites[i].vtep.is_some() {
            return Ok(());
        }
        let local = SocketAddrV4::new(vtep_ip(i), VXLAN_PORT);
        let mem = Arc::new(MemUnderlay::new(local, self.underlay_offloads));
        let mut cfg = OverlayConfig::new(local);
        cfg.source_sockets = 0;
        // The simulated underlay carries any datagram a small slot holds: the overlay
        // networks keep the hosts' MTU.
        cfg.mtu = Some(self.cfg.mtu);
        cfg.offloads = self.underlay_offloads;
        let site = &mut self.sites[i];
        let overlay = Overlay::with_underlay(&site.engine, cfg, mem.clone(), Vec::new())?;
        site.vtep = Some(Vtep { overlay, mem });
        Ok(())
    }
}
