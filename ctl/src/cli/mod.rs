//! The `tapnet` command line: Docker's subcommands, flags and output where Docker has
//! them. Every subcommand but `daemon`, `demo` and `rootless-init` is a client of the
//! daemon's API ([`client`]), speaking the types of `tapnet-api`; so is the CNI plugin
//! ([`cni`]), which the binary is when a container runtime runs it.

pub(crate) mod args;
pub(crate) mod client;
pub(crate) mod cni;
pub(crate) mod demo;
pub(crate) mod demo_multi;
pub(crate) mod format;
pub(crate) mod network;
pub(crate) mod node;
pub(crate) mod port;
pub(crate) mod rootless_init;
pub(crate) mod run;
pub(crate) mod sandbox;
pub(crate) mod stats;
pub(crate) mod swarm;
