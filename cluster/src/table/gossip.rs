//! Dissemination: applying received messages, push gossip, anti-entropy, reaping.

use std::time::Duration;

use rand::RngExt;

use super::queue::Pending;
use super::store::Stored;
use super::wire::{self, Msg, OwnerDigest, Scope, WireEntry};
use super::{DecodeError, Liveness, MAX_DATAGRAM, NodeKey, Reject, Tables};

/// Owners per `Want` datagram (10 bytes each at most).
const WANT_CHUNK: usize = 120;
/// Datagrams per peer per gossip round, per scope: bounds a round's burst.
const ROUND_DATAGRAMS: usize = 4;

impl Tables {
    /// Take one received datagram from `from`. Entries are applied one by one (stale
    /// ones counted); a datagram refused as a whole returns why (also counted).
    pub fn handle(&mut self, from: NodeKey, bytes: &[u8], now: Duration) -> Result<(), Reject> {
        self.stats.msgs_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let msg = match wire::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                match e {
                    DecodeError::Oversized => self.stats.rejected_oversized += 1,
                    _ => self.stats.rejected_malformed += 1,
                }
                return Err(e.into());
            }
        };
        let scope = match &msg {
            Msg::Updates { scope, .. }
            | Msg::Digest { scope, .. }
            | Msg::Want { scope, .. }
            | Msg::Summary { scope, .. } => scope.clone(),
        };
        match self.scopes.get(&scope) {
            None => {
                self.stats.rejected_unknown_network += 1;
                return Err(Reject::UnknownNetwork);
            }
            Some(s) if !s.attached => {
                self.stats.rejected_not_attached += 1;
                return Err(Reject::NotAttached);
            }
            Some(_) => {}
        }
        match msg {
            Msg::Updates { sync, entries, .. } => {
                if sync {
                    self.stats.sync_bytes += bytes.len() as u64;
                }
                for e in entries {
                    self.apply(&scope, e, sync, now);
                }
            }
            Msg::Digest { lo, hi, owners, .. } => {
                self.stats.sync_bytes += bytes.len() as u64;
                self.answer_digest(from, &scope, lo, hi, &owners);
            }
            Msg::Summary { owners, hash, .. } => {
                self.stats.sync_bytes += bytes.len() as u64;
                let held = self.scopes.get_mut(&scope).map(|s| s.store.summary());
                if held != Some((owners, hash)) {
                    let dgrams = wire::pack_digest(&scope, &self.scopes[&scope].store.digest());
                    for d in dgrams {
                        self.stats.sync_bytes += d.len() as u64;
                        self.push_out(from, d);
                    }
                }
            }
            Msg::Want { owners, .. } => {
                self.stats.sync_bytes += bytes.len() as u64;
                let mut entries = Vec::new();
                for o in owners {
                    entries.extend(self.scopes[&scope].store.wire_entries(o));
                }
                self.send_sync_entries(from, &scope, entries);
            }
        }
        Ok(())
    }

    /// Next datagram to send, running the timers due at `now` first.
    pub fn poll_send(&mut self, now: Duration) -> Option<(NodeKey, Vec<u8>)> {
        if self.outbox.is_empty() {
            self.tick(now);
        }
        let out = self.outbox.pop_front()?;
        self.stats.msgs_out += 1;
        self.stats.bytes_out += out.1.len() as u64;
        Some(out)
    }

    /// When the caller should call [`Tables::poll_send`] next (at the latest);
    /// `Duration::ZERO` (already past) while datagrams wait to be taken, as after
    /// [`Tables::handle`] queued an answer.
    pub fn next_deadline(&self) -> Duration {
        if !self.outbox.is_empty() {
            return Duration::ZERO;
        }
        let mut d = self.next_housekeeping;
        if self.scopes.values().any(|s| !s.queue.is_empty()) {
            d = d.min(self.next_gossip);
        }
        for s in self.scopes.values().filter(|s| s.attached) {
            d = d.min(s.next_sync);
        }
        d
    }

    /// Apply one received entry under the version rules.
    fn apply(&mut self, scope: &Scope, e: WireEntry, sync: bool, now: Duration) {
        if e.owner == self.me {
            self.own_echo(scope, e, now);
            return;
        }
        if let Some(i) = self.nodes.get(&e.owner)
            && ((i.live == Liveness::Left && e.version.generation <= i.generation)
                || (i.supersede.is_none() && e.version.generation < i.min_visible_gen))
        {
            self.stats.stale += 1;
            return;
        }
        let Some(s) = self.scopes.get(scope) else {
            return;
        };
        if s.store
            .get(e.owner, &e.key)
            .is_some_and(|h| h.version >= e.version)
        {
            self.stats.stale += 1;
            return;
        }
        self.stats.applied += 1;
        // An owner seen with a higher generation than membership reported restarted.
        let grace = self.cfg.restart_grace;
        if let Some(i) = self.nodes.get_mut(&e.owner)
            && e.version.generation > i.generation
        {
            i.generation = e.version.generation;
            if i.live != Liveness::Up {
                i.min_visible_gen = e.version.generation;
            }
            i.supersede = Some((e.version.generation, now + grace));
        }
        let (owner, key, version) = (e.owner, e.key.clone(), e.version);
        match scope {
            Scope::Net(net) => {
                let before = self.view_key(net, owner, &key);
                self.store_entry(scope, e, now);
                self.emit_diff(before, self.view_key(net, owner, &key));
            }
            Scope::Cluster => {
                let detached = e.value.is_none();
                let before = self.view_owner(owner);
                self.store_entry(scope, e, now);
                self.refresh_peers(owner);
                self.emit_diff(before, self.view_owner(owner));
                if detached {
                    self.detach(owner, &key, now);
                }
            }
        }
        if !sync {
            let max = self.cfg.max_queue;
            if let Some(s) = self.scopes.get_mut(scope) {
                self.stats.queue_drops += s.queue.push(
                    Pending {
                        owner,
                        key,
                        version,
                        sent: 0,
                    },
                    max,
                );
            }
        }
    }

    fn store_entry(&mut self, scope: &Scope, e: WireEntry, now: Duration) {
        if let Some(s) = self.scopes.get_mut(scope) {
            s.store.put(
                e.owner,
                e.key,
                Stored {
                    version: e.version,
                    value: e.value,
                    since: now,
                },
            );
        }
    }

    /// `owner` left network `net`: its entries there become local tombstones at
    /// their own versions (NetworkDB drops a node's entries when it leaves a
    /// network); the same versions relayed later are stale, newer ones apply.
    fn detach(&mut self, owner: NodeKey, net: &str, now: Duration) {
        let before = self.view_net(net);
        let Some(s) = self.scopes.get_mut(&Scope::Net(net.to_owned())) else {
            return;
        };
        if let Some(m) = s.store.owners.get_mut(&owner) {
            for e in m.values_mut().filter(|e| e.value.is_some()) {
                e.value = None;
                e.since = now;
            }
            s.store.tombstoned(now);
            s.store.changed();
        }
        self.emit_diff(before, self.view_net(net));
    }

    /// A peer sent this node's own entry back. The owner is the authority on its
    /// entries: a live one it does not hold live at that version or newer (from
    /// before a restart, or deleted and reaped here while a peer was away) is deleted
    /// by a new tombstone, so it cannot come back. Anything else is stale.
    fn own_echo(&mut self, scope: &Scope, e: WireEntry, now: Duration) {
        let held = self
            .scopes
            .get(scope)
            .and_then(|s| s.store.get(self.me, &e.key));
        let live_newer = held.is_some_and(|h| h.value.is_some() && h.version >= e.version);
        let tomb_newer = held.is_some_and(|h| h.value.is_none() && h.version > e.version);
        if e.value.is_some() && !live_newer && !tomb_newer {
            self.stats.applied += 1;
            self.own_write(scope.clone(), e.key, None, now);
        } else {
            self.stats.stale += 1;
        }
    }

    /// Run what is due: gossip rounds, anti-entropy, reaping.
    pub(crate) fn tick(&mut self, now: Duration) {
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval;
            let scopes: Vec<Scope> = self
                .scopes
                .iter()
                .filter(|(_, s)| !s.queue.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            for scope in scopes {
                self.gossip_round(&scope);
            }
        }
        // Only the scopes with an anti-entropy exchange due or a join sync to make
        // (the others have nothing to do in `maybe_sync`): no clone per tick.
        let scopes: Vec<Scope> = self
            .scopes
            .iter()
            .filter(|(_, s)| s.attached && (now >= s.next_sync || s.join_syncs > 0))
            .map(|(k, _)| k.clone())
            .collect();
        for scope in scopes {
            self.maybe_sync(&scope, now);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + Duration::from_secs(1);
            self.housekeeping(now);
        }
    }

    /// Nodes a scope's traffic may go to: up, not this node, and for a network,
    /// attached to it (NetworkDB's scoping). Sorted; kept up to date in `peers`.
    pub(crate) fn scope_peers(&self, scope: &Scope) -> Vec<NodeKey> {
        let v: Vec<NodeKey> = self
            .peers
            .get(scope)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        #[cfg(test)]
        assert_eq!(v, self.scope_peers_scan(scope), "peer set of {scope:?}");
        v
    }

    /// [`Tables::scope_peers`] computed from scratch, to check the kept sets.
    #[cfg(test)]
    fn scope_peers_scan(&self, scope: &Scope) -> Vec<NodeKey> {
        let up = |n: &NodeKey| {
            *n != self.me && self.nodes.get(n).is_some_and(|i| i.live == Liveness::Up)
        };
        match scope {
            Scope::Cluster => self.nodes.keys().copied().filter(up).collect(),
            Scope::Net(net) => {
                let cluster = &self.scopes[&Scope::Cluster].store;
                cluster
                    .owners
                    .iter()
                    .filter(|(o, m)| up(o) && m.get(net).is_some_and(|e| e.value.is_some()))
                    .map(|(o, _)| *o)
                    .collect()
            }
        }
    }

    fn choose(&mut self, mut peers: Vec<NodeKey>, k: usize) -> Vec<NodeKey> {
        let k = k.min(peers.len());
        for i in 0..k {
            let j = self.rng.random_range(i..peers.len());
            peers.swap(i, j);
        }
        peers.truncate(k);
        peers
    }

    /// One push-gossip round of a scope (memberlist's TransmitLimitedQueue): the
    /// queued updates go to `fanout` random peers; each is sent at most
    /// `retransmit_mult × ceil(log10(n+1))` times in all.
    fn gossip_round(&mut self, scope: &Scope) {
        let peers = self.scope_peers(scope);
        if peers.is_empty() {
            return;
        }
        let n = peers.len() + 1;
        let limit = self.cfg.retransmit_mult * (n as f64 + 1.0).log10().ceil().max(1.0) as u32;
        let targets = self.choose(peers, self.cfg.fanout);
        let Some(s) = self.scopes.get_mut(scope) else {
            return;
        };
        let budget = ROUND_DATAGRAMS * (MAX_DATAGRAM - 64);
        let mut out = Vec::new();
        // Items to remove after the round: superseded (a newer write of the key is
        // held; marked with `sent = u32::MAX`) or sent `limit` times. Only the front
        // of the queue that fits the budget is visited, never the whole queue.
        let mut done = Vec::new();
        // One message per peer, as memberlist's GetBroadcasts: each inclusion counts
        // one transmission, so an update is sent exactly `limit` times.
        for t in targets {
            let mut entries = Vec::new();
            let mut bytes = 0;
            for (seq, p) in s.queue.iter_mut().filter(|(_, p)| p.sent < limit) {
                let Some(e) = s
                    .store
                    .get(p.owner, &p.key)
                    .filter(|e| e.version == p.version)
                else {
                    p.sent = u32::MAX;
                    done.push(seq);
                    continue;
                };
                let w = WireEntry {
                    owner: p.owner,
                    key: p.key.clone(),
                    version: e.version,
                    value: e.value.clone(),
                };
                bytes += wire::entry_len(&w);
                if bytes > budget {
                    break;
                }
                entries.push(w);
                p.sent += 1;
                if p.sent >= limit {
                    done.push(seq);
                }
            }
            out.extend(
                wire::pack_updates(scope, false, entries)
                    .into_iter()
                    .map(|d| (t, d)),
            );
        }
        for seq in done {
            s.queue.remove(seq);
        }
        for (t, d) in out {
            self.push_out(t, d);
        }
    }

    fn push_out(&mut self, to: NodeKey, d: Vec<u8>) {
        if self.outbox.len() >= self.cfg.max_outbox {
            self.stats.outbox_drops += 1;
            return;
        }
        self.outbox.push_back((to, d));
    }

    /// Anti-entropy: a digest to one random peer when the scope's timer is due, or
    /// to up to `join_sync_peers` at once after joining.
    fn maybe_sync(&mut self, scope: &Scope, now: Duration) {
        let (due, joins) = match self.scopes.get(scope) {
            Some(s) => (now >= s.next_sync, s.join_syncs),
            None => return,
        };
        if !due && joins == 0 {
            return;
        }
        let peers = self.scope_peers(scope);
        let k = if joins > 0 && !peers.is_empty() {
            joins
        } else {
            usize::from(due)
        };
        if due {
            let next = now + self.jitter();
            if let Some(s) = self.scopes.get_mut(scope) {
                s.next_sync = next;
            }
        }
        if peers.is_empty() {
            return;
        }
        if let Some(s) = self.scopes.get_mut(scope) {
            s.join_syncs = 0;
        }
        let targets = self.choose(peers, k);
        // Joining: the full digest at once (the joiner lacks most owners). Then a
        // summary, answered with a full digest only by a peer that differs.
        let dgrams = if joins > 0 {
            wire::pack_digest(scope, &self.scopes[scope].store.digest())
        } else {
            let Some((owners, hash)) = self.scopes.get_mut(scope).map(|s| s.store.summary()) else {
                return;
            };
            vec![
                Msg::Summary {
                    scope: scope.clone(),
                    owners,
                    hash,
                }
                .encode(),
            ]
        };
        for t in targets {
            self.stats.syncs += 1;
            for d in &dgrams {
                self.stats.sync_bytes += d.len() as u64;
                self.push_out(t, d.clone());
            }
        }
    }

    /// Answer a digest: our entries of each owner whose digest differs or that the
    /// peer lacks, and a `Want` for the owners we lack or that differ.
    fn answer_digest(
        &mut self,
        from: NodeKey,
        scope: &Scope,
        lo: NodeKey,
        hi: NodeKey,
        theirs: &[OwnerDigest],
    ) {
        let store = &self.scopes[scope].store;
        let ours: Vec<OwnerDigest> = store
            .owners
            .range(lo..=hi)
            .filter_map(|(&o, _)| store.owner_digest(o))
            .collect();
        let mut send = Vec::new();
        let mut want = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < ours.len() || j < theirs.len() {
            match (ours.get(i), theirs.get(j)) {
                (Some(a), Some(b)) if a.owner == b.owner => {
                    if a.hash != b.hash {
                        send.push(a.owner);
                        want.push(a.owner);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(a), b) if b.is_none_or(|b| a.owner < b.owner) => {
                    if a.hash != 0 {
                        send.push(a.owner);
                    }
                    i += 1;
                }
                (_, Some(b)) => {
                    if b.hash != 0 {
                        want.push(b.owner);
                    }
                    j += 1;
                }
                _ => break,
            }
        }
        let mut entries = Vec::new();
        for o in send {
            entries.extend(store.wire_entries(o));
        }
        self.send_sync_entries(from, scope, entries);
        for c in want.chunks(WANT_CHUNK) {
            let d = Msg::Want {
                scope: scope.clone(),
                owners: c.to_vec(),
            }
            .encode();
            self.stats.sync_bytes += d.len() as u64;
            self.push_out(from, d);
        }
    }

    fn send_sync_entries(&mut self, to: NodeKey, scope: &Scope, entries: Vec<WireEntry>) {
        if entries.is_empty() {
            return;
        }
        for d in wire::pack_updates(scope, true, entries) {
            self.stats.sync_bytes += d.len() as u64;
            self.push_out(to, d);
        }
    }

    /// Reap tombstones older than the retention and no longer queued, forget left
    /// networks once empty and left nodes after the retention, and drop the older
    /// generation's entries of restarted owners after the grace.
    fn housekeeping(&mut self, now: Duration) {
        let keep = self.cfg.tombstone_retention;
        let mut reaped = 0;
        for s in self.scopes.values_mut() {
            // Only a store holding a tombstone old enough is scanned.
            if s.store.oldest_tomb.is_none_or(|t| t + keep > now) {
                continue;
            }
            let queued = &s.queue;
            let mut oldest: Option<Duration> = None;
            for (o, m) in s.store.owners.iter_mut() {
                m.retain(|k, e| {
                    let reap =
                        e.value.is_none() && e.since + keep <= now && !queued.contains(*o, k);
                    reaped += u64::from(reap);
                    if e.value.is_none() && !reap {
                        oldest = Some(oldest.map_or(e.since, |t| t.min(e.since)));
                    }
                    !reap
                });
            }
            s.store.oldest_tomb = oldest;
            s.store.owners.retain(|_, m| !m.is_empty());
        }
        self.stats.reaped += reaped;
        self.scopes
            .retain(|_, s| s.attached || !s.queue.is_empty() || !s.store.owners.is_empty());
        self.nodes
            .retain(|_, i| !(i.live == Liveness::Left && i.since + keep <= now));
        let due: Vec<(NodeKey, u32)> = self
            .nodes
            .iter()
            .filter_map(|(&n, i)| i.supersede.filter(|s| s.1 <= now).map(|s| (n, s.0)))
            .collect();
        for (node, generation) in due {
            let before = self.view_owner(node);
            for s in self.scopes.values_mut() {
                if let Some(m) = s.store.owners.get_mut(&node) {
                    m.retain(|_, e| e.version.generation >= generation);
                    s.store.changed();
                }
                s.store.owners.retain(|_, m| !m.is_empty());
            }
            if let Some(i) = self.nodes.get_mut(&node) {
                i.supersede = None;
                // From now on the older generations are refused outright.
                i.min_visible_gen = i.min_visible_gen.max(generation);
            }
            // Attachments of the old generation went too: entries on those networks
            // stay until the owner's detachment or tombstones arrive.
            self.refresh_peers(node);
            self.emit_diff(before, self.view_owner(node));
        }
    }
}
