//! `tapnet port SANDBOX [PRIVATE_PORT[/PROTO]]`: the host addresses a sandbox's ports are
//! published on, printed as `docker port` prints them (its `runPort`): every mapping as
//! `80/tcp -> 0.0.0.0:8080`, or for one port just `0.0.0.0:8080`, in natural order.

use std::net::IpAddr;

use tapnet_api::{PortMap, SandboxInspect};

use crate::cli::args::PortArgs;
use crate::cli::client::{Client, path_segment};
use crate::cli::format::{natural_cmp, pretty_json};

pub(crate) fn run(client: &Client, a: PortArgs) -> anyhow::Result<u8> {
    let sb: SandboxInspect =
        client.block_on(client.get(&format!("/sandboxes/{}", path_segment(&a.sandbox))))?;
    let json = match a.format.as_deref() {
        None | Some("") | Some("table") => false,
        Some("json") => true,
        Some(f) => anyhow::bail!("unknown --format {f:?}: tapnet port prints a table or json"),
    };
    let ports = select(&sb.ports, &a.sandbox, a.port.as_deref())?;
    if json {
        println!("{}", pretty_json(&ports));
        return Ok(0);
    }
    let out = lines(&ports, a.port.is_some());
    if !out.is_empty() {
        println!("{}", out.join("\n"));
    }
    Ok(0)
}

/// The mappings asked for: all, or those of one port (Docker's errors otherwise).
fn select(ports: &PortMap, sandbox: &str, port: Option<&str>) -> anyhow::Result<PortMap> {
    let Some(raw) = port else {
        return Ok(ports.clone());
    };
    let (num, proto) = raw.split_once('/').unwrap_or((raw, "tcp"));
    let proto = if proto.is_empty() { "tcp" } else { proto };
    if num.parse::<u16>().is_err() {
        anyhow::bail!("Error: invalid port ({num})");
    }
    let key = format!("{num}/{proto}");
    match ports.get(&key) {
        Some(v) if !v.is_empty() => Ok(PortMap::from([(key, v.clone())])),
        _ => anyhow::bail!("Error: No public port '{raw}' published for {sandbox}"),
    }
}

/// Docker's lines: `80/tcp -> 0.0.0.0:8080`, or only the address when one port was
/// asked for; IPv6 hosts in brackets (Go's `net.JoinHostPort`).
fn lines(ports: &PortMap, one: bool) -> Vec<String> {
    let mut out: Vec<String> = ports
        .iter()
        .flat_map(|(from, v)| {
            v.iter().map(move |b| {
                let host = match b.host_ip.parse::<IpAddr>() {
                    Ok(IpAddr::V6(_)) => format!("[{}]:{}", b.host_ip, b.host_port),
                    _ => format!("{}:{}", b.host_ip, b.host_port),
                };
                if one {
                    host
                } else {
                    format!("{from} -> {host}")
                }
            })
        })
        .collect();
    out.sort_by(|a, b| natural_cmp(a, b));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapnet_api::PortBinding;

    fn map() -> PortMap {
        let b = |ip: &str, p: &str| PortBinding {
            host_ip: ip.into(),
            host_port: p.into(),
        };
        PortMap::from([
            ("80/tcp".into(), vec![b("0.0.0.0", "8080")]),
            ("9/tcp".into(), vec![b("127.0.0.1", "49153")]),
            ("53/udp".into(), vec![b("0.0.0.0", "5353"), b("::", "5353")]),
        ])
    }

    #[test]
    fn all_mappings_in_natural_order() {
        assert_eq!(
            lines(&map(), false),
            [
                "9/tcp -> 127.0.0.1:49153",
                "53/udp -> 0.0.0.0:5353",
                "53/udp -> [::]:5353",
                "80/tcp -> 0.0.0.0:8080",
            ]
        );
    }

    #[test]
    fn one_port_and_dockers_errors() {
        let m = select(&map(), "web", Some("80")).unwrap();
        assert_eq!(lines(&m, true), ["0.0.0.0:8080"]);
        let m = select(&map(), "web", Some("53/udp")).unwrap();
        assert_eq!(lines(&m, true).len(), 2);
        assert_eq!(
            select(&map(), "web", Some("7890/udp"))
                .unwrap_err()
                .to_string(),
            "Error: No public port '7890/udp' published for web"
        );
        assert_eq!(
            select(&map(), "web", Some("80/udp"))
                .unwrap_err()
                .to_string(),
            "Error: No public port '80/udp' published for web"
        );
        assert_eq!(
            select(&map(), "web", Some("x")).unwrap_err().to_string(),
            "Error: invalid port (x)"
        );
    }
}
