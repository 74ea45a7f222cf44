//! Per-network gossiped endpoint tables: NetworkDB's model (moby/libnetwork/networkdb),
//! without its known failures.
//!
//! For each overlay network, a table of endpoint entries: key = endpoint id, value =
//! opaque bytes (the daemon puts MAC, IP, VTEP, name and aliases in it). Each entry has
//! one writer, its owner, and a [`Version`] (owner's generation, per-owner per-network
//! sequence); a write replaces an entry only with a strictly greater version. Deletes
//! are tombstones that only the owner makes, reaped after a retention time.
//!
//! Which node is attached to which network is itself a table ([`Scope::Cluster`],
//! NetworkDB's node-network events), gossiped cluster-wide; the traffic of a network's
//! table goes only to the nodes attached to it.
//!
//! Dissemination is push gossip (memberlist's transmit-limited queue: every new write
//! is sent each gossip interval to `fanout` random peers, `retransmit_mult ×
//! ceil(log10(n+1))` times) and anti-entropy by digest: per owner, the highest
//! version and a hash of the (key, version) pairs, so a peer answers only with the
//! owners that differ (never a full-table bulk sync), and a lost older write behind a
//! newer one is still found (moby PR #53437).
//!
//! Failure input comes from the membership layer as calls: a failed node's entries
//! are suspended, not deleted, and restored when it comes back with the same
//! generation (moby PR #53142).
//!
//! Sans-IO: the caller passes `now`, hands datagrams to [`Tables::handle`], takes
//! them from [`Tables::poll_send`], and wakes at [`Tables::next_deadline`].

mod gossip;
mod queue;
mod store;
mod types;
mod wire;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use queue::{GossipQueue, Pending};
use store::{ScopeStore, Stored};
pub use types::{MAX_DATAGRAM, MAX_KEY_LEN, MAX_NET_LEN, MAX_VALUE_LEN, NodeKey, Version};
pub use wire::{
    DecodeError, FORMAT_VERSION, KIND_TABLE, Msg, OwnerDigest, Scope, WireEntry, decode,
};

/// Tunables. Defaults follow NetworkDB and memberlist.
#[derive(Debug, Clone)]
pub struct Config {
    /// Period of push gossip (memberlist GossipInterval, 200 ms in NetworkDB).
    pub gossip_interval: Duration,
    /// Peers per gossip round (memberlist GossipNodes: 3).
    pub fanout: usize,
    /// memberlist RetransmitMult: each update is sent `mult × ceil(log10(n+1))` times.
    pub retransmit_mult: u32,
    /// Bound of each scope's gossip queue; the oldest update is dropped beyond it.
    pub max_queue: usize,
    /// Period of anti-entropy with one random peer per scope (jittered ±50 %).
    pub sync_interval: Duration,
    /// Peers a joining node syncs from at once (at most).
    pub join_sync_peers: usize,
    /// Tombstones are reaped this long after they were stored, once gossiped.
    pub tombstone_retention: Duration,
    /// After an owner's generation rises, its older-generation entries are dropped
    /// after this delay (time for the owner to re-announce its entries).
    pub restart_grace: Duration,
    /// Bound of the outgoing datagram queue; beyond it datagrams are dropped.
    pub max_outbox: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gossip_interval: Duration::from_millis(200),
            fanout: 3,
            retransmit_mult: 4,
            max_queue: 4096,
            sync_interval: Duration::from_secs(15),
            join_sync_peers: 3,
            tombstone_retention: Duration::from_secs(60),
            restart_grace: Duration::from_secs(5),
            max_outbox: 4096,
        }
    }
}

/// A change of the visible entries, for the data plane. Emitted exactly once per
/// change of a visible (network, owner, key) → value mapping; own entries included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An entry became visible or its value changed.
    Upsert {
        /// Network.
        net: String,
        /// Endpoint id.
        key: String,
        /// Owner node.
        owner: NodeKey,
        /// New value.
        value: Vec<u8>,
    },
    /// An entry stopped being visible (deleted, owner down or gone, network left).
    Remove {
        /// Network.
        net: String,
        /// Endpoint id.
        key: String,
        /// Owner node.
        owner: NodeKey,
    },
}

/// A visible entry, as returned by [`Tables::entries`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryView {
    /// Owner node.
    pub owner: NodeKey,
    /// Endpoint id.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
}

/// Why a local call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// This node is not attached to the network.
    #[error("not attached to the network")]
    NotAttached,
    /// Key empty or longer than [`MAX_KEY_LEN`].
    #[error("bad key length")]
    BadKey,
    /// Value longer than [`MAX_VALUE_LEN`].
    #[error("value too long")]
    ValueTooLong,
    /// Network name empty or longer than [`MAX_NET_LEN`].
    #[error("bad network name")]
    BadNetwork,
    /// No live own entry with that key.
    #[error("no such entry")]
    NoSuchEntry,
}

/// Why a received datagram was dropped as a whole (each has a counter in
/// [`TableStats`]; entries refused one by one are counted as stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Could not be decoded.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// About a network this node has never heard of.
    #[error("unknown network")]
    UnknownNetwork,
    /// About a network this node is not attached to (any more).
    #[error("not attached")]
    NotAttached,
}

/// Counters. Plain numbers; the caller exports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Datagrams received.
    pub msgs_in: u64,
    /// Datagrams sent (taken by [`Tables::poll_send`]).
    pub msgs_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Entries and tombstones applied from peers.
    pub applied: u64,
    /// Entries refused because a version at least as new is held.
    pub stale: u64,
    /// Datagrams refused: oversized.
    pub rejected_oversized: u64,
    /// Datagrams refused: truncated, unknown kind or version, bad body, trailing bytes.
    pub rejected_malformed: u64,
    /// Datagrams refused: unknown network.
    pub rejected_unknown_network: u64,
    /// Datagrams refused: this node is not attached to the network.
    pub rejected_not_attached: u64,
    /// Gossip updates dropped because a queue was full.
    pub queue_drops: u64,
    /// Datagrams dropped because the outbox was full.
    pub outbox_drops: u64,
    /// Anti-entropy exchanges started by this node.
    pub syncs: u64,
    /// Bytes of anti-entropy traffic (digests, wants, answers), in and out.
    pub sync_bytes: u64,
    /// Tombstones reaped.
    pub reaped: u64,
}

/// What membership says of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Up,
    /// Failed: entries suspended.
    Down,
    /// Left gracefully: entries dropped; writes of this generation or older refused.
    Left,
}

#[derive(Debug, Clone, Copy)]
struct NodeInfo {
    generation: u32,
    live: Liveness,
    since: Duration,
    /// Entries of a lower generation than this are hidden.
    min_visible_gen: u32,
    /// Entries of a lower generation than `.0` are dropped at `.1`.
    supersede: Option<(u32, Duration)>,
}

/// State of one scope (the cluster attachment table or one network).
#[derive(Debug)]
struct ScopeState {
    store: ScopeStore,
    /// Push-gossip queue, bounded by [`Config::max_queue`].
    queue: GossipQueue,
    /// This node takes part (always true for the cluster scope). A left network is
    /// kept only until its own tombstones are gossiped and reaped.
    attached: bool,
    next_sync: Duration,
    /// Peers to sync from at once when peers are known (joining).
    join_syncs: usize,
}

impl ScopeState {
    fn new(attached: bool, next_sync: Duration, join_syncs: usize) -> Self {
        ScopeState {
            store: ScopeStore::default(),
            queue: GossipQueue::default(),
            attached,
            next_sync,
            join_syncs,
        }
    }
}

/// One node's tables: its own entries, its copy of the others', the gossip state.
///
/// Bounds: one record per (scope, owner, key) written by the owners; gossip queues by
/// [`Config::max_queue`]; the outbox by [`Config::max_outbox`]; the event queue by
/// the number of changes between two drains (the caller drains after each call).
#[derive(Debug)]
pub struct Tables {
    me: NodeKey,
    generation: u32,
    cfg: Config,
    rng: ChaCha8Rng,
    nodes: BTreeMap<NodeKey, NodeInfo>,
    scopes: BTreeMap<Scope, ScopeState>,
    /// Per scope, the nodes its traffic may go to (see [`Tables::scope_peers`]), kept
    /// up to date at each change of a node's liveness or attachments rather than
    /// recomputed per gossip round. Bounded by the nodes known times their networks.
    peers: BTreeMap<Scope, BTreeSet<NodeKey>>,
    /// Own last sequence per scope; kept after leaving so a rejoin writes newer.
    seqs: BTreeMap<Scope, u64>,
    events: VecDeque<Event>,
    outbox: VecDeque<(NodeKey, Vec<u8>)>,
    next_gossip: Duration,
    next_housekeeping: Duration,
    stats: TableStats,
}

/// Snapshot of what is visible, to diff into events.
type View = BTreeMap<(String, NodeKey, String), Vec<u8>>;

impl Tables {
    /// A node's tables. `me` and `generation` are this node's identity; `seed` seeds
    /// the RNG (peer choice, jitter).
    pub fn new(me: NodeKey, generation: u32, cfg: Config, seed: u64, now: Duration) -> Self {
        let mut t = Tables {
            me,
            generation,
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            scopes: BTreeMap::new(),
            peers: BTreeMap::new(),
            seqs: BTreeMap::new(),
            events: VecDeque::new(),
            outbox: VecDeque::new(),
            next_gossip: now + cfg.gossip_interval,
            next_housekeeping: now + Duration::from_secs(1),
            stats: TableStats::default(),
            cfg,
        };
        let first = now + t.jitter();
        let joins = t.cfg.join_sync_peers;
        t.scopes
            .insert(Scope::Cluster, ScopeState::new(true, first, joins));
        t
    }

    /// This node's key.
    pub fn me(&self) -> NodeKey {
        self.me
    }

    /// The counters.
    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    /// Attach this node to `net`: announce it cluster-wide and sync the network's
    /// table from up to [`Config::join_sync_peers`] peers.
    pub fn join_network(&mut self, net: &str, now: Duration) -> Result<(), TableError> {
        check_net(net)?;
        let scope = Scope::Net(net.to_owned());
        if self.scopes.get(&scope).is_some_and(|s| s.attached) {
            return Ok(());
        }
        let before = self.view_net(net);
        let next = now + self.jitter();
        let joins = self.cfg.join_sync_peers;
        let s = self
            .scopes
            .entry(scope)
            .or_insert_with(|| ScopeState::new(true, next, joins));
        s.attached = true;
        s.next_sync = next;
        s.join_syncs = joins;
        self.own_write(Scope::Cluster, net.to_owned(), Some(Vec::new()), now);
        self.emit_diff(before, self.view_net(net));
        Ok(())
    }

    /// Detach from `net`: own entries become tombstones gossiped to the network's
    /// members, the copy of the others' entries is dropped (Remove events).
    pub fn leave_network(&mut self, net: &str, now: Duration) -> Result<(), TableError> {
        let scope = Scope::Net(net.to_owned());
        if !self.scopes.get(&scope).is_some_and(|s| s.attached) {
            return Err(TableError::NotAttached);
        }
        let before = self.view_net(net);
        let own: Vec<String> = self.scopes[&scope]
            .store
            .owners
            .get(&self.me)
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| s.value.is_some())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for k in own {
            self.own_write(scope.clone(), k, None, now);
        }
        let me = self.me;
        if let Some(s) = self.scopes.get_mut(&scope) {
            s.attached = false;
            s.store.owners.retain(|&o, _| o == me);
            s.store.changed();
            s.queue.retain(|p| p.owner == me);
        }
        self.own_write(Scope::Cluster, net.to_owned(), None, now);
        self.emit_diff(before, self.view_net(net));
        Ok(())
    }

    /// Write (create or replace) an own entry.
    pub fn set(
        &mut self,
        net: &str,
        key: &str,
        value: &[u8],
        now: Duration,
    ) -> Result<(), TableError> {
        check_net(net)?;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(TableError::BadKey);
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(TableError::ValueTooLong);
        }
        let scope = Scope::Net(net.to_owned());
        if !self.scopes.get(&scope).is_some_and(|s| s.attached) {
            return Err(TableError::NotAttached);
        }
        let before = self.view_key(net, self.me, key);
        self.own_write(scope, key.to_owned(), Some(value.to_vec()), now);
        self.emit_diff(before, self.view_key(net, self.me, key));
        Ok(())
    }

    /// Delete an own entry: a tombstone with a new version, gossiped.
    pub fn delete(&mut self, net: &str, key: &str, now: Duration) -> Result<(), TableError> {
        let scope = Scope::Net(net.to_owned());
        let Some(s) = self.scopes.get(&scope).filter(|s| s.attached) else {
            return Err(TableError::NotAttached);
        };
        if s.store.get(self.me, key).is_none_or(|e| e.value.is_none()) {
            return Err(TableError::NoSuchEntry);
        }
        let before = self.view_key(net, self.me, key);
        self.own_write(scope, key.to_owned(), None, now);
        self.emit_diff(before, self.view_key(net, self.me, key));
        Ok(())
    }

    /// The visible entries of `net` (empty when not attached), sorted.
    pub fn entries(&self, net: &str) -> Vec<EntryView> {
        self.view_net(net)
            .into_iter()
            .map(|((_, owner, key), value)| EntryView { owner, key, value })
            .collect()
    }

    /// Nodes known attached to `net` and up, other than this one: where its table
    /// traffic goes.
    pub fn peers(&self, net: &str) -> Vec<NodeKey> {
        self.scope_peers(&Scope::Net(net.to_owned()))
    }

    /// Networks this node is attached to.
    pub fn networks(&self) -> Vec<String> {
        self.scopes
            .iter()
            .filter_map(|(s, st)| match s {
                Scope::Net(n) if st.attached => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// Next data-plane event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// This node's own identity was renewed with `generation` (its membership
    /// rejoined after peers had declared it down, as after a healed partition). Peers
    /// that held it down hide its entries of older generations once it is back, so
    /// every own live entry and network attachment is written again with the new
    /// generation (and gossiped). Does nothing if `generation` is not newer.
    pub fn renew(&mut self, generation: u32, now: Duration) {
        if generation <= self.generation {
            return;
        }
        self.generation = generation;
        let me = self.me;
        let own: Vec<(Scope, String, Vec<u8>)> = self
            .scopes
            .iter()
            .filter(|(_, s)| s.attached)
            .flat_map(|(scope, s)| {
                s.store
                    .owners
                    .get(&me)
                    .into_iter()
                    .flatten()
                    .filter_map(move |(k, e)| {
                        e.value.clone().map(|v| (scope.clone(), k.clone(), v))
                    })
            })
            .collect();
        for (scope, key, value) in own {
            self.own_write(scope, key, Some(value), now);
        }
    }

    /// Membership: `node` failed. Its entries are suspended: Remove events, kept
    /// in storage, no tombstones made, nothing gossiped.
    pub fn node_down(&mut self, node: NodeKey, now: Duration) {
        if node == self.me {
            return;
        }
        let before = self.view_owner(node);
        let info = self.info_mut(node, 0, now);
        if info.live == Liveness::Up {
            info.live = Liveness::Down;
            info.since = now;
        }
        self.refresh_peers(node);
        self.emit_diff(before, self.view_owner(node));
    }

    /// Membership: `node` is alive with `generation`. Same generation as before a
    /// failure: its entries are restored (Upsert events) without it resending them.
    /// A higher generation: the older generation's entries stay hidden if they were
    /// suspended, and are dropped after [`Config::restart_grace`] (the restarted
    /// owner re-announces what it still has).
    pub fn node_up(&mut self, node: NodeKey, generation: u32, now: Duration) {
        if node == self.me {
            return;
        }
        let before = self.view_owner(node);
        let grace = self.cfg.restart_grace;
        let fresh = !self.nodes.contains_key(&node);
        let info = self.info_mut(node, generation, now);
        if fresh {
            // Entries learned before membership reported the node may be of an older
            // generation: give them the same grace as after a restart.
            info.supersede = Some((generation, now + grace));
        } else if generation > info.generation {
            if info.live != Liveness::Up {
                info.min_visible_gen = generation;
            }
            info.generation = generation;
            info.live = Liveness::Up;
            info.since = now;
            info.supersede = Some((generation, now + grace));
        } else if generation == info.generation && info.live != Liveness::Up {
            info.live = Liveness::Up;
            info.since = now;
        }
        self.refresh_peers(node);
        self.emit_diff(before, self.view_owner(node));
    }

    /// Membership: `node` left gracefully. Its entries go at once (Remove events);
    /// writes of its current generation or older are refused from now on.
    pub fn node_left(&mut self, node: NodeKey, now: Duration) {
        if node == self.me {
            return;
        }
        let before = self.view_owner(node);
        // Refuse every generation it wrote with, even one membership never reported.
        let seen = self
            .scopes
            .values()
            .filter_map(|s| s.store.owners.get(&node))
            .flat_map(|m| m.values().map(|e| e.version.generation))
            .max()
            .unwrap_or(0);
        let info = self.info_mut(node, 0, now);
        info.generation = info.generation.max(seen);
        info.live = Liveness::Left;
        info.since = now;
        for s in self.scopes.values_mut() {
            s.store.owners.remove(&node);
            s.store.changed();
            s.queue.retain(|p| p.owner != node);
        }
        self.refresh_peers(node);
        self.emit_diff(before, self.view_owner(node));
    }

    /// Bring `node`'s place in the peer sets ([`Tables::scope_peers`]) up to date
    /// after a change of its liveness or of its attachments.
    fn refresh_peers(&mut self, node: NodeKey) {
        let up = node != self.me
            && self
                .nodes
                .get(&node)
                .is_some_and(|i| i.live == Liveness::Up);
        let mut want = Vec::new();
        if up {
            want.push(Scope::Cluster);
            if let Some(m) = self
                .scopes
                .get(&Scope::Cluster)
                .and_then(|s| s.store.owners.get(&node))
            {
                want.extend(
                    m.iter()
                        .filter(|(_, e)| e.value.is_some())
                        .map(|(net, _)| Scope::Net(net.clone())),
                );
            }
        }
        for (scope, set) in self.peers.iter_mut() {
            if !want.contains(scope) {
                set.remove(&node);
            }
        }
        for scope in want {
            self.peers.entry(scope).or_default().insert(node);
        }
        self.peers.retain(|_, set| !set.is_empty());
    }

    fn info_mut(&mut self, node: NodeKey, generation: u32, now: Duration) -> &mut NodeInfo {
        self.nodes.entry(node).or_insert(NodeInfo {
            generation,
            live: Liveness::Up,
            since: now,
            min_visible_gen: 0,
            supersede: None,
        })
    }

    /// A write by this node: next version, stored, queued for gossip.
    fn own_write(&mut self, scope: Scope, key: String, value: Option<Vec<u8>>, now: Duration) {
        let seq = self.seqs.entry(scope.clone()).or_insert(0);
        *seq += 1;
        let version = Version {
            generation: self.generation,
            seq: *seq,
        };
        let me = self.me;
        let Some(s) = self.scopes.get_mut(&scope) else {
            return;
        };
        s.store.put(
            me,
            key.clone(),
            Stored {
                version,
                value,
                since: now,
            },
        );
        let dropped = s.queue.push(
            Pending {
                owner: me,
                key,
                version,
                sent: 0,
            },
            self.cfg.max_queue,
        );
        self.stats.queue_drops += dropped;
    }

    /// Whether `owner`'s entry of version `v` on `net` is visible: membership reports
    /// the owner up (entries of an owner it never reported, e.g. one that left before
    /// this node joined and whose entries a peer still holds, are kept but not shown
    /// until it does), the entry is not of a generation hidden after a restart, and the
    /// owner is known attached to `net` (entries of nodes not on the network are
    /// kept but never shown, so a late relay cannot bring back those of a node that
    /// left it).
    fn owner_visible(&self, net: &str, owner: NodeKey, v: Version) -> bool {
        if owner == self.me {
            return true;
        }
        let attached = self.scopes[&Scope::Cluster]
            .store
            .get(owner, net)
            .is_some_and(|e| e.value.is_some());
        attached
            && match self.nodes.get(&owner) {
                None => false,
                Some(i) => i.live == Liveness::Up && v.generation >= i.min_visible_gen,
            }
    }

    fn view_net(&self, net: &str) -> View {
        let mut v = View::new();
        let Some(s) = self
            .scopes
            .get(&Scope::Net(net.to_owned()))
            .filter(|s| s.attached)
        else {
            return v;
        };
        for (&o, m) in &s.store.owners {
            for (k, e) in m {
                if let Some(val) = &e.value
                    && self.owner_visible(net, o, e.version)
                {
                    v.insert((net.to_owned(), o, k.clone()), val.clone());
                }
            }
        }
        v
    }

    fn view_key(&self, net: &str, owner: NodeKey, key: &str) -> View {
        let mut v = View::new();
        if let Some(s) = self
            .scopes
            .get(&Scope::Net(net.to_owned()))
            .filter(|s| s.attached)
            && let Some(e) = s.store.get(owner, key)
            && let Some(val) = &e.value
            && self.owner_visible(net, owner, e.version)
        {
            v.insert((net.to_owned(), owner, key.to_owned()), val.clone());
        }
        v
    }

    fn view_owner(&self, owner: NodeKey) -> View {
        let mut v = View::new();
        for (scope, s) in &self.scopes {
            let Scope::Net(net) = scope else { continue };
            if !s.attached {
                continue;
            }
            for (k, e) in s.store.owners.get(&owner).into_iter().flatten() {
                if let Some(val) = &e.value
                    && self.owner_visible(net, owner, e.version)
                {
                    v.insert((net.clone(), owner, k.clone()), val.clone());
                }
            }
        }
        v
    }

    /// Events for the difference of two views: exactly one per changed mapping.
    fn emit_diff(&mut self, before: View, after: View) {
        for (net, owner, key) in before.keys() {
            if !after.contains_key(&(net.clone(), *owner, key.clone())) {
                self.events.push_back(Event::Remove {
                    net: net.clone(),
                    key: key.clone(),
                    owner: *owner,
                });
            }
        }
        for ((net, owner, key), val) in after {
            if before.get(&(net.clone(), owner, key.clone())) != Some(&val) {
                self.events.push_back(Event::Upsert {
                    net,
                    key,
                    owner,
                    value: val,
                });
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        use rand::RngExt;
        let f: f64 = self.rng.random_range(0.5..1.5);
        self.cfg.sync_interval.mul_f64(f)
    }
}

fn check_net(net: &str) -> Result<(), TableError> {
    if net.is_empty() || net.len() > MAX_NET_LEN {
        return Err(TableError::BadNetwork);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
