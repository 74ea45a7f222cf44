//! Published ports (`-p`): Docker's allocation rules for the host side, and the
//! bookkeeping of where each sandbox's ports lead.
//!
//! The daemon binds every host socket itself, before it commits the sandbox, so that a
//! taken port is refused at once with Docker's text ("Bind for 0.0.0.0:8080 failed:
//! port is already allocated", or "Bind for :::8080 failed: …" for `::`, as Docker
//! prints an IPv6 address there) and leaves nothing stored. Docker's rules:
//! - no host port: a free port of the host's ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`, 49153–65535 if it cannot be read), as
//!   libnetwork's `portallocator_unix.go`;
//! - a host port range: the first free port of it;
//! - no host address: both `0.0.0.0` and `::`, on the same port (one free on both is
//!   chosen), each a binding of its own in `Ports`; on a host without IPv6 `0.0.0.0`
//!   only, silently, as libnetwork's bridge driver does (it binds `::` only where
//!   `[::1]` can be bound, `netutils.IsV6Listenable`; so does tapnet, which also takes
//!   `EAFNOSUPPORT` or `EADDRNOTAVAIL` from binding `::` as "no IPv6");
//! - a given address, IPv4 or IPv6, binds that address only.
//!
//! The container side stays IPv4: IPv6 clients reach it through the relay from the
//! network's gateway address (see `tapnet_engine::hostnet`). The bound ports are
//! recorded with the sandbox ([`PortRecord`]); a restarted daemon binds exactly those
//! again.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tapnet_nat::portspec::{PortMapping, Proto};

use super::options::bridge_opts;
use super::{Daemon, DaemonError, Result, State, default_endpoint};
use crate::daemon::chain::chain;
use crate::daemon::model::{EndpointRecord, PortRecord, SandboxRecord};
use crate::daemon::plumbing::{HostPorts, HostSocket, PublishTarget};

/// Most published ports one sandbox may ask for: one per container port and host
/// binding (a wildcard binding's `0.0.0.0` and `::` count once). Each is a host socket
/// bound while the core's state is locked, so a sandbox may not ask for every port.
pub const MAX_PUBLISHED_PORTS: usize = 1024;

/// Longest host port range one binding may give (`-p 8000-9023:80`): the daemon tries
/// each port of it in turn until one binds.
pub const MAX_HOST_PORT_RANGE: usize = 1024;

/// Refuse published ports past [`MAX_PUBLISHED_PORTS`] or a host range longer than
/// [`MAX_HOST_PORT_RANGE`], before anything is bound.
pub fn check_port_bounds(maps: &[PortMapping]) -> Result<()> {
    if maps.len() > MAX_PUBLISHED_PORTS {
        return Err(DaemonError::TooManyPorts {
            count: maps.len(),
            max: MAX_PUBLISHED_PORTS,
        });
    }
    for m in maps {
        if let Some((a, b)) = m.host_ports {
            let len = usize::from(b.saturating_sub(a)) + 1;
            if len > MAX_HOST_PORT_RANGE {
                return Err(DaemonError::HostRangeTooLong {
                    range: m.host_port_string(),
                    key: m.key(),
                    len,
                    max: MAX_HOST_PORT_RANGE,
                });
            }
        }
    }
    Ok(())
}

/// A host socket bound for a published port, with what the sandbox's record keeps.
#[derive(Debug)]
pub(super) struct BoundPort {
    /// What was bound.
    pub(super) record: PortRecord,
    socket: HostSocket,
}

fn record(proto: Proto, container_port: u16, addr: SocketAddr) -> PortRecord {
    PortRecord {
        proto: proto.as_str().to_string(),
        container_port,
        host_ip: addr.ip(),
        host_port: addr.port(),
    }
}

/// The host has no IPv6 to bind (the protocol is off, or no interface has IPv6).
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// Go's wording of an OS error (`address already in use`), as Docker prints it.
fn os_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
        None => e.to_string(),
    }
}

/// Bind the host side of every mapping on `host`, with Docker's allocation rules (see
/// the module docs). All or nothing: on an error every socket bound so far is closed.
/// `endpoint` names the endpoint for Docker's error text (`NAME (ID)`).
pub(super) fn allocate_ports<H: HostPorts + ?Sized>(
    host: &H,
    maps: &[PortMapping],
    endpoint: &str,
) -> Result<Vec<BoundPort>> {
    let fail = |reason: String| DaemonError::PortBinding {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut out = Vec::with_capacity(maps.len());
    let mut has_ipv6 = None;
    for m in maps {
        // No host address: 0.0.0.0 and ::, the latter only where the host has IPv6.
        let (mut ips, v6_optional) = match m.host_ip {
            Some(ip) => (vec![ip], false),
            None if *has_ipv6.get_or_insert_with(|| host.ipv6_listenable()) => (
                vec![
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ],
                true,
            ),
            None => (vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)], false),
        };
        let (first, last, dynamic) = match m.host_ports {
            Some((a, b)) => (a, b, false),
            None => {
                let (a, b) = host.port_range();
                (a, b, true)
            }
        };
        // A dynamic port starts at a random place of the range (so that a port just
        // released is not handed out again at once); a given range is tried in order.
        let len = u32::from(last - first) + 1;
        let start = if dynamic {
            rand::random_range(0..len)
        } else {
            0
        };
        let mut bound = None;
        // The address the port was last refused on (taken), for Docker's text.
        let mut taken_on = ips[0];
        'ports: for i in 0..len {
            let port = (u32::from(first) + (start + i) % len) as u16;
            // One port on every address: what is bound on one is closed again when
            // another refuses the port.
            let mut here = Vec::with_capacity(ips.len());
            let mut j = 0;
            while j < ips.len() {
                let addr = SocketAddr::new(ips[j], port);
                match host.bind(m.proto, addr) {
                    Ok(s) => here.push(s),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        taken_on = ips[j];
                        continue 'ports;
                    }
                    Err(e) if v6_optional && ips[j].is_ipv6() && no_ipv6(&e) => {
                        // No IPv6 on this host: IPv4 only, as Docker.
                        ips.truncate(j);
                        break;
                    }
                    Err(e) => {
                        let net = match (m.proto, addr) {
                            (Proto::Tcp, SocketAddr::V4(_)) => "tcp4",
                            (Proto::Tcp, SocketAddr::V6(_)) => "tcp6",
                            (Proto::Udp, SocketAddr::V4(_)) => "udp4",
                            (Proto::Udp, SocketAddr::V6(_)) => "udp6",
                        };
                        return Err(fail(format!(
                            "Error starting userland proxy: listen {net} {addr}: bind: {}",
                            os_text(&e)
                        )));
                    }
                }
                j += 1;
            }
            bound = Some(here);
            break;
        }
        let Some(here) = bound else {
            // The address as Go's `netip.Addr.String()` gives it, then `:port`: `::`
            // shows as `:::8080`, as in Docker's text.
            return Err(fail(match m.host_ports {
                Some((a, b)) if a == b => {
                    format!("Bind for {taken_on}:{a} failed: port is already allocated")
                }
                _ => format!(
                    "Bind for {}:{first}-{last} failed: all ports are allocated ({}/{})",
                    ips[0], m.container_port, m.proto
                ),
            }));
        };
        out.extend(here.into_iter().map(|socket| BoundPort {
            record: record(m.proto, m.container_port, socket.addr),
            socket,
        }));
    }
    Ok(out)
}

/// Bind exactly the recorded ports again (after a restart). Returns what was bound and
/// what could not be, with the reason.
fn rebind<H: HostPorts + ?Sized>(
    host: &H,
    ports: &[PortRecord],
) -> (Vec<BoundPort>, Vec<(PortRecord, io::Error)>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for p in ports {
        let proto = match p.proto.parse::<Proto>() {
            Ok(proto) => proto,
            Err(e) => {
                failed.push((p.clone(), io::Error::new(io::ErrorKind::InvalidData, e)));
                continue;
            }
        };
        match host.bind(proto, SocketAddr::new(p.host_ip, p.host_port)) {
            Ok(socket) => ok.push(BoundPort {
                record: p.clone(),
                socket,
            }),
            Err(e) => failed.push((p.clone(), e)),
        }
    }
    (ok, failed)
}

impl Daemon {
    /// Bind the host side of `ports` for sandbox `sb` with planned endpoints `eps`.
    pub(super) fn bind_ports(
        &self,
        st: &State,
        sb: &SandboxRecord,
        eps: &[EndpointRecord],
        ports: &[PortMapping],
    ) -> Result<Vec<BoundPort>> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let planned: BTreeMap<String, EndpointRecord> =
            eps.iter().map(|e| (e.id.clone(), e.clone())).collect();
        let Some((e, _)) = default_endpoint(sb, &planned, &st.networks) else {
            return Err(DaemonError::NoExternalNetwork(sb.name.clone()));
        };
        // The network's host_binding_ipv4 stands for a host address not given.
        let default_ip = st
            .networks
            .get(&e.network_id)
            .and_then(|n| bridge_opts(&n.options).ok())
            .and_then(|o| o.host_binding);
        let ports: Vec<PortMapping> = ports
            .iter()
            .map(|m| PortMapping {
                host_ip: m.host_ip.or(default_ip),
                ..*m
            })
            .collect();
        allocate_ports(
            self.plumbing.as_ref(),
            &ports,
            &format!("{} ({})", sb.name, e.id),
        )
    }

    /// Hand the bound ports of `sb` (committed and plumbed) to the datapath.
    pub(super) fn publish_ports(
        &self,
        st: &mut State,
        sb: &SandboxRecord,
        bound: Vec<BoundPort>,
    ) -> Result<()> {
        if bound.is_empty() {
            return Ok(());
        }
        let (e, _) = default_endpoint(sb, &st.endpoints, &st.networks)
            .ok_or(DaemonError::PortsLostEndpoint)?;
        let ip = e.ipv4.ok_or(DaemonError::PortsWithoutAddress)?;
        let net = e.network_id.clone();
        // With the network's loopback_splice, loopback clients are spliced into a root
        // sandbox's named namespace. A rootless one's namespace belongs to its process
        // (and the daemon may not enter it): its ports go through the relay only.
        let splice = st
            .networks
            .get(&net)
            .and_then(|n| bridge_opts(&n.options).ok())
            .is_some_and(|o| o.loopback_splice);
        let splice_netns =
            (splice && sb.rootless.is_none() && !sb.netns.is_empty()).then_some(sb.netns.as_str());
        // All ports of a sandbox lead to one address; should it have moved, the ports
        // published before lead to the old one: close them rather than keep them.
        if st
            .published
            .get(&sb.id)
            .is_some_and(|(n, a)| (n.as_str(), *a) != (net.as_str(), ip))
        {
            self.unpublish(st, &sb.id);
        }
        let to = PublishTarget {
            network: &net,
            address: ip,
            splice_netns,
        };
        let ports = bound
            .into_iter()
            .map(|b| (b.record.container_port, b.socket))
            .collect();
        self.plumbing.publish(&sb.id, &to, ports)?;
        st.published.insert(sb.id.clone(), (net, ip));
        Ok(())
    }

    /// Close the published ports of sandbox `sb_id`.
    pub(super) fn unpublish(&self, st: &mut State, sb_id: &str) {
        if st.published.remove(sb_id).is_some() {
            self.plumbing.unpublish(sb_id);
        }
    }

    /// After a restart: bind the recorded ports of `sb` again, exactly, and publish them.
    pub(super) fn restore_ports(&self, st: &mut State, sb: &SandboxRecord) {
        if sb.ports.is_empty() {
            return;
        }
        let (bound, failed) = rebind(self.plumbing.as_ref(), &sb.ports);
        for (p, err) in failed {
            tracing::warn!(
                sandbox = %sb.name,
                port = %format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.proto),
                error = %err,
                "could not bind a published port again"
            );
        }
        if let Err(e) = self.publish_ports(st, sb, bound) {
            tracing::warn!(sandbox = %sb.name, error = %chain(&e), "could not restore published ports");
        }
    }
}
