//! Real container runtimes for end-to-end tests of tapnet's Docker network plugin and
//! CNI plugin, each private to the test that made it (root only).
//!
//! - [`Dockerd`]: a dockerd with its own roots, socket, containerd and log under a fresh
//!   directory, in the caller's network namespace, without bridge or firewall changes;
//!   [`Dockerd::restart`] keeps its roots (containers and networks survive as they would
//!   on a restarted daemon; with `--live-restore` in [`DockerdOptions::args`] the
//!   containers run on through it), [`Dockerd::kill9`] stands for a crash.
//!   [`Dockerd::plugin_spec`] writes the spec file dockerd discovers a network plugin by.
//! - [`Podman`]: podman on a configuration and storage of its own, with CNI networks
//!   from a directory of the test's ([`Podman::cni_conf_dir`], plugins in
//!   [`Podman::cni_bin_dir`]).
//! - [`TapnetDaemon`]: a `tapnet daemon` process of the test's, optionally with the
//!   Docker plugin.
//! - An image without a registry: [`busybox_image`] (Docker) and [`Podman::import`]
//!   import [`busybox_tar`], a root file system made of the machine's static busybox
//!   (`sh`, `ping`, `nc`, `ip`, `wget`, `httpd`...), command `sh`.
//!
//! The binaries are the distribution's: `/usr/sbin/dockerd`, `/usr/bin/docker` (the
//! client of the same version, not whatever comes first on PATH), containerd, runc,
//! conmon, `/usr/bin/podman`, `/usr/lib/cni`, `/bin/busybox` (busybox-static).
//!
//! Everything is bounded in time (a start: 60 s; a command: [`crate::multihost::CMD_LIMIT`],
//! past which [`Dockerd::docker`] and [`Podman::podman`] panic and the `_ok` variants
//! answer an error). Each harness's [`Drop`] removes the containers, ends its processes
//! by PID (the daemon, then whatever still names its directory on its command line, and
//! their descendants), unmounts what is mounted under its directory and removes it
//! (`TAPNET_E2E_KEEP` set: the directory stays, for the logs). [`processes_of`] and
//! [`mounts_under`] let a test check that nothing is left.

mod docker;
mod image;
mod podman;
mod sys;
mod tapnet;

pub use self::docker::{
    DOCKERD_START_LIMIT, DOCKERD_STOP_GRACE, Dockerd, DockerdOptions, PLUGIN_SPEC_DIR,
    SYSTEM_CONTAINERD, SpecGuard, busybox_image, docker_bin, dockerd_bin,
};
pub use self::image::{APPLETS, BUSYBOX, busybox_tar};
pub use self::podman::{Podman, podman_bin};
pub use self::sys::{Proc, alive, cgroup_dirs, mounts_under, processes, processes_of};
pub use self::tapnet::TapnetDaemon;
