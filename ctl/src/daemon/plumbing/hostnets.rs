//! The host's own IPv4 networks as [`OsPlumbing`](super::OsPlumbing) reads them: on-link
//! routes of the main table (netlink, as moby's `netutils.InferReservedNetworks`), the
//! addresses of every interface (`getifaddrs`), and the nameservers of the host's
//! resolv.conf (`/etc/resolv.conf` unless the daemon is given another). All readable
//! without privilege, so a rootless daemon sees the host's networks as a root one does
//! (it runs in the host's network namespace).

use std::net::{IpAddr, Ipv4Addr};

use tapnet_engine::sys::netlink::Netlink;

use crate::daemon::ipam::{HostNetwork, Ipv4Net};

/// Everything that can be read (nameservers from `resolv_conf`); a source that fails is
/// logged and left out.
pub(super) fn read(resolv_conf: &std::path::Path) -> Vec<HostNetwork> {
    let mut out = Vec::new();
    match Netlink::open().and_then(|mut nl| nl.routes()) {
        Ok(routes) => {
            for r in routes {
                if r.gateway.is_some() {
                    continue;
                }
                let Some((IpAddr::V4(a), len)) = r.dest else {
                    continue;
                };
                let Some(net) = Ipv4Net::new(a, len) else {
                    continue;
                };
                let dev = r.oif.map(ifname).unwrap_or_default();
                out.push(HostNetwork::Route { net, dev });
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the host's routes"),
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for ifa in addrs {
                let Some(a) = ifa.address.as_ref().and_then(|s| s.as_sockaddr_in()) else {
                    continue;
                };
                out.push(HostNetwork::Address {
                    addr: a.ip(),
                    dev: ifa.interface_name.clone(),
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the host's addresses"),
    }
    if let Ok(text) = std::fs::read_to_string(resolv_conf) {
        out.extend(nameservers(&text).into_iter().map(HostNetwork::Nameserver));
    }
    out
}

/// The name of interface `index`, or its number if it has none now.
fn ifname(index: u32) -> String {
    nix::net::if_::if_indextoname(index)
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_else(|| format!("#{index}"))
}

/// The IPv4 `nameserver` lines of a resolv.conf.
fn nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_read_ipv4_only() {
        let text = "# generated\nnameserver 10.255.255.53\nnameserver ::1\n\
                    search example.org\n nameserver 192.0.2.53 # x\nnameserverx 1.2.3.4\n";
        assert_eq!(
            nameservers(text),
            [
                "10.255.255.53".parse::<Ipv4Addr>().unwrap(),
                "192.0.2.53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn the_host_has_its_loopback_address() {
        let nets = read(std::path::Path::new("/etc/resolv.conf"));
        assert!(
            nets.iter()
                .any(|n| matches!(n, HostNetwork::Address { addr, .. }
                if *addr == Ipv4Addr::LOCALHOST)),
            "{nets:?}"
        );
    }
}
