//! The time host networking runs on. The relays take `now` from their caller, as the
//! engine's stages do; the host thread reads it from the [`Clock`] it is handed: the
//! system's monotonic clock, or a [`ManualClock`] that moves only when told, so that a
//! test drives idle timeouts and timers instead of sleeping through them.
//!
//! Busy polling is not on this clock: how long the thread spins before it sleeps is a
//! matter of CPU wake-up latency, measured in real time whatever the clock says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use mio::Waker;

/// Where the host thread reads the time.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's monotonic clock, from the start of host networking.
    #[default]
    System,
    /// A clock that moves only when told (tests).
    Manual(ManualClock),
}

/// A clock that stands at zero until [`advanced`](ManualClock::advance). Clones share
/// the time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<Manual>);

#[derive(Debug, Default)]
struct Manual {
    /// Nanoseconds since the origin.
    nanos: AtomicU64,
    /// The latest time a host thread reading this clock finished a pass at.
    passed: Mutex<Duration>,
    /// Signalled at the end of each such pass.
    pass: Condvar,
    /// The wakers of the host threads reading this clock.
    wakers: Mutex<Vec<Weak<Waker>>>,
}

/// A poisoned lock still holds a valid value here (a time, a list of wakers).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Its time.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.0.nanos.load(Ordering::Acquire))
    }

    /// Move the clock forward by `by` and wake the host threads reading it, so that
    /// their timers fire now; returns the new time.
    pub fn advance(&self, by: Duration) -> Duration {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let now = self
            .0
            .nanos
            .fetch_add(by, Ordering::AcqRel)
            .saturating_add(by);
        let mut wakers = lock(&self.0.wakers);
        wakers.retain(|w| match w.upgrade() {
            Some(w) => {
                let _ = w.wake();
                true
            }
            None => false,
        });
        Duration::from_nanos(now)
    }

    /// Wait until a host thread reading this clock has finished a pass that started at
    /// time `at` or later (one that saw everything before `at`). False if `limit`
    /// (real time) ran out first.
    pub fn wait_pass(&self, at: Duration, limit: Duration) -> bool {
        let passed = lock(&self.0.passed);
        let (passed, _) = self
            .0
            .pass
            .wait_timeout_while(passed, limit, |p| *p < at)
            .unwrap_or_else(|e| e.into_inner());
        *passed >= at
    }
}

/// The clock as one host networking instance reads it.
#[derive(Clone, Debug)]
pub(super) struct Time {
    clock: Clock,
    origin: Instant,
}

impl Time {
    /// `clock`, read by the host thread whose waker is `waker`.
    pub(super) fn new(clock: Clock, waker: &Arc<Waker>) -> Time {
        if let Clock::Manual(m) = &clock {
            lock(&m.0.wakers).push(Arc::downgrade(waker));
        }
        Time {
            clock,
            origin: Instant::now(),
        }
    }

    /// The time now.
    pub(super) fn now(&self) -> Duration {
        match &self.clock {
            Clock::System => self.origin.elapsed(),
            Clock::Manual(m) => m.now(),
        }
    }

    /// The start of a host thread's pass, for [`Time::passed`]: the time on a manual
    /// clock (the system's is not read for it).
    pub(super) fn pass_start(&self) -> Duration {
        match &self.clock {
            Clock::System => Duration::ZERO,
            Clock::Manual(m) => m.now(),
        }
    }

    /// The host thread finished the pass that started at `at` ([`Time::pass_start`]).
    pub(super) fn passed(&self, at: Duration) {
        if let Clock::Manual(m) = &self.clock {
            let mut p = lock(&m.0.passed);
            if *p < at {
                *p = at;
            }
            m.0.pass.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_wakes_its_readers() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let clock = ManualClock::new();
        let time = Time::new(Clock::Manual(clock.clone()), &waker);
        assert_eq!(time.now(), Duration::ZERO);
        assert_eq!(
            clock.advance(Duration::from_secs(121)),
            Duration::from_secs(121)
        );
        assert_eq!(time.now(), Duration::from_secs(121));
        // The reader's poll returns at once: it was woken.
        let mut poll = poll;
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == mio::Token(0)));
        // A pass at the new time is what `wait_pass` waits for.
        assert!(!clock.wait_pass(Duration::from_secs(121), Duration::ZERO));
        time.passed(Duration::from_secs(121));
        assert!(clock.wait_pass(Duration::from_secs(121), Duration::ZERO));
    }
}
