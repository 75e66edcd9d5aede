//! What `pin` and `unpin` report: the `--json` documents (typed, documented) and
//! the text that shows a plan's changes.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    files::FileChange,
    plan::{self, Scheme},
    transition::{Action, Replacement},
};
use crate::model::NetworkModel;

/// `pin --json`: the plan, and what was done when applied.
#[derive(Debug, Serialize)]
pub struct PinReport {
    /// Whether the changes were carried out (`--apply`).
    pub applied: bool,
    /// Whether anything changed on the node.
    pub changed: bool,
    /// `true` for a dry run (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The primary interface.
    pub primary: String,
    /// How the primary was chosen: `flag` or `lowest_ifindex`, as in `routes --json`.
    pub chosen_by: &'static str,
    /// The metric scheme.
    pub scheme: Scheme,
    /// The metric each interface gets.
    pub targets: Vec<plan::Target>,
    /// Live route changes.
    pub routes: Vec<RouteChangeView>,
    /// networkd file changes.
    pub files: Vec<FileChangeView>,
    /// What was done, when applied.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<PinOutcome>,
}

/// What an applied `pin` did.
#[derive(Debug, Serialize)]
pub struct PinOutcome {
    /// Each step, in order (`added …`, `deleted …`, `wrote …`).
    pub actions: Vec<String>,
    /// How systemd-networkd was reloaded (`--reload`), or `null`.
    pub reloaded: Option<String>,
    /// The routing state read back after the pin.
    pub verdict: String,
}

/// `unpin --json`: the plan, and what was done when applied.
#[derive(Debug, Serialize)]
pub struct UnpinReport {
    /// Whether the changes were carried out (`--apply`).
    pub applied: bool,
    /// `true` for a dry run (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Live route changes (back to the routes before the pin).
    pub routes: Vec<RouteChangeView>,
    /// networkd file changes (restored or removed).
    pub files: Vec<FileChangeView>,
    /// Each step, when applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    /// How systemd-networkd was reloaded, when applied (`null` without `--reload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reloaded: Option<Option<String>>,
}

/// A route change, for display.
#[derive(Debug, Serialize)]
pub struct RouteChangeView {
    /// Interface.
    pub interface: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Gateway.
    pub gateway: Option<String>,
    /// Metric before.
    pub metric_before: u32,
    /// Metric after.
    pub metric_after: u32,
}

/// A file change, for display.
#[derive(Debug, Serialize)]
pub struct FileChangeView {
    /// The file.
    pub path: String,
    /// `create`, `replace`, `remove` or `unchanged`.
    pub action: &'static str,
    /// Unified diff.
    pub diff: String,
}

/// The route replacements of a plan, for display.
pub fn route_views(replacements: &[(String, Replacement)]) -> Vec<RouteChangeView> {
    replacements
        .iter()
        .map(|(interface, r)| RouteChangeView {
            interface: interface.clone(),
            family: r.before.key.family.to_string(),
            gateway: r.before.key.gateway.map(|g| g.to_string()),
            metric_before: r.before.key.metric,
            metric_after: r.after.key.metric,
        })
        .collect()
}

/// The file changes of a plan, for display.
pub fn file_views(changes: &[FileChange]) -> Vec<FileChangeView> {
    changes
        .iter()
        .map(|c| FileChangeView {
            path: c.path.display().to_string(),
            action: match (&c.before, &c.after) {
                _ if c.is_noop() => "unchanged",
                (None, Some(_)) => "create",
                (Some(_), Some(_)) => "update",
                (_, None) => "remove",
            },
            diff: c.diff(),
        })
        .collect()
}

/// Writes the route and file changes as the text output shows them.
pub fn render_changes(out: &mut String, routes: &[RouteChangeView], files: &[FileChangeView]) {
    out.push_str("\nLive routes:\n");
    if routes.is_empty() {
        out.push_str("  no change\n");
    }
    for r in routes {
        let via = r
            .gateway
            .as_deref()
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} default{via} dev {}: metric {} → {}",
            r.family, r.interface, r.metric_before, r.metric_after
        );
    }
    if !files.is_empty() {
        out.push_str("\nFiles:\n");
        for f in files {
            if f.action == "unchanged" {
                let _ = writeln!(out, "  {} (unchanged)", f.path);
            } else {
                out.push_str(&f.diff);
            }
        }
    }
}

/// Writes the steps of a transition, one a line.
pub fn print_actions(out: &mut String, model: &NetworkModel, actions: &[Action]) {
    for action in actions {
        let _ = writeln!(out, "  {}", action.describe(model));
    }
}
