//! The push-gossip queue of one scope (memberlist's TransmitLimitedQueue), indexed by
//! (owner, key) so that a gossip round touches only the updates it sends, never the
//! whole queue.

use std::collections::{BTreeMap, HashMap};

use super::types::{NodeKey, Version};

/// One gossip queue item: sent until its transmit count reaches the limit.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) owner: NodeKey,
    pub(crate) key: String,
    pub(crate) version: Version,
    pub(crate) sent: u32,
}

/// Updates waiting to be gossiped, oldest first, at most one per (owner, key): a newer
/// write of a key replaces the queued one (which is superseded). Bounded by the `max`
/// given to [`GossipQueue::push`] ([`super::Config::max_queue`]); the oldest goes.
#[derive(Debug, Default)]
pub(crate) struct GossipQueue {
    /// By insertion order.
    items: BTreeMap<u64, Pending>,
    /// (owner, key) → position in `items`.
    index: HashMap<NodeKey, HashMap<String, u64>>,
    next: u64,
}

impl GossipQueue {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether an update of (owner, key) is queued.
    pub(crate) fn contains(&self, owner: NodeKey, key: &str) -> bool {
        self.index.get(&owner).is_some_and(|m| m.contains_key(key))
    }

    /// Queue `p` (replacing a queued update of the same key), dropping the oldest
    /// beyond `max`; returns how many were dropped.
    pub(crate) fn push(&mut self, p: Pending, max: usize) -> u64 {
        let seq = self.next;
        self.next += 1;
        let old = self
            .index
            .entry(p.owner)
            .or_default()
            .insert(p.key.clone(), seq);
        if let Some(old) = old {
            self.items.remove(&old);
        }
        self.items.insert(seq, p);
        let mut dropped = 0;
        while self.items.len() > max {
            if let Some((seq, p)) = self.items.pop_first() {
                self.unindex(seq, &p);
            }
            dropped += 1;
        }
        dropped
    }

    fn unindex(&mut self, seq: u64, p: &Pending) {
        if let Some(m) = self.index.get_mut(&p.owner) {
            if m.get(&p.key) == Some(&seq) {
                m.remove(&p.key);
            }
            if m.is_empty() {
                self.index.remove(&p.owner);
            }
        }
    }

    /// Remove the item at `seq`.
    pub(crate) fn remove(&mut self, seq: u64) {
        if let Some(p) = self.items.remove(&seq) {
            self.unindex(seq, &p);
        }
    }

    /// Keep only the items `f` accepts (a full scan: for rare changes).
    pub(crate) fn retain(&mut self, mut f: impl FnMut(&Pending) -> bool) {
        self.items.retain(|_, p| f(p));
        self.index.clear();
        for (&seq, p) in &self.items {
            self.index
                .entry(p.owner)
                .or_default()
                .insert(p.key.clone(), seq);
        }
    }

    /// The items, oldest first, with their positions.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut Pending)> {
        self.items.iter_mut().map(|(&s, p)| (s, p))
    }
}
