//! The bridge driver's options (`-o`), with Docker's names, parsed and checked.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::DaemonError;

/// tapnet's own bridge option: TCP and UDP to the gateway address reach the host's
/// 127.0.0.1 (`true` or `false`, default `false`).
pub const OPT_HOST_LOOPBACK: &str = "tapnet.host_loopback";

/// tapnet's own bridge option: connections from the host's loopback to a published TCP
/// port are spliced into the sandbox's namespace (`true` or `false`, default `false`).
/// Faster, but the sandbox then sees its own 127.0.0.1 as the peer (as pasta shows it),
/// where by default it sees the gateway address and the client's port, as Docker's
/// proxy shows them: services that trust loopback clients trust every local user then.
pub const OPT_LOOPBACK_SPLICE: &str = "tapnet.loopback_splice";

/// Docker's option for the host address of ports published without one.
pub(super) const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";

const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
const OPT_MTU: &str = "com.docker.network.driver.mtu";
const DEFAULT_MTU: u32 = 1500;

/// Options of the bridge driver that tapnet understands (`-o`), Docker's names.
pub const BRIDGE_OPTIONS: &[&str] = &[
    "com.docker.network.bridge.name",
    "com.docker.network.bridge.enable_ip_masquerade",
    OPT_ICC,
    OPT_HOST_BINDING,
    "com.docker.network.bridge.gateway_mode_ipv4",
    "com.docker.network.bridge.gateway_mode_ipv6",
    "com.docker.network.bridge.inhibit_ipv4",
    "com.docker.network.bridge.trusted_host_interfaces",
    "com.docker.network.bridge.default_bridge",
    OPT_MTU,
    "com.docker.network.container_iface_prefix",
    OPT_HOST_LOOPBACK,
    OPT_LOOPBACK_SPLICE,
];

/// The options of the default `bridge` network, as Docker gives them.
pub(super) const DEFAULT_BRIDGE_OPTIONS: [(&str, &str); 6] = [
    ("com.docker.network.bridge.default_bridge", "true"),
    (OPT_ICC, "true"),
    ("com.docker.network.bridge.enable_ip_masquerade", "true"),
    (OPT_HOST_BINDING, "0.0.0.0"),
    ("com.docker.network.bridge.name", "tapnet0"),
    (OPT_MTU, "1500"),
];

/// Parsed options of a bridge network that the datapath needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BridgeOpts {
    pub(super) icc: bool,
    pub(super) mtu: u32,
    pub(super) host_loopback: bool,
    pub(super) loopback_splice: bool,
    /// `host_binding_ipv4`: the host address of ports published without one (`None`:
    /// 0.0.0.0 and ::).
    pub(super) host_binding: Option<IpAddr>,
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, DaemonError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => Err(DaemonError::InvalidBool {
            key,
            value: v.to_string(),
        }),
    }
}

/// The MTU of network `n`'s interfaces.
pub(super) fn network_mtu(n: &crate::daemon::model::NetworkRecord) -> Result<u32, DaemonError> {
    if n.driver == super::OVERLAY {
        return Ok(super::OVERLAY_MTU);
    }
    Ok(bridge_opts(&n.options)?.mtu)
}

/// Check and parse a bridge network's options.
pub(super) fn bridge_opts(opts: &BTreeMap<String, String>) -> Result<BridgeOpts, DaemonError> {
    if let Some(k) = opts.keys().find(|k| !BRIDGE_OPTIONS.contains(&k.as_str())) {
        return Err(DaemonError::UnknownOption {
            key: k.clone(),
            known: BRIDGE_OPTIONS.join(", "),
        });
    }
    let icc = match opts.get(OPT_ICC) {
        Some(v) => parse_bool(OPT_ICC, v)?,
        None => true,
    };
    let mtu = match opts.get(OPT_MTU) {
        None => DEFAULT_MTU,
        Some(v) => match v.parse::<u32>() {
            Ok(0) => DEFAULT_MTU,
            Ok(m) if (68..=65535).contains(&m) => m,
            _ => {
                return Err(DaemonError::InvalidMtu {
                    key: OPT_MTU,
                    value: v.clone(),
                });
            }
        },
    };
    // Only the two words, unlike Docker's own booleans: a tapnet option, strict.
    let host_loopback = match opts.get(OPT_HOST_LOOPBACK).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(DaemonError::InvalidBool {
                key: OPT_HOST_LOOPBACK,
                value: v.to_string(),
            });
        }
    };
    let loopback_splice = match opts.get(OPT_LOOPBACK_SPLICE) {
        Some(v) => parse_bool(OPT_LOOPBACK_SPLICE, v)?,
        None => false,
    };
    // Docker's parse: any IP address (IPv6 too, despite the name); 0.0.0.0 is the
    // default, every address of both families.
    let host_binding = match opts.get(OPT_HOST_BINDING) {
        None => None,
        Some(v) => match v.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if a.is_unspecified() => None,
            Ok(a) => Some(a),
            Err(_) => {
                return Err(DaemonError::InvalidHostBinding {
                    key: OPT_HOST_BINDING,
                    value: v.clone(),
                });
            }
        },
    };
    Ok(BridgeOpts {
        icc,
        mtu,
        host_loopback,
        loopback_splice,
        host_binding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_docker_booleans() {
        let o = bridge_opts(&BTreeMap::new()).unwrap();
        assert_eq!(
            o,
            BridgeOpts {
                icc: true,
                mtu: 1500,
                host_loopback: false,
                loopback_splice: false,
                host_binding: None,
            }
        );
        for (v, want) in [("FALSE", false), ("0", false), ("f", false), ("T", true)] {
            assert_eq!(
                bridge_opts(&opts(&[(OPT_ICC, v)])).unwrap().icc,
                want,
                "{v}"
            );
        }
        let d: Vec<(&str, &str)> = DEFAULT_BRIDGE_OPTIONS.to_vec();
        assert!(bridge_opts(&opts(&d)).is_ok());
    }

    #[test]
    fn bad_values_say_what_was_wrong() {
        let err = |p: &[(&str, &str)]| bridge_opts(&opts(p)).unwrap_err().to_string();
        assert_eq!(
            err(&[(OPT_ICC, "maybe")]),
            "invalid value \"maybe\" for option com.docker.network.bridge.enable_icc: expected true or false"
        );
        assert_eq!(
            err(&[(OPT_MTU, "67")]),
            "invalid MTU \"67\" in option com.docker.network.driver.mtu: must be between 68 and 65535"
        );
        assert_eq!(bridge_opts(&opts(&[(OPT_MTU, "0")])).unwrap().mtu, 1500);
        assert_eq!(
            err(&[(OPT_HOST_LOOPBACK, "1")]),
            "invalid value \"1\" for option tapnet.host_loopback: expected true or false"
        );
        assert_eq!(
            err(&[(OPT_HOST_BINDING, "nope")]),
            "failed to parse com.docker.network.bridge.host_binding_ipv4 value: nope (nil ip)"
        );
        assert!(err(&[("x.y", "1")]).starts_with("unknown option \"x.y\" for driver bridge; known options: com.docker.network.bridge.name, "));
        assert_eq!(
            bridge_opts(&opts(&[(OPT_HOST_BINDING, "::1")]))
                .unwrap()
                .host_binding,
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            bridge_opts(&opts(&[(OPT_HOST_BINDING, "0.0.0.0")]))
                .unwrap()
                .host_binding,
            None
        );
    }
}
