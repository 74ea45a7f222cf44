//! `GET /stats`: the engine's counters by port, stage, network and switch, and host
//! networking's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nullable;
/// `GET /stats`: every counter the engine keeps, by port, stage, network and switch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// One entry per engine port (sandbox interfaces and others).
    #[serde(rename = "Ports", default, deserialize_with = "nullable")]
    pub ports: Vec<PortStatsEntry>,
    /// One entry per pipeline stage.
    #[serde(rename = "Stages", default, deserialize_with = "nullable")]
    pub stages: Vec<StageStatsEntry>,
    /// One entry per bridge domain (network).
    #[serde(rename = "Networks", default, deserialize_with = "nullable")]
    pub networks: Vec<NetworkStatsEntry>,
    /// Frames that never reached a network.
    #[serde(rename = "Switch", default)]
    pub switch: SwitchStatsEntry,
    /// Free buffer-pool slots.
    #[serde(rename = "Pool", default)]
    pub pool: PoolStatsEntry,
    /// External access (egress NAT and published ports), per network that has it.
    #[serde(rename = "External", default, deserialize_with = "nullable")]
    pub external: Vec<ExternalStatsEntry>,
    /// Host sockets of host networking.
    #[serde(rename = "Host", default)]
    pub host: HostStatsEntry,
    /// The API server itself: connections and what it refused.
    #[serde(rename = "Api", default)]
    pub api: ApiStatsEntry,
    /// The embedded DNS server of each network with a gateway.
    #[serde(rename = "Dns", default, deserialize_with = "nullable")]
    pub dns: Vec<DnsStatsEntry>,
}

/// The embedded DNS server of one network: what its gateway address answered on port 53.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatsEntry {
    /// The network's name.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// The network's id.
    #[serde(rename = "NetworkID", default, deserialize_with = "nullable")]
    pub network_id: String,
    /// Query messages received (well formed or not).
    #[serde(rename = "Queries", default)]
    pub queries: u64,
    /// Queries answered from the network's names.
    #[serde(rename = "Answered", default)]
    pub answered: u64,
    /// Queries answered NXDOMAIN.
    #[serde(rename = "Nxdomain", default)]
    pub nxdomain: u64,
    /// Queries forwarded to the host's resolvers.
    #[serde(rename = "Forwarded", default)]
    pub forwarded: u64,
    /// Forwarded queries no resolver answered in time (SERVFAIL).
    #[serde(rename = "Timeouts", default)]
    pub timeouts: u64,
    /// Queries refused (too many in flight, or no resolver to forward to).
    #[serde(rename = "Refused", default)]
    pub refused: u64,
    /// Queries dropped because their sandbox was over its rate.
    #[serde(rename = "RateLimited", default)]
    pub rate_limited: u64,
    /// Malformed queries answered FORMERR.
    #[serde(rename = "Formerr", default)]
    pub formerr: u64,
    /// Answers over UDP cut short with the TC flag.
    #[serde(rename = "Truncated", default)]
    pub truncated: u64,
    /// Every counter of the server by name, zeros too (`dropped`, `forward_answers`,
    /// `stray` besides the ones above).
    #[serde(rename = "Counters", default, deserialize_with = "nullable")]
    pub counters: BTreeMap<String, u64>,
}

/// The API server's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStatsEntry {
    /// Connections being served now.
    #[serde(rename = "Connections", default)]
    pub connections: u64,
    /// Every counter of the server by name, zeros too (`api_connections_refused`,
    /// `api_header_timeouts`, `api_body_timeouts`, `api_forbidden`,
    /// `api_port_limit`).
    #[serde(rename = "Counters", default, deserialize_with = "nullable")]
    pub counters: BTreeMap<String, u64>,
}

/// External access of one network: its relay's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalStatsEntry {
    /// The network's name.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// The network's id.
    #[serde(rename = "NetworkID", default, deserialize_with = "nullable")]
    pub network_id: String,
    /// The relay's counters that are not zero (`tcp_opened`, `udp_opened`,
    /// `tcp_limit`, `drop_isolated`, …; see `tapnet_nat::relay::RelayCounters`).
    #[serde(rename = "Counters", default, deserialize_with = "nullable")]
    pub counters: BTreeMap<String, u64>,
}

/// Host networking as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatsEntry {
    /// Host sockets open now: flows and published ports' listeners.
    #[serde(rename = "Sockets", default)]
    pub sockets: u64,
    /// Published ports.
    #[serde(rename = "Published", default)]
    pub published: u64,
    /// Bytes of relay flow buffers held now, for every network together.
    #[serde(rename = "FlowMemory", default)]
    pub flow_memory: u64,
    /// The daemon-wide budget for relay flow buffers.
    #[serde(rename = "FlowMemoryLimit", default)]
    pub flow_memory_limit: u64,
    /// Rootless sandboxes removed because their process exited.
    #[serde(rename = "RootlessReaped", default)]
    pub rootless_reaped: u64,
}

/// Counters of one port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatsEntry {
    /// Port name (the TAP's name for TAP ports).
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// `tap`, `memory`, `gateway`, …
    #[serde(rename = "Kind", default, deserialize_with = "nullable")]
    pub kind: String,
    /// The network it is attached to, by name, or empty.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// The sandbox it belongs to, by name, or empty.
    #[serde(rename = "Sandbox", default, deserialize_with = "nullable")]
    pub sandbox: String,
    /// MTU.
    #[serde(rename = "Mtu", default)]
    pub mtu: u32,
    /// Takes virtio-net offloads (GSO superframes pass intact).
    #[serde(rename = "Offloads", default)]
    pub offloads: bool,
    /// Frames received from the port.
    #[serde(rename = "RxPackets", default)]
    pub rx_packets: u64,
    /// Bytes received.
    #[serde(rename = "RxBytes", default)]
    pub rx_bytes: u64,
    /// Frames sent to the port.
    #[serde(rename = "TxPackets", default)]
    pub tx_packets: u64,
    /// Bytes sent.
    #[serde(rename = "TxBytes", default)]
    pub tx_bytes: u64,
    /// Frames lost on this port, by reason (`rx_no_buffer`, `tx_queue_full`, …).
    #[serde(rename = "Drops", default, deserialize_with = "nullable")]
    pub drops: BTreeMap<String, u64>,
    /// Other counters (`tx_segmented`, `tx_gso_refused`, …).
    #[serde(rename = "Counters", default, deserialize_with = "nullable")]
    pub counters: BTreeMap<String, u64>,
}

impl PortStatsEntry {
    /// Every drop on the port, all reasons together.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// Counters of one pipeline stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatsEntry {
    /// `rx`, `switch` or `tx`.
    #[serde(rename = "Stage", default, deserialize_with = "nullable")]
    pub stage: String,
    /// The worker running it.
    #[serde(rename = "Worker", default)]
    pub worker: usize,
    /// Batches handled.
    #[serde(rename = "Batches", default)]
    pub batches: u64,
    /// Frames handled.
    #[serde(rename = "Packets", default)]
    pub packets: u64,
    /// Frames dropped, by reason (`no_port`, `no_buffer`, `switch`).
    #[serde(rename = "Drops", default, deserialize_with = "nullable")]
    pub drops: BTreeMap<String, u64>,
    /// Times the worker slept with nothing to do.
    #[serde(rename = "Sleeps", default)]
    pub sleeps: u64,
}

/// Counters of one bridge domain, i.e. one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatsEntry {
    /// The network's name, or the domain number if no network owns it.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// The network's id, or empty.
    #[serde(rename = "NetworkID", default, deserialize_with = "nullable")]
    pub network_id: String,
    /// Frames that entered the network.
    #[serde(rename = "Received", default)]
    pub received: u64,
    /// Frames sent to exactly one port.
    #[serde(rename = "Forwarded", default)]
    pub forwarded: u64,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    #[serde(rename = "Flooded", default)]
    pub flooded: u64,
    /// Frames dropped, by reason (`hairpin`, `bad_source`, `isolated`, `spoof`,
    /// `flood_rate`).
    #[serde(rename = "Drops", default, deserialize_with = "nullable")]
    pub drops: BTreeMap<String, u64>,
    /// MAC-table counters (`learned`, `moved`, `aged`, `flushed`, `table_full`,
    /// `flooded_unknown`, `learn_limit`: frames not learned because their port had
    /// learned its share of MACs).
    #[serde(rename = "Counters", default, deserialize_with = "nullable")]
    pub counters: BTreeMap<String, u64>,
}

/// Switch-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchStatsEntry {
    /// Frames the switch looked at.
    #[serde(rename = "Processed", default)]
    pub processed: u64,
    /// Frames dropped before reaching a network, by reason (`malformed`, `no_domain`).
    #[serde(rename = "Drops", default, deserialize_with = "nullable")]
    pub drops: BTreeMap<String, u64>,
}

/// Free slots of the buffer pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatsEntry {
    /// Free small slots.
    #[serde(rename = "SmallFree", default)]
    pub small_free: usize,
    /// Free large slots.
    #[serde(rename = "LargeFree", default)]
    pub large_free: usize,
}
