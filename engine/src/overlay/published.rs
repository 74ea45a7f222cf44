//! An immutable value the control path replaces and the datapath reads without waiting.
//!
//! The writer builds a new value, stores it and bumps a generation number. A reader keeps
//! its own `Arc` of the value and the generation it saw; per batch it loads the
//! generation (one atomic read) and only when it moved takes the short lock to clone
//! the new `Arc`. The lock is held by a writer only for the swap of a pointer, so a
//! reader never waits for a table to be built, and in steady state takes no lock at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The published value (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Published<T> {
    generation: AtomicU64,
    value: Mutex<Arc<T>>,
}

impl<T> Published<T> {
    pub(crate) fn new(v: T) -> Published<T> {
        Published {
            generation: AtomicU64::new(0),
            value: Mutex::new(Arc::new(v)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<T>> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value now.
    pub(crate) fn load(&self) -> Arc<T> {
        self.lock().clone()
    }

    /// Replace the value; readers see it at their next batch.
    pub(crate) fn store(&self, v: T) {
        *self.lock() = Arc::new(v);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A reader holding the value now.
    pub(crate) fn reader(&self) -> Reader<T> {
        let generation = self.generation.load(Ordering::Acquire);
        Reader {
            value: self.load(),
            generation,
        }
    }
}

/// One reader's copy (see the module docs).
#[derive(Debug)]
pub(crate) struct Reader<T> {
    value: Arc<T>,
    generation: u64,
}

impl<T> Reader<T> {
    /// The latest value: the reader's copy, refreshed if the writer stored another.
    pub(crate) fn get(&mut self, from: &Published<T>) -> &Arc<T> {
        let g = from.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.value = from.load();
            self.generation = g;
        }
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_the_next_value_at_its_next_get() {
        let p = Published::new(1);
        let mut r = p.reader();
        assert_eq!(**r.get(&p), 1);
        p.store(2);
        assert_eq!(**r.get(&p), 2);
        assert_eq!(*p.load(), 2);
    }
}
