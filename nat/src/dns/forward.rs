//! Queries forwarded to the host's resolvers and waiting for their answers.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::asker::Asker;

/// Ids in flight at most whatever the configuration says, so that a free random id is
/// always found quickly.
pub(crate) const MAX_IDS: usize = 32_768;

/// The ids of forwarded queries: splitmix64 (Steele, Lea, Flood 2014).
///
/// Not a cryptographic generator: this crate does no I/O and so cannot ask the kernel
/// for randomness; the caller seeds it from the host's `getrandom`. What an off-path
/// attacker must guess to spoof an answer is the id together with the forwarding
/// socket's random port (chosen by the kernel), and the answer must come from the
/// resolver's address with the same question; the resolvers are the host's own.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One forwarded query.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    /// Who asked.
    pub(crate) asker: Asker,
    /// The asker's id of the query.
    pub(crate) asker_id: u16,
    /// The query as forwarded (with its forwarding id).
    pub(crate) msg: Vec<u8>,
    /// Where its question ends.
    pub(crate) q_end: usize,
    /// The largest answer the asker takes.
    pub(crate) limit: usize,
    /// The resolvers to try, in order.
    pub(crate) upstreams: Arc<[SocketAddr]>,
    /// The one asked now (index into `upstreams`).
    pub(crate) current: usize,
    /// When the current one has had its time.
    pub(crate) deadline: Duration,
    /// The time each resolver gets.
    pub(crate) share: Duration,
}

impl Pending {
    /// The resolver asked now.
    pub(crate) fn resolver(&self) -> SocketAddr {
        self.upstreams[self.current]
    }

    /// The query's question bytes.
    pub(crate) fn question(&self) -> &[u8] {
        &self.msg[super::message::HEADER_LEN..self.q_end]
    }
}

/// The forwarded queries of one network, by forwarding id, with their deadlines.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    /// Queries by forwarding id.
    by_id: HashMap<u16, Pending>,
    /// (deadline, id) of every query.
    timers: BTreeSet<(Duration, u16)>,
}

impl InFlight {
    /// Queries in flight.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// A random id no query in flight has. There must be fewer than [`MAX_IDS`] in
    /// flight.
    pub(crate) fn free_id(&self, rng: &mut Rng) -> u16 {
        loop {
            let r = rng.next_u64();
            for shift in [0, 16, 32, 48] {
                let id = (r >> shift) as u16;
                if !self.by_id.contains_key(&id) {
                    return id;
                }
            }
        }
    }

    /// Adds `p` under `id` (free).
    pub(crate) fn insert(&mut self, id: u16, p: Pending) {
        self.timers.insert((p.deadline, id));
        self.by_id.insert(id, p);
    }

    /// The query with forwarding id `id`.
    pub(crate) fn get(&self, id: u16) -> Option<&Pending> {
        self.by_id.get(&id)
    }

    /// Removes the query with id `id`.
    pub(crate) fn remove(&mut self, id: u16) -> Option<Pending> {
        let p = self.by_id.remove(&id)?;
        self.timers.remove(&(p.deadline, id));
        Some(p)
    }

    /// Moves query `id` to its next resolver at `now`: that resolver and the query, or
    /// None if it had the last.
    pub(crate) fn next_resolver(
        &mut self,
        now: Duration,
        id: u16,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let p = self.by_id.get_mut(&id)?;
        if p.current + 1 >= p.upstreams.len() {
            return None;
        }
        self.timers.remove(&(p.deadline, id));
        p.current += 1;
        p.deadline = now + p.share;
        self.timers.insert((p.deadline, id));
        Some((p.resolver(), p.msg.clone()))
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.timers.first().map(|t| t.0)
    }

    /// The id of a query whose deadline is at or before `now`.
    pub(crate) fn due(&self, now: Duration) -> Option<u16> {
        self.timers.first().filter(|t| t.0 <= now).map(|t| t.1)
    }

    /// Removes every query of TCP connection `conn`.
    pub(crate) fn remove_conn(&mut self, conn: u64) {
        let timers = &mut self.timers;
        self.by_id.retain(|id, p| {
            let gone = matches!(p.asker, Asker::Tcp { conn: c, .. } if c == conn);
            if gone {
                timers.remove(&(p.deadline, *id));
            }
            !gone
        });
    }
}
