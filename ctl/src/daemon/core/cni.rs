//! What a CNI runtime (podman's CNI backend, containerd, CRI-O) asks of tapnet through
//! the `tapnet` CNI plugin (the CLI's `cni` speaks the protocol to the runtime, the
//! server's `cni_routes` carries it to the daemon; this is the core's side).
//!
//! - **Attachments**: every CNI attachment, a `(CNI_CONTAINERID, CNI_IFNAME)` pair, is a
//!   sandbox of its own, marked [`External::Cni`], whose `netns` is the path the runtime
//!   gave (`CNI_NETNS`) and whose one endpoint's interface is `CNI_IFNAME`: a persistent
//!   TAP made in the runtime's namespace, addressed from tapnet's IPAM, as any sandbox's.
//!   The sandbox is named after the container when the runtime says its name
//!   (`K8S_POD_NAME` in `CNI_ARGS`, which podman passes) and the name is free, else
//!   `cni-` with the container id's first 12 characters and the interface name. The
//!   namespace is the runtime's: the daemon never creates or deletes it, nor writes its
//!   `resolv.conf` (the runtime does, from the result's `dns`).
//! - **Default route**: a container on several tapnet networks (one attachment each)
//!   has one default route, the one of its first attachment that has one (bridge, not
//!   internal); when that attachment goes, the next one takes it over. An attachment
//!   without one never removes a default route (another plugin's may be there).
//! - **ADD** for an attachment that exists fails and changes nothing; so does ADD into a
//!   namespace that has an interface of that name already. **DEL** is idempotent: an
//!   attachment tapnet does not have (a repeated DEL, a container never added, one
//!   removed by GC or by the daemon's restart) is no error. **CHECK** finds the record,
//!   the endpoint in the datapath, its published ports bound (if it has any) and the
//!   interface in the namespace with its address.
//!   **GC** removes the attachments of a network that the runtime does not list.
//! - **Ports**: the runtime's `portMappings` (`runtimeConfig`, for a conflist that
//!   declares the capability) are published as a sandbox's `-p` ports are: host
//!   sockets of the daemon, relayed to the container's address, closed with the
//!   attachment and bound again when the daemon restarts.
//! - **Restart**: the TAPs persist in the containers' namespaces and are plugged again
//!   (reconcile). An attachment whose namespace is gone lost its container without a
//!   DEL (the runtime was killed, the host rebooted): it is removed, address and all,
//!   when the daemon starts (`reap_cni`); the runtime's later DEL finds nothing and
//!   succeeds.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use tapnet_nat::portspec::PortMapping;

use super::sandbox::{AttachSpec, valid_name};
use super::{
    Daemon, DaemonError, OVERLAY, Records, Result, State, default_route, lookup_network_id,
};
use crate::daemon::chain::chain;
use crate::daemon::model::{
    EndpointRecord, External, NetworkRecord, SandboxRecord, new_id, now_rfc3339,
};
use crate::daemon::plumbing::PlumbingError;

/// One CNI attachment as the runtime's result describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniAttachment {
    /// The sandbox standing for it.
    pub sandbox: SandboxRecord,
    /// Its endpoint (interface `CNI_IFNAME`).
    pub endpoint: EndpointRecord,
    /// The network.
    pub network: NetworkRecord,
    /// The network's gateway, if it forwards (a bridge network that is not internal).
    pub gateway: Option<Ipv4Addr>,
    /// This attachment holds the container's default route (via `gateway`).
    pub default_route: bool,
    /// The embedded DNS server's address on the network (its gateway address).
    pub nameserver: Option<Ipv4Addr>,
}

/// Interface names the kernel takes (at most 15 bytes), restricted to the characters
/// of a sandbox name so that the default sandbox name is one.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The spec's rule for `CNI_CONTAINERID`.
fn valid_container_id(s: &str) -> bool {
    valid_name(s)
}

fn check_ids(container_id: &str, ifname: &str) -> Result<()> {
    if !valid_container_id(container_id) {
        return Err(DaemonError::CniParameter {
            what: "CNI_CONTAINERID",
            value: container_id.to_string(),
            rule: "an alphanumeric character, then alphanumerics, '_', '.' or '-'",
        });
    }
    if !valid_ifname(ifname) {
        return Err(DaemonError::CniParameter {
            what: "CNI_IFNAME",
            value: ifname.to_string(),
            rule: "1 to 15 alphanumerics, '_', '.' or '-'",
        });
    }
    Ok(())
}

/// The CNI attachment `(container_id, ifname)` among `r`'s sandboxes.
fn find<'a>(r: &'a impl Records, container_id: &str, ifname: &str) -> Option<&'a SandboxRecord> {
    r.sandbox_records().values().find(|s| {
        matches!(&s.external, Some(External::Cni { container_id: c }) if c == container_id)
            && s.endpoints
                .first()
                .and_then(|e| r.endpoint_records().get(e))
                .is_some_and(|e| e.ifname == ifname)
    })
}

/// Whether CNI sandbox `sb` holds its container's default route: it has one, and no
/// attachment of the same namespace made before it has one.
fn holds_route(
    sb: &SandboxRecord,
    sandboxes: &BTreeMap<String, SandboxRecord>,
    endpoints: &BTreeMap<String, EndpointRecord>,
    networks: &BTreeMap<String, NetworkRecord>,
) -> bool {
    if default_route(sb, endpoints, networks).is_none() {
        return false;
    }
    sandboxes
        .values()
        .filter(|o| {
            o.netns == sb.netns
                && matches!(o.external, Some(External::Cni { .. }))
                && default_route(o, endpoints, networks).is_some()
        })
        .min_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)))
        .is_some_and(|first| first.id == sb.id)
}

/// The attachment of CNI sandbox `sb`, as the records `r` show it.
fn attachment(r: &impl Records, sb: &SandboxRecord) -> Option<CniAttachment> {
    let (endpoint, network) = r.sandbox_eps(sb).into_iter().next()?;
    let gw = network.ipam.first().and_then(|c| c.gateway);
    let forwards = network.driver == "bridge" && !network.internal;
    Some(CniAttachment {
        default_route: holds_route(
            sb,
            r.sandbox_records(),
            r.endpoint_records(),
            r.network_records(),
        ),
        gateway: gw.filter(|_| forwards),
        nameserver: gw,
        sandbox: sb.clone(),
        endpoint,
        network,
    })
}

impl Daemon {
    /// CNI `ADD`: attach container `container_id`, whose namespace is at `netns`, to
    /// `network` (a name or id) as interface `ifname`. `name` is the container's name,
    /// if the runtime said it: the sandbox's name when it is valid and free. `ports` are
    /// the runtime's `portMappings`, published as a sandbox's (`-p`): bound before
    /// anything is stored, so a taken port fails the call and leaves nothing.
    pub fn cni_add(
        &self,
        network: &str,
        container_id: &str,
        netns: &str,
        ifname: &str,
        name: Option<String>,
        ports: &[PortMapping],
    ) -> Result<CniAttachment> {
        check_ids(container_id, ifname)?;
        super::check_port_bounds(ports)?;
        if !netns.starts_with('/') {
            return Err(DaemonError::CniParameter {
                what: "CNI_NETNS",
                value: netns.to_string(),
                rule: "the path of the container's network namespace",
            });
        }
        let mut st = self.lock();
        if let Some(sb) = find(&*st, container_id, ifname) {
            return Err(DaemonError::CniAttached {
                container: container_id.to_string(),
                ifname: ifname.to_string(),
                sandbox: sb.name.clone(),
            });
        }
        let all = self.all_networks(&st.networks);
        let net_id = lookup_network_id(&all, network)?;
        let n = &all[&net_id];
        if n.driver != "bridge" && n.driver != OVERLAY {
            return Err(DaemonError::CniDriver {
                network: n.name.clone(),
                driver: n.driver.clone(),
            });
        }
        match self.plumbing.iface_addresses(netns, ifname) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(DaemonError::CniInterfaceExists {
                    netns: netns.to_string(),
                    ifname: ifname.to_string(),
                });
            }
            Err(PlumbingError::NoNamespace(_)) => {
                return Err(DaemonError::CniNoNamespace(netns.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        let id = new_id();
        let free = |n: &str| !st.sandboxes.values().any(|s| s.name == n);
        let short = &container_id[..12.min(container_id.len())];
        let name = name
            .filter(|n| valid_name(n) && free(n))
            .or_else(|| Some(format!("cni-{short}-{ifname}")).filter(|n| free(n)))
            .unwrap_or_else(|| format!("cni-{}", &id[..12]));
        let sb = SandboxRecord {
            id: id.clone(),
            name,
            created: now_rfc3339(),
            netns: netns.to_string(),
            hostname: short.to_string(),
            external: Some(External::Cni {
                container_id: container_id.to_string(),
            }),
            ..Default::default()
        };
        let nets = [AttachSpec {
            network: net_id,
            ..Default::default()
        }];
        let sb = self.add_sandbox(&mut st, sb, &nets, ports, Some(ifname))?;
        attachment(&*st, &sb).ok_or_else(|| DaemonError::CniUnknown {
            container: container_id.to_string(),
            ifname: ifname.to_string(),
        })
    }

    /// CNI `DEL`: detach attachment `(container_id, ifname)`, take its interface out of
    /// the container's namespace if that is still there, release its address. An
    /// attachment tapnet does not have is no error.
    pub fn cni_del(&self, container_id: &str, ifname: &str) -> Result<()> {
        let mut st = self.lock();
        let Some(sb) = find(&*st, container_id, ifname).cloned() else {
            return Ok(());
        };
        self.drop_sandbox(&mut st, &sb.id)?;
        self.cni_reroute(&st, &sb.netns);
        Ok(())
    }

    /// CNI `CHECK`: the attachment is recorded for namespace `netns`, its endpoint is in
    /// the datapath, its published ports (if it has any) are bound, and its interface is
    /// in the namespace with its address.
    pub fn cni_check(
        &self,
        container_id: &str,
        ifname: &str,
        netns: &str,
    ) -> Result<CniAttachment> {
        let v = self.view();
        let sb = find(&*v, container_id, ifname).ok_or_else(|| DaemonError::CniUnknown {
            container: container_id.to_string(),
            ifname: ifname.to_string(),
        })?;
        let fault = |problem: String| DaemonError::CniCheck {
            container: container_id.to_string(),
            ifname: ifname.to_string(),
            problem,
        };
        let a = attachment(&*v, sb).ok_or_else(|| fault("its endpoint is gone".into()))?;
        if sb.netns != netns {
            return Err(fault(format!(
                "it was added in network namespace {}, not {netns}",
                sb.netns
            )));
        }
        if !v.attached.contains(&a.endpoint.id) {
            return Err(fault(format!(
                "its interface is not in network {}'s datapath",
                a.network.name
            )));
        }
        if !sb.ports.is_empty() && !v.published.contains(&sb.id) {
            return Err(fault(
                "none of its published ports is bound (the daemon's log says why)".into(),
            ));
        }
        match self.plumbing.iface_addresses(netns, ifname) {
            Ok(Some(addrs)) => {
                let want = a.endpoint.ipv4.map(|ip| (ip, a.endpoint.prefix_len));
                if let Some((ip, len)) = want.filter(|w| !addrs.contains(w)) {
                    return Err(fault(format!("the interface lacks its address {ip}/{len}")));
                }
            }
            Ok(None) => {
                return Err(fault(format!(
                    "network namespace {netns} has no such interface"
                )));
            }
            Err(PlumbingError::NoNamespace(_)) => {
                return Err(fault(format!("network namespace {netns} is gone")));
            }
            Err(e) => return Err(fault(format!("reading the interface: {}", chain(&e)))),
        }
        Ok(a)
    }

    /// CNI `GC`: remove every attachment on `network` (name or id) that `valid` (pairs
    /// of container id and interface name) does not list. Returns the names of the
    /// sandboxes removed. Every one is tried; the first failure is returned after. A
    /// network that does not exist has nothing to collect.
    pub fn cni_gc(&self, network: &str, valid: &[(String, String)]) -> Result<Vec<String>> {
        let mut st = self.lock();
        let all = self.all_networks(&st.networks);
        let Ok(net_id) = lookup_network_id(&all, network) else {
            return Ok(Vec::new());
        };
        let stale: Vec<SandboxRecord> = st
            .sandboxes
            .values()
            .filter(|s| {
                let Some(External::Cni { container_id }) = &s.external else {
                    return false;
                };
                let Some(e) = s.endpoints.first().and_then(|e| st.endpoints.get(e)) else {
                    return false;
                };
                e.network_id == net_id
                    && !valid
                        .iter()
                        .any(|(c, i)| c == container_id && *i == e.ifname)
            })
            .cloned()
            .collect();
        let mut removed = Vec::new();
        let mut first_err = None;
        for sb in stale {
            match self.drop_sandbox(&mut st, &sb.id) {
                Ok(()) => {
                    self.cni_reroute(&st, &sb.netns);
                    removed.push(sb.name);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// CNI `STATUS`: `network` (name or id) exists, can take CNI containers and has
    /// addresses left.
    pub fn cni_status(&self, network: &str) -> Result<()> {
        let v = self.view();
        let all = self.all_networks(&v.networks);
        let n = &all[&lookup_network_id(&all, network)?];
        if n.driver != "bridge" && n.driver != OVERLAY {
            return Err(DaemonError::CniDriver {
                network: n.name.clone(),
                driver: n.driver.clone(),
            });
        }
        if let Some(c) = n.ipam.first().filter(|_| n.driver == "bridge") {
            if v.pool_usage(&c.pool_id).available == 0 {
                return Err(DaemonError::PoolFull {
                    name: n.name.clone(),
                    id: n.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether CNI sandbox `sb` sets its namespace's default route (see the module docs);
    /// the route code asks before it touches a runtime's namespace.
    pub(super) fn cni_holds_route(&self, st: &State, sb: &SandboxRecord) -> bool {
        holds_route(sb, &st.sandboxes, &st.endpoints, &st.networks)
    }

    /// After an attachment of namespace `netns` went: the one that holds the default
    /// route now sets it (it may have been the one that went).
    fn cni_reroute(&self, st: &State, netns: &str) {
        let holder = st
            .sandboxes
            .values()
            .find(|s| s.netns == netns && self.cni_holds_route(st, s));
        if let Some(sb) = holder {
            if let Err(e) = self.apply_default_route(st, sb) {
                tracing::warn!(sandbox = %sb.name, error = %chain(&e), "could not move the default route");
            }
        }
    }

    /// At start: remove the CNI attachments whose namespace is gone (their containers
    /// ended without a DEL), so that they do not hold addresses forever.
    pub(super) fn reap_cni(&self, st: &mut State) {
        let cni: Vec<SandboxRecord> = st
            .sandboxes
            .values()
            .filter(|s| matches!(s.external, Some(External::Cni { .. })))
            .cloned()
            .collect();
        for sb in cni {
            let ifname = sb
                .endpoints
                .first()
                .and_then(|e| st.endpoints.get(e))
                .map(|e| e.ifname.clone())
                .unwrap_or_default();
            if !matches!(
                self.plumbing.iface_addresses(&sb.netns, &ifname),
                Err(PlumbingError::NoNamespace(_))
            ) {
                continue;
            }
            match self.drop_sandbox(st, &sb.id) {
                Ok(()) => {
                    tracing::info!(sandbox = %sb.name, netns = %sb.netns, "removed a CNI attachment whose container is gone")
                }
                Err(e) => {
                    tracing::warn!(sandbox = %sb.name, error = %chain(&e), "could not remove a CNI attachment whose container is gone")
                }
            }
        }
    }
}
