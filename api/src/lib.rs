//! tapnet's API contract: the JSON bodies of its HTTP API, with the Docker Engine API's
//! field names for networks, swarms and nodes (moby `api/types/network` and
//! `api/types/swarm`, Engine API v1.47) and tapnet's own for sandboxes, rootless
//! interfaces, CNI attachments and stats.
//!
//! Types only, on `serde`: the server (`tapnet daemon`), the `tapnet` CLI and every other
//! client build on this crate without the engine or the server.
//!
//! Requests accept what Go clients send: unknown fields are ignored, and `null` stands for
//! an empty map, list or string (Go marshals a nil map as `null`). Responses always carry
//! every field Docker's carry, so Docker's own clients decode them.

mod cni;
mod network;
mod rootless;
mod sandbox;
mod stats;
mod swarm;
mod system;

use serde::{Deserialize, Deserializer};

pub use cni::*;
pub use network::*;
pub use rootless::*;
pub use sandbox::*;
pub use stats::*;
pub use swarm::*;
pub use system::*;

/// The Engine API version the server speaks (and reports in `API-Version`).
pub const API_VERSION: &str = "1.47";
/// The oldest Engine API version the server accepts in a `/v{version}/` prefix.
pub const MIN_API_VERSION: &str = "1.24";
/// Networks that exist from the daemon's first start and can never be removed.
pub const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// `null` in a request decodes as the type's default (a Go client's nil map or slice).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn default_driver() -> String {
    "bridge".to_string()
}

/// An absent, `null` or empty `Driver` means `bridge`, as in Docker.
fn driver_or_bridge<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).unwrap_or_else(default_driver))
}

/// `GwPriority` 0 is left out of requests, as Go's `omitempty` leaves it.
pub(crate) fn is_zero(v: &i64) -> bool {
    *v == 0
}
