//! An in-memory [`Backend`]: a test double for the API server and the CLI. It keeps
//! Docker's lookup rules (full id, name, unique id prefix), statuses and messages, with
//! deliberately simple address allocation (one /16 per network, hosts in order). Sandboxes
//! report the test process's own network namespace as their `NetnsPath`, so `tapnet run`
//! can join it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::daemon::api::filters::NetworkFilters;
use crate::daemon::backend::{ApiError, Backend};
use tapnet_api::{
    EndpointInfo, EndpointResource, IpamConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkCreateResponse, NetworkDisconnectRequest, NetworkInspect, NetworkPruneResponse,
    PREDEFINED_NETWORKS, PortStatsEntry, SandboxCreateRequest, SandboxInspect, StatsResponse,
};

/// The fake daemon core. Starts with the predefined `bridge`, `host` and `none` networks.
pub struct FakeBackend {
    state: Mutex<State>,
}

struct State {
    networks: Vec<NetworkInspect>,
    sandboxes: Vec<SandboxInspect>,
    seq: u64,
    next_octet: u8,
}

impl Default for FakeBackend {
    fn default() -> FakeBackend {
        FakeBackend::new()
    }
}

/// A random-looking but deterministic 64-hex id (splitmix64 of a counter).
fn make_id(seq: u64) -> String {
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..4)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

fn created(seq: u64) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:{:02}.{:09}Z",
        seq / 3600 % 24,
        seq / 60 % 60,
        seq % 60,
        seq * 1000 + 7
    )
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    Some((a.parse().ok()?, l.parse().ok().filter(|l| *l <= 32)?))
}

fn mac_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Docker's `FindNetwork` (and container lookup) order: full id, exact name, unique id
/// prefix.
fn find<T>(
    items: &[T],
    key: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<Option<usize>, String> {
    if let Some(i) = items.iter().position(|x| id(x) == key) {
        return Ok(Some(i));
    }
    if let Some(i) = items.iter().position(|x| name(x) == key) {
        return Ok(Some(i));
    }
    let by_prefix: Vec<usize> = (0..items.len())
        .filter(|&i| !key.is_empty() && id(&items[i]).starts_with(key))
        .collect();
    match by_prefix.as_slice() {
        [] => Ok(None),
        [i] => Ok(Some(*i)),
        many => Err(format!(
            "{key} is ambiguous ({} matches found based on ID prefix)",
            many.len()
        )),
    }
}

impl State {
    fn net(&self, key: &str) -> Result<usize, ApiError> {
        find(&self.networks, key, |n| &n.id, |n| &n.name)
            .map_err(|m| ApiError::bad_request(format!("network {m}")))?
            .ok_or_else(|| ApiError::not_found(format!("network {key} not found")))
    }

    fn sandbox(&self, key: &str) -> Result<usize, ApiError> {
        find(&self.sandboxes, key, |s| &s.id, |s| &s.name)
            .map_err(ApiError::bad_request)?
            .ok_or_else(|| ApiError::not_found(format!("No such container: {key}")))
    }

    fn next_id(&mut self) -> (String, String) {
        self.seq += 1;
        (make_id(self.seq), created(self.seq))
    }

    fn add_network(&mut self, name: &str, driver: &str, subnet: Option<(String, String)>) {
        let (id, created) = self.next_id();
        let mut n = NetworkInspect {
            name: name.into(),
            id,
            created,
            scope: "local".into(),
            driver: driver.into(),
            enable_ipv4: subnet.is_some(),
            attachable: false,
            ..NetworkInspect::default()
        };
        n.ipam.driver = "default".into();
        if let Some((subnet, gateway)) = subnet {
            n.ipam.config.push(IpamConfig {
                subnet,
                gateway,
                ..IpamConfig::default()
            });
        }
        self.networks.push(n);
    }

    fn in_use(&self, net: &NetworkInspect) -> bool {
        self.sandboxes
            .iter()
            .any(|s| s.networks.contains_key(&net.name))
    }

    /// Attach sandbox `si` to network `ni`.
    fn attach(
        &mut self,
        ni: usize,
        si: usize,
        ip: Option<&str>,
        aliases: Vec<String>,
    ) -> Result<(), ApiError> {
        let net = &self.networks[ni];
        let sb = &self.sandboxes[si];
        if sb.networks.contains_key(&net.name) {
            return Err(ApiError::forbidden(format!(
                "endpoint with name {} already exists in network {}",
                sb.name, net.name
            )));
        }
        let (addr, prefix, gateway) = match net.ipam.config.first() {
            Some(c) => {
                let (base, prefix) =
                    parse_cidr(&c.subnet).ok_or_else(|| ApiError::internal("fake: bad subnet"))?;
                let addr = match ip {
                    Some(ip) => ip.parse::<Ipv4Addr>().map_err(|_| {
                        ApiError::bad_request(format!("invalid IPv4 address: {ip}"))
                    })?,
                    None => {
                        let used = net.containers.len() as u32;
                        Ipv4Addr::from(u32::from(base) + 2 + used)
                    }
                };
                (Some(addr), prefix, c.gateway.clone())
            }
            None if ip.is_some() => {
                return Err(ApiError::bad_request(
                    "user specified IP address is supported only when connecting to networks \
                     with user configured subnets",
                ));
            }
            None => (None, 0, String::new()),
        };
        let endpoint_id = make_id(self.seq + 1000);
        self.seq += 1;
        let mac = addr.map(mac_of).unwrap_or_default();
        let (net_name, net_id) = (net.name.clone(), net.id.clone());
        let sb = &mut self.sandboxes[si];
        let ifname = format!("eth{}", sb.networks.len());
        sb.networks.insert(
            net_name,
            EndpointInfo {
                network_id: net_id,
                endpoint_id: endpoint_id.clone(),
                mac_address: mac.clone(),
                ip_address: addr.map(|a| a.to_string()).unwrap_or_default(),
                ip_prefix_len: prefix,
                gateway,
                interface: ifname,
                aliases,
            },
        );
        let resource = EndpointResource {
            name: sb.name.clone(),
            endpoint_id,
            mac_address: mac,
            ipv4_address: addr.map(|a| format!("{a}/{prefix}")).unwrap_or_default(),
            ipv6_address: String::new(),
        };
        let sb_id = sb.id.clone();
        self.networks[ni].containers.insert(sb_id, resource);
        Ok(())
    }

    fn detach(&mut self, ni: usize, si: usize) -> Result<(), ApiError> {
        let name = self.networks[ni].name.clone();
        let sb = &mut self.sandboxes[si];
        if sb.networks.remove(&name).is_none() {
            return Err(ApiError::forbidden(format!(
                "container {} is not connected to network {name}",
                sb.name
            )));
        }
        let sb_id = sb.id.clone();
        self.networks[ni].containers.remove(&sb_id);
        Ok(())
    }
}

impl FakeBackend {
    /// A fresh fake with the predefined networks.
    pub fn new() -> FakeBackend {
        let mut s = State {
            networks: Vec::new(),
            sandboxes: Vec::new(),
            seq: 0,
            next_octet: 18,
        };
        s.add_network(
            "bridge",
            "bridge",
            Some(("172.17.0.0/16".into(), "172.17.0.1".into())),
        );
        s.add_network("host", "host", None);
        s.add_network("none", "null", None);
        FakeBackend {
            state: Mutex::new(s),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for FakeBackend {
    fn networks(&self, f: &NetworkFilters) -> Result<Vec<NetworkInspect>, ApiError> {
        let s = self.lock();
        Ok(s.networks
            .iter()
            .filter(|n| f.matches(n, s.in_use(n)))
            .map(|n| NetworkInspect {
                containers: BTreeMap::new(),
                ..n.clone()
            })
            .collect())
    }

    fn network_inspect(&self, id_or_name: &str) -> Result<NetworkInspect, ApiError> {
        let s = self.lock();
        Ok(s.networks[s.net(id_or_name)?].clone())
    }

    fn network_create(&self, req: NetworkCreateRequest) -> Result<NetworkCreateResponse, ApiError> {
        let mut s = self.lock();
        if PREDEFINED_NETWORKS.contains(&req.name.as_str()) {
            return Err(ApiError::forbidden(format!(
                "operation is not permitted on predefined {} network ",
                req.name
            )));
        }
        if s.networks.iter().any(|n| n.name == req.name) {
            return Err(ApiError::conflict(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        if req.driver != "bridge" {
            return Err(ApiError::not_found(format!(
                "plugin \"{}\" not found",
                req.driver
            )));
        }
        let mut config: Vec<IpamConfig> = req
            .ipam
            .as_ref()
            .map(|i| i.config.clone())
            .unwrap_or_default();
        for c in &config {
            if parse_cidr(&c.subnet).is_none() {
                return Err(ApiError::bad_request(format!(
                    "invalid network config:\ninvalid subnet {}: invalid CIDR block notation",
                    c.subnet
                )));
            }
        }
        if config.is_empty() {
            let o = s.next_octet;
            s.next_octet += 1;
            config.push(IpamConfig {
                subnet: format!("172.{o}.0.0/16"),
                gateway: format!("172.{o}.0.1"),
                ..IpamConfig::default()
            });
        }
        for c in &mut config {
            if c.gateway.is_empty() {
                if let Some((base, _)) = parse_cidr(&c.subnet) {
                    c.gateway = Ipv4Addr::from(u32::from(base) + 1).to_string();
                }
            }
        }
        s.add_network(&req.name, &req.driver, None);
        let n = s
            .networks
            .last_mut()
            .ok_or_else(|| ApiError::internal("fake"))?;
        n.ipam.config = config;
        n.enable_ipv4 = req.enable_ipv4.unwrap_or(true);
        n.enable_ipv6 = req.enable_ipv6.unwrap_or(false);
        n.internal = req.internal;
        n.attachable = req.attachable;
        n.options = req.options;
        n.labels = req.labels;
        Ok(NetworkCreateResponse {
            id: n.id.clone(),
            warning: String::new(),
        })
    }

    fn network_remove(&self, id_or_name: &str) -> Result<(), ApiError> {
        let mut s = self.lock();
        let i = s.net(id_or_name)?;
        let n = &s.networks[i];
        if PREDEFINED_NETWORKS.contains(&n.name.as_str()) {
            return Err(ApiError::forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        if s.in_use(n) {
            return Err(ApiError::forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.name, n.id
            )));
        }
        s.networks.remove(i);
        Ok(())
    }

    fn network_connect(
        &self,
        id_or_name: &str,
        req: NetworkConnectRequest,
    ) -> Result<(), ApiError> {
        let mut s = self.lock();
        let ni = s.net(id_or_name)?;
        let si = s.sandbox(&req.container)?;
        let ec = req.endpoint_config.unwrap_or_default();
        let ip = ec
            .ipam_config
            .map(|c| c.ipv4_address)
            .filter(|a| !a.is_empty());
        s.attach(ni, si, ip.as_deref(), ec.aliases)
    }

    fn network_disconnect(
        &self,
        id_or_name: &str,
        req: NetworkDisconnectRequest,
    ) -> Result<(), ApiError> {
        let mut s = self.lock();
        let ni = s.net(id_or_name)?;
        let si = s.sandbox(&req.container)?;
        s.detach(ni, si)
    }

    fn network_prune(&self, f: &NetworkFilters) -> Result<NetworkPruneResponse, ApiError> {
        let mut s = self.lock();
        let doomed: Vec<String> = s
            .networks
            .iter()
            .filter(|n| {
                !PREDEFINED_NETWORKS.contains(&n.name.as_str())
                    && !s.in_use(n)
                    && f.matches(n, false)
            })
            .map(|n| n.name.clone())
            .collect();
        s.networks.retain(|n| !doomed.contains(&n.name));
        Ok(NetworkPruneResponse {
            networks_deleted: doomed,
        })
    }

    fn sandbox_create(&self, req: SandboxCreateRequest) -> Result<SandboxInspect, ApiError> {
        let mut s = self.lock();
        let (id, created) = s.next_id();
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("sandbox{}", s.seq));
        if s.sandboxes.iter().any(|x| x.name == name) {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \
                 \"{}\". You have to remove (or rename) that container to be able to reuse \
                 that name.",
                s.sandboxes
                    .iter()
                    .find(|x| x.name == name)
                    .map(|x| x.id.as_str())
                    .unwrap_or("")
            )));
        }
        let mut nets = req.networks;
        if nets.is_empty() {
            nets.push(tapnet_api::SandboxNetworkRequest {
                network: "bridge".into(),
                ..Default::default()
            });
        }
        let idx: Vec<usize> = nets
            .iter()
            .map(|n| s.net(&n.network))
            .collect::<Result<_, _>>()?;
        let ports = fake_ports(&s.sandboxes, &req.port_bindings, &name)?;
        s.sandboxes.push(SandboxInspect {
            id,
            name,
            created,
            netns_path: format!("/proc/{}/ns/net", std::process::id()),
            networks: BTreeMap::new(),
            ports,
        });
        let si = s.sandboxes.len() - 1;
        for (n, ni) in nets.into_iter().zip(idx) {
            if let Err(e) = s.attach(ni, si, n.ipv4_address.as_deref(), n.aliases) {
                let sb = s.sandboxes.pop();
                for net in &mut s.networks {
                    if let Some(sb) = &sb {
                        net.containers.remove(&sb.id);
                    }
                }
                return Err(e);
            }
        }
        Ok(s.sandboxes[si].clone())
    }

    fn sandboxes(&self) -> Result<Vec<SandboxInspect>, ApiError> {
        Ok(self.lock().sandboxes.clone())
    }

    fn sandbox_inspect(&self, id_or_name: &str) -> Result<SandboxInspect, ApiError> {
        let s = self.lock();
        Ok(s.sandboxes[s.sandbox(id_or_name)?].clone())
    }

    fn sandbox_remove(&self, id_or_name: &str) -> Result<(), ApiError> {
        let mut s = self.lock();
        let si = s.sandbox(id_or_name)?;
        let sb = s.sandboxes.remove(si);
        for n in &mut s.networks {
            n.containers.remove(&sb.id);
        }
        Ok(())
    }

    fn stats(&self) -> Result<StatsResponse, ApiError> {
        let s = self.lock();
        let mut out = StatsResponse::default();
        for sb in &s.sandboxes {
            for (net, ep) in &sb.networks {
                out.ports.push(PortStatsEntry {
                    name: format!("tn{}", &ep.endpoint_id[..8]),
                    kind: "tap".into(),
                    network: net.clone(),
                    sandbox: sb.name.clone(),
                    mtu: 1500,
                    offloads: true,
                    rx_packets: 10,
                    rx_bytes: 1000,
                    tx_packets: 20,
                    tx_bytes: 2000,
                    drops: [("rx_no_buffer".to_string(), 1)].into_iter().collect(),
                    counters: BTreeMap::new(),
                });
            }
        }
        Ok(out)
    }
}

/// The fake's port allocation: the same checks and texts as the daemon's, but nothing
/// is bound. A given port (or a range's first port) is taken as is unless another fake
/// sandbox holds it; a port left open is the first the others do not hold from 49153.
fn fake_ports(
    others: &[SandboxInspect],
    req: &tapnet_api::PortMap,
    name: &str,
) -> Result<tapnet_api::PortMap, ApiError> {
    use tapnet_api::PortBinding;
    let maps = crate::daemon::publish::mappings(req)?;
    let mut held: Vec<(String, String, String)> = others
        .iter()
        .flat_map(|o| {
            o.ports.iter().flat_map(|(k, v)| {
                let proto = k.split('/').nth(1).unwrap_or("tcp").to_string();
                v.iter()
                    .map(move |b| (proto.clone(), b.host_ip.clone(), b.host_port.clone()))
            })
        })
        .collect();
    let mut out = tapnet_api::PortMap::new();
    for m in maps {
        let ip = m
            .host_ip
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
            .to_string();
        let proto = m.proto.as_str().to_string();
        let free = |p: u16, held: &[(String, String, String)]| {
            !held.contains(&(proto.clone(), ip.clone(), p.to_string()))
        };
        let port = match m.host_ports {
            Some((a, b)) => (a..=b).find(|p| free(*p, &held)),
            None => (49153..=65535).find(|p| free(*p, &held)),
        };
        let Some(port) = port else {
            return Err(ApiError::new(
                500,
                format!(
                    "driver failed programming external connectivity on endpoint {name}: \
                     Bind for {ip}:{} failed: port is already allocated",
                    m.host_port_string()
                ),
            ));
        };
        held.push((proto, ip.clone(), port.to_string()));
        out.entry(m.key()).or_default().push(PortBinding {
            host_ip: ip,
            host_port: port.to_string(),
        });
    }
    Ok(out)
}
