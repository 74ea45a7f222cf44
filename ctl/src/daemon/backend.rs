//! The API's [`Backend`] over the daemon core: turns Docker-shaped requests into core
//! calls and records into Docker-shaped answers.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::api::filters::NetworkFilters;
use super::core::{AttachSpec, Daemon, Fail, IpamSpec, NetworkSpec};
use super::model::{EndpointRecord, NetworkRecord, SandboxRecord};
use tapnet_api::{
    EndpointInfo, EndpointResource, ExternalStatsEntry, HostStatsEntry, Ipam, IpamConfig,
    IpamStatus, NetworkConnectRequest, NetworkCreateRequest, NetworkCreateResponse,
    NetworkDisconnectRequest, NetworkInspect, NetworkPruneResponse, NetworkStatsEntry,
    NetworkStatus, PoolStatsEntry, PortStatsEntry, SandboxCreateRequest, SandboxInspect,
    SandboxInterfaces, SandboxNetworkRequest, StageStatsEntry, StatsResponse, SubnetStatus,
    SwitchStatsEntry,
};
use tapnet_engine::EngineStats;
use tapnet_switch::{DomainId, PortId};

/// An error the API returns: an HTTP status and Docker's `{"message": …}` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (400, 403, 404, 409, 500).
    pub status: u16,
    /// What went wrong, in words a user can act on.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// 403: the operation is not permitted (predefined networks, pool limits).
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, message)
    }

    /// 404: no such network, sandbox or endpoint.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    /// 409: a name is taken, or the object is in use.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }

    /// 500: the daemon failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// The daemon core, as the API server sees it. Every method is synchronous and runs on
/// the server's single control thread; an `Err` becomes the response's status and
/// message.
pub trait Backend: Send + Sync + 'static {
    /// Every network matching `f`, with `Containers` left empty (as Docker since API 1.28).
    fn networks(&self, f: &NetworkFilters) -> Result<Vec<NetworkInspect>, ApiError>;
    /// One network by full id, name, or unique id prefix (Docker's order of matching).
    fn network_inspect(&self, id_or_name: &str) -> Result<NetworkInspect, ApiError>;
    /// Create a network.
    fn network_create(&self, req: NetworkCreateRequest) -> Result<NetworkCreateResponse, ApiError>;
    /// Remove a network that no endpoint uses.
    fn network_remove(&self, id_or_name: &str) -> Result<(), ApiError>;
    /// Attach the sandbox named in `req.Container` to a network.
    fn network_connect(&self, id_or_name: &str, req: NetworkConnectRequest)
    -> Result<(), ApiError>;
    /// Detach the sandbox named in `req.Container` from a network.
    fn network_disconnect(
        &self,
        id_or_name: &str,
        req: NetworkDisconnectRequest,
    ) -> Result<(), ApiError>;
    /// Remove every unused, user-defined network matching `f` (`label`, `label!`, `until`).
    fn network_prune(&self, f: &NetworkFilters) -> Result<NetworkPruneResponse, ApiError>;
    /// Create a sandbox with its endpoints.
    fn sandbox_create(&self, req: SandboxCreateRequest) -> Result<SandboxInspect, ApiError>;
    /// Every sandbox.
    fn sandboxes(&self) -> Result<Vec<SandboxInspect>, ApiError>;
    /// One sandbox by full id, name, or unique id prefix.
    fn sandbox_inspect(&self, id_or_name: &str) -> Result<SandboxInspect, ApiError>;
    /// Remove a sandbox and everything it holds.
    fn sandbox_remove(&self, id_or_name: &str) -> Result<(), ApiError>;
    /// Create a rootless sandbox for the process `peer_pid` (see
    /// [`crate::daemon::rootless`]).
    fn sandbox_create_rootless(
        &self,
        _req: SandboxCreateRequest,
        _peer_pid: u32,
    ) -> Result<SandboxInspect, ApiError> {
        Err(ApiError::new(501, "this backend has no rootless sandboxes"))
    }
    /// The interfaces a rootless sandbox's process must create.
    fn sandbox_interfaces(&self, _id_or_name: &str) -> Result<SandboxInterfaces, ApiError> {
        Err(ApiError::new(501, "this backend has no rootless sandboxes"))
    }
    /// Attach the TAPs a rootless sandbox's process `peer_pid` created (`fds`, one per
    /// name in `names`).
    fn sandbox_adopt(
        &self,
        _id_or_name: &str,
        _names: Vec<String>,
        _fds: Vec<std::os::fd::OwnedFd>,
        _peer_pid: u32,
    ) -> Result<SandboxInspect, ApiError> {
        Err(ApiError::new(501, "this backend has no rootless sandboxes"))
    }
    /// The engine's counters.
    fn stats(&self) -> Result<StatsResponse, ApiError>;
}

/// Who owns an engine port, for [`stats_from_engine`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortOwner {
    /// Network name.
    pub network: String,
    /// Sandbox name.
    pub sandbox: String,
}

fn counters<const N: usize>(pairs: [(&str, u64); N]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

/// Build the stats response from the engine's counters. `port_owner` names the network and
/// sandbox of a port; `domain_owner` gives the (name, id) of the network a domain
/// belongs to.
pub fn stats_from_engine(
    stats: &EngineStats,
    port_owner: impl Fn(PortId) -> Option<PortOwner>,
    domain_owner: impl Fn(DomainId) -> Option<(String, String)>,
) -> StatsResponse {
    let ports = stats
        .ports
        .iter()
        .map(|p| {
            let owner = port_owner(p.id).unwrap_or_default();
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
                ]),
                counters: counters([("tx_segmented", s.tx_segmented)]),
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
            let (network, network_id) =
                domain_owner(*id).unwrap_or_else(|| (format!("domain-{}", id.0), String::new()));
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
                ]),
                counters: counters([
                    ("flooded_unknown", d.flooded_unknown),
                    ("learned", d.learned),
                    ("moved", d.moved),
                    ("aged", d.aged),
                    ("flushed", d.flushed),
                    ("table_full", d.table_full),
                ]),
            }
        })
        .collect();
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
            small_free: stats.pool_free.0,
            large_free: stats.pool_free.1,
        },
        // Host networking is not the engine's: the daemon fills these in.
        external: Vec::new(),
        host: HostStatsEntry::default(),
    }
}

impl From<Fail> for ApiError {
    fn from(f: Fail) -> ApiError {
        ApiError::new(f.status, f.message)
    }
}

/// The daemon as the API server sees it.
pub struct DaemonBackend(pub Arc<Daemon>);

fn inspect(
    d: &Daemon,
    n: &NetworkRecord,
    eps: &[(EndpointRecord, SandboxRecord)],
) -> NetworkInspect {
    let mut subnets = BTreeMap::new();
    for c in &n.ipam {
        let (in_use, avail) = d.pool_usage(&c.pool_id);
        subnets.insert(
            c.subnet.clone(),
            SubnetStatus {
                ips_in_use: in_use,
                dynamic_ips_available: avail,
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
        peers: Vec::new(),
        status: (!subnets.is_empty()).then_some(NetworkStatus {
            ipam: IpamStatus { subnets },
        }),
    }
}

fn sandbox_inspect(s: &SandboxRecord, eps: &[(EndpointRecord, NetworkRecord)]) -> SandboxInspect {
    SandboxInspect {
        id: s.id.clone(),
        name: s.name.clone(),
        created: s.created.clone(),
        netns_path: match &s.rootless {
            Some(owner) => super::rootless::netns_path(owner),
            None => format!("{}/{}", tapnet_engine::sys::netns::NETNS_RUN_DIR, s.netns),
        },
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
        ports: super::publish::port_map(&s.ports),
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

impl Backend for DaemonBackend {
    fn networks(&self, f: &NetworkFilters) -> Result<Vec<NetworkInspect>, ApiError> {
        let mut out = Vec::new();
        for n in self.0.networks() {
            let (_, eps) = self.0.network(&n.id)?;
            let mut i = inspect(&self.0, &n, &[]);
            if f.matches(&i, !eps.is_empty()) {
                i.containers.clear();
                out.push(i);
            }
        }
        Ok(out)
    }

    fn network_inspect(&self, id_or_name: &str) -> Result<NetworkInspect, ApiError> {
        let (n, eps) = self.0.network(id_or_name)?;
        Ok(inspect(&self.0, &n, &eps))
    }

    fn network_create(&self, req: NetworkCreateRequest) -> Result<NetworkCreateResponse, ApiError> {
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
        let spec = NetworkSpec {
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
        let rec = self.0.create_network(spec, false)?;
        Ok(NetworkCreateResponse {
            id: rec.id,
            warning: String::new(),
        })
    }

    fn network_remove(&self, id_or_name: &str) -> Result<(), ApiError> {
        Ok(self.0.remove_network(id_or_name)?)
    }

    fn network_connect(
        &self,
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
        self.0.connect(id_or_name, &req.container, spec)?;
        Ok(())
    }

    fn network_disconnect(
        &self,
        id_or_name: &str,
        req: NetworkDisconnectRequest,
    ) -> Result<(), ApiError> {
        Ok(self.0.disconnect(id_or_name, &req.container)?)
    }

    fn network_prune(&self, f: &NetworkFilters) -> Result<NetworkPruneResponse, ApiError> {
        let d = &self.0;
        let removed = d.prune_networks(|n| f.matches(&inspect(d, n, &[]), false))?;
        Ok(NetworkPruneResponse {
            networks_deleted: removed,
        })
    }

    fn sandbox_create(&self, req: SandboxCreateRequest) -> Result<SandboxInspect, ApiError> {
        let nets = attach_specs(req.networks);
        let ports = super::publish::mappings(&req.port_bindings)?;
        let sb = self
            .0
            .create_sandbox(req.name, req.hostname, nets, &ports)?;
        self.sandbox_inspect(&sb.id)
    }

    fn sandbox_create_rootless(
        &self,
        req: SandboxCreateRequest,
        peer_pid: u32,
    ) -> Result<SandboxInspect, ApiError> {
        let ports = super::publish::mappings(&req.port_bindings)?;
        let sb = self.0.create_rootless_sandbox(
            req.name,
            req.hostname,
            attach_specs(req.networks),
            &ports,
            peer_pid,
        )?;
        self.sandbox_inspect(&sb.id)
    }

    fn sandbox_interfaces(&self, id_or_name: &str) -> Result<SandboxInterfaces, ApiError> {
        Ok(self.0.rootless_interfaces(id_or_name)?)
    }

    fn sandbox_adopt(
        &self,
        id_or_name: &str,
        names: Vec<String>,
        fds: Vec<OwnedFd>,
        peer_pid: u32,
    ) -> Result<SandboxInspect, ApiError> {
        let sb = self.0.adopt_taps(id_or_name, names, fds, peer_pid)?;
        self.sandbox_inspect(&sb.id)
    }

    fn sandboxes(&self) -> Result<Vec<SandboxInspect>, ApiError> {
        Ok(self
            .0
            .sandboxes()
            .iter()
            .map(|(s, eps)| sandbox_inspect(s, eps))
            .collect())
    }

    fn sandbox_inspect(&self, id_or_name: &str) -> Result<SandboxInspect, ApiError> {
        let (s, eps) = self.0.sandbox(id_or_name)?;
        Ok(sandbox_inspect(&s, &eps))
    }

    fn sandbox_remove(&self, id_or_name: &str) -> Result<(), ApiError> {
        Ok(self.0.remove_sandbox(id_or_name)?)
    }

    fn stats(&self) -> Result<StatsResponse, ApiError> {
        let st = self.0.engine().stats();
        let owners = self.0.port_owners();
        let domains = self.0.domain_names();
        let mut external: Vec<ExternalStatsEntry> = domains
            .values()
            .filter_map(|(id, name)| {
                let r = self.0.hostnet().relay_stats(id)?;
                Some(ExternalStatsEntry {
                    network: name.clone(),
                    network_id: id.clone(),
                    counters: r
                        .pairs()
                        .into_iter()
                        .filter(|(_, v)| *v != 0)
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                })
            })
            .collect();
        external.sort_by(|a, b| a.network.cmp(&b.network));
        let h = self.0.hostnet().stats();
        let mut resp = stats_from_engine(
            &st,
            |p| {
                owners.get(&p).map(|(network, sandbox)| PortOwner {
                    network: network.clone(),
                    sandbox: sandbox.clone(),
                })
            },
            |d| domains.get(&d).map(|(id, name)| (name.clone(), id.clone())),
        );
        resp.external = external;
        resp.host = HostStatsEntry {
            sockets: h.sockets,
            published: h.published,
        };
        Ok(resp)
    }
}
