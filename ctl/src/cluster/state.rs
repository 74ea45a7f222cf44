//! The managers' replicated state machine: swarm-scope networks (VNI, subnet, gateway,
//! endpoint addresses), the swarm's nodes (role and addresses) and its data path port. Plain logic: every manager applies the same
//! [`Command`]s in the same order and reaches the same [`ClusterState`]; anything random
//! (a network's id) is chosen by the proposer and travels in the command.
//!
//! Docker's rules followed here (see the project's Docker reference):
//! - overlay VNIs are assigned from 4096 upward (`ovmanager.go`); a VNI is never reused
//!   while its network exists;
//! - without `--subnet`, a network gets the first free /24 of the swarm's default pool
//!   10.0.0.0/8 (`ipamutils/utils.go`), first fit; the gateway is the subnet's first
//!   address; the network and broadcast addresses are reserved;
//! - swarm networks allocate serially (`com.docker.network.ipam.serial`, set by
//!   `cnmallocator`): the next dynamic address follows the last one handed out and wraps,
//!   so a released address is the last to come back.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::daemon::ipam::Ipv4Net;
use crate::daemon::ipam::addrset::AddrSet;

/// A manager's or worker's node id (the Raft node id for managers).
pub type NodeId = u64;

/// The first VNI handed out (`ovmanager.go`).
pub const FIRST_VNI: u32 = 4096;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The swarm's default address pool.
pub const DEFAULT_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8) {
    Some(n) => n,
    None => unreachable!(),
};
/// The prefix length of the subnets cut from [`DEFAULT_POOL`].
pub const DEFAULT_SUBNET_LEN: u8 = 24;
/// The VXLAN UDP port when `swarm init` gives none (Docker's `--data-path-port` default).
pub const DEFAULT_DATA_PATH_PORT: u16 = 4789;

/// A node's role in the swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs Raft and accepts the swarm's writes.
    Manager,
    /// Runs tasks only.
    Worker,
}

/// What the swarm knows of a node (worker or manager).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its role.
    pub role: Role,
    /// Its host name (`docker node ls`'s HOSTNAME).
    pub hostname: String,
    /// Its advertised management address, `ip:port` (port 2377 by default).
    pub addr: String,
    /// Its gossip address, `ip:port` (UDP).
    pub gossip: String,
    /// Its data path address: the VTEP's IP address, the outer source of its VXLAN packets.
    pub data: String,
}

impl NodeInfo {
    /// A node known by its role only (addresses empty).
    pub fn with_role(role: Role) -> Self {
        Self {
            role,
            hostname: String::new(),
            addr: String::new(),
            gossip: String::new(),
            data: String::new(),
        }
    }
}

/// What a new network asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The id, 64 lowercase hex characters, chosen by the proposer.
    pub id: String,
    /// The name, unique in the swarm.
    pub name: String,
    /// The subnet; `None` takes the next free /24 of 10.0.0.0/8.
    pub subnet: Option<Ipv4Net>,
    /// Whether standalone containers may attach.
    pub attachable: bool,
    /// User labels.
    pub labels: BTreeMap<String, String>,
}

/// A swarm-scope network as replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmNetwork {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Always `overlay`.
    pub driver: String,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The subnet.
    pub subnet: Ipv4Net,
    /// The gateway: the subnet's first address.
    pub gateway: Ipv4Addr,
    /// Whether standalone containers may attach.
    pub attachable: bool,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Endpoint id → its address.
    pub endpoints: BTreeMap<String, Ipv4Addr>,
    /// Held offsets in the subnet (reserved ones, the gateway, endpoints).
    held: AddrSet,
    /// The offset after the last dynamic address handed out (serial allocation).
    next: u32,
}

impl SwarmNetwork {
    /// The lowest and highest offsets endpoints may get.
    fn host_range(&self) -> (u32, u32) {
        let last = u32::try_from(self.subnet.size() - 1).unwrap_or(u32::MAX);
        if self.subnet.prefix_len() >= 31 {
            (0, last)
        } else {
            (1, last - 1)
        }
    }

    /// How many addresses are held (reserved ones included).
    pub fn held_count(&self) -> u64 {
        self.held.len()
    }
}

/// A change to the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a swarm-scope overlay network.
    CreateNetwork(NetworkSpec),
    /// Remove a network (by id or name); refused while endpoints hold addresses.
    RemoveNetwork {
        /// Id or name.
        network: String,
    },
    /// Give `endpoint` an address on `network`: `address` if given, else the next free.
    Allocate {
        /// Id or name.
        network: String,
        /// The endpoint's id.
        endpoint: String,
        /// A static address.
        address: Option<Ipv4Addr>,
    },
    /// Free `endpoint`'s address on `network`.
    Release {
        /// Id or name.
        network: String,
        /// The endpoint's id.
        endpoint: String,
    },
    /// Set the swarm's data path port (the VXLAN UDP port every node uses), once at
    /// `swarm init`; 0 means [`DEFAULT_DATA_PATH_PORT`].
    Init {
        /// The port.
        data_path_port: u16,
    },
    /// Add a node or replace what is known of it.
    SetNode {
        /// The node.
        node: NodeId,
        /// What it is.
        info: NodeInfo,
    },
    /// Set a node's role (promote, demote); adds the node, its addresses empty, if new.
    SetRole {
        /// The node.
        node: NodeId,
        /// Its role.
        role: Role,
    },
    /// Forget a node.
    RemoveNode {
        /// The node.
        node: NodeId,
    },
}

/// What an applied command answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The network created.
    Network(SwarmNetwork),
    /// The address allocated.
    Address(Ipv4Addr),
    /// Done, nothing to report.
    Done,
}

/// Why a command was refused. Docker's texts where Docker has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    /// Duplicate name (`docker network create`).
    #[error("network with name {0} already exists")]
    NameExists(String),
    /// Duplicate id.
    #[error("network with id {0} already exists")]
    IdExists(String),
    /// The id is not 64 hex characters.
    #[error("invalid network id {0:?}: it must be 64 hexadecimal characters")]
    BadId(String),
    /// The name is empty.
    #[error("network name must not be empty")]
    EmptyName,
    /// The subnet has host bits set.
    #[error("invalid subnet {given}: it should be {masked}")]
    BadSubnet {
        /// As given.
        given: Ipv4Net,
        /// Masked.
        masked: Ipv4Net,
    },
    /// The subnet overlaps another network's.
    #[error("Pool overlaps with other one on this address space")]
    Overlap,
    /// No /24 of the default pool is free.
    #[error("all predefined address pools have been fully subnetted")]
    PoolsExhausted,
    /// Every VNI is taken.
    #[error("no VXLAN network identifier is free")]
    VniExhausted,
    /// No such network.
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// The network still has endpoints.
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    ActiveEndpoints {
        /// Name.
        name: String,
        /// Id.
        id: String,
    },
    /// The static address is held.
    #[error("Address already in use")]
    AddressInUse,
    /// The static address is outside the subnet.
    #[error("no configured subnet contains IP address {0}")]
    OutOfSubnet(Ipv4Addr),
    /// The static address is the network's or broadcast address.
    #[error("requested address is out of range")]
    OutOfRange,
    /// No address is free.
    #[error("no available addresses on this pool")]
    NoAddresses,
    /// The endpoint already has an address on this network.
    #[error("endpoint {endpoint} already has address {address} on network {network}")]
    EndpointExists {
        /// Endpoint id.
        endpoint: String,
        /// Network name.
        network: String,
        /// Its address.
        address: Ipv4Addr,
    },
    /// The endpoint has no address on this network.
    #[error("endpoint {endpoint} has no address on network {network}")]
    EndpointNotFound {
        /// Endpoint id.
        endpoint: String,
        /// Network name.
        network: String,
    },
    /// No such node.
    #[error("node {0} not found")]
    NodeNotFound(NodeId),
}

/// The replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Networks by id.
    pub networks: BTreeMap<String, SwarmNetwork>,
    /// The swarm's nodes.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// The VXLAN UDP port of the swarm's data path (0 until [`Command::Init`]).
    pub data_path_port: u16,
}

impl ClusterState {
    /// The network with this id or name.
    pub fn network(&self, id_or_name: &str) -> Option<&SwarmNetwork> {
        self.networks
            .get(id_or_name)
            .or_else(|| self.networks.values().find(|n| n.name == id_or_name))
    }

    fn network_id(&self, id_or_name: &str) -> Result<String, StateError> {
        self.network(id_or_name)
            .map(|n| n.id.clone())
            .ok_or_else(|| StateError::NetworkNotFound(id_or_name.to_string()))
    }

    /// Apply one command. A refused command changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Result<Answer, StateError> {
        match cmd {
            Command::CreateNetwork(spec) => self.create(spec).map(Answer::Network),
            Command::RemoveNetwork { network } => {
                let id = self.network_id(network)?;
                let n = &self.networks[&id];
                if !n.endpoints.is_empty() {
                    return Err(StateError::ActiveEndpoints {
                        name: n.name.clone(),
                        id,
                    });
                }
                self.networks.remove(&id);
                Ok(Answer::Done)
            }
            Command::Allocate {
                network,
                endpoint,
                address,
            } => {
                let id = self.network_id(network)?;
                let n = self.networks.get_mut(&id).ok_or(StateError::OutOfRange)?;
                allocate(n, endpoint, *address).map(Answer::Address)
            }
            Command::Release { network, endpoint } => {
                let id = self.network_id(network)?;
                let n = self.networks.get_mut(&id).ok_or(StateError::OutOfRange)?;
                let Some(addr) = n.endpoints.remove(endpoint) else {
                    return Err(StateError::EndpointNotFound {
                        endpoint: endpoint.clone(),
                        network: n.name.clone(),
                    });
                };
                let off = n.subnet.offset_of(addr);
                n.held.remove(off);
                Ok(Answer::Done)
            }
            Command::Init { data_path_port } => {
                self.data_path_port = match data_path_port {
                    0 => DEFAULT_DATA_PATH_PORT,
                    p => *p,
                };
                Ok(Answer::Done)
            }
            Command::SetNode { node, info } => {
                self.nodes.insert(*node, info.clone());
                Ok(Answer::Done)
            }
            Command::SetRole { node, role } => {
                self.nodes
                    .entry(*node)
                    .and_modify(|n| n.role = *role)
                    .or_insert_with(|| NodeInfo::with_role(*role));
                Ok(Answer::Done)
            }
            Command::RemoveNode { node } => match self.nodes.remove(node) {
                Some(_) => Ok(Answer::Done),
                None => Err(StateError::NodeNotFound(*node)),
            },
        }
    }

    fn create(&mut self, spec: &NetworkSpec) -> Result<SwarmNetwork, StateError> {
        if spec.id.len() != 64 || !spec.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::BadId(spec.id.clone()));
        }
        if spec.name.is_empty() {
            return Err(StateError::EmptyName);
        }
        if self.networks.values().any(|n| n.name == spec.name) {
            return Err(StateError::NameExists(spec.name.clone()));
        }
        if self.networks.contains_key(&spec.id) {
            return Err(StateError::IdExists(spec.id.clone()));
        }
        let subnet = match spec.subnet {
            Some(s) => {
                if !s.is_masked() {
                    return Err(StateError::BadSubnet {
                        given: s,
                        masked: s.masked(),
                    });
                }
                if self.networks.values().any(|n| n.subnet.overlaps(s)) {
                    return Err(StateError::Overlap);
                }
                s
            }
            None => self.free_subnet()?,
        };
        let vni = self.free_vni()?;
        let mut n = SwarmNetwork {
            id: spec.id.clone(),
            name: spec.name.clone(),
            driver: "overlay".into(),
            vni,
            subnet,
            gateway: subnet.network(),
            attachable: spec.attachable,
            labels: spec.labels.clone(),
            endpoints: BTreeMap::new(),
            held: AddrSet::default(),
            next: 0,
        };
        let (lo, hi) = n.host_range();
        if lo > 0 {
            n.held.insert(0);
            n.held.insert(hi + 1);
        }
        n.held.insert(lo);
        n.gateway = subnet.at(lo);
        n.next = lo.saturating_add(1);
        self.networks.insert(n.id.clone(), n.clone());
        Ok(n)
    }

    /// The first /24 of the default pool that overlaps no network (first fit).
    fn free_subnet(&self) -> Result<Ipv4Net, StateError> {
        let base = u32::from(DEFAULT_POOL.network());
        let step = 1u32 << (32 - DEFAULT_SUBNET_LEN);
        let count = 1u32 << (DEFAULT_SUBNET_LEN - DEFAULT_POOL.prefix_len());
        let taken: Vec<Ipv4Net> = self.networks.values().map(|n| n.subnet).collect();
        let mut i = 0;
        while i < count {
            let cand = Ipv4Net::new(Ipv4Addr::from(base + i * step), DEFAULT_SUBNET_LEN)
                .ok_or(StateError::PoolsExhausted)?;
            match taken.iter().find(|t| t.overlaps(cand)) {
                None => return Ok(cand),
                // Skip past the whole overlapping subnet (it may be larger than a /24).
                Some(t) => {
                    let end = u32::from(t.last()).max(u32::from(cand.last()));
                    i = (end - base) / step + 1;
                }
            }
        }
        Err(StateError::PoolsExhausted)
    }

    /// The lowest VNI from 4096 that no network holds.
    fn free_vni(&self) -> Result<u32, StateError> {
        let mut used: Vec<u32> = self.networks.values().map(|n| n.vni).collect();
        used.sort_unstable();
        let mut v = FIRST_VNI;
        for u in used {
            if u == v {
                v += 1;
            } else if u > v {
                break;
            }
        }
        if v > MAX_VNI {
            return Err(StateError::VniExhausted);
        }
        Ok(v)
    }
}

fn allocate(
    n: &mut SwarmNetwork,
    endpoint: &str,
    address: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, StateError> {
    if let Some(&a) = n.endpoints.get(endpoint) {
        return Err(StateError::EndpointExists {
            endpoint: endpoint.to_string(),
            network: n.name.clone(),
            address: a,
        });
    }
    let (lo, hi) = n.host_range();
    let off = match address {
        Some(a) => {
            if !n.subnet.contains(a) {
                return Err(StateError::OutOfSubnet(a));
            }
            let off = n.subnet.offset_of(a);
            if off < lo || off > hi {
                return Err(StateError::OutOfRange);
            }
            if n.held.contains(off) {
                return Err(StateError::AddressInUse);
            }
            off
        }
        None => {
            let start = n.next.clamp(lo, hi);
            let off = n
                .held
                .first_free(start, hi)
                .or_else(|| n.held.first_free(lo, hi))
                .ok_or(StateError::NoAddresses)?;
            n.next = off.saturating_add(1);
            if n.next > hi {
                n.next = lo;
            }
            off
        }
    };
    n.held.insert(off);
    let addr = n.subnet.at(off);
    n.endpoints.insert(endpoint.to_string(), addr);
    Ok(addr)
}

#[cfg(test)]
mod tests;
