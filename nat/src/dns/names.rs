//! The names a network's DNS server answers, built whole by the control plane.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// One network of a [`Names`].
#[derive(Clone, Debug)]
struct Network {
    /// Its name (`X.name` resolves on it; PTR answers end in it).
    name: String,
    /// Whether its endpoints' names resolve (false on Docker's default `bridge`).
    serve: bool,
}

/// Every network's names and which sandbox is on which network: one immutable value
/// the control plane builds after each change and hands to every server (see
/// [`DnsServer::set_names`](super::DnsServer::set_names)).
///
/// Everything a query needs is indexed when the value is built: the asker by (network,
/// address), names (lowercase, no trailing dot, also as `X.network`) and addresses to
/// the networks and addresses that hold them, so that a lookup is a few hash probes.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Networks, by index.
    nets: Vec<Network>,
    /// Network key → index.
    keys: HashMap<String, usize>,
    /// Sandbox id → index into `sandbox_nets`.
    sandboxes: HashMap<String, usize>,
    /// The networks each sandbox is on (indices into `nets`).
    sandbox_nets: Vec<Vec<usize>>,
    /// (network, address) → sandbox index: who asks.
    askers: HashMap<(usize, Ipv4Addr), usize>,
    /// Lowercase name → (network, address) of every endpoint holding it, on serving
    /// networks only.
    by_name: HashMap<String, Vec<(usize, Ipv4Addr)>>,
    /// Address → (network, `name.network`) of the endpoints with that address, on
    /// serving networks only.
    by_addr: HashMap<Ipv4Addr, Vec<(usize, String)>>,
    /// The names of serving networks: `X.network` for an X no sandbox has there is
    /// still a name of tapnet's, NXDOMAIN.
    net_names: HashSet<String>,
    /// Endpoints added.
    endpoints: usize,
}

/// What a name or address is to an asker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Held on the asker's networks (the records were pushed).
    Local,
    /// Held only on networks the asker is not on, or `X.network` that no sandbox
    /// holds: NXDOMAIN.
    Elsewhere,
    /// No sandbox's: forward it.
    Unknown,
}

impl Names {
    /// No names.
    pub fn new() -> Names {
        Names::default()
    }

    /// Network `key` (the control plane's key, as in
    /// [`DnsConfig::network`](super::DnsConfig::network)) is called `name`; with
    /// `serve` false (Docker's default `bridge`) none of its endpoints' names resolve.
    /// Adding a key again renames it (endpoints already added keep their names).
    pub fn add_network(&mut self, key: &str, name: &str, serve: bool) {
        let net = Network {
            name: normalize(name),
            serve,
        };
        if serve {
            self.net_names.insert(net.name.clone());
        }
        match self.keys.get(key) {
            Some(&i) => self.nets[i] = net,
            None => {
                self.keys.insert(key.to_owned(), self.nets.len());
                self.nets.push(net);
            }
        }
    }

    /// Sandbox `sandbox` (its id) has address `ip` on network `key`, under `names`:
    /// its name first (the PTR answer is `name.network`), then its aliases on this
    /// network and its hostname. Empty names are skipped. A network not added before
    /// is added with its key as its name, serving.
    pub fn add_endpoint(&mut self, key: &str, sandbox: &str, ip: Ipv4Addr, names: &[&str]) {
        if !self.keys.contains_key(key) {
            self.add_network(key, key, true);
        }
        let net = self.keys[key];
        let sb = match self.sandboxes.get(sandbox) {
            Some(&s) => s,
            None => {
                self.sandboxes
                    .insert(sandbox.to_owned(), self.sandbox_nets.len());
                self.sandbox_nets.push(Vec::new());
                self.sandbox_nets.len() - 1
            }
        };
        if !self.sandbox_nets[sb].contains(&net) {
            self.sandbox_nets[sb].push(net);
        }
        self.askers.insert((net, ip), sb);
        self.endpoints += 1;
        if !self.nets[net].serve {
            return;
        }
        let netname = self.nets[net].name.clone();
        let mut first = true;
        for n in names {
            let n = normalize(n);
            if n.is_empty() {
                continue;
            }
            if first {
                first = false;
                self.by_addr
                    .entry(ip)
                    .or_default()
                    .push((net, format!("{n}.{netname}")));
            }
            for key in [n.clone(), format!("{n}.{netname}")] {
                let holders = self.by_name.entry(key).or_default();
                if !holders.contains(&(net, ip)) {
                    holders.push((net, ip));
                }
            }
        }
    }

    /// Networks added.
    pub fn networks(&self) -> usize {
        self.nets.len()
    }

    /// Endpoints added.
    pub fn len(&self) -> usize {
        self.endpoints
    }

    /// Whether no endpoint was added.
    pub fn is_empty(&self) -> bool {
        self.endpoints == 0
    }

    /// The index of network `key`, if added.
    pub(crate) fn network(&self, key: &str) -> Option<usize> {
        self.keys.get(key).copied()
    }

    /// The networks of the sandbox at `ip` on network `net`, if it is an endpoint.
    pub(crate) fn asker(&self, net: usize, ip: Ipv4Addr) -> Option<&[usize]> {
        let sb = *self.askers.get(&(net, ip))?;
        Some(&self.sandbox_nets[sb])
    }

    /// The addresses of `name` (lowercase, no trailing dot) for an asker on `nets`,
    /// pushed onto `out`.
    pub(crate) fn lookup(&self, nets: &[usize], name: &str, out: &mut Vec<Ipv4Addr>) -> Found {
        let Some(holders) = self.by_name.get(name) else {
            let in_network = name
                .match_indices('.')
                .any(|(i, _)| self.net_names.contains(&name[i + 1..]));
            return if in_network {
                Found::Elsewhere
            } else {
                Found::Unknown
            };
        };
        let before = out.len();
        for (net, ip) in holders {
            if nets.contains(net) && !out[before..].contains(ip) {
                out.push(*ip);
            }
        }
        if out.len() > before {
            Found::Local
        } else {
            Found::Elsewhere
        }
    }

    /// The names (`name.network`, no trailing dot) of address `ip` for an asker on
    /// `nets`, pushed onto `out`.
    pub(crate) fn reverse<'a>(
        &'a self,
        nets: &[usize],
        ip: Ipv4Addr,
        out: &mut Vec<&'a str>,
    ) -> Found {
        let Some(holders) = self.by_addr.get(&ip) else {
            return Found::Unknown;
        };
        let before = out.len();
        for (net, name) in holders {
            if nets.contains(net) {
                out.push(name);
            }
        }
        if out.len() > before {
            Found::Local
        } else {
            Found::Elsewhere
        }
    }
}

/// `name` lowercase without a trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}
