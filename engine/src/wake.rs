//! Waking a sleeping worker: the doorbell that ports, host networking and other workers
//! ring after they put frames where a worker will look.
//!
//! A worker that sleeps sets `sleeping`, re-checks its inputs, then waits in `epoll`; a
//! producer pushes, then checks `sleeping` and wakes it only then. Both sides fence, so a
//! wake-up is never lost. Its own module because both the ports (which hold a
//! [`Notifier`]) and the runtime (which owns the workers) need it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use mio::{Registry, Token, Waker};

/// Lets other threads wake a sleeping worker.
pub(crate) struct WakeCell {
    sleeping: AtomicBool,
    waker: Waker,
}

impl WakeCell {
    /// A doorbell for the worker polling `registry`, signalled as `token`.
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<WakeCell> {
        Ok(WakeCell {
            sleeping: AtomicBool::new(false),
            waker: Waker::new(registry, token)?,
        })
    }

    /// Wake the worker if it sleeps.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            let _ = self.waker.wake();
        }
    }

    /// Wake the worker unconditionally (control messages, shutdown).
    pub(crate) fn kick(&self) {
        let _ = self.waker.wake();
    }

    /// The worker is about to sleep (`true`) or has woken (`false`).
    pub(crate) fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::Relaxed);
    }
}

/// Wakes a worker from outside the engine: a memory port's peer calls it after queuing
/// frames, so an idle worker sleeps instead of spinning on a ring.
#[derive(Clone)]
pub struct Notifier(pub(crate) Arc<WakeCell>);

impl Notifier {
    /// Wake the worker if it sleeps (a fence and a load when it does not).
    pub fn notify(&self) {
        self.0.notify();
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}
