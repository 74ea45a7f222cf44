//! Swarm and nodes: the bodies of Docker's `/swarm` and `/nodes` endpoints and the
//! `Swarm` object of `GET /info` (moby `api/types/swarm`), with Docker's JSON names.
//!
//! Enumerations are strings, as on the wire: a node's role is `worker` or `manager`,
//! its availability `active`, `pause` or `drain`, its state `unknown`, `down`, `ready`
//! or `disconnected`; a manager's reachability `unknown`, `unreachable` or `reachable`;
//! the local node's swarm state `inactive`, `pending`, `active`, `error` or `locked`.
//! Fields Go marks `omitempty` are left out when empty, as Docker leaves them out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nullable;

/// Go's zero `time.Time`, which Docker sends for a time never set.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A time as Go marshals it: an unset (empty) one is [`ZERO_TIME`], since Go clients
/// cannot decode `""` as a time.
fn go_time<S: serde::Serializer>(t: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if t.is_empty() { ZERO_TIME } else { t })
}

/// A time from Go: `null` and [`ZERO_TIME`] read as unset (empty).
fn go_time_or_unset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let t: String = nullable(d)?;
    Ok(if t == ZERO_TIME { String::new() } else { t })
}

/// Go's `omitempty` on an unsigned count.
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// Go's `omitempty` on a 32-bit count.
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Go's `omitempty` on a signed count.
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `POST /swarm/init`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmInitRequest {
    /// Where the management port listens (`0.0.0.0:2377`).
    #[serde(rename = "ListenAddr", default, deserialize_with = "nullable")]
    pub listen_addr: String,
    /// The address (or interface) other nodes reach this one at, optionally with a
    /// port; empty: derived from the listen address or the host's addresses.
    #[serde(rename = "AdvertiseAddr", default, deserialize_with = "nullable")]
    pub advertise_addr: String,
    /// The address (or interface) data-path (VXLAN) traffic uses; empty: the
    /// advertise address.
    #[serde(rename = "DataPathAddr", default, deserialize_with = "nullable")]
    pub data_path_addr: String,
    /// The VXLAN UDP port of the whole swarm; 0 means 4789.
    #[serde(rename = "DataPathPort", default, deserialize_with = "nullable")]
    pub data_path_port: u32,
    /// Start a new single-manager cluster from this node's state.
    #[serde(rename = "ForceNewCluster", default, deserialize_with = "nullable")]
    pub force_new_cluster: bool,
    /// This node's availability (`active` when empty).
    #[serde(rename = "Availability", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub availability: String,
    /// Address pools for swarm networks (CIDRs); empty: `10.0.0.0/8`.
    #[serde(rename = "DefaultAddrPool", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub default_addr_pool: Vec<String>,
    /// Prefix length of the subnets cut from the pools; 0 means 24.
    #[serde(rename = "SubnetSize", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub subnet_size: u32,
}

/// `POST /swarm/join`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmJoinRequest {
    /// Where the management port listens (`0.0.0.0:2377`).
    #[serde(rename = "ListenAddr", default, deserialize_with = "nullable")]
    pub listen_addr: String,
    /// The address (or interface) other nodes reach this one at.
    #[serde(rename = "AdvertiseAddr", default, deserialize_with = "nullable")]
    pub advertise_addr: String,
    /// The address (or interface) data-path (VXLAN) traffic uses.
    #[serde(rename = "DataPathAddr", default, deserialize_with = "nullable")]
    pub data_path_addr: String,
    /// Managers already in the swarm (`HOST:PORT`).
    #[serde(rename = "RemoteAddrs", default, deserialize_with = "nullable")]
    pub remote_addrs: Vec<String>,
    /// The worker or manager join token.
    #[serde(rename = "JoinToken", default, deserialize_with = "nullable")]
    pub join_token: String,
    /// This node's availability (`active` when empty).
    #[serde(rename = "Availability", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub availability: String,
}

/// An object's version: updates name the version they were computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    /// Raft index of the object's last change.
    #[serde(rename = "Index", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub index: u64,
}

/// The join tokens of a swarm (managers only see them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    /// Joins a node as a worker.
    #[serde(rename = "Worker", default, deserialize_with = "nullable")]
    pub worker: String,
    /// Joins a node as a manager.
    #[serde(rename = "Manager", default, deserialize_with = "nullable")]
    pub manager: String,
}

/// The settable part of a swarm (only its name and labels here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmSpec {
    /// `default`.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// User labels.
    #[serde(rename = "Labels", default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// The cluster: `GET /swarm` without the join tokens, and `/info`'s `Swarm.Cluster`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster's ID.
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    /// Its version.
    #[serde(rename = "Version", default)]
    pub version: ObjectVersion,
    /// When it was created (RFC 3339).
    #[serde(rename = "CreatedAt", default, deserialize_with = "go_time_or_unset")]
    #[serde(serialize_with = "go_time")]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[serde(rename = "UpdatedAt", default, deserialize_with = "go_time_or_unset")]
    #[serde(serialize_with = "go_time")]
    pub updated_at: String,
    /// Its settings.
    #[serde(rename = "Spec", default)]
    pub spec: SwarmSpec,
    /// A root CA rotation is under way (never, in tapnet).
    #[serde(
        rename = "RootRotationInProgress",
        default,
        deserialize_with = "nullable"
    )]
    pub root_rotation_in_progress: bool,
    /// Address pools for swarm networks.
    #[serde(rename = "DefaultAddrPool", default, deserialize_with = "nullable")]
    pub default_addr_pool: Vec<String>,
    /// Prefix length of the subnets cut from the pools.
    #[serde(rename = "SubnetSize", default, deserialize_with = "nullable")]
    pub subnet_size: u32,
    /// The VXLAN UDP port.
    #[serde(rename = "DataPathPort", default, deserialize_with = "nullable")]
    pub data_path_port: u32,
}

/// `GET /swarm`: the cluster and its join tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swarm {
    /// The cluster (its fields sit at the top level, as Go embeds them).
    #[serde(flatten)]
    pub cluster: ClusterInfo,
    /// How other nodes join.
    #[serde(rename = "JoinTokens", default)]
    pub join_tokens: JoinTokens,
}

/// What a node is asked to be: `POST /nodes/{id}/update`'s body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// A name given by the user.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// User labels.
    #[serde(rename = "Labels", default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// `worker` or `manager`.
    #[serde(rename = "Role", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// `active`, `pause` or `drain`.
    #[serde(rename = "Availability", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub availability: String,
}

/// A node's operating system and architecture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlatform {
    /// The architecture as `uname -m` prints it (`x86_64`).
    #[serde(rename = "Architecture", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    /// `linux`.
    #[serde(rename = "OS", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub os: String,
}

/// A node's CPUs and memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    /// CPUs in billionths.
    #[serde(rename = "NanoCPUs", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub nano_cpus: i64,
    /// Memory in bytes.
    #[serde(rename = "MemoryBytes", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub memory_bytes: i64,
}

/// A node's engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineDescription {
    /// The daemon's version (`docker node ls`'s ENGINE VERSION).
    #[serde(rename = "EngineVersion", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub engine_version: String,
    /// The engine's labels.
    #[serde(rename = "Labels", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a node reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    /// The node's host name.
    #[serde(rename = "Hostname", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Its operating system and architecture.
    #[serde(rename = "Platform", default)]
    pub platform: NodePlatform,
    /// Its CPUs and memory.
    #[serde(rename = "Resources", default)]
    pub resources: NodeResources,
    /// Its engine.
    #[serde(rename = "Engine", default)]
    pub engine: EngineDescription,
}

/// A node's state as the managers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `unknown`, `down`, `ready` or `disconnected`.
    #[serde(rename = "State", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Why it is in that state.
    #[serde(rename = "Message", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The node's address (no port).
    #[serde(rename = "Addr", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// A manager's place in the Raft group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerStatus {
    /// It is the leader.
    #[serde(rename = "Leader", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leader: bool,
    /// `unknown`, `unreachable` or `reachable`.
    #[serde(rename = "Reachability", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reachability: String,
    /// Its management address (`HOST:2377`).
    #[serde(rename = "Addr", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// `GET /nodes/{id}`, and each of `GET /nodes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's ID.
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    /// Its version: `POST /nodes/{id}/update?version=` names it.
    #[serde(rename = "Version", default)]
    pub version: ObjectVersion,
    /// When it joined (RFC 3339).
    #[serde(rename = "CreatedAt", default, deserialize_with = "go_time_or_unset")]
    #[serde(serialize_with = "go_time")]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[serde(rename = "UpdatedAt", default, deserialize_with = "go_time_or_unset")]
    #[serde(serialize_with = "go_time")]
    pub updated_at: String,
    /// What it is asked to be.
    #[serde(rename = "Spec", default)]
    pub spec: NodeSpec,
    /// What it reports.
    #[serde(rename = "Description", default)]
    pub description: NodeDescription,
    /// Its state.
    #[serde(rename = "Status", default)]
    pub status: NodeStatus,
    /// Managers only.
    #[serde(
        rename = "ManagerStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub manager_status: Option<ManagerStatus>,
}

/// A manager as `/info`'s `Swarm.RemoteManagers` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its node ID.
    #[serde(rename = "NodeID", default, deserialize_with = "nullable")]
    pub node_id: String,
    /// Its management address (`HOST:2377`).
    #[serde(rename = "Addr", default, deserialize_with = "nullable")]
    pub addr: String,
}

/// `GET /info`'s `Swarm`: this node's part in a swarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmInfo {
    /// This node's ID (empty outside a swarm).
    #[serde(rename = "NodeID", default, deserialize_with = "nullable")]
    pub node_id: String,
    /// Its advertised address (no port).
    #[serde(rename = "NodeAddr", default, deserialize_with = "nullable")]
    pub node_addr: String,
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    #[serde(rename = "LocalNodeState", default, deserialize_with = "nullable")]
    pub local_node_state: String,
    /// It is a manager.
    #[serde(rename = "ControlAvailable", default, deserialize_with = "nullable")]
    pub control_available: bool,
    /// What went wrong, if the state is `error`.
    #[serde(rename = "Error", default, deserialize_with = "nullable")]
    pub error: String,
    /// The managers it knows.
    #[serde(rename = "RemoteManagers", default, deserialize_with = "nullable")]
    pub remote_managers: Vec<Peer>,
    /// How many nodes the swarm has (managers only).
    #[serde(rename = "Nodes", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub nodes: u64,
    /// How many of them are managers (managers only).
    #[serde(rename = "Managers", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub managers: u64,
    /// The cluster (managers only).
    #[serde(rename = "Cluster", default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
}

impl Default for SwarmInfo {
    /// A node in no swarm: `LocalNodeState` is `inactive`.
    fn default() -> SwarmInfo {
        SwarmInfo {
            node_id: String::new(),
            node_addr: String::new(),
            local_node_state: "inactive".into(),
            control_available: false,
            error: String::new(),
            remote_managers: Vec::new(),
            nodes: 0,
            managers: 0,
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn init_request_reads_what_the_docker_cli_sends() {
        let r: SwarmInitRequest = serde_json::from_value(json!({
            "ListenAddr": "0.0.0.0:2377",
            "AdvertiseAddr": "10.0.0.1",
            "DataPathAddr": "",
            "DataPathPort": 4790,
            "ForceNewCluster": false,
            "Spec": {"Labels": null, "Orchestration": {}, "Raft": {"ElectionTick": 10}},
            "AutoLockManagers": false,
            "Availability": "active",
            "DefaultAddrPool": null,
            "SubnetSize": 24
        }))
        .unwrap();
        assert_eq!(r.listen_addr, "0.0.0.0:2377");
        assert_eq!(r.advertise_addr, "10.0.0.1");
        assert_eq!(r.data_path_port, 4790);
        assert!(r.default_addr_pool.is_empty());
        let j: SwarmJoinRequest = serde_json::from_value(json!({
            "ListenAddr": "0.0.0.0:2377",
            "AdvertiseAddr": "",
            "DataPathAddr": "",
            "RemoteAddrs": ["10.0.0.1:2377"],
            "JoinToken": "SWMTKN-1-x",
            "Availability": "active"
        }))
        .unwrap();
        assert_eq!(j.remote_addrs, ["10.0.0.1:2377"]);
        assert_eq!(j.join_token, "SWMTKN-1-x");
    }

    #[test]
    fn swarm_embeds_the_cluster_as_go_does() {
        let s = Swarm {
            cluster: ClusterInfo {
                id: "c1".into(),
                version: ObjectVersion { index: 3 },
                data_path_port: 4789,
                ..ClusterInfo::default()
            },
            join_tokens: JoinTokens {
                worker: "W".into(),
                manager: "M".into(),
            },
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["ID"], "c1");
        assert_eq!(v["Version"]["Index"], 3);
        assert_eq!(v["DataPathPort"], 4789);
        assert_eq!(v["JoinTokens"], json!({"Worker": "W", "Manager": "M"}));
        let back: Swarm = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn nodes_leave_out_what_go_leaves_out() {
        let n = Node {
            id: "n1".into(),
            spec: NodeSpec {
                role: "worker".into(),
                availability: "active".into(),
                ..NodeSpec::default()
            },
            ..Node::default()
        };
        let v = serde_json::to_value(&n).unwrap();
        assert!(v.get("ManagerStatus").is_none());
        assert_eq!(v["Version"], json!({}));
        assert_eq!(v["Status"], json!({}));
        assert_eq!(v["Spec"]["Labels"], json!({}));
        assert_eq!(v["CreatedAt"], ZERO_TIME);
        let m = Node {
            manager_status: Some(ManagerStatus {
                leader: true,
                reachability: "reachable".into(),
                addr: "10.0.0.1:2377".into(),
            }),
            ..n
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        let back: Node = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn swarm_info_defaults_to_inactive() {
        let v = serde_json::to_value(SwarmInfo::default()).unwrap();
        assert_eq!(v["LocalNodeState"], "inactive");
        assert_eq!(v["RemoteManagers"], json!([]));
        assert!(v.get("Nodes").is_none() && v.get("Cluster").is_none());
        let i: SwarmInfo = serde_json::from_str(r#"{"RemoteManagers":null}"#).unwrap();
        assert!(i.remote_managers.is_empty());
    }
}
