//! Replacing live routes without a gap: every new route is added and read back
//! before the route it replaces is deleted and read back as gone; any failure rolls
//! back, in reverse order, to the exact routes of before.

use std::fmt;

use thiserror::Error;

use super::kernel_route::{DefaultRoutes, KernelRoute, RouteKey, RouteRequestError};
use crate::model::dump::Netlink;

/// One route to be replaced by another (typically the same route with another
/// metric). Either side may already be in its final state: an `after` that exists
/// is not added again, a `before` that is gone is not deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// The route now.
    pub before: KernelRoute,
    /// The route it becomes.
    pub after: KernelRoute,
}

/// One change made to the kernel's routes, in the order made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A route was added and read back.
    Added(RouteKey),
    /// A route was deleted and read back as gone.
    Deleted(RouteKey),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added(key) => write!(f, "added   {key} (read back)"),
            Self::Deleted(key) => write!(f, "deleted {key} (read back as gone)"),
        }
    }
}

impl Action {
    /// The action with interface names from `model`, e.g. `added   ipv4 default via
    /// 10.0.1.1 dev ens5 metric 1000 (read back)`.
    pub fn describe(&self, model: &crate::model::NetworkModel) -> String {
        let (verb, key, note) = match self {
            Self::Added(key) => ("added  ", key, "read back"),
            Self::Deleted(key) => ("deleted", key, "read back as gone"),
        };
        format!("{verb} {} ({note})", key.describe(model))
    }
}

/// A replacement that failed, and what rolling back did.
#[derive(Debug, Error)]
#[error("{cause}; {rollback}")]
pub struct TransitionError {
    /// What went wrong.
    pub cause: TransitionFailure,
    /// The outcome of the rollback.
    pub rollback: RollbackOutcome,
}

/// Why a replacement failed.
#[derive(Debug, Error)]
pub enum TransitionFailure {
    /// A netlink request failed.
    #[error(transparent)]
    Request(#[from] RouteRequestError),
    /// The kernel accepted a request but the read-back disagrees.
    #[error("read-back after {action} {key}: {problem}")]
    ReadBack {
        /// `adding` or `deleting`.
        action: &'static str,
        /// The route.
        key: RouteKey,
        /// What the dump showed.
        problem: &'static str,
    },
}

/// What the rollback achieved.
#[derive(Debug)]
pub enum RollbackOutcome {
    /// Every change was undone; the routes are as before.
    Restored(Vec<Action>),
    /// Undoing failed; the listed problems need an operator.
    Failed(Vec<String>),
}

impl fmt::Display for RollbackOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Restored(undone) if undone.is_empty() => f.write_str("nothing had been changed"),
            Self::Restored(undone) => write!(
                f,
                "rolled back {} change(s): the routes are as before",
                undone.len()
            ),
            Self::Failed(problems) => write!(
                f,
                "ROLLBACK INCOMPLETE, check `ip route show default` and `ip -6 route show default`: {}",
                problems.join("; ")
            ),
        }
    }
}

/// Carries out `replacements` in order; returns the actions taken.
pub async fn replace(
    netlink: &Netlink,
    replacements: &[Replacement],
) -> Result<Vec<Action>, TransitionError> {
    let mut done: Vec<(Action, KernelRoute)> = Vec::new();
    for replacement in replacements {
        if let Err(cause) = replace_one(netlink, replacement, &mut done).await {
            let rollback = roll_back(netlink, done).await;
            return Err(TransitionError { cause, rollback });
        }
    }
    Ok(done.into_iter().map(|(action, _)| action).collect())
}

async fn replace_one(
    netlink: &Netlink,
    replacement: &Replacement,
    done: &mut Vec<(Action, KernelRoute)>,
) -> Result<(), TransitionFailure> {
    let Replacement { before, after } = replacement;
    let now = DefaultRoutes::dump(netlink).await?;
    if !now.contains(&after.key) {
        after.add(netlink).await?;
        expect(netlink, &after.key, true, "adding").await?;
        done.push((Action::Added(after.key.clone()), after.clone()));
    }
    if before.key != after.key && now.contains(&before.key) {
        before.delete(netlink).await?;
        expect(netlink, &before.key, false, "deleting").await?;
        done.push((Action::Deleted(before.key.clone()), before.clone()));
    }
    Ok(())
}

async fn expect(
    netlink: &Netlink,
    key: &RouteKey,
    present: bool,
    action: &'static str,
) -> Result<(), TransitionFailure> {
    let now = DefaultRoutes::dump(netlink).await?;
    if now.contains(key) == present {
        Ok(())
    } else {
        Err(TransitionFailure::ReadBack {
            action,
            key: key.clone(),
            problem: if present {
                "the route is not there"
            } else {
                "the route is still there"
            },
        })
    }
}

/// Undoes `done` in reverse order, re-adding deleted routes before deleting added
/// ones so that no step leaves fewer default routes than the one before.
async fn roll_back(netlink: &Netlink, done: Vec<(Action, KernelRoute)>) -> RollbackOutcome {
    let mut undone = Vec::new();
    let mut problems = Vec::new();
    let (deleted, added): (Vec<_>, Vec<_>) = done
        .into_iter()
        .rev()
        .partition(|(action, _)| matches!(action, Action::Deleted(_)));
    for (_, route) in deleted {
        match route.add(netlink).await {
            Ok(()) => undone.push(Action::Added(route.key)),
            Err(err) => problems.push(format!("re-adding {}: {err}", route.key)),
        }
    }
    if problems.is_empty() {
        for (_, route) in added {
            match route.delete(netlink).await {
                Ok(()) => undone.push(Action::Deleted(route.key)),
                Err(err) => problems.push(format!("removing {}: {err}", route.key)),
            }
        }
    } else {
        problems.push("the added routes were left in place so that a default route remains".into());
    }
    if problems.is_empty() {
        RollbackOutcome::Restored(undone)
    } else {
        RollbackOutcome::Failed(problems)
    }
}
