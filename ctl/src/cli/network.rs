//! `tapnet network create|ls|inspect|rm|connect|disconnect|prune`, as `docker network`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::IpAddr;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tapnet_api::{
    ConfigReference, EndpointIpamConfig, EndpointSettings, Ipam, IpamConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkCreateResponse, NetworkDisconnectRequest, NetworkInspect,
    NetworkPruneResponse,
};

use crate::cli::args::{
    InspectArgs, NetConnectArgs, NetCreateArgs, NetDisconnectArgs, NetLsArgs, NetPruneArgs,
    NetRmArgs, NetworkCmd,
};
use crate::cli::client::{Client, ClientError, path_segment, query_value};
use crate::cli::format::{self, go_time, natural_cmp, short_id};

pub(crate) fn run(client: &Client, cmd: NetworkCmd) -> anyhow::Result<u8> {
    match cmd {
        NetworkCmd::Create(a) => create(client, a),
        NetworkCmd::Ls(a) => ls(client, a),
        NetworkCmd::Inspect(a) => inspect(client, a),
        NetworkCmd::Rm(a) => rm(client, a),
        NetworkCmd::Connect(a) => connect(client, a),
        NetworkCmd::Disconnect(a) => disconnect(client, a),
        NetworkCmd::Prune(a) => prune(client, a),
    }
}

/// `key=value` → (key, value); a bare `key` has an empty value (Docker's map options).
pub(crate) fn kv(s: &str) -> (String, String) {
    match s.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (s.to_string(), String::new()),
    }
}

fn kv_map(items: &[String]) -> BTreeMap<String, String> {
    items.iter().map(|s| kv(s)).collect()
}

/// `--filter key=value`… as Docker's `filters` JSON (`{"key":{"value":true}}`), or `None`.
pub(crate) fn filters_json(items: &[String]) -> anyhow::Result<Option<String>> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for f in items {
        let Some((k, v)) = f.split_once('=') else {
            bail!("bad format of filter (expected name=value)");
        };
        m.entry(k.trim().to_lowercase())
            .or_default()
            .insert(v.to_string(), true);
    }
    Ok(Some(serde_json::to_string(&m)?))
}

fn with_filters(path: &str, items: &[String]) -> anyhow::Result<String> {
    Ok(match filters_json(items)? {
        Some(f) => format!("{path}?filters={}", query_value(&f)),
        None => path.to_string(),
    })
}

/// A CIDR block or an address, for matching ranges and gateways to subnets.
fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    match s.split_once('/') {
        Some((a, l)) => {
            let a: IpAddr = a.parse().ok()?;
            let l: u8 = l.parse().ok()?;
            let max = if a.is_ipv4() { 32 } else { 128 };
            (l <= max).then_some((a, l))
        }
        None => {
            let a: IpAddr = s.parse().ok()?;
            Some((a, if a.is_ipv4() { 32 } else { 128 }))
        }
    }
}

/// Docker CLI's `subnetMatches`: does `subnet` contain the address (or the first address
/// of the block) `data`?
fn subnet_contains(subnet: &str, data: &str) -> anyhow::Result<bool> {
    let Some((net, len)) = parse_net(subnet).filter(|_| subnet.contains('/')) else {
        bail!("invalid subnet {subnet}: invalid CIDR address");
    };
    let Some((addr, _)) = parse_net(data) else {
        if data.contains('/') {
            bail!("invalid cidr {data}: invalid CIDR address");
        }
        return Ok(false);
    };
    Ok(match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    })
}

/// Docker CLI's `consolidateIpam`: group ranges, gateways and auxiliary addresses under
/// the subnet that holds them, with the CLI's error texts.
pub(crate) fn consolidate_ipam(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
    aux: &[(String, String)],
) -> anyhow::Result<Vec<IpamConfig>> {
    if subnets.len() < ranges.len() || subnets.len() < gateways.len() {
        bail!("every ip-range or gateway must have a corresponding subnet");
    }
    let mut out: Vec<IpamConfig> = Vec::new();
    for s in subnets {
        for k in &out {
            if subnet_contains(s, &k.subnet)? || subnet_contains(&k.subnet, s)? {
                bail!("multiple overlapping subnet configuration is not supported");
            }
        }
        out.push(IpamConfig {
            subnet: s.clone(),
            ..IpamConfig::default()
        });
    }
    for r in ranges {
        let mut matched = false;
        for c in &mut out {
            if !subnet_contains(&c.subnet, r)? {
                continue;
            }
            if !c.ip_range.is_empty() {
                bail!(
                    "cannot configure multiple ranges ({r}, {}) on the same subnet ({})",
                    c.ip_range,
                    c.subnet
                );
            }
            c.ip_range = r.clone();
            matched = true;
        }
        if !matched {
            bail!("no matching subnet for range {r}");
        }
    }
    for g in gateways {
        let mut matched = false;
        for c in &mut out {
            if !subnet_contains(&c.subnet, g)? {
                continue;
            }
            if !c.gateway.is_empty() {
                bail!(
                    "cannot configure multiple gateways ({g}, {}) for the same subnet ({})",
                    c.gateway,
                    c.subnet
                );
            }
            c.gateway = g.clone();
            matched = true;
        }
        if !matched {
            bail!("no matching subnet for gateway {g}");
        }
    }
    for (name, a) in aux {
        let mut matched = false;
        for c in &mut out {
            if subnet_contains(&c.subnet, a)? {
                c.aux_addresses.insert(name.clone(), a.clone());
                matched = true;
            }
        }
        if !matched {
            bail!("no matching subnet for aux-address {a}");
        }
    }
    Ok(out)
}

/// The request `docker network create` would send for these flags.
pub(crate) fn create_request(a: &NetCreateArgs) -> anyhow::Result<NetworkCreateRequest> {
    let aux: Vec<(String, String)> = a.aux_address.iter().map(|s| kv(s)).collect();
    let config = consolidate_ipam(&a.subnet, &a.ip_range, &a.gateway, &aux)?;
    Ok(NetworkCreateRequest {
        name: a.name.clone(),
        driver: a.driver.clone(),
        scope: a.scope.clone().unwrap_or_default(),
        internal: a.internal,
        attachable: a.attachable,
        ingress: a.ingress,
        config_only: a.config_only,
        config_from: a
            .config_from
            .as_ref()
            .map(|n| ConfigReference { network: n.clone() }),
        ipam: Some(Ipam {
            driver: a.ipam_driver.clone(),
            config,
            options: kv_map(&a.ipam_opt),
        }),
        enable_ipv4: a.ipv4,
        enable_ipv6: a.ipv6,
        options: kv_map(&a.opt),
        labels: kv_map(&a.label),
    })
}

fn create(client: &Client, a: NetCreateArgs) -> anyhow::Result<u8> {
    let req = create_request(&a)?;
    let resp: NetworkCreateResponse = client.block_on(client.post("/networks/create", &req))?;
    if !resp.warning.is_empty() {
        eprintln!("WARNING: {}", resp.warning);
    }
    println!("{}", resp.id);
    Ok(0)
}

/// One row of `network ls`, with the fields (and string values) of docker's
/// `--format json`.
pub(crate) fn ls_row(n: &NetworkInspect, no_trunc: bool) -> Value {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "ID": short_id(&n.id, no_trunc),
        "Name": n.name,
        "Driver": n.driver,
        "Scope": n.scope,
        "IPv4": n.enable_ipv4.to_string(),
        "IPv6": n.enable_ipv6.to_string(),
        "Internal": n.internal.to_string(),
        "Labels": labels.join(","),
        "CreatedAt": go_time(&n.created),
    })
}

/// Columns of `docker network ls` (and the headers of its template fields).
pub(crate) const LS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv4", "IPV4"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED AT"),
];

fn ls(client: &Client, a: NetLsArgs) -> anyhow::Result<u8> {
    let path = with_filters("/networks", &a.filter)?;
    let mut nets: Vec<NetworkInspect> = client.block_on(client.get(&path))?;
    nets.sort_by(|x, y| natural_cmp(&x.name, &y.name));
    let rows: Vec<Value> = nets.iter().map(|n| ls_row(n, a.no_trunc)).collect();
    let out = format::listing(&rows, &LS_COLUMNS[..4], "ID", a.quiet, a.format.as_deref())
        .map_err(anyhow::Error::msg)?;
    print!("{out}");
    Ok(0)
}

/// `inspect` for networks and sandboxes: a JSON array of what was found (or one template
/// line each), then the errors, exit status 1 if any.
pub(crate) fn inspect_objects(client: &Client, kind: &str, a: &InspectArgs) -> anyhow::Result<u8> {
    // Raw bodies: printed in the daemon's key order, as docker prints them.
    let mut found: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for name in &a.names {
        let path = format!("/{kind}/{}", path_segment(name));
        match client.block_on(client.request(hyper::Method::GET, &path, None)) {
            Ok(body) => found.push(String::from_utf8_lossy(&body).into_owned()),
            Err(e @ ClientError::Daemon { .. }) => errors.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    match a.format.as_deref().map(str::trim) {
        None | Some("") | Some("json") => {
            if found.is_empty() {
                println!("[]");
            } else {
                let items: Vec<String> = found
                    .iter()
                    .map(|raw| format!("    {}", format::indent_json(raw, 1)))
                    .collect();
                println!("[\n{}\n]", items.join(",\n"));
            }
        }
        Some(t) => {
            for raw in &found {
                let v: Value = serde_json::from_str(raw)?;
                println!("{}", format::template(t, &v).map_err(anyhow::Error::msg)?);
            }
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(u8::from(!errors.is_empty()))
}

fn inspect(client: &Client, a: InspectArgs) -> anyhow::Result<u8> {
    inspect_objects(client, "networks", &a)
}

fn rm(client: &Client, a: NetRmArgs) -> anyhow::Result<u8> {
    let mut status = 0;
    for name in &a.names {
        let path = format!("/networks/{}", path_segment(name));
        match client.block_on(client.delete(&path)) {
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

pub(crate) fn connect_request(a: &NetConnectArgs) -> NetworkConnectRequest {
    let ipam_config = (a.ip.is_some() || a.ip6.is_some()).then(|| EndpointIpamConfig {
        ipv4_address: a.ip.clone().unwrap_or_default(),
        ipv6_address: a.ip6.clone().unwrap_or_default(),
        link_local_ips: Vec::new(),
    });
    NetworkConnectRequest {
        container: a.sandbox.clone(),
        endpoint_config: Some(EndpointSettings {
            ipam_config,
            aliases: a.alias.clone(),
            driver_opts: kv_map(&a.driver_opt),
            gw_priority: a.gw_priority,
            ..EndpointSettings::default()
        }),
    }
}

fn connect(client: &Client, a: NetConnectArgs) -> anyhow::Result<u8> {
    let path = format!("/networks/{}/connect", path_segment(&a.network));
    client.block_on(client.post_unit(&path, &connect_request(&a)))?;
    Ok(0)
}

fn disconnect(client: &Client, a: NetDisconnectArgs) -> anyhow::Result<u8> {
    let path = format!("/networks/{}/disconnect", path_segment(&a.network));
    let req = NetworkDisconnectRequest {
        container: a.sandbox,
        force: a.force,
    };
    client.block_on(client.post_unit(&path, &req))?;
    Ok(0)
}

/// Docker's confirmation prompt; anything but `y`/`yes` declines.
pub(crate) fn confirm(warning: &str) -> anyhow::Result<bool> {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
}

fn prune(client: &Client, a: NetPruneArgs) -> anyhow::Result<u8> {
    let path = with_filters("/networks/prune", &a.filter)?;
    if !a.force
        && !confirm(
            "WARNING! This will remove all custom networks not used by at least one sandbox.",
        )?
    {
        return Ok(0);
    }
    let resp: NetworkPruneResponse =
        client.block_on(client.post(&path, &serde_json::Map::new()))?;
    if !resp.networks_deleted.is_empty() {
        println!("Deleted Networks:");
        for n in &resp.networks_deleted {
            println!("{n}");
        }
        println!();
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ipam_consolidation_like_docker() {
        let c = consolidate_ipam(
            &s(&["10.1.0.0/16", "10.2.0.0/16"]),
            &s(&["10.2.5.0/24"]),
            &s(&["10.1.0.254"]),
            &[("r".into(), "10.2.0.3".into())],
        )
        .unwrap();
        assert_eq!(c[0].subnet, "10.1.0.0/16");
        assert_eq!(c[0].gateway, "10.1.0.254");
        assert_eq!(c[1].ip_range, "10.2.5.0/24");
        assert_eq!(c[1].aux_addresses["r"], "10.2.0.3");
        let e = |sn: &[&str], r: &[&str], g: &[&str], a: &[(&str, &str)]| {
            let aux: Vec<(String, String)> = a
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            consolidate_ipam(&s(sn), &s(r), &s(g), &aux)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&[], &["10.0.0.0/24"], &[], &[]),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            e(&["10.0.0.0/16", "10.0.1.0/24"], &[], &[], &[]),
            "multiple overlapping subnet configuration is not supported"
        );
        assert_eq!(
            e(&["10.0.0.0/16"], &["10.1.0.0/24"], &[], &[]),
            "no matching subnet for range 10.1.0.0/24"
        );
        assert_eq!(
            e(&["10.0.0.0/16"], &[], &["10.1.0.1"], &[]),
            "no matching subnet for gateway 10.1.0.1"
        );
        assert_eq!(
            e(&["10.0.0.0/16"], &[], &[], &[("x", "10.9.0.1")]),
            "no matching subnet for aux-address 10.9.0.1"
        );
        // One subnet is passed on unchecked, for the daemon to judge.
        assert!(consolidate_ipam(&s(&["bogus"]), &[], &[], &[]).is_ok());
        assert!(subnet_contains("fd00::/64", "fd00::1").unwrap());
        assert!(!subnet_contains("fd00::/64", "10.0.0.1").unwrap());
    }

    #[test]
    fn create_request_carries_every_flag() {
        let cli = Cli::parse_from([
            "tapnet",
            "network",
            "create",
            "--subnet",
            "10.5.0.0/24",
            "--gateway",
            "10.5.0.1",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "--label",
            "flag",
            "--internal",
            "pets",
        ]);
        let Command::Network(NetworkCmd::Create(a)) = cli.command else {
            panic!()
        };
        let r = create_request(&a).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["Name"], "pets");
        assert_eq!(v["Driver"], "bridge");
        assert_eq!(v["Internal"], true);
        assert_eq!(v["IPAM"]["Driver"], "default");
        assert_eq!(
            v["IPAM"]["Config"],
            json!([{"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.1"}])
        );
        assert_eq!(
            v["Options"]["com.docker.network.bridge.enable_icc"],
            "false"
        );
        assert_eq!(v["Labels"], json!({"flag": ""}));
        assert!(v.get("EnableIPv6").is_none());
    }

    #[test]
    fn filters_are_dockers_json() {
        assert_eq!(filters_json(&[]).unwrap(), None);
        assert_eq!(
            filters_json(&s(&["name=a", "label=k=v", "name=b"]))
                .unwrap()
                .unwrap(),
            r#"{"label":{"k=v":true},"name":{"a":true,"b":true}}"#
        );
        assert!(filters_json(&s(&["oops"])).is_err());
    }

    #[test]
    fn ls_rows_match_docker_json() {
        let n = NetworkInspect {
            name: "pets".into(),
            id: "0123456789abcdef".repeat(4),
            driver: "bridge".into(),
            scope: "local".into(),
            created: "2026-01-01T00:00:01.000001007Z".into(),
            enable_ipv4: true,
            labels: [("a".to_string(), "1".to_string())].into_iter().collect(),
            ..NetworkInspect::default()
        };
        assert_eq!(
            ls_row(&n, false).to_string(),
            r#"{"CreatedAt":"2026-01-01 00:00:01.000001007 +0000 UTC","Driver":"bridge","ID":"0123456789ab","IPv4":"true","IPv6":"false","Internal":"false","Labels":"a=1","Name":"pets","Scope":"local"}"#
        );
    }

    #[test]
    fn connect_request_shape() {
        let cli = Cli::parse_from([
            "tapnet", "network", "connect", "--ip", "10.0.0.7", "--alias", "a", "pets", "web",
        ]);
        let Command::Network(NetworkCmd::Connect(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            serde_json::to_value(connect_request(&a)).unwrap(),
            json!({"Container": "web", "EndpointConfig": {
                "IPAMConfig": {"IPv4Address": "10.0.0.7"}, "Aliases": ["a"]}})
        );
    }
}
