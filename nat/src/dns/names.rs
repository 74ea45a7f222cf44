//! The names a network's DNS server answers, built whole by the control plane.

use std::net::Ipv4Addr;

/// Every network's names and which sandbox is on which network: one immutable value
/// the control plane builds after each change and hands to every server (see
/// [`DnsServer::set_names`](super::DnsServer::set_names)).
#[derive(Clone, Debug, Default)]
pub struct Names {}

impl Names {
    /// No names.
    pub fn new() -> Names {
        Names::default()
    }

    /// Network `key` (the control plane's key, as in
    /// [`DnsConfig::network`](super::DnsConfig::network)) is called `name`; with
    /// `serve` false (Docker's default `bridge`) none of its endpoints' names resolve.
    pub fn add_network(&mut self, key: &str, name: &str, serve: bool) {
        let _ = (key, name, serve);
        unimplemented!()
    }

    /// Sandbox `sandbox` (its id) has address `ip` on network `key`, under `names`:
    /// its name first (the PTR answer is `name.network`), then its aliases on this
    /// network and its hostname. Empty names are skipped.
    pub fn add_endpoint(&mut self, key: &str, sandbox: &str, ip: Ipv4Addr, names: &[&str]) {
        let _ = (key, sandbox, ip, names);
        unimplemented!()
    }
}
