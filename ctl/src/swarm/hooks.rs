//! What the core asks of the swarm ([`SwarmHooks`]): the swarm's networks, addresses
//! from the managers, and this node's endpoints published in their networks' tables.

use std::net::Ipv4Addr;
use std::sync::Weak;

use super::gossip::Cmd;
use super::{Inner, NOT_IN_SWARM, NOT_MANAGER, endpoint_cmd};
use crate::cluster::{Answer, Command, NetworkSpec, SwarmNetwork};
use crate::daemon::core::{LocalEndpoint, SwarmError, SwarmHooks};
use crate::daemon::server::ApiError;

/// The service as the core sees it (weak: the core outlives no service, but must not
/// keep one alive).
pub(crate) struct Hooks(pub(crate) Weak<Inner>);

fn swarm_err(e: ApiError) -> SwarmError {
    SwarmError {
        status: e.status,
        message: e.message,
    }
}

impl Inner {
    /// Give the core this service's hooks.
    pub(crate) fn install_hooks(self: &std::sync::Arc<Self>) {
        self.daemon
            .set_swarm(Some(std::sync::Arc::new(Hooks(std::sync::Arc::downgrade(
                self,
            )))));
    }
}

impl Hooks {
    fn inner(&self) -> Result<std::sync::Arc<Inner>, SwarmError> {
        self.0.upgrade().ok_or_else(|| SwarmError {
            status: 503,
            message: NOT_IN_SWARM.into(),
        })
    }
}

impl SwarmHooks for Hooks {
    fn networks(&self) -> Vec<SwarmNetwork> {
        self.inner()
            .ok()
            .and_then(|i| i.state().ok())
            .map(|s| s.networks.into_values().collect())
            .unwrap_or_default()
    }

    fn create_network(&self, spec: NetworkSpec) -> Result<SwarmNetwork, SwarmError> {
        let inner = self.inner()?;
        let (_, m, _) = inner.current().map_err(swarm_err)?;
        if m.is_none() {
            return Err(SwarmError {
                status: 503,
                message: NOT_MANAGER.into(),
            });
        }
        match inner
            .propose(Command::CreateNetwork(spec))
            .map_err(swarm_err)?
        {
            Answer::Network(n) => Ok(n),
            other => Err(SwarmError {
                status: 500,
                message: format!("unexpected answer {other:?}"),
            }),
        }
    }

    fn remove_network(&self, id: &str) -> Result<(), SwarmError> {
        let inner = self.inner()?;
        let (_, m, _) = inner.current().map_err(swarm_err)?;
        if m.is_none() {
            return Err(SwarmError {
                status: 503,
                message: NOT_MANAGER.into(),
            });
        }
        inner
            .propose(Command::RemoveNetwork {
                network: id.to_string(),
            })
            .map(|_| ())
            .map_err(swarm_err)
    }

    fn allocate(
        &self,
        net_id: &str,
        ep_id: &str,
        addr: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, SwarmError> {
        let inner = self.inner()?;
        match inner
            .propose(Command::Allocate {
                network: net_id.to_string(),
                endpoint: ep_id.to_string(),
                address: addr,
            })
            .map_err(swarm_err)?
        {
            Answer::Address(a) => Ok(a),
            other => Err(SwarmError {
                status: 500,
                message: format!("unexpected answer {other:?}"),
            }),
        }
    }

    fn release(&self, net_id: &str, ep_id: &str) -> Result<(), SwarmError> {
        let inner = self.inner()?;
        inner
            .propose(Command::Release {
                network: net_id.to_string(),
                endpoint: ep_id.to_string(),
            })
            .map(|_| ())
            .map_err(swarm_err)
    }

    fn endpoint_up(&self, net_id: &str, ep: &LocalEndpoint) {
        let Ok(inner) = self.inner() else { return };
        let Ok((cfg, _, _)) = inner.current() else {
            return;
        };
        inner.gossip(endpoint_cmd(net_id, ep, cfg.data_ip()));
    }

    fn endpoint_down(&self, net_id: &str, ep_id: &str) {
        if let Ok(inner) = self.inner() {
            inner.gossip(Cmd::Delete {
                net: net_id.to_string(),
                key: ep_id.to_string(),
            });
        }
    }

    fn attach(&self, net_id: &str, attached: bool) {
        if let Ok(inner) = self.inner() {
            inner.gossip(if attached {
                Cmd::JoinNetwork(net_id.to_string())
            } else {
                Cmd::LeaveNetwork(net_id.to_string())
            });
        }
    }
}
