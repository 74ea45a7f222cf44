//! `tapnet sandbox create|ls|inspect|rm`: long-lived sandboxes whose network namespace
//! other tools join (`nsenter --net=PATH`, `ip netns exec`).

use anyhow::bail;
use serde_json::{Value, json};
use tapnet_api::{
    PortBinding, PortMap, SandboxCreateRequest, SandboxInspect, SandboxNetworkRequest,
};
use tapnet_nat::portspec;

use crate::cli::args::{SandboxCmd, SandboxLsArgs, SandboxRmArgs, SandboxSpec};
use crate::cli::client::{Client, ClientError, path_segment};
use crate::cli::format::{self, go_time, natural_cmp, short_id};
use crate::cli::network::inspect_objects;

pub(crate) fn run(client: &Client, cmd: SandboxCmd) -> anyhow::Result<u8> {
    match cmd {
        SandboxCmd::Create(a) => {
            let req = create_request(&a.spec)?;
            let sb: SandboxInspect = client.block_on(client.post("/sandboxes", &req))?;
            println!("{}", sb.id);
            Ok(0)
        }
        SandboxCmd::Ls(a) => ls(client, a),
        SandboxCmd::Inspect(a) => inspect_objects(client, "sandboxes", &a),
        SandboxCmd::Rm(a) => rm(client, a),
    }
}

/// The request for a new sandbox. `--ip` and `--network-alias` apply to the first
/// network, as in `docker run`; with no `--network` that is `bridge`.
pub(crate) fn create_request(spec: &SandboxSpec) -> anyhow::Result<SandboxCreateRequest> {
    let mut names = spec.network.clone();
    if names.iter().any(|n| n == "host") {
        bail!(
            "a sandbox cannot use the host network: `tapnet run --network host` runs the command without one"
        );
    }
    if names.is_empty() && (spec.ip.is_some() || !spec.network_alias.is_empty()) {
        names.push("bridge".into());
    }
    let networks = names
        .into_iter()
        .enumerate()
        .map(|(i, network)| SandboxNetworkRequest {
            network,
            ipv4_address: if i == 0 { spec.ip.clone() } else { None },
            aliases: if i == 0 {
                spec.network_alias.clone()
            } else {
                Vec::new()
            },
            gw_priority: 0,
        })
        .collect();
    Ok(SandboxCreateRequest {
        name: spec.name.clone(),
        networks,
        hostname: spec.hostname.clone(),
        port_bindings: port_bindings(&spec.publish)?,
        rootless: false,
    })
}

/// `-p` specs as the API's `PortBindings` (Docker's `nat.ParsePortSpecs`).
pub(crate) fn port_bindings(specs: &[String]) -> anyhow::Result<PortMap> {
    let mut maps = Vec::new();
    for spec in specs {
        maps.extend(portspec::parse(spec).map_err(anyhow::Error::msg)?);
    }
    // The daemon's bounds, checked here too: a request for every port would not even
    // fit in a request body the daemon reads.
    tapnet_ctl::daemon::core::check_port_bounds(&maps)?;
    let mut out = PortMap::new();
    for m in maps {
        out.entry(m.key()).or_default().push(PortBinding {
            host_ip: m.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host_port: m.host_port_string(),
        });
    }
    Ok(out)
}

/// One row of `sandbox ls`.
pub(crate) fn ls_row(s: &SandboxInspect, no_trunc: bool) -> Value {
    let networks: Vec<&str> = s.networks.keys().map(String::as_str).collect();
    let addresses: Vec<String> = s
        .networks
        .values()
        .filter(|e| !e.ip_address.is_empty())
        .map(|e| format!("{}/{}", e.ip_address, e.ip_prefix_len))
        .collect();
    json!({
        "ID": short_id(&s.id, no_trunc),
        "Name": s.name,
        "Networks": networks.join(","),
        "Addresses": addresses.join(","),
        "NetnsPath": s.netns_path,
        "CreatedAt": go_time(&s.created),
    })
}

const LS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "SANDBOX ID"),
    ("Name", "NAME"),
    ("Networks", "NETWORKS"),
    ("Addresses", "ADDRESSES"),
    ("NetnsPath", "NETNS"),
    ("CreatedAt", "CREATED AT"),
];

fn ls(client: &Client, a: SandboxLsArgs) -> anyhow::Result<u8> {
    let mut list: Vec<SandboxInspect> = client.block_on(client.get("/sandboxes"))?;
    list.sort_by(|x, y| natural_cmp(&x.name, &y.name));
    let rows: Vec<Value> = list.iter().map(|s| ls_row(s, a.no_trunc)).collect();
    let out = format::listing(&rows, &LS_COLUMNS[..5], "ID", a.quiet, a.format.as_deref())
        .map_err(anyhow::Error::msg)?;
    print!("{out}");
    Ok(0)
}

fn rm(client: &Client, a: SandboxRmArgs) -> anyhow::Result<u8> {
    let mut status = 0;
    for name in &a.names {
        match client.block_on(client.delete(&format!("/sandboxes/{}", path_segment(name)))) {
            Ok(()) => println!("{name}"),
            Err(e) if a.force && e.status() == Some(404) => {}
            Err(e @ ClientError::Daemon { .. }) => {
                eprintln!("{e}");
                status = 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapnet_api::EndpointInfo;

    #[test]
    fn ip_and_aliases_go_to_the_first_network() {
        let spec = SandboxSpec {
            network: vec!["pets".into(), "db".into()],
            ip: Some("10.0.0.5".into()),
            network_alias: vec!["w".into()],
            ..SandboxSpec::default()
        };
        let r = create_request(&spec).unwrap();
        assert_eq!(r.networks[0].ipv4_address.as_deref(), Some("10.0.0.5"));
        assert_eq!(r.networks[0].aliases, ["w"]);
        assert_eq!(r.networks[1].ipv4_address, None);
        let r = create_request(&SandboxSpec::default()).unwrap();
        assert!(r.networks.is_empty(), "the daemon picks bridge");
        let spec = SandboxSpec {
            ip: Some("172.17.0.9".into()),
            ..SandboxSpec::default()
        };
        assert_eq!(create_request(&spec).unwrap().networks[0].network, "bridge");
        let spec = SandboxSpec {
            network: vec!["host".into()],
            ..SandboxSpec::default()
        };
        assert!(create_request(&spec).is_err());
    }

    #[test]
    fn publish_specs_become_port_bindings() {
        let b = port_bindings(&[
            "8080:80".into(),
            "127.0.0.1::53/udp".into(),
            "9000-9001:90-91".into(),
        ])
        .unwrap();
        assert_eq!(b["80/tcp"][0].host_port, "8080");
        assert_eq!(b["80/tcp"][0].host_ip, "");
        assert_eq!(b["53/udp"][0].host_ip, "127.0.0.1");
        assert_eq!(b["53/udp"][0].host_port, "");
        assert_eq!(b["91/tcp"][0].host_port, "9001");
        let e = port_bindings(&["1-35000".into(), "1-35000/udp".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "too many published ports: 70000 asked for, at most 1024 per sandbox"
        );
        let e = port_bindings(&["80/sctp".into()]).unwrap_err().to_string();
        assert!(e.starts_with("invalid proto: sctp"), "{e}");
    }

    #[test]
    fn ls_rows() {
        let mut s = SandboxInspect {
            id: "f".repeat(64),
            name: "web".into(),
            netns_path: "/run/netns/tapnet-ffffffffffff".into(),
            created: "2026-01-01T00:00:00.000000000Z".into(),
            ..SandboxInspect::default()
        };
        s.networks.insert(
            "pets".into(),
            EndpointInfo {
                ip_address: "10.0.0.2".into(),
                ip_prefix_len: 24,
                ..EndpointInfo::default()
            },
        );
        s.networks.insert("none".into(), EndpointInfo::default());
        let r = ls_row(&s, false);
        assert_eq!(r["ID"], "ffffffffffff");
        assert_eq!(r["Networks"], "none,pets");
        assert_eq!(r["Addresses"], "10.0.0.2/24");
    }
}
