//! The engine's health: which datapath thread failed and why, and the test hook that
//! makes one fail.
//!
//! A worker runs its loop inside `catch_unwind`: a panic ends that worker (its stages,
//! their tables and their ports go with it), is recorded here, and every control call
//! waiting on it returns [`EngineError::Failed`](super::EngineError::Failed) instead of
//! waiting forever. The engine does not restart the worker: its tables are gone, and
//! the daemon that owns the engine holds the state to rebuild them from, so it exits
//! and is restarted (see `tapnet daemon`).

use std::any::Any;
use std::sync::OnceLock;
use std::time::Duration;

/// What failed first, if anything did. Shared by the engine and its workers.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failure: OnceLock<String>,
}

impl Health {
    /// Record a failure; the first one is kept.
    pub(crate) fn fail(&self, what: String) {
        let _ = self.failure.set(what);
    }

    /// The first failure recorded.
    pub(crate) fn failed(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }
}

/// The text of a panic's payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// A fault to inject into a stage's thread: a **test hook**, not an API. It is carried
/// to the stage as a control message and fired when the stage takes it, on the thread
/// that runs the stage, so a test can show what the engine (and the daemon above it)
/// does when that thread panics or stops answering for a while. See
/// [`Engine::inject_fault`](super::Engine::inject_fault).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Panic (the worker running the stage dies).
    Panic,
    /// Sleep this long before taking the next control message or frame (a stage that
    /// is slow to answer).
    Stall(Duration),
}

impl Fault {
    /// Make it happen, here, now.
    pub(crate) fn fire(self) {
        match self {
            Fault::Panic => panic!("fault injected by a test"),
            Fault::Stall(d) => std::thread::sleep(d),
        }
    }
}
