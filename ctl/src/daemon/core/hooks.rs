//! The core's side of the swarm, apart from what uses it: the overlay driver's names
//! and the [`SwarmHooks`] the swarm service implements (see `swarm.rs` for how the core
//! uses them). A leaf: it uses nothing else of the core.

use std::net::Ipv4Addr;

use crate::cluster::{NetworkSpec as SwarmSpec, SwarmNetwork};

/// The overlay driver's name.
pub const OVERLAY: &str = "overlay";

/// Docker's option holding an overlay network's VNI.
pub const OPT_VXLANID: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// The MTU of overlay networks' interfaces: a 1500-byte underlay less VXLAN's 50 bytes.
pub const OVERLAY_MTU: u32 = 1450;

/// What the core asks of the swarm service (see the module docs). Called with the
/// daemon's state lock held: an implementation must not call back into the daemon's
/// changing methods from the calling thread.
pub trait SwarmHooks: Send + Sync {
    /// The swarm's networks now (the cluster-wide catalogue).
    fn networks(&self) -> Vec<SwarmNetwork>;
    /// Create a swarm network (on a manager, or forwarded to one).
    fn create_network(&self, spec: SwarmSpec) -> Result<SwarmNetwork, SwarmError>;
    /// Remove swarm network `id` (refused while endpoints anywhere hold addresses).
    fn remove_network(&self, id: &str) -> Result<(), SwarmError>;
    /// An address on network `net_id` for endpoint `ep_id`: `addr` if given, else the
    /// next free one.
    fn allocate(
        &self,
        net_id: &str,
        ep_id: &str,
        addr: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, SwarmError>;
    /// Free endpoint `ep_id`'s address on network `net_id`.
    fn release(&self, net_id: &str, ep_id: &str) -> Result<(), SwarmError>;
    /// Publish local endpoint `ep` in network `net_id`'s gossip table.
    fn endpoint_up(&self, net_id: &str, ep: &LocalEndpoint);
    /// Withdraw local endpoint `ep_id` from network `net_id`'s gossip table.
    fn endpoint_down(&self, net_id: &str, ep_id: &str);
    /// This node has its first endpoint on network `net_id` (`true`: join its gossip
    /// table) or no longer any (`false`: leave it).
    fn attach(&self, net_id: &str, attached: bool);
}

/// An endpoint of this node on a swarm network, as the swarm publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The endpoint's id.
    pub id: String,
    /// Its sandbox's name.
    pub name: String,
    /// Its other DNS names: aliases on the network, hostname, short id.
    pub aliases: Vec<String>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: [u8; 6],
}

/// An endpoint of another node on a swarm network, as the swarm's gossip tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// The underlay address of the node's VTEP.
    pub vtep: Ipv4Addr,
    /// Its sandbox's name.
    pub name: String,
    /// Its other DNS names.
    pub aliases: Vec<String>,
}

/// Why the swarm refused: its HTTP status and text, passed through to the API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SwarmError {
    /// The HTTP status the API answers.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}
