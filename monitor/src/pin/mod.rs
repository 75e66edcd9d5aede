//! `routemon pin` / `unpin`: give the primary interface the only best default
//! route, live and without a gap, and persist it as systemd-networkd
//! configuration; undo both from a saved state.
//!
//! In order: [`kernel_route`] reads default routes as the kernel's own messages;
//! [`plan`] decides metrics, replacements and files; [`transition`] replaces live
//! routes add-before-delete with read-back and rollback; [`networkd`] and
//! [`files`] produce and write the configuration; [`state`] remembers what to
//! restore; [`reload`] makes networkd pick the files up; [`report`] is what
//! the commands print.

pub mod files;
pub mod kernel_route;
pub mod networkd;
pub mod plan;
pub mod reload;
pub mod report;
pub mod state;
pub mod transition;

use std::path::PathBuf;

use thiserror::Error;

use crate::model::Family;

/// A pin or unpin that cannot be carried out as asked. Nothing was changed.
#[derive(Debug, Error)]
pub enum PinError {
    /// No primary was named and none could be detected.
    #[error(
        "no primary interface: no interface is named like an ENI (ens*, enp*, eth*); name it with --primary IF"
    )]
    NoPrimary,
    /// The primary has no default route in the main table.
    #[error(
        "{interface} has no default route in the main table, so there is nothing to pin \
         (interfaces with a default route: {holders}); choose one of them with --primary"
    )]
    NoDefaultRoute {
        /// The primary.
        interface: String,
        /// Interfaces that have one.
        holders: String,
    },
    /// The primary's default route is an IPv4 multipath route.
    #[error(
        "{interface}'s default route is an IPv4 multipath route ({route}); routemon does not pin multipath routes"
    )]
    Multipath {
        /// The primary.
        interface: String,
        /// The route.
        route: String,
    },
    /// The seed metric is not below networkd's default.
    #[error(
        "--metric {metric} is out of range for the seed scheme: it must be 1-1023, below the \
         metric 1024 that systemd-networkd gives every other interface (including ENIs attached later)"
    )]
    MetricOutOfRange {
        /// The metric asked for.
        metric: u32,
    },
    /// Another interface would tie with the primary.
    #[error(
        "refusing the plan: {other}'s {family} default route would have metric {metric}, the same as \
         {primary}'s, leaving two best default routes tied; choose a lower --metric"
    )]
    Tie {
        /// The family.
        family: Family,
        /// The primary.
        primary: String,
        /// The other interface.
        other: String,
        /// The tied metric.
        metric: u32,
    },
    /// Another interface would stay preferred.
    #[error(
        "refusing the plan: {other}'s {family} default route (metric {other_metric}) would still be \
         preferred over {primary}'s (metric {metric}); choose a --metric below {other_metric}"
    )]
    NotPreferred {
        /// The family.
        family: Family,
        /// The primary.
        primary: String,
        /// Its metric after the pin.
        metric: u32,
        /// The interface that would win.
        other: String,
        /// Its metric.
        other_metric: u32,
    },
    /// `--device` names an unknown interface.
    #[error("unknown interface '{0}' in --device")]
    UnknownDevice(String),
    /// Two interfaces would share an ec2 device slot.
    #[error(
        "{first} and {second} would both be device {device} on network card {card}; give distinct --device numbers"
    )]
    DuplicateDevice {
        /// One interface.
        first: String,
        /// The other.
        second: String,
        /// The card.
        card: u32,
        /// The device number.
        device: u32,
    },
    /// No networkd file configures the interface.
    #[error(
        "{interface} is not managed by systemd-networkd (no .network file matches it), so \
         --persist networkd would hand it to networkd; pin it live only (without --persist)"
    )]
    NotManaged {
        /// The interface.
        interface: String,
    },
    /// Existing configuration conflicts with the pin.
    #[error("conflicting networkd configuration {path}: {reason}")]
    Conflict {
        /// The conflicting file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A directory routemon must write to is not writable.
    #[error("cannot write to {dir}: {source}; run as root or choose another directory")]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error(transparent)]
    Io(#[from] files::FileError),
    /// `unpin` found no state.
    #[error("nothing to unpin: no pin state in {0} (routemon pin --apply saves it there)")]
    NoPinState(PathBuf),
}
