//! Named statistics: one documented field per event, readable from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing event count with one writer and any number of
/// readers.
///
/// Only the thread that owns the stage writes a counter, so [`Counter::inc`]
/// is a relaxed load followed by a relaxed store rather than a locked
/// read-modify-write: on x86 that is two plain `mov`s instead of a `lock xadd`,
/// and it never contends. Readers on other threads see a value that is at most
/// slightly stale. Two threads writing the same counter would lose
/// increments (never memory safety), so don't.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Count one event. Owner thread only.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Count `n` events. Owner thread only.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// The current value; any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Declares a counter struct and its plain-`u64` snapshot twin with the same
/// documented fields. Exported so every crate's counters follow one pattern.
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub struct $name:ident / $snap:ident {
            $( $(#[$fmeta:meta])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $crate::Counter, )*
        }

        #[doc = concat!("Plain copy of [`", stringify!($name), "`] for printing and serializing.")]
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $snap {
            $( $(#[$fmeta])* pub $field: u64, )*
        }

        impl $name {
            /// Read every counter. Each value is individually current; the set
            /// is not an atomic snapshot.
            pub fn snapshot(&self) -> $snap {
                $snap { $( $field: self.$field.get(), )* }
            }
        }

        impl $snap {
            /// Every counter by name, in declaration order.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($field), self.$field), )* ]
            }

            /// Field-by-field sum with `other` (to total several sets).
            pub fn sum(&self, other: &$snap) -> $snap {
                $snap { $( $field: self.$field.wrapping_add(other.$field), )* }
            }
        }
    };
}

counters! {
    /// Switch-wide counters: frames that never reached a domain.
    pub struct SwitchCounters / SwitchCountersSnapshot {
        /// Frames passed to [`Switch::process`](crate::Switch::process).
        processed,
        /// Frames shorter than an Ethernet header (14 bytes).
        drop_malformed,
        /// Frames from a port that is not attached to any domain.
        drop_no_domain,
    }
}

counters! {
    /// Counters of one bridge domain.
    pub struct DomainCounters / DomainCountersSnapshot {
        /// Frames that entered this domain (well formed, from an attached port).
        received,
        /// Frames sent to exactly one known port.
        forwarded,
        /// Frames flooded to the domain: broadcast, multicast and unknown unicast.
        flooded,
        /// The part of `flooded` that was unicast to a MAC not in the table.
        flooded_unknown,
        /// Source MACs learned that were absent (or expired) before.
        learned,
        /// Source MACs that moved to a different port.
        moved,
        /// Learned entries removed by aging.
        aged,
        /// Entries (learned and static) removed because their port was detached.
        flushed,
        /// New source MACs not learned because the table was at capacity
        /// (a MAC flood, or a capacity set too small). Their frames are still
        /// switched; replies to them are flooded.
        table_full,
        /// Frames whose destination is on the port they came from (dropped, as a
        /// Linux bridge without hairpin mode does).
        drop_hairpin,
        /// Frames with a multicast, broadcast or all-zero source MAC.
        drop_bad_source,
        /// Frames from an endpoint to another endpoint while inter-container
        /// communication is off (`enable_icc=false`), and floods from an
        /// endpoint in such a domain with no gateway port.
        drop_isolated,
        /// Frames from a port with a [`PortBinding`](crate::PortBinding) whose
        /// source MAC, IP source or ARP sender is not the port's own (dropped).
        spoof_drops,
        /// Frames to be flooded (broadcast, multicast, unknown unicast) from a
        /// port over its [`FloodLimit`](crate::FloodLimit) (dropped).
        flood_rate_drops,
        /// New source MACs not learned because their port already had
        /// [`TableConfig::port_capacity`](crate::TableConfig::port_capacity)
        /// learned entries. Their frames are still switched.
        learn_limit_drops,
    }
}

counters! {
    /// Counters of one port's ingress guards (the same events as the
    /// domain's counters of the same names, for this port alone).
    pub struct PortGuardCounters / PortGuardCountersSnapshot {
        /// Frames dropped because a source address was not the port's own.
        spoof_drops,
        /// Frames to be flooded dropped over the port's flood rate.
        flood_rate_drops,
        /// Source MACs not learned over the port's learning limit.
        learn_limit_drops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counter_counts_and_is_readable_elsewhere() {
        let c = Arc::new(DomainCounters::default());
        c.forwarded.inc();
        c.forwarded.add(4);
        c.aged.inc();
        let reader = Arc::clone(&c);
        let got = std::thread::spawn(move || reader.snapshot())
            .join()
            .unwrap();
        assert_eq!(
            got,
            DomainCountersSnapshot {
                forwarded: 5,
                aged: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn counter_wraps_instead_of_panicking() {
        let c = Counter::new();
        c.add(u64::MAX);
        c.add(2);
        assert_eq!(c.get(), 1);
    }
}
