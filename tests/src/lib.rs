//! routemon's testbed: network namespaces, veth uplinks, a router namespace with
//! an "internet" address, test traffic, and the kernel's own counters as ground
//! truth. Used by the integration tests in `tests/` and by `cargo xtask demo`.
//!
//! Everything it creates is removed when the owning value is dropped, also while a
//! failing test unwinds; namespaces left by a killed run are removed by the next.
//! Needs root. Each integration-test binary runs in a private mount namespace
//! that looks like a new machine ([`host`]), so no test depends on what a machine
//! happens to have, or leaves anything on it.

pub mod cmd;
pub mod daemon;
pub mod eks;
pub mod frames;
pub mod host;
pub mod http;
pub mod kernel;
pub mod markdown;
pub mod netns;
pub mod routemon;
pub mod topology;
pub mod traffic;
pub mod watch;

pub use topology::{INTERNET_V4, INTERNET_V6, Testbed, UplinkSpec};
