//! What Docker's engine asks of tapnet through its network and IPAM plugin protocols
//! (the server's `docker_plugin` speaks the protocol; this is the core's side).
//!
//! - **Networks** keep Docker's network id, so `docker network inspect` and
//!   `tapnet network inspect` show one id. Docker does not tell a driver the network's
//!   name: it is the `tapnet.name` option (`docker network create -o tapnet.name=NAME`),
//!   which also lets `tapnet run --network NAME` join the same network, or
//!   `docker-` and the id's first 12 characters.
//! - **Endpoints**: every Docker endpoint is a sandbox of its own, marked
//!   [`External::Docker`], with one endpoint that has Docker's endpoint id. Docker
//!   creates the endpoint (with the address its IPAM driver gave), then joins it to a
//!   container: only then is the interface made, a persistent TAP in the daemon's
//!   namespace that Docker moves into the container, renames and configures. Leaving
//!   deletes it, wherever it is then (found by its MAC in the container, or back in the
//!   daemon's namespace under its own name).
//! - **Restarts**: the TAP outlives the daemon's process, and Docker's configuration of
//!   it (name, address, routes) stays in the container. A daemon that starts again finds
//!   each joined endpoint's TAP by its MAC in the container's namespace (the sandbox key
//!   Docker gave at `Join`) and attaches it again, published ports and all; while it
//!   was down the container's frames went nowhere. An endpoint whose container went
//!   meanwhile (its namespace is gone) is left joined to nothing until Docker deletes it.
//! - **IPAM**: with `--ipam-driver tapnet` the pools and addresses are tapnet's own
//!   IPAM's, requested and released by Docker's engine (the network's `ipam_driver` is
//!   [`PLUGIN_IPAM`] and its endpoints' addresses are `ipam_held`), but for the pool:
//!   Docker 20.10 releases it before it deletes the network, so the network's removal
//!   releases it, as for tapnet's own networks; with Docker's own
//!   IPAM, the network gets a pool of the subnet Docker chose and the endpoints the
//!   addresses Docker chose, as if given with `--subnet` and `--ip`.
//! - **Published ports** (`ProgramExternalConnectivity`) are tapnet's published ports
//!   for the endpoint's sandbox.
//!
//! Calls for an endpoint or network that is not there (Docker repeating a removal after
//! a restart) succeed: removal is idempotent, as Docker's cleanup expects.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use tapnet_nat::portspec::PortMapping;
use tapnet_switch::MacAddr;

use super::{Daemon, DaemonError, IpamSpec, NetworkSpec, PLUGIN_IPAM, Result, State, prefix_len};
use crate::daemon::chain::chain;
use crate::daemon::ipam::{PoolRequest, avoid_list, check_host};
use crate::daemon::model::{EndpointRecord, External, SandboxRecord, new_id, now_rfc3339};
use crate::daemon::plumbing::{EndpointPlan, PlumbingError};
use crate::daemon::store::Change;

/// The option that names a Docker network on tapnet's side.
pub const OPT_TAPNET_NAME: &str = "tapnet.name";

/// What Docker's `CreateNetwork` carries, in the core's terms.
#[derive(Clone, Debug, Default)]
pub struct DockerNetwork {
    /// Docker's network id (64 hex characters).
    pub id: String,
    /// The subnet, gateway and address space of its IPv4 pool, if it has one.
    pub pool: Option<DockerPool>,
    /// `com.docker.network.generic`: the `-o` options.
    pub options: BTreeMap<String, String>,
    /// `com.docker.network.internal`.
    pub internal: bool,
    /// `com.docker.network.enable_ipv6`.
    pub ipv6: bool,
}

/// One IPv4 pool of a Docker network, as `IPv4Data` carries it.
#[derive(Clone, Debug, Default)]
pub struct DockerPool {
    /// `AddressSpace`: [`PLUGIN_IPAM`]'s spaces when tapnet's IPAM plugin gave it.
    pub held: bool,
    /// `Pool`, a CIDR.
    pub subnet: String,
    /// `Gateway`, an address in CIDR notation or bare.
    pub gateway: String,
}

/// What `Join` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The interface's name in the daemon's namespace (`SrcName`).
    pub ifname: String,
    /// The network's gateway, for the container's default route (none on an internal
    /// network).
    pub gateway: Option<Ipv4Addr>,
}

/// A Docker endpoint's short name: `docker-` and the endpoint id's first 12 characters.
fn sandbox_name(endpoint: &str) -> String {
    format!("docker-{}", &endpoint[..12.min(endpoint.len())])
}

/// The TAP's name in the daemon's namespace until Docker moves it: `tn` and 12 hex
/// characters of the endpoint id (an interface name has at most 15).
fn host_ifname(endpoint: &str) -> String {
    format!("tn{}", &endpoint[..12.min(endpoint.len())])
}

fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Daemon {
    /// `IpamDriver.RequestPool`: a pool of `subnet` (any free one of the default pools
    /// if empty), addresses from `sub_pool` if given. Returns its id and subnet.
    pub fn plugin_request_pool(&self, subnet: &str, sub_pool: &str) -> Result<(String, String)> {
        let mut st = self.lock();
        let req = PoolRequest::parse(subnet, sub_pool, "", &BTreeMap::new())?;
        let host = self.plumbing.host_networks();
        let mut ipam = st.ipam.clone();
        let pool = ipam.request_pool(&req, &avoid_list(&host))?;
        if req.subnet.is_some_and(|s| !s.addr().is_unspecified()) {
            check_host(pool.subnet, &host)?;
        }
        let out = (pool.id.clone(), pool.subnet.to_string());
        self.store.commit(&[], Some(&State::ipam_bytes(&ipam)?))?;
        st.ipam = ipam;
        Ok(out)
    }

    /// `IpamDriver.ReleasePool`. A pool a network still uses is refused; an unknown
    /// one is no error.
    pub fn plugin_release_pool(&self, pool_id: &str) -> Result<()> {
        let mut st = self.lock();
        if st.ipam.pool(pool_id).is_none() {
            return Ok(());
        }
        if let Some(n) = st
            .networks
            .values()
            .find(|n| n.ipam.iter().any(|c| c.pool_id == pool_id))
        {
            return Err(DaemonError::PoolInUse {
                pool: pool_id.to_string(),
                network: n.name.clone(),
            });
        }
        let mut ipam = st.ipam.clone();
        ipam.release_pool(pool_id)
            .map_err(DaemonError::ReleasePool)?;
        self.store.commit(&[], Some(&State::ipam_bytes(&ipam)?))?;
        st.ipam = ipam;
        Ok(())
    }

    /// `IpamDriver.RequestAddress`: `want`, or the next free address. The gateway
    /// (`gateway`) is the pool's own (reserved with it) unless another is asked for.
    /// Returns the address and the pool's prefix length.
    pub fn plugin_request_address(
        &self,
        pool_id: &str,
        want: Option<Ipv4Addr>,
        gateway: bool,
    ) -> Result<(Ipv4Addr, u8)> {
        let mut st = self.lock();
        let pool = st
            .ipam
            .pool(pool_id)
            .ok_or_else(|| DaemonError::NoPool(pool_id.to_string()))?
            .clone();
        let len = pool.subnet.prefix_len();
        if gateway && want.is_none_or(|w| w == pool.gateway) {
            return Ok((pool.gateway, len));
        }
        let mut ipam = st.ipam.clone();
        let a = ipam.request_address(pool_id, want)?;
        self.store.commit(&[], Some(&State::ipam_bytes(&ipam)?))?;
        st.ipam = ipam;
        Ok((a, len))
    }

    /// `IpamDriver.ReleaseAddress`. The pool's gateway, an address not allocated and an
    /// unknown pool are no error.
    pub fn plugin_release_address(&self, pool_id: &str, addr: Ipv4Addr) -> Result<()> {
        let mut st = self.lock();
        let Some(pool) = st.ipam.pool(pool_id) else {
            return Ok(());
        };
        if pool.gateway == addr || !st.ipam.is_allocated(pool_id, addr) {
            return Ok(());
        }
        let mut ipam = st.ipam.clone();
        let _ = ipam.release_address(pool_id, addr);
        self.store.commit(&[], Some(&State::ipam_bytes(&ipam)?))?;
        st.ipam = ipam;
        Ok(())
    }

    /// `NetworkDriver.CreateNetwork`: a tapnet bridge network with Docker's id. Again
    /// for a network that exists (Docker replays its networks as it starts): nothing
    /// happens.
    pub fn docker_create_network(&self, d: DockerNetwork) -> Result<()> {
        if !valid_id(&d.id) {
            return Err(DaemonError::BadDockerId(d.id));
        }
        if self.view().networks.contains_key(&d.id) {
            return Ok(());
        }
        let mut options = d.options;
        let name = options
            .remove(OPT_TAPNET_NAME)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("docker-{}", &d.id[..12]));
        let ipam = d
            .pool
            .iter()
            .map(|p| IpamSpec {
                subnet: p.subnet.clone(),
                gateway: p.gateway.split('/').next().unwrap_or_default().to_string(),
                ..Default::default()
            })
            .collect();
        let held = d.pool.as_ref().is_some_and(|p| p.held);
        let spec = NetworkSpec {
            id: Some(d.id),
            name,
            driver: "bridge".into(),
            ipam,
            ipam_driver: if held {
                PLUGIN_IPAM.into()
            } else {
                String::new()
            },
            internal: d.internal,
            enable_ipv6: d.ipv6,
            options,
            ..Default::default()
        };
        self.create_network(spec, false).map(drop)
    }

    /// `NetworkDriver.DeleteNetwork`; an unknown network is no error.
    pub fn docker_delete_network(&self, id: &str) -> Result<()> {
        if !self.view().networks.contains_key(id) {
            return Ok(());
        }
        self.remove_network(id)
    }

    /// `NetworkDriver.CreateEndpoint`: a sandbox for Docker endpoint `ep_id` on network
    /// `net_id` with address `addr` (which Docker's IPAM driver gave) and `mac` (Docker's
    /// `--mac-address`, or one made from the address). Returns the endpoint.
    pub fn docker_create_endpoint(
        &self,
        net_id: &str,
        ep_id: &str,
        addr: Option<Ipv4Addr>,
        mac: Option<[u8; 6]>,
    ) -> Result<EndpointRecord> {
        if !valid_id(ep_id) {
            return Err(DaemonError::BadDockerId(ep_id.to_string()));
        }
        let mut st = self.lock();
        let n = st
            .networks
            .get(net_id)
            .cloned()
            .ok_or_else(|| DaemonError::NetworkNotFound(net_id.to_string()))?;
        if let Some(e) = st.endpoints.get(ep_id) {
            return Err(DaemonError::EndpointExists(e.id.clone()));
        }
        if n.driver != "bridge" {
            return Err(DaemonError::ConnectAtCreationOnly {
                network: n.name,
                driver: n.driver,
            });
        }
        let cfg = n.ipam.first();
        let held = n.ipam_driver == PLUGIN_IPAM;
        let mut ipam = st.ipam.clone();
        let ipv4 = match (cfg, addr) {
            (None, None) => None,
            (None, Some(_)) => return Err(DaemonError::NoIpam(n.name)),
            // Docker's engine asked tapnet's IPAM plugin for it: it must be allocated.
            (Some(c), Some(a)) if held => {
                if !st.ipam.is_allocated(&c.pool_id, a) {
                    return Err(DaemonError::NotAllocated(a));
                }
                Some(a)
            }
            (Some(c), want) => Some(ipam.request_address(&c.pool_id, want)?),
        };
        let prefix = match cfg {
            Some(c) => prefix_len(&c.subnet)?,
            None => 0,
        };
        let mac = mac.or_else(|| ipv4.map(|a| MacAddr::from_ipv4(a).0));
        let sb_id = new_id();
        let e = EndpointRecord {
            id: ep_id.to_string(),
            network_id: n.id.clone(),
            sandbox_id: sb_id.clone(),
            ifname: host_ifname(ep_id),
            mac: mac.map(|m| MacAddr(m).to_string()).unwrap_or_default(),
            ipv4,
            prefix_len: prefix,
            static_ip: true,
            ipam_held: held && ipv4.is_some(),
            ..Default::default()
        };
        let sb = SandboxRecord {
            id: sb_id.clone(),
            name: sandbox_name(ep_id),
            created: now_rfc3339(),
            hostname: ep_id[..12].to_string(),
            endpoints: vec![e.id.clone()],
            external: Some(External::Docker {
                sandbox_key: String::new(),
            }),
            ..Default::default()
        };
        self.store.commit(
            &[Change::PutEndpoint(&e), Change::PutSandbox(&sb)],
            Some(&State::ipam_bytes(&ipam)?),
        )?;
        st.ipam = ipam;
        st.endpoints.insert(e.id.clone(), e.clone());
        st.sandboxes.insert(sb.id.clone(), sb);
        Ok(e)
    }

    /// The sandbox of Docker endpoint `ep_id`.
    fn docker_sandbox(st: &State, ep_id: &str) -> Result<SandboxRecord> {
        st.endpoints
            .get(ep_id)
            .and_then(|e| st.sandboxes.get(&e.sandbox_id))
            .filter(|s| matches!(s.external, Some(External::Docker { .. })))
            .cloned()
            .ok_or_else(|| DaemonError::NoDockerEndpoint(ep_id.to_string()))
    }

    /// `NetworkDriver.Join`: make the endpoint's TAP in the daemon's namespace and put
    /// it in the datapath; Docker moves it into `sandbox_key`.
    pub fn docker_join(&self, ep_id: &str, sandbox_key: &str) -> Result<Joined> {
        let mut st = self.lock();
        let mut sb = Self::docker_sandbox(&st, ep_id)?;
        let e = st.endpoints[ep_id].clone();
        if st.attached.contains(ep_id) {
            return Err(DaemonError::EndpointJoined(ep_id.to_string()));
        }
        let n = st.networks[&e.network_id].clone();
        sb.external = Some(External::Docker {
            sandbox_key: sandbox_key.to_string(),
        });
        self.store.commit(&[Change::PutSandbox(&sb)], None)?;
        st.sandboxes.insert(sb.id.clone(), sb);
        self.realize_network(&mut st, &n)?;
        let plan = EndpointPlan {
            id: &e.id,
            network: &e.network_id,
            iface: st.iface(&e)?,
        };
        self.plumbing.plug_host(&plan)?;
        st.attached.insert(e.id.clone());
        let gateway = n
            .ipam
            .first()
            .and_then(|c| c.gateway)
            .filter(|_| !n.internal);
        Ok(Joined {
            ifname: e.ifname,
            gateway,
        })
    }

    /// `NetworkDriver.Leave`: the endpoint's interface leaves the datapath (and, its
    /// TAP closed, the container).
    pub fn docker_leave(&self, ep_id: &str) -> Result<()> {
        let mut st = self.lock();
        let mut sb = Self::docker_sandbox(&st, ep_id)?;
        let e = st.endpoints[ep_id].clone();
        self.unpublish(&mut st, &sb.id);
        self.unrealize_endpoint(&mut st, "", &e)?;
        self.docker_unplug(&sb, &e);
        sb.external = Some(External::Docker {
            sandbox_key: String::new(),
        });
        sb.ports.clear();
        self.store.commit(&[Change::PutSandbox(&sb)], None)?;
        st.sandboxes.insert(sb.id.clone(), sb);
        Ok(())
    }

    /// Delete the TAP of Docker endpoint `e` of sandbox `sb`, wherever it is: in the
    /// container, under the name Docker gave it, or in the daemon's namespace, under its
    /// own (never moved, or given back). Nothing there is no error.
    pub(super) fn docker_unplug(&self, sb: &SandboxRecord, e: &EndpointRecord) {
        let key = match &sb.external {
            Some(External::Docker { sandbox_key }) => sandbox_key.as_str(),
            _ => return,
        };
        if let (false, Ok(mac)) = (key.is_empty(), e.mac.parse::<MacAddr>()) {
            if let Ok(Some(name)) = self.plumbing.find_tap(key, mac.0) {
                if let Err(err) = self.plumbing.unplug(key, &name) {
                    tracing::warn!(endpoint = %e.id, error = %chain(&err), "could not delete a Docker endpoint's interface");
                }
            }
        }
        if let Err(err) = self.plumbing.unplug_host(&e.ifname) {
            tracing::warn!(endpoint = %e.id, error = %chain(&err), "could not delete a Docker endpoint's interface");
        }
    }

    /// At start: attach again the TAP of joined Docker endpoint sandbox `sb`, found by its
    /// MAC in the container's namespace, and publish its ports again. If the container
    /// is gone (or its interface is), the endpoint is no longer joined: what is left of
    /// the TAP goes, and the endpoint waits for Docker's `DeleteEndpoint`.
    pub(super) fn restore_docker(&self, st: &mut State, sb: &SandboxRecord) -> Result<()> {
        let Some(External::Docker { sandbox_key }) = &sb.external else {
            return Ok(());
        };
        // Created but not joined: no interface to find.
        if sandbox_key.is_empty() {
            return Ok(());
        }
        let Some(e) = sb
            .endpoints
            .first()
            .and_then(|id| st.endpoints.get(id))
            .cloned()
        else {
            return Ok(());
        };
        let found = match e.mac.parse::<MacAddr>() {
            Ok(mac) => self.plumbing.find_tap(sandbox_key, mac.0),
            Err(_) => Ok(None),
        };
        let name = match found {
            Ok(Some(name)) => name,
            Ok(None) | Err(PlumbingError::NoNamespace(_)) => {
                let _ = self.plumbing.unplug_host(&e.ifname);
                let mut left = sb.clone();
                left.external = Some(External::Docker {
                    sandbox_key: String::new(),
                });
                left.ports.clear();
                self.store.commit(&[Change::PutSandbox(&left)], None)?;
                st.sandboxes.insert(left.id.clone(), left);
                tracing::info!(endpoint = %e.id, netns = %sandbox_key, "a Docker endpoint's container went while the daemon was down");
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        let n = st.networks[&e.network_id].clone();
        self.realize_network(st, &n)?;
        let mut iface = st.iface(&e)?;
        iface.ifname = name;
        let plan = EndpointPlan {
            id: &e.id,
            network: &e.network_id,
            iface,
        };
        self.plumbing.plug(sandbox_key, &plan)?;
        st.attached.insert(e.id.clone());
        self.restore_ports(st, sb);
        Ok(())
    }

    /// `NetworkDriver.DeleteEndpoint`; an unknown endpoint is no error.
    pub fn docker_delete_endpoint(&self, ep_id: &str) -> Result<()> {
        let mut st = self.lock();
        let Ok(sb) = Self::docker_sandbox(&st, ep_id) else {
            return Ok(());
        };
        self.drop_sandbox(&mut st, &sb.id)
    }

    /// `NetworkDriver.ProgramExternalConnectivity`: publish `ports` of the endpoint's
    /// container (Docker's `-p`), replacing any published before.
    pub fn docker_publish(&self, ep_id: &str, ports: &[PortMapping]) -> Result<()> {
        super::check_port_bounds(ports)?;
        let mut st = self.lock();
        let mut sb = Self::docker_sandbox(&st, ep_id)?;
        self.unpublish(&mut st, &sb.id);
        let eps: Vec<EndpointRecord> = st.endpoints.get(ep_id).cloned().into_iter().collect();
        let bound = self.bind_ports(&st, &sb, &eps, ports)?;
        sb.ports = bound.iter().map(|b| b.record.clone()).collect();
        self.store.commit(&[Change::PutSandbox(&sb)], None)?;
        st.sandboxes.insert(sb.id.clone(), sb.clone());
        self.publish_ports(&mut st, &sb, bound)
    }

    /// `NetworkDriver.RevokeExternalConnectivity`: close the endpoint's published ports.
    pub fn docker_unpublish(&self, ep_id: &str) -> Result<()> {
        let mut st = self.lock();
        let Ok(mut sb) = Self::docker_sandbox(&st, ep_id) else {
            return Ok(());
        };
        self.unpublish(&mut st, &sb.id);
        if !sb.ports.is_empty() {
            sb.ports.clear();
            self.store.commit(&[Change::PutSandbox(&sb)], None)?;
            st.sandboxes.insert(sb.id.clone(), sb);
        }
        Ok(())
    }

    /// The published ports of Docker endpoint `ep_id` (for `EndpointOperInfo`).
    pub fn docker_endpoint_ports(
        &self,
        ep_id: &str,
    ) -> Result<Vec<crate::daemon::model::PortRecord>> {
        let v = self.view();
        let sb = v
            .endpoints
            .get(ep_id)
            .and_then(|e| v.sandboxes.get(&e.sandbox_id))
            .ok_or_else(|| DaemonError::NoDockerEndpoint(ep_id.to_string()))?;
        Ok(sb.ports.clone())
    }
}
