//! `watch`'s routing evaluation: after each reconcile, Cilium's verdict, the
//! routing findings and the default routes, compared with the previous evaluation
//! and turned into events for what changed.

use std::collections::{BTreeMap, BTreeSet};

use super::events::{Event, RouteLabels};
use crate::{
    cilium::{CiliumFamilies, Verdict},
    findings::{self, Finding},
    model::NetworkModel,
    preference,
    selection::Primary,
};

/// The last evaluation.
#[derive(Debug, Default)]
pub struct RoutingState {
    /// Active routing findings by key.
    pub findings: BTreeMap<String, Finding>,
    /// Cilium's verdict (`None` before the first evaluation).
    pub cilium: Option<Verdict>,
    /// Default routes.
    pub default_routes: BTreeSet<RouteLabels>,
}

impl RoutingState {
    /// Evaluates `model` and returns the events for what changed since the last
    /// evaluation: Cilium verdicts first, then findings cleared and raised, then
    /// default routes removed and added.
    pub fn evaluate(
        &mut self,
        model: &NetworkModel,
        primary: Option<&Primary>,
        families: CiliumFamilies,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let cilium = Verdict::of(model, families);
        for verdict in &cilium.per_family {
            let previous = self
                .cilium
                .as_ref()
                .map(|before| before.family(verdict.family).outcome);
            if previous != Some(verdict.outcome) {
                events.push(Event::CiliumVerdictChanged {
                    family: verdict.family,
                    previous,
                    verdict: verdict.clone(),
                });
            }
        }
        let preferred = preference::preferred_default_routes(model);
        let now: BTreeMap<String, Finding> =
            findings::evaluate(model, &preferred, primary, &cilium)
                .into_iter()
                .map(|f| (f.key(), f))
                .collect();
        let previous = std::mem::take(&mut self.findings);
        events.extend(
            previous
                .iter()
                .filter(|(key, _)| !now.contains_key(*key))
                .map(|(_, finding)| Event::FindingCleared {
                    finding: finding.clone(),
                }),
        );
        events.extend(
            now.iter()
                .filter(|(key, _)| !previous.contains_key(*key))
                .map(|(_, finding)| Event::FindingRaised {
                    finding: finding.clone(),
                }),
        );
        self.findings = now;
        self.cilium = Some(cilium);

        let now: BTreeSet<RouteLabels> = model
            .default_routes()
            .map(|r| RouteLabels::of(model, r))
            .collect();
        events.extend(self.default_routes.difference(&now).map(|route| {
            Event::DefaultRouteRemoved {
                route: route.clone(),
            }
        }));
        events.extend(
            now.difference(&self.default_routes)
                .map(|route| Event::DefaultRouteAdded {
                    route: route.clone(),
                }),
        );
        self.default_routes = now;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cilium::Outcome,
        model::table,
        testutil::{default_route, model_with_links, push_routes},
    };

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::CiliumVerdictChanged {
                    family, verdict, ..
                } => format!("cilium {family} {}", verdict.outcome),
                Event::FindingRaised { finding } => format!("raised {}", finding.kind_name()),
                Event::FindingCleared { finding } => format!("cleared {}", finding.kind_name()),
                Event::DefaultRouteAdded { route } => format!("added {}", route.interface),
                Event::DefaultRouteRemoved { route } => format!("removed {}", route.interface),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_tie_appearing_and_going_gives_one_event_per_change() {
        let mut model = model_with_links(&["lo", "ens5", "ens6"]);
        push_routes(
            &mut model,
            [default_route(2, Some("10.0.1.1"), 1024, table::MAIN)],
        );
        let mut state = RoutingState::default();
        let first = state.evaluate(&model, None, CiliumFamilies::Ipv4);
        assert_eq!(
            names(&first),
            [
                "cilium ipv4 ok",
                "cilium ipv6 no_default_route",
                "added ens5"
            ]
        );
        assert!(
            state
                .evaluate(&model, None, CiliumFamilies::Ipv4)
                .is_empty()
        );

        push_routes(
            &mut model,
            [default_route(3, Some("10.0.2.1"), 1024, table::MAIN)],
        );
        let tie = state.evaluate(&model, None, CiliumFamilies::Ipv4);
        assert_eq!(
            names(&tie),
            [
                "cilium ipv4 tie",
                "raised cilium_default_route",
                "raised equal_metric_default_routes",
                "added ens6"
            ]
        );
        let Event::CiliumVerdictChanged { previous, .. } = &tie[0] else {
            panic!()
        };
        assert_eq!(*previous, Some(Outcome::Ok));

        model.routes.truncate(1);
        let cleared = state.evaluate(&model, None, CiliumFamilies::Ipv4);
        assert_eq!(
            names(&cleared),
            [
                "cilium ipv4 ok",
                "cleared cilium_default_route",
                "cleared equal_metric_default_routes",
                "removed ens6"
            ]
        );
    }
}
