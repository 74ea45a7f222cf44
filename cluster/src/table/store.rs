//! Storage of one scope's entries, by owner then key, and the per-owner digest.

use std::collections::BTreeMap;
use std::time::Duration;

use super::types::{NodeKey, Version};
use super::wire::{OwnerDigest, WireEntry};

/// One entry or tombstone as held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) version: Version,
    /// `None`: a tombstone.
    pub(crate) value: Option<Vec<u8>>,
    /// When this version was stored (tombstones are reaped from it).
    pub(crate) since: Duration,
}

/// Entries of one scope. Bounded by what the owners write: at most one record per
/// (owner, key), tombstones reaped after the retention time.
#[derive(Debug, Default)]
pub(crate) struct ScopeStore {
    pub(crate) owners: BTreeMap<NodeKey, BTreeMap<String, Stored>>,
    /// At most the `since` of every tombstone held (`None`: none held), so that
    /// reaping scans the store only when a tombstone may be due. Whoever turns an
    /// entry into a tombstone other than through [`ScopeStore::put`] lowers it with
    /// [`ScopeStore::tombstoned`].
    pub(crate) oldest_tomb: Option<Duration>,
    /// [`ScopeStore::summary`] as last computed; `None` after a change. Whoever
    /// changes `owners` other than through [`ScopeStore::put`] calls
    /// [`ScopeStore::changed`] (reaping a tombstone changes no summary).
    summary: Option<(u32, u64)>,
}

impl ScopeStore {
    pub(crate) fn get(&self, owner: NodeKey, key: &str) -> Option<&Stored> {
        self.owners.get(&owner)?.get(key)
    }

    pub(crate) fn put(&mut self, owner: NodeKey, key: String, s: Stored) {
        if s.value.is_none() {
            self.tombstoned(s.since);
        }
        self.owners.entry(owner).or_default().insert(key, s);
        self.summary = None;
    }

    /// Live entries were changed or dropped directly in `owners`.
    pub(crate) fn changed(&mut self) {
        self.summary = None;
    }

    /// A tombstone stored at `since`.
    pub(crate) fn tombstoned(&mut self, since: Duration) {
        self.oldest_tomb = Some(self.oldest_tomb.map_or(since, |t| t.min(since)));
    }

    /// Everything held from `owner` (entries and tombstones), for an anti-entropy answer.
    pub(crate) fn wire_entries(&self, owner: NodeKey) -> Vec<WireEntry> {
        self.owners
            .get(&owner)
            .map(|m| {
                m.iter()
                    .map(|(k, s)| WireEntry {
                        owner,
                        key: k.clone(),
                        version: s.version,
                        value: s.value.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Digest of one owner: the highest version held and the sum of the pair hashes
    /// of its live entries.
    ///
    /// The hash covers live entries only, not tombstones: nodes reap tombstones at
    /// different times, so a hash over them would keep differing after every side
    /// agrees on what is visible; a missing delete still shows, as a live entry the
    /// other side lacks. Comparing hashes, not high-water marks, catches a lost
    /// older write when a newer one of the same owner arrived (moby PR #53437).
    pub(crate) fn owner_digest(&self, owner: NodeKey) -> Option<OwnerDigest> {
        let m = self.owners.get(&owner)?;
        let mut max = Version::default();
        let mut hash = 0u64;
        for (k, s) in m {
            max = max.max(s.version);
            if s.value.is_some() {
                hash = hash.wrapping_add(pair_hash(k, s.version));
            }
        }
        Some(OwnerDigest { owner, max, hash })
    }

    /// Digest of every owner held, sorted by owner.
    pub(crate) fn digest(&self) -> Vec<OwnerDigest> {
        self.owners
            .keys()
            .filter_map(|&o| self.owner_digest(o))
            .collect()
    }
}

impl ScopeStore {
    /// Summary of the whole store: the owners with live entries and the sum of a
    /// mix of (owner, owner hash) over them (live entries only, as
    /// [`ScopeStore::owner_digest`]). Kept until the next change: computing it
    /// reads the whole store, and it is asked at every anti-entropy round.
    pub(crate) fn summary(&mut self) -> (u32, u64) {
        if let Some(s) = self.summary {
            #[cfg(test)]
            assert_eq!(s, self.compute_summary(), "kept summary");
            return s;
        }
        let s = self.compute_summary();
        self.summary = Some(s);
        s
    }

    fn compute_summary(&self) -> (u32, u64) {
        let mut count = 0u32;
        let mut sum = 0u64;
        for d in self.digest().into_iter().filter(|d| d.hash != 0) {
            count = count.wrapping_add(1);
            sum = sum.wrapping_add(mix(d.owner.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ d.hash));
        }
        (count, sum)
    }
}

/// The splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of one (key, version) pair, the same on every node and every build:
/// FNV-1a 64 over the key bytes, generation and sequence, then the splitmix64
/// finaliser so that sums of pair hashes spread well.
pub(crate) fn pair_hash(key: &str, v: Version) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for &b in key.as_bytes() {
        feed(b);
    }
    feed(0xff);
    for b in v.generation.to_le_bytes() {
        feed(b);
    }
    for b in v.seq.to_le_bytes() {
        feed(b);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
