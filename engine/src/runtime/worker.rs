//! One worker thread: runs its stages in order, sleeps in `epoll` when idle.
//!
//! A worker that produced into another worker's ring wakes it only if it is asleep (see
//! [`crate::wake`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::stages::{RxStage, SwitchStage, TxStage};
use crate::pool::BufferPool;
use crate::wake::WakeCell;

/// Token of the waker; port tokens are port ids, which stay below this.
pub(crate) const WAKE_TOKEN: Token = Token(usize::MAX);

pub(crate) enum Stage {
    Rx(RxStage),
    Switch(SwitchStage),
    Tx(TxStage),
}

pub(crate) struct Worker {
    pub(crate) stages: Vec<Stage>,
    poll: Poll,
    events: Events,
    pub(crate) wake: Arc<WakeCell>,
    pool: Arc<BufferPool>,
    batch: usize,
}

/// Timing of the idle path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idle {
    /// Spin this long on empty inputs before sleeping.
    pub(crate) busy_poll: Duration,
    /// Longest sleep (bounds aging and shutdown latency).
    pub(crate) max_sleep: Duration,
}

impl Worker {
    pub(crate) fn new(pool: Arc<BufferPool>, batch: usize) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let wake = WakeCell::new(poll.registry(), WAKE_TOKEN)?;
        Ok(Worker {
            stages: Vec::new(),
            poll,
            events: Events::with_capacity(256),
            wake: Arc::new(wake),
            pool,
            batch,
        })
    }

    /// Apply pending control messages of every stage.
    pub(crate) fn control(&mut self) {
        let registry = self.poll.registry();
        for s in &mut self.stages {
            match s {
                Stage::Rx(r) => r.control(registry),
                Stage::Switch(sw) => sw.control(),
                Stage::Tx(t) => t.control(&self.pool),
            }
        }
    }

    /// One pass over every stage; returns the frames moved.
    pub(crate) fn run_once(&mut self, now: Duration) -> usize {
        self.control();
        let mut work = 0;
        for s in &mut self.stages {
            work += match s {
                Stage::Rx(r) => r.run(&self.pool, now, self.batch),
                Stage::Switch(sw) => sw.run(&self.pool, now, self.batch),
                Stage::Tx(t) => t.run(&self.pool, now, self.batch),
            };
        }
        work
    }

    fn has_fds(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s, Stage::Rx(r) if r.has_fds()))
    }

    fn inputs_pending(&self) -> bool {
        self.stages.iter().any(|s| match s {
            Stage::Rx(r) => r.pending() || !r.ctl.is_empty(),
            Stage::Switch(sw) => sw.pending() || !sw.ctl.is_empty(),
            Stage::Tx(t) => t.pending() || !t.ctl.is_empty(),
        })
    }

    /// Wait for readiness up to `timeout` and mark ready ports.
    pub(crate) fn poll_events(&mut self, timeout: Option<Duration>) {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => return,
        }
        for ev in self.events.iter() {
            if ev.token() == WAKE_TOKEN {
                continue;
            }
            for s in &mut self.stages {
                if let Stage::Rx(r) = s {
                    r.set_ready(ev.token().0);
                }
            }
        }
    }

    /// The thread body: run until `stop` is set.
    pub(crate) fn run(&mut self, start: Instant, stop: &AtomicBool, idle: Idle) {
        let mut idle_since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let work = self.run_once(start.elapsed());
            if work > 0 {
                idle_since = None;
                if self.has_fds() {
                    // Edge-triggered readiness: collect new events without blocking.
                    self.poll_events(Some(Duration::ZERO));
                }
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < idle.busy_poll {
                if self.has_fds() {
                    self.poll_events(Some(Duration::ZERO));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            self.wake.set_sleeping(true);
            fence(Ordering::SeqCst);
            if !self.inputs_pending() {
                for s in &self.stages {
                    match s {
                        Stage::Rx(r) => r.counters.sleeps.inc(),
                        Stage::Switch(sw) => sw.counters.sleeps.inc(),
                        Stage::Tx(t) => t.counters.sleeps.inc(),
                    }
                }
                self.poll_events(Some(idle.max_sleep));
            }
            self.wake.set_sleeping(false);
            idle_since = None;
        }
        self.control();
        for s in &mut self.stages {
            match s {
                Stage::Rx(r) => r.close(&self.pool),
                Stage::Switch(sw) => sw.close(&self.pool),
                Stage::Tx(t) => t.close(&self.pool),
            }
        }
    }
}
