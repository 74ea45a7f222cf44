//! Sans-IO control plane of tapnet's multi-host (swarm) overlay networks.
//!
//! Nothing here does I/O: the caller passes `now` (a monotonic [`core::time::Duration`]
//! since an arbitrary origin), hands datagrams in and takes datagrams out, and maps
//! node keys to underlay addresses. All randomness comes from RNGs the values own,
//! seeded by the caller, so a simulation with a seed is deterministic.
//!
//! - [`table`]: the per-network gossiped endpoint tables (NetworkDB's model).

pub mod table;
