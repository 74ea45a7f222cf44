//! The records the daemon stores: one per network, endpoint and sandbox. They hold the
//! desired state; everything live (namespaces, TAPs, engine ports) is derived from them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// One IPAM pool of a network, as the user asked for it and as it was granted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfigRecord {
    /// Subnet in CIDR notation.
    pub subnet: String,
    /// Sub-range dynamic addresses come from, if any.
    pub ip_range: Option<String>,
    /// Gateway address.
    pub gateway: Option<Ipv4Addr>,
    /// Reserved auxiliary addresses by name.
    pub aux: BTreeMap<String, Ipv4Addr>,
    /// The IPAM pool id.
    pub pool_id: String,
}

/// A network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    /// `local`.
    pub scope: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// No traffic leaves the subnet.
    pub internal: bool,
    /// Sandboxes may attach (always true for local networks).
    pub attachable: bool,
    /// Swarm ingress network (never, for now).
    pub ingress: bool,
    /// IPv4 enabled.
    pub enable_ipv4: bool,
    /// IPv6 enabled.
    pub enable_ipv6: bool,
    /// Driver options (`-o`).
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// IPAM driver name (`default`).
    pub ipam_driver: String,
    /// IPAM driver options.
    pub ipam_options: BTreeMap<String, String>,
    /// IPAM pools (one IPv4 pool for bridge networks, none for host and null).
    pub ipam: Vec<IpamConfigRecord>,
    /// One of the three networks that exist from the first start.
    pub predefined: bool,
}

/// An endpoint: one sandbox's attachment to one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// 64 hex characters.
    pub id: String,
    /// The network.
    pub network_id: String,
    /// The sandbox.
    pub sandbox_id: String,
    /// Interface name inside the sandbox (`eth0`, `eth1`, …).
    pub ifname: String,
    /// MAC address, `02:42` and the IPv4 address.
    pub mac: String,
    /// IPv4 address, if the network has IPAM.
    pub ipv4: Option<Ipv4Addr>,
    /// Prefix length of the address.
    pub prefix_len: u8,
    /// The address was asked for (`--ip`), not allocated.
    pub static_ip: bool,
    /// Extra DNS names on this network.
    pub aliases: Vec<String>,
    /// Higher wins the default route.
    pub gw_priority: i64,
    /// The address is held by an IPAM driver outside the core (Docker's engine asked
    /// tapnet's IPAM plugin for it): the core neither requested it nor releases it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipam_held: bool,
}

/// A sandbox: a network namespace with one interface per endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Name of its network namespace (under /run/netns).
    pub netns: String,
    /// Hostname.
    pub hostname: String,
    /// Endpoint ids, in the order they were attached.
    pub endpoints: Vec<String>,
    /// Published ports, as bound (absent in records written before ports existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRecord>,
    /// Set for a rootless sandbox (see [`crate::daemon::rootless`]): it has no named
    /// namespace (`netns` is empty); its interfaces live in the namespace of this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootless: Option<RootlessOwner>,
    /// Set for a sandbox that stands for a container of another runtime, which asked
    /// for its interface through a plugin (see [`External`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
}

/// The container runtime a sandbox's namespace belongs to, when it is neither this
/// daemon's nor a rootless process's. The runtime creates and deletes the namespace; the
/// daemon only puts an interface there (or hands one over) and takes it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum External {
    /// Docker's engine, through the remote network driver: one sandbox per Docker
    /// endpoint (the endpoint's id is the sandbox's only endpoint's id). The sandbox
    /// has no namespace of its own (`netns` is empty): at `Join` the interface is made
    /// in the daemon's namespace under the endpoint's `ifname`, and Docker moves it into
    /// `sandbox_key` (renaming it).
    Docker {
        /// Docker's sandbox (its namespace's path), once joined.
        #[serde(default)]
        sandbox_key: String,
    },
    /// A CNI runtime (podman, containerd): the sandbox's `netns` is the path the
    /// runtime gave (`CNI_NETNS`), its one endpoint's interface `CNI_IFNAME`.
    Cni {
        /// `CNI_CONTAINERID`.
        container_id: String,
    },
}

impl External {
    /// The runtime's name, for messages.
    pub fn runtime(&self) -> &'static str {
        match self {
            External::Docker { .. } => "docker",
            External::Cni { .. } => "a CNI runtime",
        }
    }
}

/// One published port of a sandbox: the host address and port actually bound, so that a
/// restarted daemon binds exactly these again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The port inside the sandbox.
    pub container_port: u16,
    /// The host address bound (`0.0.0.0` = every IPv4 address, `::` every IPv6 one).
    /// Stored as its text, as an IPv4-only record was, so old records read back.
    pub host_ip: IpAddr,
    /// The host port bound.
    pub host_port: u16,
}

/// The process a rootless sandbox belongs to: the `tapnet run` that created it until its
/// interfaces arrive, then the process whose namespace holds them. The start time tells
/// a reused PID from the original process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootlessOwner {
    /// Process id (in the daemon's PID namespace).
    pub pid: u32,
    /// Start time of the process, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// A fresh random 64-hex-character id.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Now, as RFC 3339 UTC with nanoseconds, like Docker's `Created`.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

/// Format seconds since the epoch (UTC) as RFC 3339 with nanoseconds.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    // Civil-from-days (H. Hinnant's algorithm), proleptic Gregorian calendar.
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(
            rfc3339(1_795_833_338, 123),
            "2026-11-28T02:35:38.000000123Z"
        );
    }

    #[test]
    fn port_records_round_trip_and_old_records_read() {
        // Records stored before IPv6 held an Ipv4Addr: the same JSON text.
        let old = r#"{"proto":"tcp","container_port":80,"host_ip":"0.0.0.0","host_port":8080}"#;
        let r: PortRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
        for ip in ["::", "::1", "2001:db8::5"] {
            let r = PortRecord {
                host_ip: ip.parse().unwrap(),
                ..r.clone()
            };
            let back: PortRecord =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }
}
