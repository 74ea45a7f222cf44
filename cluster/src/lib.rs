//! Control plane of tapnet's multi-host (swarm) overlay networks, sans-IO.
//!
//! Nothing here opens a socket, reads a clock or spawns a thread: the caller
//! passes `now` (a monotonic [`core::time::Duration`] since an arbitrary
//! origin), hands in each datagram as `(from, bytes)` and takes datagrams out
//! as `(to, Vec<u8>)`. All randomness comes from RNGs the values own, seeded by
//! the caller, so a run with a seed is reproducible.
//!
//! - [`member`]: membership and failure detection (SWIM, with the foca crate),
//!   wrapped in the sans-IO [`member::Membership`].
//! - [`table`]: the per-network gossiped endpoint tables (NetworkDB's model,
//!   without its failures).
//! - [`node`]: the two composed on one gossip socket, as one host runs them
//!   ([`node::Node`]).
//! - [`sim`]: a deterministic simulation in virtual time that runs many
//!   nodes over a simulated lossy, partitionable network.
//!
//! Every datagram begins with a 1-byte kind (which layer it is for:
//! [`member::KIND_MEMBERSHIP`], [`table::KIND_TABLE`]) and a 1-byte format version.

pub mod member;
pub mod node;
pub mod sim;
pub mod table;
