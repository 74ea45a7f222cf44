//! The `-p` / `--publish` syntax: `[IP:][HOSTPORT[-END]:]CTRPORT[-END][/tcp|udp]`.
//!
//! This follows Docker's `nat.ParsePortSpec` (docker/go-connections `nat/nat.go`): the
//! same splitting on `:` and `/`, the same range rules and the same error texts where
//! Docker has them. A container port range expands to one [`PortMapping`] per port; a
//! host port range with a single container port stays a range, and means "one free
//! port of it". tapnet carries TCP and UDP only (`sctp` is refused), and IPv4 only for
//! now (a bracketed IPv6 host address is refused).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use tapnet_nat::portspec::{parse, PortMapping, Proto};
//!
//! let m = parse("127.0.0.1:8000-8010:80/udp").unwrap();
//! assert_eq!(m, vec![PortMapping {
//!     host_ip: Some(Ipv4Addr::LOCALHOST),
//!     host_ports: Some((8000, 8010)),
//!     container_port: 80,
//!     proto: Proto::Udp,
//! }]);
//! assert_eq!(m[0].to_string(), "127.0.0.1:8000-8010:80/udp");
//! assert_eq!(parse("80/sctp").unwrap_err().to_string(),
//!            "invalid proto: sctp (tapnet publishes tcp and udp ports only)");
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A transport protocol a port can be published for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = PortSpecError;
    fn from_str(s: &str) -> Result<Proto, PortSpecError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Err(PortSpecError::Sctp),
            _ => Err(PortSpecError::Proto(s.to_string())),
        }
    }
}

/// Why a publish spec was refused. The texts are Docker's where Docker has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpecError {
    /// Nothing after the last `:` (Docker: `no port specified`).
    NoPort(String),
    /// The container port (or range) is not a port number.
    ContainerPort(String),
    /// The host port (or range) is not a port number.
    HostPort(String),
    /// A protocol other than tcp, udp or sctp.
    Proto(String),
    /// `sctp`, which Docker takes and tapnet does not carry.
    Sctp,
    /// The host address is not an IPv4 address.
    Ip(String),
    /// A bracketed IPv6 host address.
    Ipv6(String),
    /// Container and host ranges of different lengths.
    RangeMismatch {
        /// The container port range as given.
        container: String,
        /// The host port range as given.
        host: String,
    },
}

impl fmt::Display for PortSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpecError::NoPort(raw) => write!(f, "no port specified: {raw}<empty>"),
            PortSpecError::ContainerPort(p) => write!(f, "invalid containerPort: {p}"),
            PortSpecError::HostPort(p) => write!(f, "invalid hostPort: {p}"),
            PortSpecError::Proto(p) => write!(f, "invalid proto: {p}"),
            PortSpecError::Sctp => {
                f.write_str("invalid proto: sctp (tapnet publishes tcp and udp ports only)")
            }
            PortSpecError::Ip(ip) => write!(f, "Invalid ip address: {ip}"),
            PortSpecError::Ipv6(ip) => write!(
                f,
                "Invalid ip address: {ip} (IPv6 host addresses are not available in this version of tapnet)"
            ),
            PortSpecError::RangeMismatch { container, host } => write!(
                f,
                "invalid ranges specified for container and host Ports: {container} and {host}"
            ),
        }
    }
}

impl std::error::Error for PortSpecError {}

/// One container port published on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The host address to bind; `None` = every address (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port, or an inclusive range to take one free port from; `None` = a
    /// free port from the host's ephemeral range.
    pub host_ports: Option<(u16, u16)>,
    /// The port inside the container (never 0).
    pub container_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

impl PortMapping {
    /// Docker's key for the container side: `80/tcp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto)
    }

    /// The host port as Docker's `HostPort` field holds it: `""`, `8080` or
    /// `8000-8010`.
    pub fn host_port_string(&self) -> String {
        match self.host_ports {
            None => String::new(),
            Some((a, b)) if a == b => a.to_string(),
            Some((a, b)) => format!("{a}-{b}"),
        }
    }
}

impl fmt::Display for PortMapping {
    /// The spec that parses back to this mapping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.host_ip, self.host_ports) {
            (Some(ip), _) => write!(f, "{ip}:{}:", self.host_port_string())?,
            (None, Some(_)) => write!(f, "{}:", self.host_port_string())?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.container_port, self.proto)
    }
}

/// Parse a port or port range (`80`, `8000-8010`) as Docker's `ParsePortRange` does;
/// `None` for anything else (empty, not a number, above 65535, end before start).
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let num = |p: &str| -> Option<u16> {
        // Go's ParseUint takes digits only: no sign, no spaces.
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    match s.split_once('-') {
        None => num(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            (a <= b).then_some((a, b))
        }
    }
}

/// Parse Docker's container-side key, `80/tcp`, `53/udp` or a bare `80` (tcp).
pub fn parse_port_key(key: &str) -> Result<(u16, Proto), PortSpecError> {
    let (port, proto) = match key.split_once('/') {
        Some((p, "")) => (p, Proto::Tcp),
        Some((p, proto)) => (p, proto.parse()?),
        None => (key, Proto::Tcp),
    };
    match parse_port_range(port) {
        Some((p, q)) if p == q && p != 0 => Ok((p, proto)),
        _ => Err(PortSpecError::ContainerPort(port.to_string())),
    }
}

/// Parse a host address as the API's `HostIp` holds it: empty = every address.
pub fn parse_host_ip(ip: &str) -> Result<Option<Ipv4Addr>, PortSpecError> {
    if ip.is_empty() {
        return Ok(None);
    }
    if ip.starts_with('[') || ip.contains(':') {
        return Err(PortSpecError::Ipv6(ip.to_string()));
    }
    ip.parse()
        .map(Some)
        .map_err(|_| PortSpecError::Ip(ip.to_string()))
}

/// Parse one `-p` spec into the mappings it stands for (several for a container port
/// range).
pub fn parse(raw: &str) -> Result<Vec<PortMapping>, PortSpecError> {
    // Docker's splitParts: the last part is the container port, the one before it the
    // host port, and everything before that (rejoined with ':') the address.
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let ctr_part = parts[n - 1];
    let (ip, host) = match n {
        1 => ("".to_string(), ""),
        2 => ("".to_string(), parts[0]),
        _ => (parts[..n - 2].join(":"), parts[n - 2]),
    };
    // Docker's SplitProtoPort.
    let (proto, ctr) = match ctr_part.split_once('/') {
        _ if ctr_part.is_empty() || ctr_part.starts_with('/') => ("", ""),
        None => ("tcp", ctr_part),
        Some((p, "")) => ("tcp", p),
        Some((p, proto)) => (proto.split('/').next().unwrap_or(""), p),
    };
    let host_ip = parse_host_ip(&ip)?;
    if ctr.is_empty() {
        return Err(PortSpecError::NoPort(raw.to_string()));
    }
    let (start, end) = match parse_port_range(ctr) {
        Some((s, e)) if s != 0 => (s, e),
        _ => return Err(PortSpecError::ContainerPort(ctr.to_string())),
    };
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_port_range(host).ok_or_else(|| PortSpecError::HostPort(host.to_string()))?)
    };
    if let Some((hs, he)) = host_range {
        // A host range longer than a single container port is the range to pick from.
        if end - start != he - hs && end != start {
            return Err(PortSpecError::RangeMismatch {
                container: ctr.to_string(),
                host: host.to_string(),
            });
        }
    }
    let proto: Proto = proto.parse()?;
    Ok((0..=end - start)
        .map(|i| PortMapping {
            host_ip,
            host_ports: match host_range {
                // Host port 0 means "any", as in Docker.
                Some((0, 0)) => None,
                Some((hs, he)) if start == end => Some((hs, he)),
                Some((hs, _)) => Some((hs + i, hs + i)),
                None => None,
            },
            container_port: start + i,
            proto,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(spec: &str) -> PortMapping {
        let v = parse(spec).unwrap();
        assert_eq!(v.len(), 1, "{spec}");
        v[0]
    }

    #[test]
    fn forms_docker_takes() {
        let m = one("80");
        assert_eq!(
            (m.host_ip, m.host_ports, m.container_port),
            (None, None, 80)
        );
        assert_eq!(m.proto, Proto::Tcp);
        assert_eq!(one("8080:80").host_ports, Some((8080, 8080)));
        assert_eq!(one("8080:80/UDP").proto, Proto::Udp);
        assert_eq!(one("80/").proto, Proto::Tcp);
        let m = one("127.0.0.1:8080:80/udp");
        assert_eq!(m.host_ip, Some(Ipv4Addr::LOCALHOST));
        let m = one("127.0.0.1::80");
        assert_eq!((m.host_ip, m.host_ports), (Some(Ipv4Addr::LOCALHOST), None));
        assert_eq!(one("8000-8010:80").host_ports, Some((8000, 8010)));
        assert_eq!(one("0:80").host_ports, None);
        let v = parse("8000-8002:80-82/udp").unwrap();
        assert_eq!(
            v.iter()
                .map(|m| (m.host_ports, m.container_port))
                .collect::<Vec<_>>(),
            vec![
                (Some((8000, 8000)), 80),
                (Some((8001, 8001)), 81),
                (Some((8002, 8002)), 82)
            ]
        );
        let v = parse("80-81").unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|m| m.host_ports.is_none()));
    }

    #[test]
    fn docker_error_texts() {
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(err("x"), "invalid containerPort: x");
        assert_eq!(err("0"), "invalid containerPort: 0");
        assert_eq!(err("70000"), "invalid containerPort: 70000");
        assert_eq!(err("90-80"), "invalid containerPort: 90-80");
        assert_eq!(err("y:80"), "invalid hostPort: y");
        assert_eq!(err("-1:80"), "invalid hostPort: -1");
        assert_eq!(err("80/icmp"), "invalid proto: icmp");
        assert!(err("80/sctp").starts_with("invalid proto: sctp"));
        assert_eq!(err("1.2.3:80:80"), "Invalid ip address: 1.2.3");
        assert!(err("[::1]:80:80").starts_with("Invalid ip address: [::1]"));
        assert!(err("[::1]:80:80").contains("IPv6"));
        assert_eq!(err("8080:"), "no port specified: 8080:<empty>");
        assert_eq!(err(""), "no port specified: <empty>");
        assert_eq!(
            err("8000-8001:80-82"),
            "invalid ranges specified for container and host Ports: 80-82 and 8000-8001"
        );
    }

    #[test]
    fn keys_and_host_ips() {
        assert_eq!(parse_port_key("80/tcp"), Ok((80, Proto::Tcp)));
        assert_eq!(parse_port_key("53/udp"), Ok((53, Proto::Udp)));
        assert_eq!(parse_port_key("80"), Ok((80, Proto::Tcp)));
        assert_eq!(
            parse_port_key("80-81/tcp").unwrap_err().to_string(),
            "invalid containerPort: 80-81"
        );
        assert_eq!(parse_port_key("80/sctp"), Err(PortSpecError::Sctp));
        assert_eq!(parse_host_ip(""), Ok(None));
        assert_eq!(parse_host_ip("0.0.0.0"), Ok(Some(Ipv4Addr::UNSPECIFIED)));
        assert!(matches!(parse_host_ip("::"), Err(PortSpecError::Ipv6(_))));
        assert_eq!(parse_host_ip("nope"), Err(PortSpecError::Ip("nope".into())));
        assert_eq!(one("9:80").key(), "80/tcp");
    }

    fn mapping() -> impl Strategy<Value = PortMapping> {
        (
            proptest::option::of(any::<[u8; 4]>().prop_map(Ipv4Addr::from)),
            proptest::option::of(
                (1u16..=65535, 0u16..100).prop_map(|(a, n)| (a, a.saturating_add(n))),
            ),
            1u16..=65535,
            prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)],
        )
            .prop_map(|(host_ip, host_ports, container_port, proto)| PortMapping {
                host_ip,
                host_ports,
                container_port,
                proto,
            })
    }

    proptest! {
        #[test]
        fn printed_spec_parses_back(m in mapping()) {
            prop_assert_eq!(parse(&m.to_string()), Ok(vec![m]));
        }

        #[test]
        fn parse_never_panics(s in "[0-9a-z.:/\\[\\]-]{0,24}") {
            let _ = parse(&s);
        }
    }
}
