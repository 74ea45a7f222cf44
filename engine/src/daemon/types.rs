//! The API's types, with the Docker Engine API's JSON field names for networks
//! (moby `api/types/network`, Engine API v1.47) and tapnet's own for sandboxes and stats,
//! plus the [`Backend`] trait the daemon core implements and the API server calls.
//!
//! Requests accept what Go clients send: unknown fields are ignored, and `null` stands for
//! an empty map, list or string (Go marshals a nil map as `null`). Responses always carry
//! every field Docker's carry, so Docker's own clients decode them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

pub use super::api::filters::NetworkFilters;
use crate::runtime::EngineStats;
use tapnet_switch::{DomainId, PortId};

/// The Engine API version the server speaks (and reports in `API-Version`).
pub const API_VERSION: &str = "1.47";
/// The oldest Engine API version the server accepts in a `/v{version}/` prefix.
pub const MIN_API_VERSION: &str = "1.24";
/// Networks that exist from the daemon's first start and can never be removed.
pub const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// `null` in a request decodes as the type's default (a Go client's nil map or slice).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn default_driver() -> String {
    "bridge".to_string()
}

/// An absent, `null` or empty `Driver` means `bridge`, as in Docker.
fn driver_or_bridge<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).unwrap_or_else(default_driver))
}

/// An error the API returns: an HTTP status and Docker's `{"message": …}` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (400, 403, 404, 409, 500).
    pub status: u16,
    /// What went wrong, in words a user can act on.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// 403: the operation is not permitted (predefined networks, pool limits).
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, message)
    }

    /// 404: no such network, sandbox or endpoint.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    /// 409: a name is taken, or the object is in use.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }

    /// 500: the daemon failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// The body of every error response, as Docker sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error text.
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
}

/// The daemon core, as the API server sees it. Every method is synchronous and runs on
/// the server's single control thread; an `Err` becomes the response's status and
/// message.
pub trait Backend: Send + Sync + 'static {
    /// Every network matching `f`, with `Containers` left empty (as Docker since API 1.28).
    fn networks(&self, f: &NetworkFilters) -> Result<Vec<NetworkInspect>, ApiError>;
    /// One network by full id, name, or unique id prefix (Docker's order of matching).
    fn network_inspect(&self, id_or_name: &str) -> Result<NetworkInspect, ApiError>;
    /// Create a network.
    fn network_create(&self, req: NetworkCreateRequest) -> Result<NetworkCreateResponse, ApiError>;
    /// Remove a network that no endpoint uses.
    fn network_remove(&self, id_or_name: &str) -> Result<(), ApiError>;
    /// Attach the sandbox named in `req.Container` to a network.
    fn network_connect(&self, id_or_name: &str, req: NetworkConnectRequest)
    -> Result<(), ApiError>;
    /// Detach the sandbox named in `req.Container` from a network.
    fn network_disconnect(
        &self,
        id_or_name: &str,
        req: NetworkDisconnectRequest,
    ) -> Result<(), ApiError>;
    /// Remove every unused, user-defined network matching `f` (`label`, `label!`, `until`).
    fn network_prune(&self, f: &NetworkFilters) -> Result<NetworkPruneResponse, ApiError>;
    /// Create a sandbox with its endpoints.
    fn sandbox_create(&self, req: SandboxCreateRequest) -> Result<SandboxInspect, ApiError>;
    /// Every sandbox.
    fn sandboxes(&self) -> Result<Vec<SandboxInspect>, ApiError>;
    /// One sandbox by full id, name, or unique id prefix.
    fn sandbox_inspect(&self, id_or_name: &str) -> Result<SandboxInspect, ApiError>;
    /// Remove a sandbox and everything it holds.
    fn sandbox_remove(&self, id_or_name: &str) -> Result<(), ApiError>;
    /// Create a rootless sandbox for the process `peer_pid` (see
    /// [`crate::daemon::rootless`]).
    fn sandbox_create_rootless(
        &self,
        _req: SandboxCreateRequest,
        _peer_pid: u32,
    ) -> Result<SandboxInspect, ApiError> {
        Err(ApiError::new(501, "this backend has no rootless sandboxes"))
    }
    /// The interfaces a rootless sandbox's process must create.
    fn sandbox_interfaces(
        &self,
        _id_or_name: &str,
    ) -> Result<crate::daemon::rootless::SandboxInterfaces, ApiError> {
        Err(ApiError::new(501, "this backend has no rootless sandboxes"))
    }
    /// Attach the TAPs a rootless sandbox's process `peer_pid` created (`fds`, one per
    /// name in `names`).
    fn sandbox_adopt(
        &self,
        _id_or_name: &str,
        _names: Vec<String>,
        _fds: Vec<std::os::fd::OwnedFd>,
        _peer_pid: u32,
    ) -> Result<SandboxInspect, ApiError> {
        Err(ApiError::new(501, "this backend has no rootless sandboxes"))
    }
    /// The engine's counters.
    fn stats(&self) -> Result<StatsResponse, ApiError>;
}

/// IP address management of a network (`IPAM`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    /// IPAM driver; empty or `default` means the built-in one.
    #[serde(rename = "Driver", default, deserialize_with = "nullable")]
    pub driver: String,
    /// Pools.
    #[serde(rename = "Config", default, deserialize_with = "nullable")]
    pub config: Vec<IpamConfig>,
    /// IPAM driver options.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

/// One pool of a network (`IPAM.Config[]`); empty fields are omitted, as in Docker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// Subnet in CIDR notation.
    #[serde(rename = "Subnet", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    /// Sub-range that dynamic addresses come from, in CIDR notation.
    #[serde(rename = "IPRange", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    /// Gateway address.
    #[serde(rename = "Gateway", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Reserved addresses by name.
    #[serde(rename = "AuxiliaryAddresses", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// The network a network takes its configuration from (`ConfigFrom`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReference {
    /// The config-only network's name.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
}

/// `POST /networks/create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreateRequest {
    /// The network's name (required, unique).
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// Driver: `bridge` (the default), `host`, `null`, …
    #[serde(rename = "Driver", default = "default_driver")]
    #[serde(deserialize_with = "driver_or_bridge")]
    pub driver: String,
    /// `local` or `swarm`; empty means the driver's.
    #[serde(rename = "Scope", default, deserialize_with = "nullable")]
    pub scope: String,
    /// Only traffic within the subnet.
    #[serde(rename = "Internal", default, deserialize_with = "nullable")]
    pub internal: bool,
    /// Sandboxes may attach by hand (always true for local networks).
    #[serde(rename = "Attachable", default, deserialize_with = "nullable")]
    pub attachable: bool,
    /// Swarm routing-mesh network.
    #[serde(rename = "Ingress", default, deserialize_with = "nullable")]
    pub ingress: bool,
    /// A placeholder holding configuration for other networks.
    #[serde(rename = "ConfigOnly", default, deserialize_with = "nullable")]
    pub config_only: bool,
    /// The config-only network to take configuration from.
    #[serde(
        rename = "ConfigFrom",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub config_from: Option<ConfigReference>,
    /// Address management; `None` means the default pools.
    #[serde(rename = "IPAM", default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// IPv4 on (the default when absent).
    #[serde(
        rename = "EnableIPv4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv4: Option<bool>,
    /// IPv6 on (off when absent).
    #[serde(
        rename = "EnableIPv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv6: Option<bool>,
    /// Driver options (`-o`), e.g. `com.docker.network.driver.mtu`.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(rename = "Labels", default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

impl Default for NetworkCreateRequest {
    fn default() -> NetworkCreateRequest {
        NetworkCreateRequest {
            name: String::new(),
            driver: default_driver(),
            scope: String::new(),
            internal: false,
            attachable: false,
            ingress: false,
            config_only: false,
            config_from: None,
            ipam: None,
            enable_ipv4: None,
            enable_ipv6: None,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
        }
    }
}

/// The answer to `POST /networks/create` (201).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreateResponse {
    /// The new network's id.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// A warning for the user, or empty.
    #[serde(rename = "Warning", default, deserialize_with = "nullable")]
    pub warning: String,
}

/// One endpoint of a network, in `Containers` of an inspected network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointResource {
    /// The sandbox's name.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID", default, deserialize_with = "nullable")]
    pub endpoint_id: String,
    /// The interface's MAC address.
    #[serde(rename = "MacAddress", default, deserialize_with = "nullable")]
    pub mac_address: String,
    /// IPv4 address in CIDR notation (`172.18.0.2/16`), or empty.
    #[serde(rename = "IPv4Address", default, deserialize_with = "nullable")]
    pub ipv4_address: String,
    /// IPv6 address in CIDR notation, or empty.
    #[serde(rename = "IPv6Address", default, deserialize_with = "nullable")]
    pub ipv6_address: String,
}

/// A peer of a swarm-scope network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's node name.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// The peer's underlay address.
    #[serde(rename = "IP", default, deserialize_with = "nullable")]
    pub ip: String,
}

/// Runtime facts about a network (`Status`, API v1.52).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Address use.
    #[serde(rename = "IPAM", default)]
    pub ipam: IpamStatus,
}

/// Address use of a network, per subnet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamStatus {
    /// Keyed by subnet in CIDR notation.
    #[serde(rename = "Subnets", default, deserialize_with = "nullable")]
    pub subnets: BTreeMap<String, SubnetStatus>,
}

/// Address use of one subnet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetStatus {
    /// Addresses allocated (endpoints, gateway, auxiliary, reserved).
    #[serde(rename = "IPsInUse", default)]
    pub ips_in_use: u64,
    /// Addresses still free for dynamic allocation.
    #[serde(rename = "DynamicIPsAvailable", default)]
    pub dynamic_ips_available: u64,
}

/// A network as `GET /networks/{id}` and `GET /networks` return it (Docker's
/// `network.Inspect`, field for field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInspect {
    /// Name.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// 64 hex characters.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// Creation time, RFC 3339 with nanoseconds. Must be valid: Docker's CLI parses it.
    #[serde(rename = "Created", default, deserialize_with = "nullable")]
    pub created: String,
    /// `local` or `swarm`.
    #[serde(rename = "Scope", default, deserialize_with = "nullable")]
    pub scope: String,
    /// `bridge`, `host`, `null`, …
    #[serde(rename = "Driver", default, deserialize_with = "nullable")]
    pub driver: String,
    /// IPv4 on.
    #[serde(rename = "EnableIPv4", default, deserialize_with = "nullable")]
    pub enable_ipv4: bool,
    /// IPv6 on.
    #[serde(rename = "EnableIPv6", default, deserialize_with = "nullable")]
    pub enable_ipv6: bool,
    /// Address management, with the pools actually granted.
    #[serde(rename = "IPAM", default, deserialize_with = "nullable")]
    pub ipam: Ipam,
    /// Only traffic within the subnet.
    #[serde(rename = "Internal", default, deserialize_with = "nullable")]
    pub internal: bool,
    /// Sandboxes may attach by hand.
    #[serde(rename = "Attachable", default, deserialize_with = "nullable")]
    pub attachable: bool,
    /// Swarm routing-mesh network.
    #[serde(rename = "Ingress", default, deserialize_with = "nullable")]
    pub ingress: bool,
    /// Where the configuration came from (empty `Network` if nowhere).
    #[serde(rename = "ConfigFrom", default, deserialize_with = "nullable")]
    pub config_from: ConfigReference,
    /// A config-only placeholder.
    #[serde(rename = "ConfigOnly", default, deserialize_with = "nullable")]
    pub config_only: bool,
    /// Endpoints by sandbox id; empty in lists.
    #[serde(rename = "Containers", default, deserialize_with = "nullable")]
    pub containers: BTreeMap<String, EndpointResource>,
    /// Driver options.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(rename = "Labels", default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Swarm peers; omitted when empty.
    #[serde(rename = "Peers", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerInfo>,
    /// Address use; omitted when the daemon does not report it.
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NetworkStatus>,
}

/// Static addresses asked for an endpoint (`EndpointConfig.IPAMConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointIpamConfig {
    /// IPv4 address without prefix, or empty.
    #[serde(rename = "IPv4Address", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ipv4_address: String,
    /// IPv6 address without prefix, or empty.
    #[serde(rename = "IPv6Address", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ipv6_address: String,
    /// Extra link-local addresses.
    #[serde(rename = "LinkLocalIPs", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
}

/// How to attach an endpoint (`EndpointConfig` of a connect request). Docker's output-only
/// fields (`NetworkID`, `IPAddress`, …) are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSettings {
    /// Static addresses.
    #[serde(
        rename = "IPAMConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// Legacy links (unsupported; accepted and ignored when empty).
    #[serde(rename = "Links", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Extra DNS names on this network.
    #[serde(rename = "Aliases", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// A MAC address to use instead of the generated one.
    #[serde(rename = "MacAddress", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// Endpoint driver options.
    #[serde(rename = "DriverOpts", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// The endpoint with the highest priority provides the default route.
    #[serde(rename = "GwPriority", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero")]
    pub gw_priority: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// `POST /networks/{id}/connect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConnectRequest {
    /// The sandbox: id, name or unique id prefix.
    #[serde(rename = "Container", default, deserialize_with = "nullable")]
    pub container: String,
    /// How to attach.
    #[serde(
        rename = "EndpointConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_config: Option<EndpointSettings>,
}

/// `POST /networks/{id}/disconnect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDisconnectRequest {
    /// The sandbox: id, name or unique id prefix.
    #[serde(rename = "Container", default, deserialize_with = "nullable")]
    pub container: String,
    /// Detach even if the sandbox is gone.
    #[serde(rename = "Force", default, deserialize_with = "nullable")]
    pub force: bool,
}

/// The answer to `POST /networks/prune`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPruneResponse {
    /// Names of the removed networks.
    #[serde(rename = "NetworksDeleted", default, deserialize_with = "nullable")]
    pub networks_deleted: Vec<String>,
}

/// One network a new sandbox joins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxNetworkRequest {
    /// Network name, id or unique id prefix.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// A static IPv4 address (user-defined networks only).
    #[serde(
        rename = "IPv4Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
    /// Extra DNS names on this network.
    #[serde(rename = "Aliases", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The endpoint with the highest priority provides the default route.
    #[serde(rename = "GwPriority", default, deserialize_with = "nullable")]
    #[serde(skip_serializing_if = "is_zero")]
    pub gw_priority: i64,
}

/// `POST /sandboxes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxCreateRequest {
    /// Unique name; the daemon picks one when absent.
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Networks to join, `eth0` first. Empty means the default `bridge` network; a
    /// sandbox on `none` has loopback only. (`host` never reaches the daemon: the CLI
    /// runs such commands itself.)
    #[serde(rename = "Networks", default, deserialize_with = "nullable")]
    pub networks: Vec<SandboxNetworkRequest>,
    /// Hostname inside the sandbox.
    #[serde(rename = "Hostname", default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Ports to publish, by container port (`80/tcp`), Docker's
    /// `HostConfig.PortBindings`.
    #[serde(rename = "PortBindings", default, deserialize_with = "port_map")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub port_bindings: PortMap,
    /// A rootless sandbox: the daemon allocates its endpoints but makes no namespace or
    /// TAP; the caller's process creates them and hands the TAPs over (see
    /// [`crate::daemon::rootless`]).
    #[serde(
        rename = "Rootless",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub rootless: bool,
}

/// One host side of a published port (Docker's `PortBinding`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Host address; empty (in a request) means every address, `0.0.0.0`.
    #[serde(rename = "HostIp", default, deserialize_with = "nullable")]
    pub host_ip: String,
    /// Host port: in a request empty (any free port), `8080`, or `8000-8010` (one free
    /// port of the range); in an answer the port bound.
    #[serde(rename = "HostPort", default, deserialize_with = "nullable")]
    pub host_port: String,
}

/// Published ports by container port and protocol (`80/tcp`), Docker's `PortMap`.
pub type PortMap = BTreeMap<String, Vec<PortBinding>>;

/// A [`PortMap`] where the map or any list may be `null`, as Go writes nil values.
fn port_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PortMap, D::Error> {
    let m: Option<BTreeMap<String, Option<Vec<PortBinding>>>> = Deserialize::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// A sandbox's endpoint on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The network's id.
    #[serde(rename = "NetworkID", default, deserialize_with = "nullable")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID", default, deserialize_with = "nullable")]
    pub endpoint_id: String,
    /// The interface's MAC address.
    #[serde(rename = "MacAddress", default, deserialize_with = "nullable")]
    pub mac_address: String,
    /// IPv4 address, or empty.
    #[serde(rename = "IPAddress", default, deserialize_with = "nullable")]
    pub ip_address: String,
    /// Prefix length of the address.
    #[serde(rename = "IPPrefixLen", default, deserialize_with = "nullable")]
    pub ip_prefix_len: u8,
    /// The network's gateway, or empty.
    #[serde(rename = "Gateway", default, deserialize_with = "nullable")]
    pub gateway: String,
    /// Interface name inside the sandbox (`eth0`, `eth1`, …).
    #[serde(rename = "Interface", default, deserialize_with = "nullable")]
    pub interface: String,
    /// Extra DNS names on this network.
    #[serde(rename = "Aliases", default, deserialize_with = "nullable")]
    pub aliases: Vec<String>,
}

/// A sandbox, as `GET /sandboxes/{id}` and `POST /sandboxes` return it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInspect {
    /// 64 hex characters.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// Unique name.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// Creation time, RFC 3339 with nanoseconds.
    #[serde(rename = "Created", default, deserialize_with = "nullable")]
    pub created: String,
    /// Path of the network namespace, for `nsenter --net=`, `setns` and `ip netns`.
    #[serde(rename = "NetnsPath", default, deserialize_with = "nullable")]
    pub netns_path: String,
    /// Endpoints by network name.
    #[serde(rename = "Networks", default, deserialize_with = "nullable")]
    pub networks: BTreeMap<String, EndpointInfo>,
    /// Published ports: the host address and port bound for each container port
    /// (Docker's `NetworkSettings.Ports`).
    #[serde(rename = "Ports", default, deserialize_with = "port_map")]
    pub ports: PortMap,
}

/// `GET /version`, in the shape of Docker's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    /// The product.
    #[serde(rename = "Platform", default)]
    pub platform: PlatformVersion,
    /// Versions of the parts; the CLI prints each.
    #[serde(rename = "Components", default, deserialize_with = "nullable")]
    pub components: Vec<ComponentVersion>,
    /// tapnet's version.
    #[serde(rename = "Version", default, deserialize_with = "nullable")]
    pub version: String,
    /// The Engine API version spoken.
    #[serde(rename = "ApiVersion", default, deserialize_with = "nullable")]
    pub api_version: String,
    /// The oldest Engine API version accepted.
    #[serde(rename = "MinAPIVersion", default, deserialize_with = "nullable")]
    pub min_api_version: String,
    /// The commit built, or `unknown`.
    #[serde(rename = "GitCommit", default, deserialize_with = "nullable")]
    pub git_commit: String,
    /// `n/a`: tapnet is not written in Go.
    #[serde(rename = "GoVersion", default, deserialize_with = "nullable")]
    pub go_version: String,
    /// `linux`.
    #[serde(rename = "Os", default, deserialize_with = "nullable")]
    pub os: String,
    /// Go's name for the architecture (`amd64`, `arm64`, …).
    #[serde(rename = "Arch", default, deserialize_with = "nullable")]
    pub arch: String,
    /// The host kernel's release.
    #[serde(rename = "KernelVersion", default, deserialize_with = "nullable")]
    pub kernel_version: String,
}

/// The product name in [`VersionResponse`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformVersion {
    /// `tapnet`.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
}

/// One part's version in [`VersionResponse`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentVersion {
    /// Part name (`Engine`).
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// Its version.
    #[serde(rename = "Version", default, deserialize_with = "nullable")]
    pub version: String,
    /// Free-form details.
    #[serde(rename = "Details", default, deserialize_with = "nullable")]
    pub details: BTreeMap<String, String>,
}

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
    /// Other counters (`tx_segmented`, …).
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
    /// Frames dropped, by reason (`hairpin`, `bad_source`, `isolated`).
    #[serde(rename = "Drops", default, deserialize_with = "nullable")]
    pub drops: BTreeMap<String, u64>,
    /// MAC-table counters (`learned`, `moved`, `aged`, `flushed`, `table_full`,
    /// `flooded_unknown`).
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

/// Who owns an engine port, for [`StatsResponse::from_engine`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortOwner {
    /// Network name.
    pub network: String,
    /// Sandbox name.
    pub sandbox: String,
}

fn counters<const N: usize>(pairs: [(&str, u64); N]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

impl StatsResponse {
    /// Build the response from the engine's counters. `port_owner` names the network and
    /// sandbox of a port; `domain_owner` gives the (name, id) of the network a domain
    /// belongs to.
    pub fn from_engine(
        stats: &EngineStats,
        port_owner: impl Fn(PortId) -> Option<PortOwner>,
        domain_owner: impl Fn(DomainId) -> Option<(String, String)>,
    ) -> StatsResponse {
        let ports = stats
            .ports
            .iter()
            .map(|p| {
                let owner = port_owner(p.id).unwrap_or_default();
                let s = &p.stats;
                PortStatsEntry {
                    name: p.info.name.clone(),
                    // `Tap` → `tap`: new kinds need no change here.
                    kind: format!("{:?}", p.info.kind).to_lowercase(),
                    network: owner.network,
                    sandbox: owner.sandbox,
                    mtu: p.info.mtu,
                    offloads: p.info.offloads,
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    drops: counters([
                        ("rx_errors", s.rx_errors),
                        ("rx_no_buffer", s.rx_no_buffer),
                        ("rx_ring_full", s.rx_ring_full),
                        ("tx_errors", s.tx_errors),
                        ("tx_queue_full", s.tx_queue_full),
                        ("tx_too_big", s.tx_too_big),
                        ("tx_offload_errors", s.tx_offload_errors),
                    ]),
                    counters: counters([("tx_segmented", s.tx_segmented)]),
                }
            })
            .collect();
        let stages = stats
            .stages
            .iter()
            .map(|st| StageStatsEntry {
                stage: st.kind.name().to_string(),
                worker: st.worker,
                batches: st.stats.batches,
                packets: st.stats.packets,
                drops: counters([
                    ("no_port", st.stats.drop_no_port),
                    ("no_buffer", st.stats.drop_no_buffer),
                    ("switch", st.stats.drop_switch),
                ]),
                sleeps: st.stats.sleeps,
            })
            .collect();
        let networks = stats
            .domains
            .iter()
            .map(|(id, d)| {
                let (network, network_id) = domain_owner(*id)
                    .unwrap_or_else(|| (format!("domain-{}", id.0), String::new()));
                NetworkStatsEntry {
                    network,
                    network_id,
                    received: d.received,
                    forwarded: d.forwarded,
                    flooded: d.flooded,
                    drops: counters([
                        ("hairpin", d.drop_hairpin),
                        ("bad_source", d.drop_bad_source),
                        ("isolated", d.drop_isolated),
                    ]),
                    counters: counters([
                        ("flooded_unknown", d.flooded_unknown),
                        ("learned", d.learned),
                        ("moved", d.moved),
                        ("aged", d.aged),
                        ("flushed", d.flushed),
                        ("table_full", d.table_full),
                    ]),
                }
            })
            .collect();
        StatsResponse {
            ports,
            stages,
            networks,
            switch: SwitchStatsEntry {
                processed: stats.switch.processed,
                drops: counters([
                    ("malformed", stats.switch.drop_malformed),
                    ("no_domain", stats.switch.drop_no_domain),
                ]),
            },
            pool: PoolStatsEntry {
                small_free: stats.pool_free.0,
                large_free: stats.pool_free.1,
            },
            // Host networking is not the engine's: the daemon fills these in.
            external: Vec::new(),
            host: HostStatsEntry::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_accepts_go_nulls_and_unknown_fields() {
        let req: NetworkCreateRequest = serde_json::from_str(
            r#"{"Name":"pets","Driver":"","Scope":"","EnableIPv6":null,"IPAM":null,
                "Internal":false,"ConfigFrom":null,"Options":null,"Labels":null,
                "CheckDuplicate":true,"SomethingNew":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(req.name, "pets");
        assert_eq!(req.driver, "bridge");
        assert!(req.ipam.is_none() && req.options.is_empty() && req.labels.is_empty());
        let absent: NetworkCreateRequest = serde_json::from_str(r#"{"Name":"x"}"#).unwrap();
        assert_eq!(absent.driver, "bridge");
        assert_eq!(NetworkCreateRequest::default().driver, "bridge");
    }

    #[test]
    fn create_request_rejects_wrong_types() {
        let e = serde_json::from_str::<NetworkCreateRequest>(r#"{"Name":"x","Internal":"yes"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("expected a boolean"), "{e}");
    }

    #[test]
    fn inspect_uses_docker_field_names_and_omits_what_docker_omits() {
        let mut n = NetworkInspect {
            name: "pets".into(),
            id: "ab".repeat(32),
            created: "2026-11-28T02:35:38.000000123Z".into(),
            scope: "local".into(),
            driver: "bridge".into(),
            enable_ipv4: true,
            ..NetworkInspect::default()
        };
        n.ipam.driver = "default".into();
        n.ipam.config.push(IpamConfig {
            subnet: "172.18.0.0/16".into(),
            gateway: "172.18.0.1".into(),
            ..IpamConfig::default()
        });
        let v = serde_json::to_value(&n).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv4",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Containers",
            "Options",
            "Labels",
        ] {
            assert!(keys.contains(&k), "missing {k}");
        }
        assert!(!keys.contains(&"Peers") && !keys.contains(&"Status"));
        assert_eq!(
            v["IPAM"]["Config"][0],
            serde_json::json!({"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"})
        );
        assert_eq!(v["ConfigFrom"], serde_json::json!({"Network": ""}));
        let back: NetworkInspect = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn connect_request_ignores_output_only_fields() {
        let r: NetworkConnectRequest = serde_json::from_str(
            r#"{"Container":"web","EndpointConfig":{"IPAMConfig":{"IPv4Address":"172.18.0.9"},
                "Links":null,"Aliases":["w"],"NetworkID":"","IPPrefixLen":0,"DNSNames":null,
                "DriverOpts":null,"GwPriority":0,"MacAddress":""}}"#,
        )
        .unwrap();
        let ec = r.endpoint_config.unwrap();
        assert_eq!(ec.ipam_config.unwrap().ipv4_address, "172.18.0.9");
        assert_eq!(ec.aliases, ["w"]);
    }

    #[test]
    fn api_error_displays_its_message() {
        let e = ApiError::not_found("network x not found");
        assert_eq!(
            (e.status, e.to_string()),
            (404, "network x not found".to_string())
        );
        assert_eq!(ApiError::conflict("c").status, 409);
        assert_eq!(ApiError::forbidden("f").status, 403);
        assert_eq!(ApiError::bad_request("b").status, 400);
        assert_eq!(ApiError::internal("i").status, 500);
    }
}
