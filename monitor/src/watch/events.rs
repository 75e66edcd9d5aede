//! The event stream of `routemon watch`: one JSON object per line on stdout.
//!
//! Schema (version 1, documented in docs/metrics-and-events.md): every event has
//! `schema_version`, `ts` (RFC 3339, UTC, milliseconds) and `event`; the other
//! fields depend on `event`. Fields are only ever added.

use std::io::Write as _;

use serde::Serialize;

use crate::{findings::Finding, model::NetworkModel, model::Route};

/// Version of the event schema.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// A route as events and metrics describe it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteLabels {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Table name (`main`, `local` or the number).
    pub table: String,
    /// Destination prefix.
    pub destination: String,
    /// First next hop's gateway, empty when directly connected.
    pub gateway: String,
    /// Output interfaces, `+`-joined for multipath routes.
    pub interface: String,
    /// Metric.
    pub metric: u32,
}

impl RouteLabels {
    /// Describes `route` with the interface names of `model`.
    pub fn of(model: &NetworkModel, route: &Route) -> Self {
        Self {
            family: route.family.to_string(),
            table: crate::model::table_name(route.table),
            destination: route.dst.to_string(),
            gateway: route.gateway().map(|g| g.to_string()).unwrap_or_default(),
            interface: model.route_devices(route),
            metric: route.metric,
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Cilium's default-route verdict for a family has a new outcome (also emitted
    /// for each family at start, with `previous` null).
    CiliumVerdictChanged {
        /// Address family.
        family: crate::model::Family,
        /// The outcome before, `null` at the first evaluation.
        previous: Option<crate::cilium::Outcome>,
        /// The verdict now: `family`, `enabled`, `outcome`, `device`, `error`.
        verdict: crate::cilium::FamilyVerdict,
    },
    /// The daemon started (after the first evaluation).
    Started {
        /// routemon's version.
        version: &'static str,
        /// Where metrics are served, if anywhere.
        listen: Option<String>,
        /// The pin directory, when pinning.
        pin_dir: Option<String>,
        /// Pinned maps taken over with their counts.
        reused_maps: usize,
    },
    /// Programs were attached to an interface (or a pinned attachment adopted).
    InterfaceAttached {
        /// Interface name.
        interface: String,
        /// Interface index.
        ifindex: u32,
        /// `tcx` or `clsact`.
        via: String,
        /// Whether a previous routemon's pinned link was taken over.
        adopted: bool,
    },
    /// An interface is no longer monitored.
    InterfaceDetached {
        /// Interface name.
        interface: String,
        /// Interface index.
        ifindex: u32,
        /// `deleted` (the device went away) or `deselected` (renamed, no longer
        /// matching the patterns).
        reason: &'static str,
    },
    /// A default route appeared.
    DefaultRouteAdded {
        /// The route.
        route: RouteLabels,
    },
    /// A default route disappeared.
    DefaultRouteRemoved {
        /// The route.
        route: RouteLabels,
    },
    /// A finding became true.
    FindingRaised {
        /// The finding (same fields as in `routes --json`).
        finding: Finding,
    },
    /// A finding is no longer true.
    FindingCleared {
        /// The finding as it was last raised.
        finding: Finding,
    },
    /// Notifications were lost; the state was re-read from the kernel.
    NetlinkResync {
        /// Resyncs since start.
        total: u64,
    },
    /// The guard re-applied the pin.
    PinReapplied {
        /// Primary interface.
        interface: String,
        /// The pinned metric.
        metric: u32,
        /// The changes made, in order (`added …`, `deleted …`).
        actions: Vec<String>,
        /// Milliseconds from the routing change to the pin being back.
        elapsed_ms: u64,
    },
    /// The guard could not re-apply the pin, or stopped trying for a while.
    PinGuardBlocked {
        /// Primary interface.
        interface: String,
        /// Why.
        reason: String,
        /// Seconds until the guard tries again (0: at the next routing change).
        retry_in_seconds: u64,
    },
    /// The answer to SIGUSR1: the model kept from notifications and the routing
    /// findings, compared with a fresh dump of the kernel's state and the findings
    /// computed from it. When they differ the dump replaces the model.
    SelfCheck {
        /// Whether model and findings matched.
        consistent: bool,
        /// Links in the dump.
        links: usize,
        /// Addresses in the dump.
        addresses: usize,
        /// Routes in the dump, every table and both families.
        routes: usize,
        /// Rules in the dump.
        rules: usize,
        /// Objects that differ (links, addresses, routes, rules, rp_filter modes).
        differences: usize,
        /// Up to 20 objects of the dump that the model lacked.
        missing: Vec<String>,
        /// Up to 20 objects of the model that the dump lacked.
        stale: Vec<String>,
        /// Keys of findings the dump raises that the daemon had not raised.
        findings_missing: Vec<String>,
        /// Keys of findings the daemon had raised that the dump does not.
        findings_stale: Vec<String>,
        /// Milliseconds the check took.
        elapsed_ms: u64,
    },
    /// The daemon is stopping.
    Stopping {
        /// The signal that stopped it.
        signal: String,
        /// Whether pinned links and maps were left in place.
        kept_pinned: bool,
    },
}

/// Writes events as JSON lines, or nowhere.
#[derive(Debug)]
pub struct EventSink {
    enabled: bool,
    written: u64,
}

impl EventSink {
    /// A sink writing to stdout when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            written: 0,
        }
    }

    /// Events emitted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Emits one event. Logs it at debug level too.
    pub fn emit(&mut self, event: Event) {
        self.written += 1;
        #[derive(Serialize)]
        struct Line<'a> {
            schema_version: u32,
            ts: String,
            #[serde(flatten)]
            event: &'a Event,
        }
        let line = Line {
            schema_version: EVENT_SCHEMA_VERSION,
            ts: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            event: &event,
        };
        let Ok(json) = serde_json::to_string(&line) else {
            return;
        };
        tracing::debug!("event: {json}");
        if self.enabled {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (the reader went away) must not stop the daemon.
            let _ = writeln!(stdout, "{json}").and_then(|()| stdout.flush());
        }
    }
}
