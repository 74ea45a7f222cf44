//! What the embedded DNS servers answer, and what sandboxes ask them with: the
//! [`Names`] built from the records after every change, and each sandbox's
//! `resolv.conf`.
//!
//! Names are rebuilt whole whenever a change ends ([`super::StateGuard`]'s drop, under
//! the state lock) and handed to the plumbing before the call returns: a sandbox that
//! connects, disconnects or is removed is in or out of the answers from the next query.
//! Docker's names: on each network, a sandbox's name, its aliases on that network, its
//! hostname and its short id; none on the default `bridge` network. On an overlay
//! network, the sandboxes of other nodes too (their names and aliases, as the swarm's
//! gossip tells them: [`super::RemoteEndpoint`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use tapnet_nat::dns::Names;

use super::{Daemon, OVERLAY, State};
use crate::daemon::chain::chain;
use crate::daemon::model::{EndpointRecord, NetworkRecord, SandboxRecord};

/// The predefined network whose names are not served (Docker's default bridge).
const DEFAULT_BRIDGE: &str = "bridge";

impl State {
    /// Every network's names as the records say now. Networks are keyed by id, as the
    /// plumbing keys their datapath.
    pub(super) fn dns_names(&self) -> Names {
        names_of(self)
    }
}

/// Whether a network of driver `driver` has an embedded DNS server.
fn has_dns(driver: &str) -> bool {
    driver == "bridge" || driver == OVERLAY
}

fn names_of(st: &State) -> Names {
    let mut names = Names::new();
    for n in st.networks.values().filter(|n| has_dns(&n.driver)) {
        let serve = !(n.predefined && n.name == DEFAULT_BRIDGE);
        names.add_network(&n.id, &n.name, serve);
    }
    for e in st.endpoints.values() {
        let Some(ip) = e.ipv4 else { continue };
        let Some(sb) = st.sandboxes.get(&e.sandbox_id) else {
            continue;
        };
        if !st
            .networks
            .get(&e.network_id)
            .is_some_and(|n| has_dns(&n.driver))
        {
            continue;
        }
        names.add_endpoint(&e.network_id, &sb.id, ip, &endpoint_names(sb, e));
    }
    // Other nodes' endpoints, on the overlay networks instantiated here.
    for (net, eps) in &st.remote {
        if st.networks.get(net).is_none_or(|n| n.driver != OVERLAY) {
            continue;
        }
        for (key, ep) in eps {
            let all: Vec<&str> = std::iter::once(ep.name.as_str())
                .chain(ep.aliases.iter().map(String::as_str))
                .collect();
            names.add_endpoint(net, key, ep.ip, &all);
        }
    }
    names
}

/// The names of sandbox `sb` on endpoint `e`'s network, its name first: its aliases
/// there, its hostname, its short id (each once).
pub(super) fn endpoint_names<'a>(sb: &'a SandboxRecord, e: &'a EndpointRecord) -> Vec<&'a str> {
    let short = &sb.id[..12.min(sb.id.len())];
    let mut out: Vec<&str> = Vec::with_capacity(e.aliases.len() + 3);
    let all = std::iter::once(sb.name.as_str())
        .chain(e.aliases.iter().map(String::as_str))
        .chain([sb.hostname.as_str(), short]);
    for n in all {
        if !n.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(n)) {
            out.push(n);
        }
    }
    out
}

/// The nameserver of sandbox `sb`: the gateway of its first network that has one.
pub(super) fn nameserver(
    sb: &SandboxRecord,
    endpoints: &BTreeMap<String, EndpointRecord>,
    networks: &BTreeMap<String, NetworkRecord>,
) -> Option<Ipv4Addr> {
    sb.endpoints
        .iter()
        .filter_map(|id| endpoints.get(id))
        .find_map(|e| networks.get(&e.network_id)?.ipam.first()?.gateway)
}

impl Daemon {
    /// Sandbox `sb`'s `resolv.conf` as the records say now: its first network's
    /// gateway with the host's search domains and options; none without a network.
    pub(super) fn resolv_conf_text(
        &self,
        sb: &SandboxRecord,
        endpoints: &BTreeMap<String, EndpointRecord>,
        networks: &BTreeMap<String, NetworkRecord>,
    ) -> Option<String> {
        let gw = nameserver(sb, endpoints, networks)?;
        Some(self.plumbing.host_resolv_conf().for_sandbox(gw))
    }

    /// Write (or remove) the `resolv.conf` of root sandbox `sb` as the records say now.
    /// A failure is logged, not returned: the sandbox works without it, by address.
    pub(super) fn apply_resolv_conf(&self, st: &State, sb: &SandboxRecord) {
        // A container runtime's sandbox gets its resolv.conf from its runtime.
        if sb.rootless.is_some() || sb.external.is_some() || sb.netns.is_empty() {
            return;
        }
        let text = self.resolv_conf_text(sb, &st.endpoints, &st.networks);
        if let Err(e) = self.plumbing.set_resolv_conf(&sb.netns, text.as_deref()) {
            tracing::warn!(sandbox = %sb.name, error = %chain(&e), "could not write the sandbox's resolv.conf");
        }
    }
}
