//! The server's state, shared by every handler: the daemon's core, its swarm, the
//! version it reports, the counters and the bounds the middleware applies.

use std::sync::Arc;
use std::time::Duration;

use tapnet_api::VersionResponse;

use super::error::ApiError;
use super::listen::ApiCounters;
use super::swarm::SwarmControl;
use crate::daemon::core::Daemon;

/// What every handler sees.
#[derive(Clone)]
pub(super) struct AppState {
    pub(super) daemon: Arc<Daemon>,
    /// The swarm service, if the daemon runs one.
    pub(super) swarm: Option<Arc<dyn SwarmControl>>,
    pub(super) version: Arc<VersionResponse>,
    pub(super) counters: Arc<ApiCounters>,
    /// The daemon's user: served besides root.
    pub(super) owner_uid: u32,
    pub(super) body_timeout: Duration,
}

impl AppState {
    /// Run `f` on the core on a blocking thread: it may wait on the state lock, the
    /// engine or the kernel without stalling the server.
    pub(super) async fn call<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Daemon) -> Result<T, ApiError> + Send + 'static,
    {
        let d = self.daemon.clone();
        tokio::task::spawn_blocking(move || f(&d))
            .await
            .unwrap_or_else(|e| Err(ApiError::new(500, format!("the call failed: {e}"))))
    }
}
