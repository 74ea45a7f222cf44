//! Sandboxes: tapnet's own `POST /sandboxes` and inspect shapes, with Docker's
//! `PortBinding` and `PortMap` for published ports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{is_zero, nullable};
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
pub(crate) fn port_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PortMap, D::Error> {
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
