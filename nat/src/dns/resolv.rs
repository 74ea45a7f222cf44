//! `resolv.conf(5)`: what the host's says, and what a sandbox's says.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Nameservers the C library uses at most (glibc's `MAXNS`).
const MAX_NAMESERVERS: usize = 3;

/// The parts of a `resolv.conf` tapnet uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order (at most three are used, as glibc does).
    pub nameservers: Vec<IpAddr>,
    /// The `search` domains (the last `search` or `domain` line wins).
    pub search: Vec<String>,
    /// The `options`, as written.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parse a `resolv.conf`'s text (unknown lines and bad addresses are skipped, as the
    /// C library does). Only the first three good nameservers are kept; an IPv6
    /// link-local one with a zone (`fe80::1%eth0`) is not an address here and is
    /// skipped (the forwarding socket has no interface to reach it through).
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let line = line.trim_start();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let addr = words.next().and_then(|w| w.parse::<IpAddr>().ok());
                    if let Some(addr) = addr.filter(|_| rc.nameservers.len() < MAX_NAMESERVERS) {
                        rc.nameservers.push(addr);
                    }
                }
                Some("search") => rc.search = words.map(str::to_owned).collect(),
                Some("domain") => rc.search = words.take(1).map(str::to_owned).collect(),
                Some("options") => rc.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        rc
    }

    /// The resolvers to forward to: each nameserver on port 53.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    }

    /// The `resolv.conf` of a sandbox whose first network's gateway is `gateway`:
    /// `nameserver gateway`, the host's search domains, and the host's options with
    /// `ndots:0` as Docker writes them (the host's own `ndots` dropped).
    pub fn for_sandbox(&self, gateway: Ipv4Addr) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "nameserver {gateway}");
        if !self.search.is_empty() {
            let _ = writeln!(s, "search {}", self.search.join(" "));
        }
        s.push_str("options ndots:0");
        for o in &self.options {
            if !o.starts_with("ndots:") {
                s.push(' ');
                s.push_str(o);
            }
        }
        s.push('\n');
        s
    }
}
