//! The pipeline runtime: workers, rings between stages, and the control API.
//!
//! ```text
//!  ports ──rx──▶ ring ──▶ switch ──▶ ring ──tx──▶ ports
//! ```
//! Each stage exists once and runs on the worker the [`WorkerMapping`] gives it; rings
//! (rtrb SPSC, carrying pool handles in chunks of up to `batch`) join consecutive
//! stages even when they share a worker. Control calls send a message to the stage
//! that owns the table and wait for its answer, so when a call returns the change is
//! live and no per-packet path ever takes a lock.

mod health;
mod stages;
mod throttle;
mod worker;

use std::collections::BTreeSet;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use rtrb::RingBuffer;
use tapnet_switch::{DomainConfig, DomainId, MacAddr, PortId, Switch, SwitchCounters};

pub use crate::wake::Notifier;
use crate::wake::WakeCell;
#[doc(hidden)]
pub use health::Fault;
use health::Health;
pub use health::panic_message;
use stages::{Ctl, DomainMap, RxCtl, RxStage, SwCtl, SwitchStage, TxCtl, TxStage};
pub use stages::{StageCounters, StageKind, StageStats};
pub use throttle::{FLOOD_READ_BATCH, FLOOD_READ_PERIOD, FLOOD_THROTTLE, FloodThrottle};
use worker::{Idle, Stage, Worker};

use crate::pool::{BufferPool, PoolConfig};
use crate::port::{Port, PortCounters, PortInfo, PortStats};

/// Which stages run on which worker. One worker running all three is run-to-completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerMapping(pub Vec<Vec<StageKind>>);

impl WorkerMapping {
    /// One worker runs rx, switch and tx to completion.
    pub fn run_to_completion() -> WorkerMapping {
        WorkerMapping(vec![vec![StageKind::Rx, StageKind::Switch, StageKind::Tx]])
    }

    /// Two workers: rx on the first, switch and tx on the second.
    pub fn pipeline() -> WorkerMapping {
        WorkerMapping(vec![
            vec![StageKind::Rx],
            vec![StageKind::Switch, StageKind::Tx],
        ])
    }

    /// Parse `rx,switch,tx` (one worker) or `rx/switch,tx` (workers split by `/`).
    pub fn parse(s: &str) -> Result<WorkerMapping, EngineError> {
        let mut workers = Vec::new();
        for w in s.split('/') {
            let mut stages = Vec::new();
            for name in w.split(',').map(str::trim) {
                stages.push(match name {
                    "rx" => StageKind::Rx,
                    "switch" => StageKind::Switch,
                    "tx" => StageKind::Tx,
                    other => {
                        return Err(EngineError::Mapping(format!(
                            "unknown stage {other:?}: stages are rx, switch and tx"
                        )));
                    }
                });
            }
            workers.push(stages);
        }
        let m = WorkerMapping(workers);
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), EngineError> {
        for k in [StageKind::Rx, StageKind::Switch, StageKind::Tx] {
            let n = self.0.iter().flatten().filter(|&&s| s == k).count();
            if n != 1 {
                return Err(EngineError::Mapping(format!(
                    "stage {} appears {n} times; each stage runs on exactly one worker",
                    k.name()
                )));
            }
        }
        Ok(())
    }

    fn worker_of(&self, k: StageKind) -> usize {
        self.0.iter().position(|w| w.contains(&k)).unwrap_or(0)
    }
}

impl fmt::Display for WorkerMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ws: Vec<String> = self
            .0
            .iter()
            .map(|w| w.iter().map(|s| s.name()).collect::<Vec<_>>().join(","))
            .collect();
        f.write_str(&ws.join("/"))
    }
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Stage-to-worker mapping.
    pub mapping: WorkerMapping,
    /// Pin worker *i* to the *i*-th CPU of `cpus` (or, if that is empty, of the CPUs
    /// the process may use).
    pub pin: bool,
    /// CPUs to pin workers to, in order; empty means the process's allowed CPUs. Putting
    /// the worker on the CPU of the applications it serves saves a cross-CPU wake-up per
    /// frame (latency), at the price of sharing that CPU (throughput).
    pub cpus: Vec<usize>,
    /// Buffer pool sizes.
    pub pool: PoolConfig,
    /// Most handles a stage takes per pass (and per ring chunk).
    pub batch: usize,
    /// Capacity of each ring between stages, in handles.
    pub ring_capacity: usize,
    /// Spin this long on empty inputs before sleeping (latency against CPU).
    pub busy_poll: Duration,
    /// Longest sleep of an idle worker.
    pub max_sleep: Duration,
    /// Run no threads: the caller drives the stages with [`Engine::step`] (the rig).
    pub manual: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mapping: WorkerMapping::run_to_completion(),
            pin: true,
            cpus: Vec::new(),
            pool: PoolConfig::default(),
            batch: 256,
            ring_capacity: 4096,
            busy_poll: Duration::from_micros(50),
            max_sleep: Duration::from_millis(20),
            manual: false,
        }
    }
}

/// Errors of the engine's control path.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The stage mapping is not valid.
    #[error("invalid worker mapping: {0}")]
    Mapping(String),
    /// A worker thread could not be started (the cause is the source, not in the text).
    #[error("cannot start worker {worker}")]
    Spawn {
        /// Worker index.
        worker: usize,
        /// What failed.
        source: std::io::Error,
    },
    /// A stage refused a change (unknown domain, port in another domain, ...).
    #[error("{0}")]
    Rejected(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// A datapath thread failed (it panicked): the engine cannot carry on, and a change
    /// asked of it was not made. The text says which thread and why.
    #[error("the datapath failed: {0}")]
    Failed(String),
}

/// How a port joins its domain: the switch message for port and domain.
type AttachMsg = fn(PortId, DomainId) -> SwCtl;

struct PortEntry {
    info: PortInfo,
    counters: Arc<PortCounters>,
    /// In a bridge domain (not so the underlay port).
    attached: bool,
}

struct ControlState {
    ports: Vec<Option<PortEntry>>,
    /// Generation of each port slot (see `throttle::INDEX_BITS`).
    gens: Vec<u32>,
    /// The lowest domain id never given out.
    next_domain: u32,
    /// Ids below `next_domain` of domains removed since, to give out again.
    free_domains: BTreeSet<u32>,
}

/// A running engine.
pub struct Engine {
    cfg: EngineConfig,
    pool: Arc<BufferPool>,
    rx_ctl: Sender<Ctl<RxCtl>>,
    sw_ctl: Sender<Ctl<SwCtl>>,
    tx_ctl: Sender<Ctl<TxCtl>>,
    wakes: Vec<Arc<WakeCell>>,
    stage_counters: Vec<(StageKind, usize, Arc<StageCounters>)>,
    switch_counters: Arc<SwitchCounters>,
    domain_counters: DomainMap,
    state: Mutex<ControlState>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    manual: Mutex<Vec<Worker>>,
    health: Arc<Health>,
}

/// A port as the engine reports it.
#[derive(Clone, Debug)]
pub struct PortReport {
    /// Port id.
    pub id: PortId,
    /// Name, kind, offloads, MTU.
    pub info: PortInfo,
    /// Counters.
    pub stats: PortStats,
}

/// A stage as the engine reports it.
#[derive(Clone, Debug)]
pub struct StageReport {
    /// Which stage.
    pub kind: StageKind,
    /// The worker running it.
    pub worker: usize,
    /// Counters.
    pub stats: StageStats,
}

/// Everything countable, read while the engine runs.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Every port.
    pub ports: Vec<PortReport>,
    /// Every stage.
    pub stages: Vec<StageReport>,
    /// Switch-wide drops.
    pub switch: tapnet_switch::SwitchCountersSnapshot,
    /// Per bridge domain.
    pub domains: Vec<(DomainId, tapnet_switch::DomainCountersSnapshot)>,
    /// Free pool slots.
    pub pool_free: crate::pool::PoolFree,
}

fn cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => vec![0],
    }
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

impl Engine {
    /// Build the stages and start the workers (none in manual mode).
    pub fn start(cfg: EngineConfig) -> Result<Engine, EngineError> {
        cfg.mapping.validate()?;
        let pool = Arc::new(BufferPool::new(cfg.pool));
        let nworkers = cfg.mapping.0.len();
        let mut workers = Vec::new();
        for i in 0..nworkers {
            workers.push(
                Worker::new(pool.clone(), cfg.batch)
                    .map_err(|source| EngineError::Spawn { worker: i, source })?,
            );
        }
        let wakes: Vec<Arc<WakeCell>> = workers.iter().map(|w| w.wake.clone()).collect();
        let (w_rx, w_sw, w_tx) = (
            cfg.mapping.worker_of(StageKind::Rx),
            cfg.mapping.worker_of(StageKind::Switch),
            cfg.mapping.worker_of(StageKind::Tx),
        );
        let cross = |from: usize, to: usize| (from != to).then(|| wakes[to].clone());
        let (p1, c1) = RingBuffer::new(cfg.ring_capacity);
        let (p2, c2) = RingBuffer::new(cfg.ring_capacity);
        let (rx_ctl, rx_rcv): (Sender<Ctl<RxCtl>>, Receiver<Ctl<RxCtl>>) = unbounded();
        let (sw_ctl, sw_rcv) = unbounded();
        let (tx_ctl, tx_rcv) = unbounded();
        let counters: Vec<Arc<StageCounters>> = (0..3).map(|_| Arc::default()).collect();
        let switch = Switch::new();
        let switch_counters = switch.counters();
        let throttle = Arc::new(FloodThrottle::default());
        let rx = RxStage::new(
            p1,
            cross(w_rx, w_sw),
            Notifier(wakes[w_rx].clone()),
            rx_rcv,
            counters[0].clone(),
            throttle.clone(),
        );
        let domain_counters = DomainMap::default();
        let sw = SwitchStage::new(
            switch,
            c1,
            p2,
            cross(w_sw, w_tx),
            sw_rcv,
            counters[1].clone(),
            domain_counters.clone(),
        )
        .throttling(throttle.clone());
        let tx = TxStage::new(c2, cross(w_tx, w_rx), tx_rcv, counters[2].clone(), throttle);
        let mut rx = Some(rx);
        let mut sw = Some(sw);
        let mut tx = Some(tx);
        for (i, w) in cfg.mapping.0.iter().enumerate() {
            for k in w {
                let st = match k {
                    StageKind::Rx => rx.take().map(Stage::Rx),
                    StageKind::Switch => sw.take().map(Stage::Switch),
                    StageKind::Tx => tx.take().map(Stage::Tx),
                };
                workers[i].stages.extend(st);
            }
        }
        let stage_counters = vec![
            (StageKind::Rx, w_rx, counters[0].clone()),
            (StageKind::Switch, w_sw, counters[1].clone()),
            (StageKind::Tx, w_tx, counters[2].clone()),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Health::default());
        let mut threads = Vec::new();
        let mut manual = Vec::new();
        if cfg.manual {
            manual = workers;
        } else {
            let cpus = if cfg.cpus.is_empty() {
                cpus()
            } else {
                cfg.cpus.clone()
            };
            let start = Instant::now();
            let idle = Idle {
                busy_poll: cfg.busy_poll,
                max_sleep: cfg.max_sleep,
            };
            for (i, mut w) in workers.into_iter().enumerate() {
                let stop = stop.clone();
                let health = health.clone();
                let pin = cfg.pin.then(|| cpus[i % cpus.len()]);
                let name = format!("tapnet-w{i}");
                let t = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        if let Some(c) = pin {
                            pin_to(c);
                        }
                        // A panic ends this worker only: it is recorded before the
                        // worker's queues drop, so a caller woken by their end reads
                        // why (see `health`).
                        let ran = catch_unwind(AssertUnwindSafe(|| w.run(start, &stop, idle)));
                        if let Err(p) = ran {
                            health.fail(format!(
                                "datapath worker {name} panicked: {}",
                                panic_message(&*p)
                            ));
                        }
                        drop(w);
                    })
                    .map_err(|source| EngineError::Spawn { worker: i, source })?;
                threads.push(t);
            }
        }
        Ok(Engine {
            cfg,
            pool,
            rx_ctl,
            sw_ctl,
            tx_ctl,
            wakes,
            stage_counters,
            switch_counters,
            domain_counters,
            state: Mutex::new(ControlState {
                ports: Vec::new(),
                gens: Vec::new(),
                next_domain: 0,
                free_domains: BTreeSet::new(),
            }),
            stop,
            threads: Mutex::new(threads),
            manual: Mutex::new(manual),
            health,
        })
    }

    /// The engine's buffer pool (memory ports draw from it).
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Send `msg` to a stage and wait for its answer, with no deadline: a stage that is
    /// slow (a loaded machine, a long table operation) is waited for, because a caller
    /// that gave up would leave its message queued, to be applied later behind its back
    /// (a domain id taken, a port slot filled, a port left in a stage). The wait ends
    /// with an error only when the message can never be applied: the worker that owns
    /// the stage has ended (shutdown, or a panic), which drops its queue and with it
    /// the message's reply channel.
    fn call<T>(&self, tx: &Sender<Ctl<T>>, worker: usize, msg: T) -> Result<(), EngineError> {
        self.check()?;
        let (done, answer) = bounded(1);
        tx.send(Ctl { msg, done }).map_err(|_| self.ended())?;
        if self.cfg.manual {
            for w in self
                .manual
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter_mut()
            {
                w.control();
            }
        } else {
            self.wakes[worker].kick();
        }
        match answer.recv() {
            Ok(r) => r.map_err(EngineError::Rejected),
            Err(_) => Err(self.ended()),
        }
    }

    /// Refuse changes to an engine that has stopped or failed.
    fn check(&self) -> Result<(), EngineError> {
        if let Some(why) = self.health.failed() {
            return Err(EngineError::Failed(why.to_string()));
        }
        if self.stop.load(Ordering::Relaxed) {
            return Err(EngineError::Stopped);
        }
        Ok(())
    }

    /// Why a stage's queue is gone: its worker failed, or the engine stopped.
    fn ended(&self) -> EngineError {
        match self.health.failed() {
            Some(why) => EngineError::Failed(why.to_string()),
            None => EngineError::Stopped,
        }
    }

    fn w(&self, k: StageKind) -> usize {
        self.cfg.mapping.worker_of(k)
    }

    /// Create a bridge domain (one per network). Ids of removed domains are reused,
    /// lowest first, so a daemon may create and remove networks without end; a reused
    /// id starts with an empty MAC table and zeroed counters.
    pub fn add_domain(&self, cfg: DomainConfig) -> Result<DomainId, EngineError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = DomainId(st.free_domains.first().copied().unwrap_or(st.next_domain));
        self.call(
            &self.sw_ctl,
            self.w(StageKind::Switch),
            SwCtl::AddDomain(id, cfg),
        )?;
        if !st.free_domains.remove(&id.0) {
            st.next_domain += 1;
        }
        Ok(id)
    }

    /// Remove a bridge domain; its ports must have been removed first. Its id may be
    /// given to the next domain created.
    pub fn remove_domain(&self, id: DomainId) -> Result<(), EngineError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.call(
            &self.sw_ctl,
            self.w(StageKind::Switch),
            SwCtl::RemoveDomain(id),
        )?;
        st.free_domains.insert(id.0);
        Ok(())
    }

    /// Hand a port to the engine, attached to `domain`. When this returns, frames flow.
    pub fn add_port(&self, port: Box<dyn Port>, domain: DomainId) -> Result<PortId, EngineError> {
        self.add_port_with(port, domain, SwCtl::Attach)
    }

    /// Hand a network's gateway port ([`GatewayPort`](crate::port::GatewayPort)) to the
    /// engine, attached to `domain` as its gateway: every endpoint reaches it, even when
    /// the domain has inter-container communication off.
    pub fn add_gateway_port(
        &self,
        port: Box<dyn Port>,
        domain: DomainId,
    ) -> Result<PortId, EngineError> {
        self.add_port_with(port, domain, |p, d| {
            SwCtl::AttachAs(p, d, tapnet_switch::PortRole::Gateway)
        })
    }

    /// Hand the engine a port that belongs to no bridge domain: it is read (and its
    /// frames enter the switch through the ports it names in `meta.in_port`, see
    /// [`PortRx::stamps_in_port`](crate::port::PortRx::stamps_in_port)) but never
    /// forwarded to. The VXLAN underlay port is one.
    pub fn add_unattached_port(&self, port: Box<dyn Port>) -> Result<PortId, EngineError> {
        self.add_port_in(port, None)
    }

    fn add_port_with(
        &self,
        port: Box<dyn Port>,
        domain: DomainId,
        attach: fn(PortId, DomainId) -> SwCtl,
    ) -> Result<PortId, EngineError> {
        self.add_port_in(port, Some((domain, attach)))
    }

    fn add_port_in(
        &self,
        port: Box<dyn Port>,
        attach: Option<(DomainId, AttachMsg)>,
    ) -> Result<PortId, EngineError> {
        if port.pool().is_some_and(|p| !Arc::ptr_eq(p, &self.pool)) {
            return Err(EngineError::Rejected(format!(
                "port {} draws frames from another pool than this engine's: build it with engine.pool()",
                port.info().name
            )));
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let idx = st
            .ports
            .iter()
            .position(Option::is_none)
            .unwrap_or(st.ports.len());
        if idx >= 1 << throttle::INDEX_BITS {
            return Err(EngineError::Rejected(format!(
                "the engine holds {idx} ports, its maximum"
            )));
        }
        if st.gens.len() <= idx {
            st.gens.resize(idx + 1, 0);
        }
        // A new generation for the slot: frames of its previous port still in flight
        // are then recognised as stale and dropped.
        st.gens[idx] = (st.gens[idx] + 1) % (1 << (32 - throttle::INDEX_BITS));
        let id = PortId(idx as u32 | (st.gens[idx] << throttle::INDEX_BITS));
        let info = port.info();
        let counters = Arc::new(PortCounters::default());
        let (rx, tx) = port.split();
        self.call(
            &self.tx_ctl,
            self.w(StageKind::Tx),
            TxCtl::Add(id, tx, info.clone(), counters.clone()),
        )?;
        let attached = attach.is_some();
        if let Some((domain, attach)) = attach {
            if let Err(e) = self.call(&self.sw_ctl, self.w(StageKind::Switch), attach(id, domain)) {
                let _ = self.call(&self.tx_ctl, self.w(StageKind::Tx), TxCtl::Remove(id));
                return Err(e);
            }
        }
        if let Err(e) = self.call(
            &self.rx_ctl,
            self.w(StageKind::Rx),
            RxCtl::Add(id, rx, counters.clone()),
        ) {
            let _ = self.call(&self.sw_ctl, self.w(StageKind::Switch), SwCtl::Detach(id));
            let _ = self.call(&self.tx_ctl, self.w(StageKind::Tx), TxCtl::Remove(id));
            return Err(e);
        }
        if st.ports.len() <= idx {
            st.ports.resize_with(idx + 1, || None);
        }
        st.ports[idx] = Some(PortEntry {
            info,
            counters,
            attached,
        });
        Ok(id)
    }

    /// Take a port out of the engine (its device is closed when the last half drops).
    pub fn remove_port(&self, id: PortId) -> Result<(), EngineError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let idx = throttle::slot(id);
        let current = st.ports.get(idx).and_then(Option::as_ref).is_some()
            && st
                .gens
                .get(idx)
                .is_some_and(|g| (g << throttle::INDEX_BITS) | idx as u32 == id.0);
        if !current {
            return Err(EngineError::Rejected(format!("no port {}", id.0)));
        }
        // Every stage is asked, whatever another answered: a port left in one stage
        // (the switch with its static MACs, say) would outlive its removal.
        let attached = st.ports[idx].as_ref().is_some_and(|p| p.attached);
        let results = [
            self.call(&self.rx_ctl, self.w(StageKind::Rx), RxCtl::Remove(id)),
            if attached {
                self.call(&self.sw_ctl, self.w(StageKind::Switch), SwCtl::Detach(id))
            } else {
                Ok(())
            },
            self.call(&self.tx_ctl, self.w(StageKind::Tx), TxCtl::Remove(id)),
        ];
        // A stage that refused has no such port: it is out of that stage all the same.
        // A stage whose worker ended may still hold it: the slot stays taken.
        if results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(EngineError::Rejected(_))))
        {
            st.ports[idx] = None;
        }
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    /// Pin `mac` to `port` in `domain` (an endpoint's MAC known from IPAM).
    pub fn add_static_mac(
        &self,
        domain: DomainId,
        mac: MacAddr,
        port: PortId,
    ) -> Result<(), EngineError> {
        self.call(
            &self.sw_ctl,
            self.w(StageKind::Switch),
            SwCtl::AddStatic(domain, mac, port),
        )
    }

    /// Undo [`Engine::add_static_mac`].
    pub fn remove_static_mac(&self, domain: DomainId, mac: MacAddr) -> Result<(), EngineError> {
        self.call(
            &self.sw_ctl,
            self.w(StageKind::Switch),
            SwCtl::RemoveStatic(domain, mac),
        )
    }

    /// Restrict what `port` may send from to `binding` (its MAC, and its addresses if the
    /// binding names them): the switch drops, and counts as `spoof_drops`, every other
    /// frame from it. `None` lifts the restriction. A port starts unbound; removing it
    /// drops its binding.
    pub fn set_port_binding(
        &self,
        port: PortId,
        binding: Option<tapnet_switch::PortBinding>,
    ) -> Result<(), EngineError> {
        self.call(
            &self.sw_ctl,
            self.w(StageKind::Switch),
            SwCtl::Bind(port, binding),
        )
    }

    /// The ingress-guard counters of every port (spoofed frames, floods over the rate,
    /// MACs over the learning limit), read by the switch stage.
    pub fn port_guard_stats(
        &self,
    ) -> Result<Vec<(PortId, tapnet_switch::PortGuardCountersSnapshot)>, EngineError> {
        let (tx, rx) = bounded(1);
        self.call(
            &self.sw_ctl,
            self.w(StageKind::Switch),
            SwCtl::GuardStats(tx),
        )?;
        rx.try_recv().map_err(|_| EngineError::Stopped)
    }

    /// Manual mode: run every stage once with the clock at `now`; returns frames moved.
    pub fn step(&self, now: Duration) -> usize {
        let mut ws = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        let mut work = 0;
        for w in ws.iter_mut() {
            w.poll_events(Some(Duration::ZERO));
            work += w.run_once(now);
        }
        work
    }

    /// Read every counter.
    pub fn stats(&self) -> EngineStats {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ports = st
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.as_ref().map(|p| PortReport {
                    id: PortId(i as u32 | (st.gens[i] << throttle::INDEX_BITS)),
                    info: p.info.clone(),
                    stats: p.counters.snapshot(),
                })
            })
            .collect();
        let stages = self
            .stage_counters
            .iter()
            .map(|(k, w, c)| StageReport {
                kind: *k,
                worker: *w,
                stats: c.snapshot(),
            })
            .collect();
        let doms = self
            .domain_counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut domains: Vec<_> = doms.iter().map(|(d, c)| (*d, c.snapshot())).collect();
        domains.sort_by_key(|(d, _)| *d);
        EngineStats {
            ports,
            stages,
            switch: self.switch_counters.snapshot(),
            domains,
            pool_free: self.pool.available(),
        }
    }

    /// Why the datapath failed (which worker panicked, and its message), if it did. A
    /// failed engine switches nothing more and refuses every change.
    pub fn failed(&self) -> Option<String> {
        self.health.failed().map(str::to_string)
    }

    /// **Test hook**, not an API: have the thread running `stage` take `fault` (panic,
    /// or stall a while) when it next drains its control messages. Returns at once.
    /// Threaded engines only (in manual mode the fault would hit the caller).
    #[doc(hidden)]
    pub fn inject_fault(&self, stage: StageKind, fault: Fault) -> Result<(), EngineError> {
        let (done, _) = bounded(1);
        let sent = match stage {
            StageKind::Rx => self
                .rx_ctl
                .send(Ctl {
                    msg: RxCtl::Fault(fault),
                    done,
                })
                .is_ok(),
            StageKind::Switch => self
                .sw_ctl
                .send(Ctl {
                    msg: SwCtl::Fault(fault),
                    done,
                })
                .is_ok(),
            StageKind::Tx => self
                .tx_ctl
                .send(Ctl {
                    msg: TxCtl::Fault(fault),
                    done,
                })
                .is_ok(),
        };
        if !sent {
            return Err(EngineError::Stopped);
        }
        self.wakes[self.w(stage)].kick();
        Ok(())
    }

    /// Stop the workers and wait for them.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakes {
            w.kick();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
