//! The gossip port: a UDP socket driving this node's [`tapnet_cluster::node::Node`]
//! (SWIM membership with foca, and the per-network endpoint tables) on a tokio task.
//!
//! Every datagram carries a tag: the first [`TAG_LEN`] bytes of HMAC-SHA256 over the
//! datagram, keyed with the swarm's secret (which a node gets only by joining with a
//! valid token). A datagram without a valid tag is dropped and counted before any
//! decoder sees it, so a host that does not hold the secret can neither join the
//! membership nor write to a table. The tag authenticates; it does not hide: gossip
//! is readable on the wire until the encryption issue brings the control plane's
//! encryption. A replayed datagram is authentic: the layers above make it harmless
//! (foca's incarnations, the tables' versions, which only move forward).
//!
//! The data plane is fed level-triggered, not from an event stream: after each batch
//! of work the task publishes the visible entries of every network whose entries
//! changed ([`Shared::entries`]) and wakes the applier, which compares them with what
//! it programmed and adds and removes the difference. A burst of events is then never
//! lost to a full queue: the applier only ever needs the latest picture.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tapnet_cluster::member::{MemberEvent, NodeId, Seed, config as member_config};
use tapnet_cluster::node::{Node, NodeEvent};
use tapnet_cluster::table::{self, EntryView};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Bytes of tag after each datagram.
pub const TAG_LEN: usize = 16;
/// Commands waiting for the task at most; more are refused (counted).
const MAX_COMMANDS: usize = 4096;
/// Receive buffer: a datagram is at most 1,400 bytes plus the tag.
const RECV_BUF: usize = 2048;
/// How often seeds are greeted again while this node knows no other member.
const RESEED_EVERY: Duration = Duration::from_secs(2);

type Tag = Hmac<Sha256>;

/// What the task is asked to do.
#[derive(Debug)]
pub enum Cmd {
    /// Attach to a network's table.
    JoinNetwork(String),
    /// Detach from it.
    LeaveNetwork(String),
    /// Write an own entry.
    Set {
        /// Network id.
        net: String,
        /// Endpoint id.
        key: String,
        /// Encoded [`super::rpc::EndpointValue`].
        value: Vec<u8>,
    },
    /// Delete an own entry.
    Delete {
        /// Network id.
        net: String,
        /// Endpoint id.
        key: String,
    },
    /// Greet these nodes (join through them).
    Seeds(Vec<SocketAddrV4>),
    /// Leave the cluster, then stop; answered once the goodbyes are sent.
    Leave(oneshot::Sender<()>),
}

/// Counters of the gossip port itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Dropped: no valid tag (no secret, altered, truncated).
    pub bad_tag: u64,
    /// Dropped by the layers' decoders or rules (see the cluster crate's counters).
    pub rejected: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Commands refused because the queue was full.
    pub commands_dropped: u64,
}

/// What the task shares with the rest of the service.
#[derive(Debug, Default)]
pub struct Shared {
    /// Live members (this node included) by key, with their gossip identity.
    pub members: BTreeMap<u64, NodeId>,
    /// Visible entries of other owners, per network this node is attached to.
    pub entries: BTreeMap<String, Vec<EntryView>>,
    /// Networks whose entries changed since the applier last looked.
    pub dirty: BTreeSet<String>,
    /// Counters.
    pub stats: GossipStats,
}

/// A handle on the running task.
pub struct Gossip {
    cmds: mpsc::Sender<Cmd>,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gossip {
    /// Start gossiping as `id` on `sock` (bound at `id.addr`), authenticating with
    /// `secret`; `wake` is called (from the task) when entries changed.
    pub fn start(
        id: NodeId,
        sock: UdpSocket,
        secret: &str,
        seeds: Vec<SocketAddrV4>,
        wake: impl Fn() + Send + 'static,
    ) -> Gossip {
        let start = Instant::now();
        let node = Node::new(
            id,
            member_config(16),
            table::Config::default(),
            rand::random(),
            Duration::ZERO,
        );
        let (tx, rx) = mpsc::channel(MAX_COMMANDS);
        let shared = Arc::new(Mutex::new(Shared::default()));
        lock(&shared).members.insert(id.key, id);
        let task = Task {
            node,
            sock,
            key: secret.as_bytes().to_vec(),
            start,
            shared: shared.clone(),
            seeds,
            wake: Box::new(wake),
            left: BTreeSet::new(),
        };
        let task = tokio::spawn(task.run(rx));
        Gossip {
            cmds: tx,
            shared,
            task,
        }
    }

    /// Queue a command; a full queue drops it (counted).
    pub fn send(&self, cmd: Cmd) {
        if self.cmds.try_send(cmd).is_err() {
            lock(&self.shared).stats.commands_dropped += 1;
        }
    }

    /// What the task shares.
    pub fn shared(&self) -> &Arc<Mutex<Shared>> {
        &self.shared
    }

    /// Leave the cluster (bounded wait for the goodbyes), then stop the task.
    pub async fn leave(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.task.abort();
    }

    /// Stop the task without a goodbye (the daemon is exiting; peers see it fail and
    /// suspend its entries until it is back).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Lock, whatever a panicking holder left.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Task {
    node: Node,
    sock: UdpSocket,
    key: Vec<u8>,
    start: Instant,
    shared: Arc<Mutex<Shared>>,
    seeds: Vec<SocketAddrV4>,
    wake: Box<dyn Fn() + Send>,
    /// Networks left since the last flush.
    left: BTreeSet<String>,
}

impl Task {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = <Tag as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    fn verify<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let split = datagram.len().checked_sub(TAG_LEN)?;
        let (body, tag) = datagram.split_at(split);
        let mut mac = <Tag as Mac>::new_from_slice(&self.key).ok()?;
        mac.update(body);
        mac.verify_truncated_left(tag).ok().map(|()| body)
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let now = self.now();
        for s in self.seeds.clone() {
            self.node.join(Seed::Addr(s), now);
        }
        let mut buf = vec![0u8; RECV_BUF];
        let mut reseed = tokio::time::Instant::now() + RESEED_EVERY;
        loop {
            self.flush().await;
            let deadline = self
                .node
                .next_deadline()
                .map(|d| tokio::time::Instant::from_std(self.start + d))
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1))
                .min(reseed);
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((n, SocketAddr::V4(from))) = r else { continue };
                    self.receive(from, n, &buf);
                }
                c = cmds.recv() => {
                    let Some(cmd) = c else { return };
                    if let Cmd::Leave(done) = cmd {
                        let now = self.now();
                        self.node.leave(now);
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    self.command(cmd);
                }
                () = tokio::time::sleep_until(deadline) => {
                    let now = self.now();
                    self.node.tick(now);
                    if tokio::time::Instant::now() >= reseed {
                        reseed = tokio::time::Instant::now() + RESEED_EVERY;
                        if self.node.membership().num_members() == 0 {
                            for s in self.seeds.clone() {
                                self.node.join(Seed::Addr(s), now);
                            }
                        }
                    }
                }
            }
        }
    }

    fn receive(&mut self, from: SocketAddrV4, n: usize, buf: &[u8]) {
        let Some(body) = self.verify(&buf[..n]) else {
            lock(&self.shared).stats.bad_tag += 1;
            return;
        };
        lock(&self.shared).stats.received += 1;
        let now = self.now();
        if self.node.handle(from, body, now).is_err() {
            lock(&self.shared).stats.rejected += 1;
        }
    }

    fn command(&mut self, cmd: Cmd) {
        let now = self.now();
        // The tables refuse only what the service never sends (bad lengths, a network
        // not joined): counted as rejected.
        let r = match cmd {
            Cmd::JoinNetwork(net) => self.node.join_network(&net, now).map(|_| ()),
            Cmd::LeaveNetwork(net) => {
                let r = self.node.leave_network(&net, now);
                // Its entries leave the view with no table event: published at the
                // next flush all the same.
                self.left.insert(net);
                r
            }
            Cmd::Set { net, key, value } => self.node.set(&net, &key, &value, now),
            Cmd::Delete { net, key } => self.node.delete(&net, &key, now),
            Cmd::Seeds(seeds) => {
                for s in &seeds {
                    self.node.join(Seed::Addr(*s), now);
                }
                self.seeds = seeds;
                Ok(())
            }
            Cmd::Leave(_) => Ok(()),
        };
        if r.is_err() {
            lock(&self.shared).stats.rejected += 1;
        }
    }

    /// Send what the node has to send, and publish what changed.
    async fn flush(&mut self) {
        let now = self.now();
        while let Some((to, mut bytes)) = self.node.poll_send(now) {
            let tag = self.tag(&bytes);
            bytes.extend_from_slice(&tag);
            let ok = self.sock.send_to(&bytes, to).await.is_ok();
            let mut sh = lock(&self.shared);
            if ok {
                sh.stats.sent += 1;
            } else {
                sh.stats.send_errors += 1;
            }
        }
        let mut members_changed = false;
        let mut dirty = std::mem::take(&mut self.left);
        while let Some(ev) = self.node.poll_event() {
            match ev {
                NodeEvent::Member(m) => {
                    members_changed = true;
                    tracing::info!(event = ?m, "swarm membership");
                    if let MemberEvent::Down(id) = m {
                        tracing::warn!(node = %super::config::node_id(id.key), "swarm node down");
                    }
                }
                NodeEvent::Table(table::Event::Upsert { net, .. })
                | NodeEvent::Table(table::Event::Remove { net, .. }) => {
                    dirty.insert(net);
                }
            }
        }
        let mut sh = lock(&self.shared);
        if members_changed {
            let me = self.node.id();
            sh.members = self
                .node
                .membership()
                .members()
                .map(|m| (m.key, *m))
                .collect();
            sh.members.insert(me.key, me);
        }
        if dirty.is_empty() {
            return;
        }
        let me = self.node.id().key;
        for net in dirty {
            let seen: Vec<EntryView> = self
                .node
                .tables()
                .entries(&net)
                .into_iter()
                .filter(|e| e.owner != me)
                .collect();
            sh.entries.insert(net.clone(), seen);
            sh.dirty.insert(net);
        }
        drop(sh);
        (self.wake)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn node(secret: &str, key: u64, seeds: Vec<SocketAddrV4>) -> (Gossip, SocketAddrV4) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(addr) = sock.local_addr().unwrap() else {
            unreachable!()
        };
        let id = NodeId::new(addr, key);
        (Gossip::start(id, sock, secret, seeds, || {}), addr)
    }

    async fn members(g: &Gossip, want: usize) -> bool {
        for _ in 0..100 {
            if lock(g.shared()).members.len() >= want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_holders_of_the_secret_join_and_others_are_counted() {
        let (a, a_addr) = node("the-secret", 1, vec![]).await;
        let (b, _) = node("the-secret", 2, vec![a_addr]).await;
        assert!(members(&a, 2).await, "b joins a with the same secret");
        assert!(members(&b, 2).await);
        // A node with another secret greets a: dropped before any decoder, counted.
        let (c, _) = node("another-secret", 3, vec![a_addr]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(lock(a.shared()).members.len(), 2, "c is not let in");
        assert!(
            lock(a.shared()).stats.bad_tag > 0,
            "c's datagrams are counted"
        );
        // Truncated and garbage datagrams: counted too, the task goes on.
        let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = lock(a.shared()).stats.bad_tag;
        for d in [&b""[..], b"x", &[0u8; 15], &[0xff; 1500]] {
            raw.send_to(d, a_addr).unwrap();
        }
        for _ in 0..100 {
            if lock(a.shared()).stats.bad_tag >= before + 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lock(a.shared()).stats.bad_tag, before + 4);
        assert_eq!(lock(a.shared()).members.len(), 2);
        c.stop();
        b.stop();
        a.stop();
    }
}
