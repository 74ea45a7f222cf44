//! Networks: Docker's `network.Inspect`, the create, connect, disconnect and prune
//! requests and answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{default_driver, driver_or_bridge, is_zero, nullable};
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
}
