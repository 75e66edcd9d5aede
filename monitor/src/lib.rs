//! routemon: see and fix equal-metric default routes and cross-ENI egress on
//! multi-ENI Linux nodes.
//!
//! The data path, in module order: the kernel programs (crate `monitor-ebpf`) count
//! into maps that [`ebpf`] loads, fills and reads; [`model`] holds the routing state
//! from netlink; [`attribution`] maps routes onto the kernel's LPM keys;
//! [`preference`] and [`findings`] judge the state; [`report`] and [`output`] print it.

pub mod attribution;
pub mod cilium;
pub mod cli;
pub mod commands;
pub mod condition;
pub mod doctor;
pub mod ebpf;
pub mod findings;
pub mod flows;
pub mod model;
pub mod output;
pub mod pin;
pub mod preference;
pub mod preflight;
pub mod report;
pub mod samples;
pub mod selection;
pub mod session;
pub mod signals;
pub mod top;
pub mod watch;
pub mod web_config;

#[cfg(test)]
mod testutil;
