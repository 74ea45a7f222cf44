//! Integration tests live in tests/. This library holds what several of them share:
//! [`e2e`], the helpers of the end-to-end tests on namespaces, and [`multihost`], a
//! cluster of daemons standing for hosts on one machine.

pub mod e2e;
pub mod multihost;
