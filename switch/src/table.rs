//! Per-domain MAC learning table (a bridge's forwarding database).
//!
//! A fixed-size open-addressing hash table with linear probing and
//! backward-shift deletion. It is sized once, when the domain is created, for
//! `capacity` learned entries at ≤ 75 % load, so learning on the packet path
//! never allocates or rehashes. (A `std::HashMap` preallocated with
//! `with_capacity` does not quite promise that: after enough remove/insert
//! churn from aging its tombstones use up the spare room and an insert
//! rehashes, and at more than half load that rehash *doubles* the
//! allocation. Backward-shift deletion leaves no tombstones.) Only
//! [`MacTable::add_static`], a control-plane call, may grow the slot array.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

use crate::error::SwitchError;
use crate::{MacAddr, PortId};

/// Sizing and timing of one [`MacTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Most learned entries the table holds (default 8192). When full, frames
    /// from new source MACs are still switched but their MACs are not learned.
    /// Static entries are bounded separately by [`MacTable::MAX_STATIC`].
    /// Clamped to [`TableConfig::MAX_CAPACITY`].
    pub capacity: usize,
    /// How long a learned entry stays valid after the last frame from its MAC
    /// (default 300 s, as a Linux bridge's `ageing_time`). Zero makes every
    /// entry expire at once: the domain behaves as a hub.
    pub aging: Duration,
    /// Most learned entries pointing at one port (default
    /// [`DEFAULT_PORT_CAPACITY`](Self::DEFAULT_PORT_CAPACITY)), so that one
    /// port sending from many source MACs cannot fill the table for the
    /// others. A MAC new to a port at its limit is not learned there (nor
    /// moved there); its frames are still switched.
    pub port_capacity: usize,
}

impl TableConfig {
    /// Default learned-entry capacity.
    pub const DEFAULT_CAPACITY: usize = 8192;
    /// Default aging time.
    pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
    /// Largest accepted capacity: 2^20 entries, which take 2^21 slots of 24
    /// bytes (48 MiB) per domain. The default 8192 takes 384 KiB.
    pub const MAX_CAPACITY: usize = 1 << 20;
    /// Default learned entries per port: 256. A container's interface sends
    /// from one MAC (with port bindings, the switch learns nothing else from
    /// it); 256 leaves room for nested bridges while one port's MAC flood
    /// takes at most 1/32 of the default table.
    pub const DEFAULT_PORT_CAPACITY: usize = 256;
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            capacity: Self::DEFAULT_CAPACITY,
            aging: Self::DEFAULT_AGING,
            port_capacity: Self::DEFAULT_PORT_CAPACITY,
        }
    }
}

/// What [`MacTable::learn`] did with a source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum LearnOutcome {
    /// The MAC was absent (or its entry had expired) and is now learned.
    New,
    /// The MAC was already on this port; its timestamp was refreshed.
    Refreshed,
    /// The MAC was on another port and now points at this one.
    Moved,
    /// The MAC has a static entry, which learning never changes.
    StaticIgnored,
    /// The MAC is absent and the table holds `capacity` learned entries.
    TableFull,
    /// The MAC is absent (or on another port) and this port already has
    /// `port_capacity` learned entries: not learned (an entry on another port
    /// stays there).
    PortLimit,
}

/// One entry, as reported by [`MacTable::iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry {
    /// The MAC address.
    pub mac: MacAddr,
    /// Where frames for it go.
    pub port: PortId,
    /// When a frame from it was last seen (zero for static entries).
    pub last_seen: Duration,
    /// Whether the control plane installed it.
    pub is_static: bool,
}

/// Marks a slot as occupied; a MAC only uses the low 48 bits of a key.
const OCCUPIED: u64 = 1 << 63;
const MIN_SLOTS: usize = 8;

#[derive(Clone, Copy)]
struct Slot {
    /// `OCCUPIED | mac`, or 0 for an empty slot.
    key: u64,
    /// Nanoseconds since the caller's epoch.
    last_seen: u64,
    port: PortId,
    is_static: bool,
}

const EMPTY: Slot = Slot {
    key: 0,
    last_seen: 0,
    port: PortId(0),
    is_static: false,
};

/// Keyed hash for 48-bit MAC keys: one folded 64×64→128-bit multiply.
///
/// Source MACs are chosen by whoever sends frames, and any container can send
/// frames with arbitrary source addresses. With a fixed, public hash an
/// attacker could precompute thousands of MACs that land in one probe run and
/// turn every lookup into a linear scan. The two secret 64-bit keys come from
/// std's `RandomState`, which is seeded from the OS RNG, so collisions cannot
/// be precomputed (the same folded-multiply construction as foldhash/ahash's
/// fallback). SipHash would also do but costs ~20 ns per lookup, a large share
/// of the per-frame budget; this is ~1 ns. Even an attacker who did learn the
/// keys could not grow a probe run beyond the table's fixed size.
#[derive(Clone, Copy)]
struct MacHash {
    k0: u64,
    k1: u64,
}

impl MacHash {
    fn random() -> MacHash {
        let s = RandomState::new();
        MacHash {
            k0: s.hash_one(0x243f_6a88_85a3_08d3_u64),
            k1: s.hash_one(0x1319_8a2e_0370_7344_u64) | 1,
        }
    }

    #[inline]
    fn hash(self, key: u64) -> u64 {
        let p = u128::from(key ^ self.k0) * u128::from(self.k1);
        (p as u64) ^ ((p >> 64) as u64)
    }
}

/// The MAC → port table of one bridge domain.
pub struct MacTable {
    slots: Box<[Slot]>,
    hash: MacHash,
    capacity: usize,
    port_capacity: usize,
    aging: Duration,
    aging_ns: u64,
    learned: usize,
    /// Learned entries per port (by `PortId`), for the ports of this table
    /// only: an entry is made by [`MacTable::reserve_port`] (the control
    /// plane, on attach) so that learning does not allocate, and dropped by
    /// [`MacTable::release_port`] (on detach). Looked up only when an entry
    /// is added, moved or removed, never on a refresh.
    per_port: HashMap<u32, u32>,
    statics: usize,
    /// A lower bound on the expiry time of every learned entry (exact right
    /// after [`MacTable::age`]); `None` when nothing is learned.
    earliest_expiry: Option<u64>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Smallest power-of-two slot count holding `entries` at ≤ 75 % load.
fn slots_for(entries: usize) -> usize {
    (entries.saturating_mul(4).div_ceil(3) + 1)
        .next_power_of_two()
        .max(MIN_SLOTS)
}

impl MacTable {
    /// Most static entries one table holds. They come only from the control
    /// plane (typically one per container endpoint), so a fixed bound is
    /// plenty and keeps a runaway controller from eating memory.
    pub const MAX_STATIC: usize = 4096;

    /// An empty table with all learning memory allocated up front.
    pub fn new(config: TableConfig) -> MacTable {
        Self::with_hash(config, MacHash::random())
    }

    fn with_hash(config: TableConfig, hash: MacHash) -> MacTable {
        let capacity = config.capacity.min(TableConfig::MAX_CAPACITY);
        MacTable {
            slots: vec![EMPTY; slots_for(capacity)].into_boxed_slice(),
            hash,
            capacity,
            port_capacity: config.port_capacity,
            aging: config.aging,
            aging_ns: nanos(config.aging),
            learned: 0,
            per_port: HashMap::new(),
            statics: 0,
            earliest_expiry: None,
        }
    }

    /// The configuration in force (capacity after clamping).
    pub fn config(&self) -> TableConfig {
        TableConfig {
            capacity: self.capacity,
            aging: self.aging,
            port_capacity: self.port_capacity,
        }
    }

    /// Makes room to count `port`'s learned entries, so that learning on it
    /// never allocates. Control plane (attach).
    pub fn reserve_port(&mut self, port: PortId) {
        self.per_port.entry(port.0).or_insert(0);
    }

    /// Forgets `port`'s count once it has no learned entries left (after
    /// [`flush_port`](Self::flush_port)). Control plane (detach).
    pub fn release_port(&mut self, port: PortId) {
        if self.per_port.get(&port.0) == Some(&0) {
            self.per_port.remove(&port.0);
        }
    }

    /// Learned entries pointing at `port`.
    pub fn port_len(&self, port: PortId) -> usize {
        self.per_port.get(&port.0).map_or(0, |&n| n as usize)
    }

    #[inline]
    fn port_full(&self, port: PortId) -> bool {
        self.port_len(port) >= self.port_capacity
    }

    #[inline]
    fn port_add(&mut self, port: PortId) {
        // Only a port never reserved (a table used on its own) allocates here.
        *self.per_port.entry(port.0).or_insert(0) += 1;
    }

    #[inline]
    fn port_sub(&mut self, port: PortId) {
        if let Some(n) = self.per_port.get_mut(&port.0) {
            *n = n.saturating_sub(1);
        }
    }

    /// Entries held, learned and static, including learned entries that have
    /// expired but not yet been removed by [`age`](Self::age).
    pub fn len(&self) -> usize {
        self.learned + self.statics
    }

    /// Whether the table holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Learned entries held (at most `capacity`).
    pub fn learned_len(&self) -> usize {
        self.learned
    }

    /// Static entries held (at most [`MAX_STATIC`](Self::MAX_STATIC)).
    pub fn static_len(&self) -> usize {
        self.statics
    }

    #[inline]
    fn key(mac: MacAddr) -> u64 {
        OCCUPIED | mac.to_u64()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        self.hash.hash(key) as usize & self.mask()
    }

    /// `Ok(index)` of the key's slot, or `Err(index)` of the empty slot where
    /// it would go. Terminates because load never exceeds 75 %.
    #[inline]
    fn probe(&self, key: u64) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].key;
            if k == key {
                return Ok(i);
            }
            if k == 0 {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn expired(&self, s: &Slot, now_ns: u64) -> bool {
        !s.is_static && now_ns >= s.last_seen.saturating_add(self.aging_ns)
    }

    /// Records that `mac` sent a frame on `port` at `now`.
    ///
    /// Static entries are left alone. A new MAC is refused when `capacity`
    /// learned entries are held, even if some have expired and await
    /// [`age`](Self::age); a MAC new to `port` (absent, or on another port) is
    /// refused when `port` has `port_capacity` learned entries. Existing
    /// entries on `port` are always refreshed.
    #[inline]
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: Duration) -> LearnOutcome {
        let key = Self::key(mac);
        let now_ns = nanos(now);
        match self.probe(key) {
            Ok(i) => {
                let was_expired = self.expired(&self.slots[i], now_ns);
                let (old, is_static) = (self.slots[i].port, self.slots[i].is_static);
                if is_static {
                    return LearnOutcome::StaticIgnored;
                }
                let moved = old != port;
                if moved {
                    if self.port_full(port) {
                        return LearnOutcome::PortLimit;
                    }
                    self.port_sub(old);
                    self.port_add(port);
                }
                let s = &mut self.slots[i];
                s.port = port;
                // Never move time backwards: keeps `earliest_expiry` a lower bound.
                s.last_seen = s.last_seen.max(now_ns);
                if was_expired {
                    LearnOutcome::New
                } else if moved {
                    LearnOutcome::Moved
                } else {
                    LearnOutcome::Refreshed
                }
            }
            Err(i) => {
                if self.learned >= self.capacity {
                    return LearnOutcome::TableFull;
                }
                if self.port_full(port) {
                    return LearnOutcome::PortLimit;
                }
                self.port_add(port);
                self.slots[i] = Slot {
                    key,
                    last_seen: now_ns,
                    port,
                    is_static: false,
                };
                self.learned += 1;
                let expiry = now_ns.saturating_add(self.aging_ns);
                self.earliest_expiry = Some(self.earliest_expiry.map_or(expiry, |e| e.min(expiry)));
                LearnOutcome::New
            }
        }
    }

    /// The port for `mac`: its static entry, or its learned entry if that is
    /// younger than `aging` at `now`.
    #[inline]
    pub fn lookup(&self, mac: MacAddr, now: Duration) -> Option<PortId> {
        let i = self.probe(Self::key(mac)).ok()?;
        let s = &self.slots[i];
        (!self.expired(s, nanos(now))).then_some(s.port)
    }

    /// Installs (or re-points) a static entry for `mac`, replacing a learned
    /// one. Control plane only: may grow the slot array.
    ///
    /// Errors with [`SwitchError::StaticTableFull`] when
    /// [`MAX_STATIC`](Self::MAX_STATIC) static entries are held.
    pub fn add_static(&mut self, mac: MacAddr, port: PortId) -> Result<(), SwitchError> {
        let key = Self::key(mac);
        if let Ok(i) = self.probe(key) {
            if self.slots[i].is_static {
                self.slots[i].port = port;
                return Ok(());
            }
        }
        if self.statics >= Self::MAX_STATIC {
            return Err(SwitchError::StaticTableFull {
                limit: Self::MAX_STATIC,
            });
        }
        // Keep room for a full learned load plus every static at ≤ 75 %.
        let needed = slots_for(self.capacity + self.statics + 1);
        if needed > self.slots.len() {
            self.resize(needed);
        }
        let slot = Slot {
            key,
            last_seen: 0,
            port,
            is_static: true,
        };
        match self.probe(key) {
            Ok(i) => {
                // A learned entry becomes static.
                self.port_sub(self.slots[i].port);
                self.slots[i] = slot;
                self.learned -= 1;
            }
            Err(i) => self.slots[i] = slot,
        }
        self.statics += 1;
        Ok(())
    }

    /// Removes the static entry for `mac`; `false` if there is none (a learned
    /// entry for `mac` is left alone).
    pub fn remove_static(&mut self, mac: MacAddr) -> bool {
        match self.probe(Self::key(mac)) {
            Ok(i) if self.slots[i].is_static => {
                self.remove_at(i);
                self.statics -= 1;
                true
            }
            _ => false,
        }
    }

    /// Removes the learned entries pointing at `port` (statics stay);
    /// returns how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        self.retain(|s| s.is_static || s.port != port)
    }

    /// Removes the static entries pointing at `port`; returns how many.
    pub fn remove_port_statics(&mut self, port: PortId) -> usize {
        self.retain(|s| !s.is_static || s.port != port)
    }

    /// Removes learned entries expired at `now`; returns how many. Cheap when
    /// nothing can have expired yet; otherwise one pass over the slots.
    pub fn age(&mut self, now: Duration) -> usize {
        let now_ns = nanos(now);
        match self.earliest_expiry {
            Some(e) if e <= now_ns => {}
            _ => return 0,
        }
        let aging = self.aging_ns;
        let mut earliest: Option<u64> = None;
        let removed = self.retain(|s| {
            if s.is_static {
                return true;
            }
            let expiry = s.last_seen.saturating_add(aging);
            if now_ns >= expiry {
                return false;
            }
            earliest = Some(earliest.map_or(expiry, |e| e.min(expiry)));
            true
        });
        self.earliest_expiry = earliest;
        removed
    }

    /// When [`age`](Self::age) should next run: the earliest expiry of a
    /// learned entry plus a sweep granularity of `aging / 32` (at least
    /// 100 ms), so entries expiring close together go in one pass instead of
    /// one pass each. Lookups treat an entry as absent from its exact expiry
    /// on; the granularity only delays reclaiming its slot. `None` when
    /// nothing is learned.
    pub fn next_expiry(&self) -> Option<Duration> {
        let grain = nanos((self.aging / 32).max(Duration::from_millis(100)));
        self.earliest_expiry
            .map(|e| Duration::from_nanos(e.saturating_add(grain)))
    }

    /// Every entry, in no particular order (expired ones included until aged).
    pub fn iter(&self) -> impl Iterator<Item = TableEntry> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != 0)
            .map(|s| TableEntry {
                mac: MacAddr::from_bytes(&s.key.to_be_bytes()[2..]).unwrap_or_default(),
                port: s.port,
                last_seen: Duration::from_nanos(s.last_seen),
                is_static: s.is_static,
            })
    }

    /// Empties slot `i` and shifts later members of its probe run back so
    /// that every key stays reachable from its home slot without tombstones
    /// (Knuth, TAOCP vol. 3, §6.4 Algorithm R).
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let key = self.slots[j].key;
            if key == 0 {
                break;
            }
            let home = self.home(key);
            // The entry at j may fill the hole unless its home lies
            // cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
    }

    /// Removes every entry for which `keep` is false; returns how many.
    ///
    /// After a removal the same index is examined again, because the backward
    /// shift may have moved a later entry into it. Entries only ever move to
    /// an index already passed if they wrapped around from the start of the
    /// array, which was examined first, so every entry is examined at least
    /// once (`keep` must tolerate seeing one twice).
    fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.slots.len() {
            let s = self.slots[i];
            if s.key != 0 && !keep(&s) {
                if s.is_static {
                    self.statics -= 1;
                } else {
                    self.learned -= 1;
                    self.port_sub(s.port);
                }
                self.remove_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        if self.learned == 0 {
            self.earliest_expiry = None;
        }
        removed
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots].into_boxed_slice());
        for s in old.iter().filter(|s| s.key != 0) {
            if let Err(i) = self.probe(s.key) {
                self.slots[i] = *s;
            }
        }
    }
}

impl fmt::Debug for MacTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacTable")
            .field("capacity", &self.capacity)
            .field("aging", &self.aging)
            .field("learned", &self.learned)
            .field("statics", &self.statics)
            .field("slots", &self.slots.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
