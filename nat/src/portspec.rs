//! The `-p` / `--publish` syntax: `[IP:][HOSTPORT[-END]:]CTRPORT[-END][/tcp|udp]`.
//!
//! This follows Docker's `nat.ParsePortSpec` (docker/go-connections `nat/nat.go`): the
//! same splitting on `:` and `/`, the same range rules and the same error texts where
//! Docker has them. A container port range expands to one [`PortMapping`] per port; a
//! host port range with a single container port stays a range, and means "one free
//! port of it". tapnet carries TCP and UDP only (`sctp` is refused).
//!
//! The host address may be IPv6, in brackets (`[::1]:8080:80`) or, as Docker also
//! takes it, bare (`::1:8080:80`: everything before the last two `:`-separated parts is
//! the address). An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) means its IPv4
//! address, as in Docker's bridge driver.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
//! use tapnet_nat::portspec::{parse, PortMapping, Proto};
//!
//! let m = parse("127.0.0.1:8000-8010:80/udp").unwrap();
//! assert_eq!(m, vec![PortMapping {
//!     host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
//!     host_ports: Some((8000, 8010)),
//!     container_port: 80,
//!     proto: Proto::Udp,
//! }]);
//! assert_eq!(m[0].to_string(), "127.0.0.1:8000-8010:80/udp");
//! let m = parse("[::1]::80").unwrap();
//! assert_eq!(m[0].host_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
//! assert_eq!(m[0].to_string(), "[::1]::80/tcp");
//! assert_eq!(parse("[::1:80:80").unwrap_err().to_string(),
//!            "invalid IP address [::1: address [::1:: missing ']' in address");
//! assert_eq!(parse("80/sctp").unwrap_err().to_string(),
//!            "invalid proto: sctp (tapnet publishes tcp and udp ports only)");
//! ```

use std::fmt;
use std::net::IpAddr;
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
    /// The host address is not an IP address.
    Ip(String),
    /// A host address in brackets that Go's `net.SplitHostPort` refuses (Docker strips
    /// the brackets with it).
    Brackets {
        /// The address as given, brackets included.
        ip: String,
        /// `SplitHostPort`'s reason, e.g. `missing ']' in address`.
        reason: &'static str,
    },
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
            PortSpecError::Ip(ip) => write!(f, "invalid IP address: {ip}"),
            // Go's AddrError of `SplitHostPort(ip + ":")`, wrapped as Docker wraps it.
            PortSpecError::Brackets { ip, reason } => {
                write!(f, "invalid IP address {ip}: address {ip}:: {reason}")
            }
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
    /// The host address to bind; `None` = every address (0.0.0.0 and, where the host
    /// has IPv6, `::`).
    pub host_ip: Option<IpAddr>,
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
            (Some(IpAddr::V6(ip)), _) => write!(f, "[{ip}]:{}:", self.host_port_string())?,
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

/// Parse a host address as the API's `HostIp` holds it (no brackets): empty = every
/// address. An IPv4-mapped IPv6 address is taken as its IPv4 address.
pub fn parse_host_ip(ip: &str) -> Result<Option<IpAddr>, PortSpecError> {
    if ip.is_empty() {
        return Ok(None);
    }
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => Ok(Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })),
        Ok(v4) => Ok(Some(v4)),
        Err(_) => Err(PortSpecError::Ip(ip.to_string())),
    }
}

/// The address inside a bracketed host address (`[::1]` gives `::1`), with the checks
/// of Go's `net.SplitHostPort(ip + ":")`, which Docker strips the brackets with.
fn strip_brackets(ip: &str) -> Result<&str, PortSpecError> {
    let fail = |reason| PortSpecError::Brackets {
        ip: ip.to_string(),
        reason,
    };
    let Some(end) = ip.find(']') else {
        return Err(fail("missing ']' in address"));
    };
    // `]` must be last (so that the ':' SplitHostPort sees comes right after it).
    if end + 1 != ip.len() {
        return Err(fail(if ip.as_bytes()[end + 1] == b':' {
            "too many colons in address"
        } else {
            "missing port in address"
        }));
    }
    if ip[1..].contains('[') {
        return Err(fail("unexpected '[' in address"));
    }
    Ok(&ip[1..end])
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
    let ip = if ip.starts_with('[') {
        strip_brackets(&ip)?
    } else {
        &ip
    };
    // `[]` strips to nothing: every address, as in Docker.
    let host_ip = parse_host_ip(ip)?;
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
                // A range's host port 0 is "any" too (`0-54:1-55` maps 1 to any port).
                Some((hs, _)) if hs + i == 0 => None,
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
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn one(spec: &str) -> PortMapping {
        let v = parse(spec).unwrap();
        assert_eq!(v.len(), 1, "{spec}");
        v[0]
    }

    /// Found by the `portspec` fuzz target: the first port of a host range starting at 0
    /// was kept as "host port 0", which prints as `0:1/tcp` and parses back as "any".
    #[test]
    fn host_port_zero_in_a_range_means_any() {
        let v = parse(":0-54:1-55").unwrap();
        assert_eq!(v.len(), 55);
        assert_eq!((v[0].host_ports, v[0].container_port), (None, 1));
        assert_eq!((v[1].host_ports, v[1].container_port), (Some((1, 1)), 2));
        for m in &v {
            assert_eq!(parse(&m.to_string()).unwrap(), vec![*m], "{m}");
        }
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
        let lo4 = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let m = one("127.0.0.1:8080:80/udp");
        assert_eq!(m.host_ip, lo4);
        let m = one("127.0.0.1::80");
        assert_eq!((m.host_ip, m.host_ports), (lo4, None));
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
        assert_eq!(err("1.2.3:80:80"), "invalid IP address: 1.2.3");
        assert_eq!(err("localhost:80:80"), "invalid IP address: localhost");
        assert_eq!(err("8080:"), "no port specified: 8080:<empty>");
        assert_eq!(err(""), "no port specified: <empty>");
        assert_eq!(
            err("8000-8001:80-82"),
            "invalid ranges specified for container and host Ports: 80-82 and 8000-8001"
        );
    }

    #[test]
    fn ipv6_host_addresses() {
        let lo6 = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let any6 = Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        // Bracketed, as Docker documents it.
        let m = one("[::1]:8080:80");
        assert_eq!((m.host_ip, m.host_ports), (lo6, Some((8080, 8080))));
        assert_eq!(one("[::]:8080:80/udp").host_ip, any6);
        let m = one("[2001:db8::68]::333");
        assert_eq!(m.host_ip, Some("2001:db8::68".parse().unwrap()));
        assert_eq!(m.host_ports, None);
        assert_eq!(one("[::1]:8000-8010:80").host_ports, Some((8000, 8010)));
        // Bare, as go-connections' tests take it: all but the last two parts.
        assert_eq!(one("::1:80:80").host_ip, lo6);
        assert_eq!(one("::::80").host_ip, any6);
        assert_eq!(one("2001:db8::68::333").host_ports, None);
        // A bracketed IPv4 address is an IPv4 address; a mapped one too; `[]` is none.
        let lo4 = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(one("[127.0.0.1]:80:80").host_ip, lo4);
        assert_eq!(one("[::ffff:127.0.0.1]:80:80").host_ip, lo4);
        assert_eq!(one("[]:80:80").host_ip, None);
        // Printed with brackets, which parse back.
        assert_eq!(one("::1:80:80").to_string(), "[::1]:80:80/tcp");
        assert_eq!(one("[::]::80/udp").to_string(), "[::]::80/udp");
    }

    #[test]
    fn ipv6_error_texts() {
        // Docker's texts: `net.SplitHostPort(ip + ":")` refusals wrapped in
        // "invalid IP address <ip>: ...", then `net.ParseIP` refusals.
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(
            err("[::1:80:80"),
            "invalid IP address [::1: address [::1:: missing ']' in address"
        );
        assert_eq!(
            err("[::1]x:80:80"),
            "invalid IP address [::1]x: address [::1]x:: missing port in address"
        );
        assert_eq!(
            err("[::1]:1:80:80"),
            "invalid IP address [::1]:1: address [::1]:1:: too many colons in address"
        );
        assert_eq!(
            err("[[::1]:80:80"),
            "invalid IP address [[::1]: address [[::1]:: unexpected '[' in address"
        );
        assert_eq!(err("[::g]:80:80"), "invalid IP address: ::g");
        assert_eq!(
            err("[fe80::1%eth0]:80:80"),
            "invalid IP address: fe80::1%eth0"
        );
        assert_eq!(err("::1]:80:80"), "invalid IP address: ::1]");
        // Too few parts to hold a bare IPv6 address: the address is what is left.
        assert_eq!(err("::1:80"), "invalid IP address: :");
        assert_eq!(
            err("[::1]:80"),
            "invalid IP address [:: address [::: missing ']' in address"
        );
        assert_eq!(
            parse_host_ip("[::1]"),
            Err(PortSpecError::Ip("[::1]".into()))
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
        assert_eq!(
            parse_host_ip("0.0.0.0"),
            Ok(Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
        );
        assert_eq!(
            parse_host_ip("::"),
            Ok(Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))
        );
        assert_eq!(
            parse_host_ip("::ffff:10.0.0.1"),
            Ok(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))))
        );
        assert_eq!(parse_host_ip("nope"), Err(PortSpecError::Ip("nope".into())));
        assert_eq!(one("9:80").key(), "80/tcp");
    }

    fn mapping() -> impl Strategy<Value = PortMapping> {
        (
            proptest::option::of(prop_oneof![
                any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
                // Not IPv4-mapped: those parse as their IPv4 address.
                any::<[u8; 16]>()
                    .prop_map(Ipv6Addr::from)
                    .prop_filter("IPv4-mapped", |a| a.to_ipv4_mapped().is_none())
                    .prop_map(IpAddr::V6),
            ]),
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
