//! The daemon itself: `GET /version`, `GET /info` and the body of every error response.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nullable;
/// The body of every error response, as Docker sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error text.
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
}

/// `GET /version`, in the shape of Docker's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    /// The product.
    #[serde(rename = "Platform", default)]
    pub platform: PlatformVersion,
    /// Versions of the parts; the CLI prints each.
    #[serde(rename = "Components", default, deserialize_with = "nullable")]
    pub components: Vec<ComponentVersion>,
    /// tapnet's version.
    #[serde(rename = "Version", default, deserialize_with = "nullable")]
    pub version: String,
    /// The Engine API version spoken.
    #[serde(rename = "ApiVersion", default, deserialize_with = "nullable")]
    pub api_version: String,
    /// The oldest Engine API version accepted.
    #[serde(rename = "MinAPIVersion", default, deserialize_with = "nullable")]
    pub min_api_version: String,
    /// The commit built, or `unknown`.
    #[serde(rename = "GitCommit", default, deserialize_with = "nullable")]
    pub git_commit: String,
    /// `n/a`: tapnet is not written in Go.
    #[serde(rename = "GoVersion", default, deserialize_with = "nullable")]
    pub go_version: String,
    /// `linux`.
    #[serde(rename = "Os", default, deserialize_with = "nullable")]
    pub os: String,
    /// Go's name for the architecture (`amd64`, `arm64`, …).
    #[serde(rename = "Arch", default, deserialize_with = "nullable")]
    pub arch: String,
    /// The host kernel's release.
    #[serde(rename = "KernelVersion", default, deserialize_with = "nullable")]
    pub kernel_version: String,
}

/// The product name in [`VersionResponse`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformVersion {
    /// `tapnet`.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
}

/// One part's version in [`VersionResponse`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentVersion {
    /// Part name (`Engine`).
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// Its version.
    #[serde(rename = "Version", default, deserialize_with = "nullable")]
    pub version: String,
    /// Free-form details.
    #[serde(rename = "Details", default, deserialize_with = "nullable")]
    pub details: BTreeMap<String, String>,
}

/// `GET /info`: the few fields of Docker's that tapnet has, and `Swarm`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// The daemon's ID (empty: tapnet daemons have none).
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    /// The host's name.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// tapnet's version.
    #[serde(rename = "ServerVersion", default, deserialize_with = "nullable")]
    pub server_version: String,
    /// `linux`.
    #[serde(rename = "OSType", default, deserialize_with = "nullable")]
    pub os_type: String,
    /// The host's architecture as `uname -m` prints it (`x86_64`).
    #[serde(rename = "Architecture", default, deserialize_with = "nullable")]
    pub architecture: String,
    /// The host kernel's release.
    #[serde(rename = "KernelVersion", default, deserialize_with = "nullable")]
    pub kernel_version: String,
    /// CPUs the daemon may use.
    #[serde(rename = "NCPU", default, deserialize_with = "nullable")]
    pub ncpu: u64,
    /// The host's memory in bytes.
    #[serde(rename = "MemTotal", default, deserialize_with = "nullable")]
    pub mem_total: u64,
    /// This node's part in a swarm.
    #[serde(rename = "Swarm", default)]
    pub swarm: crate::SwarmInfo,
}
