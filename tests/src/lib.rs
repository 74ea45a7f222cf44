//! Integration tests live in tests/. This library holds what several of them share:
//! [`e2e`], the helpers of the end-to-end tests on namespaces.

pub mod e2e;
