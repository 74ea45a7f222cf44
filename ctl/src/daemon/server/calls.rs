//! The API's calls over the daemon core: Docker-shaped requests into core calls, records
//! into Docker-shaped answers.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use tapnet_api::{
    DnsStatsEntry, EndpointInfo, EndpointResource, ExternalStatsEntry, HostStatsEntry, Ipam,
    IpamConfig, IpamStatus, NetworkConnectRequest, NetworkCreateRequest, NetworkCreateResponse,
    NetworkDisconnectRequest, NetworkInspect, NetworkPruneResponse, NetworkStatsEntry,
    NetworkStatus, PeerInfo, PoolStatsEntry, PortBinding, PortMap, PortStatsEntry,
    SandboxCreateRequest, SandboxInspect, SandboxInterfaces, SandboxNetworkRequest,
    StageStatsEntry, StatsResponse, SubnetStatus, SwitchStatsEntry,
};
use tapnet_nat::portspec::{self, PortMapping};

use super::error::ApiError;
use super::filters::NetworkFilters;
use crate::daemon::core::{AttachSpec, Daemon, IpamSpec, NetworkSpec};
use crate::daemon::model::{EndpointRecord, NetworkRecord, PortRecord, SandboxRecord};

/// Docker's view of a network and the endpoints on it.
fn inspect(
    d: &Daemon,
    n: &NetworkRecord,
    eps: &[(EndpointRecord, SandboxRecord)],
) -> NetworkInspect {
    let mut subnets = BTreeMap::new();
    for c in &n.ipam {
        let usage = d.pool_usage(&c.pool_id);
        subnets.insert(
            c.subnet.clone(),
            SubnetStatus {
                ips_in_use: usage.in_use,
                dynamic_ips_available: usage.available,
            },
        );
    }
    NetworkInspect {
        name: n.name.clone(),
        id: n.id.clone(),
        created: n.created.clone(),
        scope: n.scope.clone(),
        driver: n.driver.clone(),
        enable_ipv4: n.enable_ipv4,
        enable_ipv6: n.enable_ipv6,
        ipam: Ipam {
            driver: n.ipam_driver.clone(),
            options: n.ipam_options.clone(),
            config: n
                .ipam
                .iter()
                .map(|c| IpamConfig {
                    subnet: c.subnet.clone(),
                    ip_range: c.ip_range.clone().unwrap_or_default(),
                    gateway: c.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    aux_addresses: c
                        .aux
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_string()))
                        .collect(),
                })
                .collect(),
        },
        internal: n.internal,
        attachable: n.attachable,
        ingress: n.ingress,
        config_from: Default::default(),
        config_only: false,
        containers: eps
            .iter()
            .map(|(e, s)| {
                (
                    s.id.clone(),
                    EndpointResource {
                        name: s.name.clone(),
                        endpoint_id: e.id.clone(),
                        mac_address: e.mac.clone(),
                        ipv4_address: e
                            .ipv4
                            .map(|a| format!("{a}/{}", e.prefix_len))
                            .unwrap_or_default(),
                        ipv6_address: String::new(),
                    },
                )
            })
            .collect(),
        options: n.options.clone(),
        labels: n.labels.clone(),
        peers: d
            .network_peers(&n.id)
            .into_iter()
            .map(|ip| PeerInfo {
                name: ip.to_string(),
                ip: ip.to_string(),
            })
            .collect(),
        status: (!subnets.is_empty()).then_some(NetworkStatus {
            ipam: IpamStatus { subnets },
        }),
    }
}

/// tapnet's view of a sandbox and its endpoints.
fn sandbox_view(
    d: &Daemon,
    s: &SandboxRecord,
    eps: &[(EndpointRecord, NetworkRecord)],
) -> SandboxInspect {
    SandboxInspect {
        id: s.id.clone(),
        name: s.name.clone(),
        created: s.created.clone(),
        netns_path: d.netns_path(s),
        networks: eps
            .iter()
            .map(|(e, n)| {
                (
                    n.name.clone(),
                    EndpointInfo {
                        network_id: n.id.clone(),
                        endpoint_id: e.id.clone(),
                        mac_address: e.mac.clone(),
                        ip_address: e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                        ip_prefix_len: e.prefix_len,
                        gateway: n
                            .ipam
                            .first()
                            .and_then(|c| c.gateway)
                            .map(|g| g.to_string())
                            .unwrap_or_default(),
                        interface: e.ifname.clone(),
                        aliases: e.aliases.clone(),
                    },
                )
            })
            .collect(),
        ports: port_map(&s.ports),
    }
}

fn attach_specs(nets: Vec<SandboxNetworkRequest>) -> Vec<AttachSpec> {
    nets.into_iter()
        .map(|n| AttachSpec {
            network: n.network,
            ipv4: n.ipv4_address,
            aliases: n.aliases,
            gw_priority: n.gw_priority,
        })
        .collect()
}

/// Turn the API's `PortBindings` into mappings (one per host binding), checking every
/// key, address and port. An entry with no binding publishes to a free port, as Docker.
pub(super) fn mappings(map: &PortMap) -> Result<Vec<PortMapping>, ApiError> {
    let bad = |e: portspec::PortSpecError| ApiError::bad_request(e.to_string());
    let mut out = Vec::new();
    for (key, bindings) in map {
        let (container_port, proto) = portspec::parse_port_key(key).map_err(bad)?;
        let default = [PortBinding::default()];
        let bindings = if bindings.is_empty() {
            &default[..]
        } else {
            &bindings[..]
        };
        for b in bindings {
            let host_ip = portspec::parse_host_ip(&b.host_ip).map_err(bad)?;
            let host_ports = match b.host_port.as_str() {
                "" | "0" => None,
                p => Some(
                    portspec::parse_port_range(p)
                        .ok_or_else(|| bad(portspec::PortSpecError::HostPort(p.to_string())))?,
                ),
            };
            out.push(PortMapping {
                host_ip,
                host_ports,
                container_port,
                proto,
            });
        }
    }
    Ok(out)
}

/// Docker's `NetworkSettings.Ports` of recorded ports.
pub(super) fn port_map(ports: &[PortRecord]) -> PortMap {
    let mut out: PortMap = BTreeMap::new();
    for p in ports {
        out.entry(format!("{}/{}", p.container_port, p.proto))
            .or_default()
            .push(PortBinding {
                host_ip: p.host_ip.to_string(),
                host_port: p.host_port.to_string(),
            });
    }
    out
}

pub(super) fn networks(d: &Daemon, f: &NetworkFilters) -> Result<Vec<NetworkInspect>, ApiError> {
    let mut out = Vec::new();
    for n in d.networks() {
        // A network removed since the list was read is no longer listed.
        let Ok((_, eps)) = d.network(&n.id) else {
            continue;
        };
        let mut i = inspect(d, &n, &[]);
        if f.matches(&i, !eps.is_empty()) {
            i.containers.clear();
            out.push(i);
        }
    }
    Ok(out)
}

pub(super) fn network_inspect(d: &Daemon, id_or_name: &str) -> Result<NetworkInspect, ApiError> {
    let (n, eps) = d.network(id_or_name)?;
    Ok(inspect(d, &n, &eps))
}

pub(super) fn network_create(
    d: &Daemon,
    req: NetworkCreateRequest,
) -> Result<NetworkCreateResponse, ApiError> {
    if req.config_only
        || req
            .config_from
            .as_ref()
            .is_some_and(|c| !c.network.is_empty())
    {
        return Err(ApiError::bad_request(
            "config-only networks are not supported by tapnet",
        ));
    }
    if req.enable_ipv4 == Some(false) {
        return Err(ApiError::bad_request(
            "IPv4 cannot be disabled on tapnet networks",
        ));
    }
    let ipam = req.ipam.unwrap_or_default();
    if ipam.driver == crate::daemon::core::PLUGIN_IPAM {
        return Err(ApiError::bad_request(
            "the tapnet IPAM driver serves Docker's engine (docker network create --ipam-driver tapnet); tapnet's own networks use the default one",
        ));
    }
    let spec = NetworkSpec {
        id: None,
        name: req.name,
        driver: req.driver,
        ipam: ipam
            .config
            .into_iter()
            .map(|c| IpamSpec {
                subnet: c.subnet,
                ip_range: c.ip_range,
                gateway: c.gateway,
                aux: c.aux_addresses,
            })
            .collect(),
        ipam_driver: ipam.driver,
        ipam_options: ipam.options,
        internal: req.internal,
        attachable: req.attachable,
        ingress: req.ingress,
        enable_ipv6: req.enable_ipv6.unwrap_or(false),
        options: req.options,
        labels: req.labels,
    };
    let rec = d.create_network(spec, false)?;
    Ok(NetworkCreateResponse {
        id: rec.id,
        warning: String::new(),
    })
}

pub(super) fn network_remove(d: &Daemon, id_or_name: &str) -> Result<(), ApiError> {
    Ok(d.remove_network(id_or_name)?)
}

pub(super) fn network_connect(
    d: &Daemon,
    id_or_name: &str,
    req: NetworkConnectRequest,
) -> Result<(), ApiError> {
    let cfg = req.endpoint_config.unwrap_or_default();
    let spec = AttachSpec {
        network: id_or_name.to_string(),
        ipv4: cfg
            .ipam_config
            .map(|c| c.ipv4_address)
            .filter(|s| !s.is_empty()),
        aliases: cfg.aliases,
        gw_priority: cfg.gw_priority,
    };
    d.connect(id_or_name, &req.container, spec)?;
    Ok(())
}

pub(super) fn network_disconnect(
    d: &Daemon,
    id_or_name: &str,
    req: NetworkDisconnectRequest,
) -> Result<(), ApiError> {
    Ok(d.disconnect(id_or_name, &req.container)?)
}

pub(super) fn network_prune(
    d: &Daemon,
    f: &NetworkFilters,
) -> Result<NetworkPruneResponse, ApiError> {
    let removed = d.prune_networks(|n| f.matches(&inspect(d, n, &[]), false))?;
    Ok(NetworkPruneResponse {
        networks_deleted: removed,
    })
}

pub(super) fn sandbox_create(
    d: &Daemon,
    req: SandboxCreateRequest,
) -> Result<SandboxInspect, ApiError> {
    let nets = attach_specs(req.networks);
    let ports = mappings(&req.port_bindings)?;
    let sb = d.create_sandbox(req.name, req.hostname, nets, &ports)?;
    sandbox_inspect(d, &sb.id)
}

pub(super) fn sandbox_create_rootless(
    d: &Daemon,
    req: SandboxCreateRequest,
    peer_pid: u32,
) -> Result<SandboxInspect, ApiError> {
    let ports = mappings(&req.port_bindings)?;
    let sb = d.create_rootless_sandbox(
        req.name,
        req.hostname,
        attach_specs(req.networks),
        &ports,
        peer_pid,
    )?;
    sandbox_inspect(d, &sb.id)
}

pub(super) fn sandbox_interfaces(
    d: &Daemon,
    id_or_name: &str,
) -> Result<SandboxInterfaces, ApiError> {
    Ok(d.rootless_interfaces(id_or_name)?)
}

pub(super) fn sandbox_adopt(
    d: &Daemon,
    id_or_name: &str,
    names: Vec<String>,
    fds: Vec<OwnedFd>,
    peer_pid: u32,
    peer_uid: u32,
) -> Result<SandboxInspect, ApiError> {
    d.check_rootless_caller(id_or_name, peer_uid)?;
    let sb = d.adopt_taps(id_or_name, names, fds, peer_pid)?;
    sandbox_inspect(d, &sb.id)
}

pub(super) fn sandboxes(d: &Daemon) -> Result<Vec<SandboxInspect>, ApiError> {
    Ok(d.sandboxes()
        .iter()
        .map(|(s, eps)| sandbox_view(d, s, eps))
        .collect())
}

pub(super) fn sandbox_inspect(d: &Daemon, id_or_name: &str) -> Result<SandboxInspect, ApiError> {
    let (s, eps) = d.sandbox(id_or_name)?;
    Ok(sandbox_view(d, &s, &eps))
}

pub(super) fn sandbox_remove(d: &Daemon, id_or_name: &str) -> Result<(), ApiError> {
    Ok(d.remove_sandbox(id_or_name)?)
}

fn counters<const N: usize>(pairs: [(&str, u64); N]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

/// The stats response: the engine's counters with the names of what they count, and
/// host networking's.
pub(super) fn stats(d: &Daemon) -> StatsResponse {
    let named = d.stats();
    let stats = &named.datapath.engine;
    let ports = stats
        .ports
        .iter()
        .map(|p| {
            let owner = named.ports.get(&p.id).cloned().unwrap_or_default();
            let s = &p.stats;
            PortStatsEntry {
                name: p.info.name.clone(),
                // `Tap` → `tap`: new kinds need no change here.
                kind: format!("{:?}", p.info.kind).to_lowercase(),
                network: owner.network,
                sandbox: owner.sandbox,
                mtu: p.info.mtu,
                offloads: p.info.offloads,
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                drops: counters([
                    ("rx_errors", s.rx_errors),
                    ("rx_no_buffer", s.rx_no_buffer),
                    ("rx_ring_full", s.rx_ring_full),
                    ("tx_errors", s.tx_errors),
                    ("tx_queue_full", s.tx_queue_full),
                    ("tx_too_big", s.tx_too_big),
                    ("tx_offload_errors", s.tx_offload_errors),
                    ("rx_vnet_hdr_drops", s.rx_vnet_hdr_drops),
                    ("rx_pool_share_drops", s.rx_pool_share_drops),
                ]),
                counters: counters([
                    ("tx_segmented", s.tx_segmented),
                    ("tx_gso_refused", s.tx_gso_refused),
                    ("rx_flood_throttled", s.rx_flood_throttled),
                ]),
            }
        })
        .collect();
    let stages = stats
        .stages
        .iter()
        .map(|st| StageStatsEntry {
            stage: st.kind.name().to_string(),
            worker: st.worker,
            batches: st.stats.batches,
            packets: st.stats.packets,
            drops: counters([
                ("no_port", st.stats.drop_no_port),
                ("no_buffer", st.stats.drop_no_buffer),
                ("switch", st.stats.drop_switch),
            ]),
            sleeps: st.stats.sleeps,
        })
        .collect();
    let networks = stats
        .domains
        .iter()
        .map(|(id, d)| {
            let (network, network_id) = match named.domains.get(id) {
                Some(n) => (n.name.clone(), n.id.clone()),
                None => (format!("domain-{}", id.0), String::new()),
            };
            NetworkStatsEntry {
                network,
                network_id,
                received: d.received,
                forwarded: d.forwarded,
                flooded: d.flooded,
                drops: counters([
                    ("hairpin", d.drop_hairpin),
                    ("bad_source", d.drop_bad_source),
                    ("isolated", d.drop_isolated),
                    ("spoof", d.spoof_drops),
                    ("flood_rate", d.flood_rate_drops),
                ]),
                counters: counters([
                    ("flooded_unknown", d.flooded_unknown),
                    ("learned", d.learned),
                    ("moved", d.moved),
                    ("aged", d.aged),
                    ("flushed", d.flushed),
                    ("table_full", d.table_full),
                    ("learn_limit", d.learn_limit_drops),
                ]),
            }
        })
        .collect();
    let mut external: Vec<ExternalStatsEntry> = named
        .relays
        .iter()
        .map(|(n, r)| ExternalStatsEntry {
            network: n.name.clone(),
            network_id: n.id.clone(),
            counters: r
                .pairs()
                .into_iter()
                .filter(|(_, v)| *v != 0)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })
        .collect();
    external.sort_by(|a, b| a.network.cmp(&b.network));
    let mut dns: Vec<DnsStatsEntry> = named
        .dns
        .iter()
        .map(|(n, s)| DnsStatsEntry {
            network: n.name.clone(),
            network_id: n.id.clone(),
            queries: s.queries,
            answered: s.answered,
            nxdomain: s.nxdomain,
            forwarded: s.forwarded,
            timeouts: s.timeouts,
            refused: s.refused,
            rate_limited: s.rate_limited,
            formerr: s.formerr,
            truncated: s.truncated,
            counters: s
                .pairs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })
        .collect();
    dns.sort_by(|a, b| a.network.cmp(&b.network));
    StatsResponse {
        ports,
        stages,
        networks,
        switch: SwitchStatsEntry {
            processed: stats.switch.processed,
            drops: counters([
                ("malformed", stats.switch.drop_malformed),
                ("no_domain", stats.switch.drop_no_domain),
            ]),
        },
        pool: PoolStatsEntry {
            small_free: stats.pool_free.small,
            large_free: stats.pool_free.large,
        },
        external,
        host: HostStatsEntry {
            sockets: named.datapath.host.sockets,
            published: named.datapath.host.published,
            flow_memory: named.datapath.host.flow_memory,
            flow_memory_limit: named.datapath.host.flow_memory_limit,
            rootless_reaped: named.rootless_reaped,
        },
        api: Default::default(),
        dns,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use tapnet_nat::portspec::Proto;

    use super::*;

    fn bindings(entries: &[(&str, &[(&str, &str)])]) -> PortMap {
        entries
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.iter()
                        .map(|(ip, port)| PortBinding {
                            host_ip: ip.to_string(),
                            host_port: port.to_string(),
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn port_bindings_parse_with_docker_texts() {
        let m = mappings(&bindings(&[
            ("80/tcp", &[("", "8080"), ("127.0.0.1", "")]),
            ("53/udp", &[]),
            ("81", &[("", "9000-9010")]),
        ]))
        .unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].host_ports, None); // 53/udp sorts first
        assert_eq!(m[0].proto, Proto::Udp);
        assert_eq!(m[1].host_ports, Some((8080, 8080)));
        assert_eq!(m[2].host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(m[3].host_ports, Some((9000, 9010)));
        let err = |e: &[(&str, &[(&str, &str)])]| mappings(&bindings(e)).unwrap_err();
        let e = err(&[("x/tcp", &[])]);
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "invalid containerPort: x")
        );
        assert_eq!(err(&[("80/icmp", &[])]).message, "invalid proto: icmp");
        assert_eq!(
            err(&[("80/tcp", &[("", "99999")])]).message,
            "invalid hostPort: 99999"
        );
        assert_eq!(
            err(&[("80/tcp", &[("a.b", "1")])]).message,
            "invalid IP address: a.b"
        );
        // The API's HostIp holds an IPv6 address bare, as Docker's.
        let m = mappings(&bindings(&[("80/tcp", &[("::1", "8080")])])).unwrap();
        assert_eq!(m[0].host_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(
            err(&[("80/tcp", &[("[::1]", "1")])]).message,
            "invalid IP address: [::1]"
        );
    }

    #[test]
    fn inspect_ports_group_by_key() {
        let rec = |c, p| PortRecord {
            proto: "tcp".into(),
            container_port: c,
            host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host_port: p,
        };
        let m = port_map(&[rec(80, 8080), rec(80, 8081), rec(22, 2222)]);
        assert_eq!(m.len(), 2);
        assert_eq!(m["80/tcp"].len(), 2);
        assert_eq!(m["22/tcp"][0].host_port, "2222");
        assert_eq!(m["22/tcp"][0].host_ip, "0.0.0.0");
        let v6 = PortRecord {
            host_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ..rec(80, 8080)
        };
        let m = port_map(&[rec(80, 8080), v6]);
        assert_eq!(
            m["80/tcp"]
                .iter()
                .map(|b| b.host_ip.as_str())
                .collect::<Vec<_>>(),
            ["0.0.0.0", "::"]
        );
    }
}
