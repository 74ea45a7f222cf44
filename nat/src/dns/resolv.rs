//! `resolv.conf(5)`: what the host's says, and what a sandbox's says.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    /// C library does).
    pub fn parse(text: &str) -> ResolvConf {
        let _ = text;
        unimplemented!()
    }

    /// The resolvers to forward to: each nameserver on port 53.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        unimplemented!()
    }

    /// The `resolv.conf` of a sandbox whose first network's gateway is `gateway`:
    /// `nameserver gateway`, the host's search domains, and the host's options with
    /// `ndots:0` as Docker writes them.
    pub fn for_sandbox(&self, gateway: Ipv4Addr) -> String {
        let _ = gateway;
        unimplemented!()
    }
}
