//! OS plumbing: TAP devices, network namespaces, netlink configuration and fd passing,
//! the code in the engine that talks to the kernel about devices rather than moving
//! frames.
//!
//! Written on `libc` and `nix` by hand: no maintained crate adopts a TAP fd with its
//! virtio-net header (see [`tap`]), and netlink goes through `netlink-packet-route` and
//! `netlink-sys` synchronously (rtnetlink needs an async runtime the engine does not
//! run).

pub mod netlink;
pub mod netns;
pub mod scm;
pub mod tap;
pub mod udp;
