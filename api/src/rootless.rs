//! Rootless sandboxes: what the sandbox's process must create, and the request that
//! hands its TAPs to the daemon (the fds ride on it as `SCM_RIGHTS`).

use serde::{Deserialize, Serialize};

use crate::nullable;
/// One interface a rootless sandbox's process creates, as the daemon planned it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInterface {
    /// Interface name (`eth0`, …).
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// MAC address.
    #[serde(rename = "MacAddress", default, deserialize_with = "nullable")]
    pub mac_address: String,
    /// IPv4 address, or empty.
    #[serde(rename = "IPAddress", default, deserialize_with = "nullable")]
    pub ip_address: String,
    /// Prefix length of the address.
    #[serde(rename = "IPPrefixLen", default, deserialize_with = "nullable")]
    pub ip_prefix_len: u8,
    /// MTU.
    #[serde(rename = "MTU", default, deserialize_with = "nullable")]
    pub mtu: u32,
}

/// `GET /sandboxes/{id}/interfaces`: what a rootless sandbox's process must set up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInterfaces {
    /// The interfaces, in endpoint order.
    #[serde(rename = "Interfaces", default, deserialize_with = "nullable")]
    pub interfaces: Vec<SandboxInterface>,
    /// The default route's gateway, or empty for none.
    #[serde(rename = "Gateway", default, deserialize_with = "nullable")]
    pub gateway: String,
    /// The interface the default route leaves by.
    #[serde(rename = "GatewayInterface", default, deserialize_with = "nullable")]
    pub gateway_interface: String,
    /// The sandbox's `resolv.conf` (its first network's gateway as nameserver, the
    /// host's search domains and options), or empty for a sandbox without a network:
    /// the process mounts it on `/etc/resolv.conf` in a mount namespace of its own.
    #[serde(rename = "ResolvConf", default, deserialize_with = "nullable")]
    pub resolv_conf: String,
}

/// `POST /sandboxes/{id}/interfaces`: the TAP fds ride on the request as `SCM_RIGHTS`,
/// one per name here, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxAdoptRequest {
    /// Interface name of each fd.
    #[serde(rename = "Interfaces", default, deserialize_with = "nullable")]
    pub interfaces: Vec<String>,
}
