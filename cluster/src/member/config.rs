//! Foca settings for the swarm.

use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::ops::Add;
use std::time::Duration;

use foca::{Config, PeriodicParams};

use super::wire::{HEADER_LEN, MAX_DATAGRAM};

/// How many probe periods a suspected member has to refute the suspicion,
/// per decade of cluster size: the suspicion timeout is
/// `SUSPICION_MULTIPLIER × max(1, log10 N) × probe_period`.
///
/// memberlist's LAN default (and foca's [`Config::new_lan`]) use 4, which is
/// 12 s at 1,000 nodes; with the ~1.5 s until some member probes the failed
/// node and the ~1 s to spread the verdict, detection would end near 15 s.
/// 3 gives 9 s at 1,000 nodes (6 s at 100, 3 s floor): detection everywhere
/// in ~11–12 s, while a live node still has 9 probe periods to hear of the
/// suspicion (gossip reaches 1,000 nodes in ~5 rounds of 200 ms) and refute it.
pub const SUSPICION_MULTIPLIER: f64 = 3.0;

/// How many times each update is piggybacked, per decade of cluster size:
/// `TRANSMIT_MULTIPLIER × log10(N + 1)` (memberlist's `RetransmitMult`).
///
/// foca's [`Config::new_lan`] uses 4 (5 transmissions at 20 nodes, 12 at
/// 1,000); in simulation a join at 20 nodes then sometimes missed one member,
/// which learned it only when probed by it or at the next periodic announce
/// (tens of seconds). 6 (7 at 20 nodes, 18 at 1,000) makes a miss rare; the
/// cost is paid only while there are updates.
pub const TRANSMIT_MULTIPLIER: f64 = 6.0;

/// Foca settings for a LAN cluster of about `cluster_size` nodes.
///
/// Starts from foca's [`Config::new_lan`] (memberlist's `DefaultLANConfig`):
/// - probe period 1 s, probe RTT 500 ms, 3 indirect probes (SWIM §3.1): every
///   member probes one member per second, so a failed node is first probed
///   within ~1.5 s on average at any cluster size;
/// - updates piggybacked per [`TRANSMIT_MULTIPLIER`] (SWIM §4.1's
///   infection-style dissemination);
/// - suspicion timeout from [`SUSPICION_MULTIPLIER`] (SWIM §4.2);
/// - periodic gossip every 200 ms to 3 members, only while there are updates
///   to spread: a verdict reaches everyone in a few hundred milliseconds
///   instead of waiting to ride on probes;
/// - periodic announce every 10 s to 1 member (foca's default is 30 s): each
///   node fetches a random member's view (a feed of up to a datagram of
///   active members), so anything missed is learned again. Missing members
///   is common right after a rolling start: the updates about members that
///   joined just before a node was known to others have used up their
///   transmissions. Cost: one small announce and one feed (up to 1,400 bytes)
///   per node per 10 s;
/// - announce to 2 *down* members every 10 s (foca's default is 65 s): this is
///   what heals a partition. After a split each side has declared the other
///   down; once packets flow again, the announce reaches a member that holds
///   the announcer down too, which answers "turn undead" (foca's
///   `notify_down_members`), the announcer renews its identity (a higher
///   [`super::NodeId::generation`]) and rejoins, and its view spreads the rest.
///   The cost is 0.2 datagrams per second per node, and only while some
///   member is down;
/// - down members are remembered 24 h (foca's default), bounded by the
///   number of nodes since foca keeps one entry per node address;
/// - packets at most [`MAX_DATAGRAM`] bytes with the frame header.
pub fn config(cluster_size: u32) -> Config {
    let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
    let mut config = Config::new_lan(size);
    let decades = f64::from(size.get()).log10().max(1.0);
    config.suspect_to_down_after = config.probe_period.mul_f64(SUSPICION_MULTIPLIER * decades);
    let transmissions = (TRANSMIT_MULTIPLIER * f64::from(size.get()).add(1.0).log10()).ceil();
    config.max_transmissions =
        NonZeroU8::new(transmissions.clamp(1.0, 255.0) as u8).unwrap_or(NonZeroU8::MIN);
    config.max_packet_size =
        NonZeroUsize::new(MAX_DATAGRAM - HEADER_LEN).unwrap_or(NonZeroUsize::MIN);
    config.periodic_announce = Some(PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::MIN,
    });
    config.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    config
}
