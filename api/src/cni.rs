//! CNI attachments: the bodies of `POST /cni/{add,del,check,gc,status}`, which the
//! `tapnet` CNI plugin sends on behalf of a container runtime (podman, containerd). The
//! plugin turns the answers into CNI results and error objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nullable;
use crate::sandbox::{PortMap, port_map};

/// `POST /cni/add` (`CNI_COMMAND=ADD`); also the body of `/cni/check`, which ignores
/// `Network` and `Name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAddRequest {
    /// The tapnet network: name, id or unique id prefix.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// `CNI_CONTAINERID`.
    #[serde(rename = "ContainerID", default, deserialize_with = "nullable")]
    pub container_id: String,
    /// `CNI_NETNS`: the path of the container's network namespace.
    #[serde(rename = "Netns", default, deserialize_with = "nullable")]
    pub netns: String,
    /// `CNI_IFNAME`.
    #[serde(rename = "IfName", default, deserialize_with = "nullable")]
    pub ifname: String,
    /// The container's name, if the runtime said it (`K8S_POD_NAME` in `CNI_ARGS`):
    /// the sandbox's name when it is valid and free.
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ports to publish (the runtime's `portMappings`), as a sandbox's
    /// `PortBindings`: by container port (`80/tcp`), each with its host address and
    /// port.
    #[serde(rename = "PortBindings", default, deserialize_with = "port_map")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub port_bindings: PortMap,
}

/// `POST /cni/del` (`CNI_COMMAND=DEL`): an attachment, by container and interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachmentRef {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "ContainerID", default, deserialize_with = "nullable")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    #[serde(rename = "IfName", default, deserialize_with = "nullable")]
    pub ifname: String,
}

/// The answer to `/cni/add` and `/cni/check`: one attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachmentInfo {
    /// The sandbox standing for it.
    #[serde(rename = "SandboxID", default, deserialize_with = "nullable")]
    pub sandbox_id: String,
    /// Its name.
    #[serde(rename = "SandboxName", default, deserialize_with = "nullable")]
    pub sandbox_name: String,
    /// The network's id.
    #[serde(rename = "NetworkID", default, deserialize_with = "nullable")]
    pub network_id: String,
    /// The network's name.
    #[serde(rename = "NetworkName", default, deserialize_with = "nullable")]
    pub network_name: String,
    /// The interface inside the container.
    #[serde(rename = "IfName", default, deserialize_with = "nullable")]
    pub ifname: String,
    /// Its MAC address.
    #[serde(rename = "MacAddress", default, deserialize_with = "nullable")]
    pub mac_address: String,
    /// Its IPv4 address in CIDR notation (`10.1.0.2/24`), or empty.
    #[serde(rename = "Address", default, deserialize_with = "nullable")]
    pub address: String,
    /// The network's gateway if it forwards (a bridge network that is not internal),
    /// or empty.
    #[serde(rename = "Gateway", default, deserialize_with = "nullable")]
    pub gateway: String,
    /// This attachment holds the container's default route (via `Gateway`).
    #[serde(rename = "DefaultRoute", default)]
    pub default_route: bool,
    /// The embedded DNS server's address on the network, or empty.
    #[serde(rename = "Nameserver", default, deserialize_with = "nullable")]
    pub nameserver: String,
}

/// `POST /cni/gc` (`CNI_COMMAND=GC`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniGcRequest {
    /// The tapnet network.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// `cni.dev/valid-attachments`: every other attachment on the network goes.
    #[serde(rename = "Valid", default, deserialize_with = "nullable")]
    pub valid: Vec<CniAttachmentRef>,
}

/// The answer to `/cni/gc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniGcResponse {
    /// The sandboxes removed, by name.
    #[serde(rename = "Removed", default, deserialize_with = "nullable")]
    pub removed: Vec<String>,
}

/// `POST /cni/status` (`CNI_COMMAND=STATUS`): can the network take containers?
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniStatusRequest {
    /// The tapnet network.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
}
