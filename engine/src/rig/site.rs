//! Sites: the rig's engines, each with its own pool, joined by a simulated underlay, and
//! the overlay networks that span them (see the parent module's docs).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use tapnet_switch::DomainId;

use super::config::{RigConfig, RigError};
use super::link::{DirStats, LinkFaults, Wire};
use super::underlay::{Datagram, MemUnderlay};
use crate::overlay::{Overlay, Vni};
use crate::runtime::{Engine, EngineConfig};

/// First address of the sites' VTEPs (198.18.0.0/15 is set aside for benchmarks, RFC
/// 2544 §C.2.2); site `n` has this plus `n + 1`.
const VTEP_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

/// A site's VTEP and its end of the underlay.
pub(super) struct Vtep {
    pub(super) overlay: Overlay,
    pub(super) mem: Arc<MemUnderlay>,
}

/// One engine of the rig.
pub(super) struct Site {
    pub(super) name: String,
    pub(super) vtep: Option<Vtep>,
    pub(super) faults: LinkFaults,
    pub(super) cut: bool,
    /// Datagrams this site's VTEP sent, in flight.
    pub(super) up: Wire<Datagram>,
    /// Arrivals at this site's VTEP.
    pub(super) down: DirStats,
    pub(super) unroutable: u64,
    pub(super) idle: bool,
    // Last: the VTEP's ports go before the engine does.
    pub(super) engine: Engine,
}

impl Site {
    pub(super) fn start(name: &str, cfg: &RigConfig) -> Result<Site, RigError> {
        let engine = Engine::start(EngineConfig {
            manual: true,
            pool: cfg.pool,
            ..Default::default()
        })?;
        Ok(Site {
            name: name.to_string(),
            vtep: None,
            faults: LinkFaults::NONE,
            cut: false,
            up: Wire::default(),
            down: DirStats::default(),
            unroutable: 0,
            idle: true,
            engine,
        })
    }

    /// Whether its inbox holds datagrams the engine has not read.
    pub(super) fn inbox_pending(&self) -> bool {
        self.vtep.as_ref().is_some_and(|v| v.mem.has_inbox())
    }
}

/// An overlay network: its VNI and, per site it spans, the bridge domain serving it.
pub(super) struct OverlayNet {
    pub(super) name: String,
    pub(super) vni: Vni,
    pub(super) members: Vec<(usize, DomainId)>,
}

/// The VTEP address of site `i`.
pub(super) fn vtep_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(VTEP_BASE).wrapping_add(i as u32 + 1))
}

/// The site whose VTEP receives at `to`.
pub(super) fn route(sites: &[Site], to: SocketAddrV4) -> Option<usize> {
    let off = u32::from(*to.ip()).wrapping_sub(u32::from(VTEP_BASE));
    let i = (off as usize).checked_sub(1)?;
    let v = sites.get(i)?.vtep.as_ref()?;
    (v.mem.local() == to).then_some(i)
}
