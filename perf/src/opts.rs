//! What every scenario is told: the run's options.

use anyhow::Result;
use tapnet_engine::{EngineConfig, WorkerMapping};

use crate::sys;

/// Options every scenario sees.
pub(crate) struct Opts {
    pub(crate) seconds: Option<f64>,
    pub(crate) mapping: String,
    pub(crate) round_trips: u64,
    pub(crate) pin_apps: bool,
    pub(crate) sandboxes: usize,
}

impl Opts {
    /// The engine configuration of the TAP scenarios.
    pub(crate) fn engine_config(&self) -> Result<EngineConfig> {
        Ok(EngineConfig {
            mapping: WorkerMapping::parse(&self.mapping)?,
            pin: true,
            ..Default::default()
        })
    }

    /// CPUs for the traffic threads and processes (iperf3, UDP blaster and sink, ping
    /// and echo) on both datapaths. Empty (the scheduler places them, as it places
    /// containers) unless `--pin-apps`; then the CPUs the engine's pinned workers leave
    /// free, if there are any.
    pub(crate) fn app_cpus(&self) -> Result<Vec<usize>> {
        if !self.pin_apps {
            return Ok(Vec::new());
        }
        self.free_cpus()
    }

    /// The CPUs the engine's pinned workers leave free (empty if none are).
    pub(crate) fn free_cpus(&self) -> Result<Vec<usize>> {
        let workers = WorkerMapping::parse(&self.mapping)?.0.len();
        Ok(sys::allowed_cpus().into_iter().skip(workers).collect())
    }
}
