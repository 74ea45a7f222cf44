//! The set of allocated host offsets of one subnet, as sorted maximal runs.
//!
//! moby keeps a run-length-encoded bitmap (`libnetwork/bitmap`); runs of allocated
//! addresses are the same idea keyed by position, so a /16 with thousands of endpoints
//! handed out in order is one run, serialises to a few numbers, and every operation is
//! O(log runs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Allocated offsets: `start → end` (inclusive), non-overlapping and non-adjacent (a
/// run always ends before a free offset), so the offset after a run is free.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<[u32; 2]>", into = "Vec<[u32; 2]>")]
pub(crate) struct AddrSet {
    runs: BTreeMap<u32, u32>,
}

impl AddrSet {
    /// The run holding `x`, if any.
    fn run_of(&self, x: u32) -> Option<(u32, u32)> {
        let (&s, &e) = self.runs.range(..=x).next_back()?;
        (e >= x).then_some((s, e))
    }

    /// Whether `x` is allocated.
    pub(crate) fn contains(&self, x: u32) -> bool {
        self.run_of(x).is_some()
    }

    /// Allocates `x`; false if it already was.
    pub(crate) fn insert(&mut self, x: u32) -> bool {
        if self.contains(x) {
            return false;
        }
        let left = x
            .checked_sub(1)
            .and_then(|p| self.run_of(p))
            .map(|(s, _)| s);
        let right = x.checked_add(1).and_then(|n| self.runs.get(&n).copied());
        if right.is_some() {
            self.runs.remove(&(x + 1));
        }
        let start = left.unwrap_or(x);
        let end = right.unwrap_or(x);
        self.runs.insert(start, end);
        true
    }

    /// Frees `x`; false if it was not allocated.
    pub(crate) fn remove(&mut self, x: u32) -> bool {
        let Some((s, e)) = self.run_of(x) else {
            return false;
        };
        self.runs.remove(&s);
        if s < x {
            self.runs.insert(s, x - 1);
        }
        if x < e {
            self.runs.insert(x + 1, e);
        }
        true
    }

    /// The lowest free offset in `lo..=hi`.
    pub(crate) fn first_free(&self, lo: u32, hi: u32) -> Option<u32> {
        if lo > hi {
            return None;
        }
        let x = match self.run_of(lo) {
            Some((_, e)) => e.checked_add(1)?,
            None => lo,
        };
        (x <= hi).then_some(x)
    }

    /// How many offsets are allocated.
    pub(crate) fn len(&self) -> u64 {
        self.runs.iter().map(|(&s, &e)| u64::from(e - s) + 1).sum()
    }

    /// How many offsets in `lo..=hi` are allocated.
    pub(crate) fn count_in(&self, lo: u32, hi: u32) -> u64 {
        if lo > hi {
            return 0;
        }
        // The run holding `lo` (it may start before it), then every run starting after.
        let first = self.run_of(lo);
        let rest = (lo < hi)
            .then(|| self.runs.range(lo + 1..=hi).map(|(&s, &e)| (s, e)))
            .into_iter()
            .flatten();
        first
            .into_iter()
            .chain(rest)
            .map(|(s, e)| u64::from(e.min(hi) - s.max(lo)) + 1)
            .sum()
    }

    /// Every allocated offset, ascending (tests and debugging).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs.iter().flat_map(|(&s, &e)| s..=e)
    }
}

impl From<AddrSet> for Vec<[u32; 2]> {
    fn from(a: AddrSet) -> Self {
        a.runs.into_iter().map(|(s, e)| [s, e]).collect()
    }
}

impl TryFrom<Vec<[u32; 2]>> for AddrSet {
    type Error = String;

    /// Rejects runs that are reversed, unsorted, overlapping or touching: a state file
    /// that breaks the invariant would make `first_free` hand out a held address.
    fn try_from(v: Vec<[u32; 2]>) -> Result<Self, Self::Error> {
        let mut runs = BTreeMap::new();
        let mut prev_end: Option<u32> = None;
        for [s, e] in v {
            if s > e {
                return Err(format!("address run [{s}, {e}] is reversed"));
            }
            if prev_end.is_some_and(|p| u64::from(s) <= u64::from(p) + 1) {
                return Err(format!(
                    "address run [{s}, {e}] is out of order or touches the previous one"
                ));
            }
            runs.insert(s, e);
            prev_end = Some(e);
        }
        Ok(Self { runs })
    }
}
