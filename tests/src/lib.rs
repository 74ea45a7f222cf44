//! Integration tests live in tests/. This library holds what several of them share:
//! [`e2e`], the helpers of the end-to-end tests on namespaces, [`multihost`], a
//! cluster of daemons standing for hosts on one machine, and [`containers`], private
//! dockerd and podman instances for the plugins' end-to-end tests.

pub mod containers;
pub mod e2e;
pub mod multihost;
