//! `routemon pin` and `routemon unpin`.

use std::{collections::BTreeSet, fmt::Write as _, path::Path, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::{PinArgs, UnpinArgs},
    model::dump::Netlink,
    pin::{
        PinError,
        files::{FileChange, check_writable, read_optional},
        kernel_route::{DefaultRoutes, RouteKey},
        networkd::NetworkdConfig,
        plan::{self, FilePlanInput, PinRequest, RoutePlan, Scheme},
        reload,
        report::{
            PinOutcome, PinReport, UnpinReport, file_views, print_actions, render_changes,
            route_views,
        },
        state::PinState,
        transition::{self, Action, Replacement},
    },
    preflight,
    selection::{self, Primary},
};

/// How long `--reload` waits for networkd's routes to agree with the pin.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `pin`.
pub async fn run_pin(args: &PinArgs) -> anyhow::Result<()> {
    if args.scheme == Scheme::Seed && args.metric >= plan::NETWORKD_DEFAULT_METRIC {
        return Err(PinError::MetricOutOfRange {
            metric: args.metric,
        }
        .into());
    }
    if args.apply {
        // Before planning: one who may not change routes learns that first, whether
        // or not there would be anything to change.
        preflight::require_route_privileges("pin --apply")?;
    }
    let netlink = Netlink::connect()?;
    let model = netlink.dump().await?;
    let defaults = DefaultRoutes::dump(&netlink).await?;
    let primary = selection::primary_interface(&model, args.primary.as_deref())?
        .ok_or(PinError::NoPrimary)?;
    let enis: BTreeSet<u32> = if args.interfaces.is_empty() {
        model
            .links
            .values()
            .filter(|l| !l.is_loopback() && selection::is_eni_like(&l.name))
            .map(|l| l.index)
            .collect()
    } else {
        selection::select_interfaces(&model, &args.interfaces)?
    };
    let route_plan = plan::plan_routes(
        &model,
        &defaults,
        &primary,
        &PinRequest {
            scheme: args.scheme,
            metric: args.metric,
            devices: &args.devices,
            enis: &enis,
        },
    )?;
    let secondaries: Vec<u32> = enis
        .iter()
        .copied()
        .filter(|i| *i != primary.ifindex)
        .collect();
    let file_changes = if args.persist.is_some() {
        let config = NetworkdConfig::load(&args.networkd_dir)
            .map_err(|source| plan::config_error(&args.networkd_dir, source))?;
        let unmanaged: BTreeSet<u32> = if args.unmanage_others {
            secondaries.iter().copied().collect()
        } else {
            BTreeSet::new()
        };
        plan::plan_files(&FilePlanInput {
            config: &config,
            dir: &args.networkd_dir,
            model: &model,
            defaults: &defaults,
            persist: route_plan
                .targets
                .iter()
                .filter(|t| !unmanaged.contains(&t.ifindex))
                .filter(|t| t.ifindex == primary.ifindex || args.scheme == Scheme::Ec2)
                .collect(),
            unmanage: args
                .unmanage_others
                .then(|| (secondaries.clone(), args.unmanage_match)),
        })?
    } else {
        Vec::new()
    };

    let routes = route_views(&route_plan.replacements);
    let files = file_views(&file_changes);
    let report = |dry_run: bool, routes, files, outcome: Option<PinOutcome>| PinReport {
        applied: outcome.is_some(),
        changed: outcome.is_some(),
        dry_run,
        primary: primary.name.clone(),
        chosen_by: primary.source.as_str(),
        scheme: args.scheme,
        targets: route_plan.targets.clone(),
        routes,
        files,
        outcome,
    };
    let nothing_to_do =
        route_plan.replacements.is_empty() && file_changes.iter().all(FileChange::is_noop);

    let mut text = String::new();
    let _ = writeln!(
        text,
        "routemon pin{}",
        if args.apply {
            ""
        } else {
            " — dry run: nothing is changed; add --apply to carry it out"
        }
    );
    let _ = writeln!(
        text,
        "\nPrimary: {} ({})",
        primary.name,
        primary.source.describe()
    );
    let _ = writeln!(text, "Metrics:");
    for target in &route_plan.targets {
        let _ = writeln!(text, "  {target}");
    }
    render_changes(&mut text, &routes, &files);

    if nothing_to_do {
        text.push_str("\nAlready pinned: nothing to change.\n");
        return finish(args.json, &text, &report(false, routes, files, None));
    }
    if !args.apply {
        return finish(args.json, &text, &report(true, routes, files, None));
    }

    for dir in std::iter::once(&args.state.state_dir)
        .chain(args.persist.is_some().then_some(&args.networkd_dir))
    {
        std::fs::create_dir_all(dir)
            .and_then(|()| check_writable(dir))
            .map_err(|source| PinError::NotWritable {
                dir: dir.clone(),
                source,
            })?;
    }
    let actions = apply_pin(&netlink, &args.state.state_dir, &route_plan, &file_changes).await?;
    text.push_str("\nApplied:\n");
    print_actions(&mut text, &model, &actions);
    for change in file_changes.iter().filter(|c| !c.is_noop()) {
        let _ = writeln!(text, "  wrote   {} (atomically)", change.path.display());
    }
    let mut reloaded = None;
    if args.reload {
        let how = reload::reload_networkd()?;
        let took = reload::wait_converged(&netlink, &route_plan.targets, CONVERGE_TIMEOUT).await?;
        let _ = writeln!(
            text,
            "  reloaded systemd-networkd (`{how}`); its routes agreed with the pin after {took:.1?}"
        );
        reloaded = Some(how);
    } else if !file_changes.is_empty() {
        text.push_str(
            "\nsystemd-networkd reads the new file at its next restart (or run with --reload); \
             until then a DHCP renewal may add a metric-1024 route next to the pinned one.\n",
        );
    }
    let verdict = verify(&netlink, &primary).await?;
    let _ = writeln!(
        text,
        "\n{verdict}\nState for `routemon unpin`: {}",
        args.state.state_dir.join("pin.json").display()
    );
    let outcome = PinOutcome {
        actions: actions.iter().map(ToString::to_string).collect(),
        reloaded: reloaded.map(str::to_owned),
        verdict,
    };
    finish(
        args.json,
        &text,
        &report(false, routes, files, Some(outcome)),
    )
}

fn finish(json: bool, text: &str, report: &impl Serialize) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Records the state, replaces the routes, writes the files; undoes the routes and
/// files if a later step fails.
async fn apply_pin(
    netlink: &Netlink,
    state_dir: &Path,
    route_plan: &RoutePlan,
    file_changes: &[FileChange],
) -> anyhow::Result<Vec<Action>> {
    let previous = PinState::load(state_dir)?;
    let mut state = previous.clone().unwrap_or_else(PinState::new);
    for (interface, r) in &route_plan.replacements {
        state.record_route(interface, &r.before, &r.after);
    }
    for change in file_changes.iter().filter(|c| !c.is_noop()) {
        state.record_file(state_dir, &change.path, change.before.as_deref())?;
    }
    // Saved first: if routemon dies half-way, `unpin` still knows the originals.
    state.save(state_dir)?;
    let replacements: Vec<Replacement> = route_plan
        .replacements
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    let restore_state = |state_dir: &Path| match &previous {
        Some(previous) => previous.save(state_dir),
        None => PinState::remove(state_dir),
    };
    let actions = match transition::replace(netlink, &replacements).await {
        Ok(actions) => actions,
        Err(err) => {
            restore_state(state_dir)?;
            return Err(err).context("changing the live routes");
        }
    };
    let mut written: Vec<&FileChange> = Vec::new();
    for change in file_changes.iter().filter(|c| !c.is_noop()) {
        if let Err(err) = change.apply() {
            for done in written.iter().rev() {
                let _ = done.reversed().apply();
            }
            let undo: Vec<Replacement> = replacements
                .iter()
                .rev()
                .map(|r| Replacement {
                    before: r.after.clone(),
                    after: r.before.clone(),
                })
                .collect();
            let rollback = transition::replace(netlink, &undo).await;
            restore_state(state_dir)?;
            return Err(anyhow::anyhow!(
                "writing {}: {err}; the files written so far were restored and the routes {}",
                change.path.display(),
                match rollback {
                    Ok(_) => "rolled back".to_owned(),
                    Err(e) => format!("could not be rolled back: {e}"),
                }
            ));
        }
        written.push(change);
    }
    Ok(actions)
}

/// Reads the routes back and says whether the primary alone holds the best default
/// route of each family it has one in.
async fn verify(netlink: &Netlink, primary: &Primary) -> anyhow::Result<String> {
    let defaults = DefaultRoutes::dump(netlink).await?;
    let mut lines = Vec::new();
    for family in [crate::model::Family::Ipv4, crate::model::Family::Ipv6] {
        let routes: Vec<&RouteKey> = defaults.keys(family).collect();
        let Some(best) = routes.iter().map(|k| k.metric).min() else {
            continue;
        };
        let at_best: BTreeSet<u32> = routes
            .iter()
            .filter(|k| k.metric == best)
            .map(|k| k.ifindex)
            .collect();
        let ok = at_best.len() == 1 && at_best.contains(&primary.ifindex);
        lines.push(format!(
            "Verified ({family}): {} — best default route metric {best} on {}",
            if ok { "OK" } else { "NOT as planned" },
            if ok {
                primary.name.clone()
            } else {
                format!("{} interface(s)", at_best.len())
            }
        ));
    }
    Ok(lines.join("\n"))
}

/// Runs `unpin`.
pub async fn run_unpin(args: &UnpinArgs) -> anyhow::Result<()> {
    if args.apply {
        // Whatever the state: one who may not change routes learns that first.
        preflight::require_route_privileges("unpin --apply")?;
    }
    let state_dir = &args.state.state_dir;
    let state =
        PinState::load(state_dir)?.ok_or_else(|| PinError::NoPinState(state_dir.clone()))?;
    let netlink = Netlink::connect()?;
    let model = netlink.dump().await?;
    let defaults = DefaultRoutes::dump(&netlink).await?;

    let mut replacements = Vec::new();
    for record in state.routes.iter().rev() {
        let (original, pinned) = record.routes().with_context(|| {
            format!(
                "the saved routes of {} in the pin state cannot be decoded",
                record.interface
            )
        })?;
        let current = defaults.get(&pinned.key).cloned().unwrap_or(pinned);
        if defaults.contains(&original.key) && !defaults.contains(&current.key) {
            continue;
        }
        replacements.push((
            record.interface.clone(),
            Replacement {
                before: current,
                after: original,
            },
        ));
    }
    let mut file_changes = Vec::new();
    for record in &state.files {
        let before = read_optional(&record.path)
            .with_context(|| format!("reading {}", record.path.display()))?;
        let after = match &record.backup {
            Some(backup) => Some(std::fs::read_to_string(backup).with_context(|| {
                format!(
                    "reading the backup {} of {}",
                    backup.display(),
                    record.path.display()
                )
            })?),
            None => None,
        };
        file_changes.push(FileChange {
            path: record.path.clone(),
            before,
            after,
        });
    }
    let routes = route_views(&replacements);
    let files = file_views(&file_changes);
    let mut text = format!(
        "routemon unpin{}\n",
        if args.apply {
            ""
        } else {
            " — dry run: nothing is changed; add --apply to carry it out"
        }
    );
    render_changes(&mut text, &routes, &files);
    if !args.apply {
        let report = UnpinReport {
            applied: false,
            dry_run: true,
            routes,
            files,
            actions: None,
            reloaded: None,
        };
        return finish(args.json, &text, &report);
    }
    let plain: Vec<Replacement> = replacements.iter().map(|(_, r)| r.clone()).collect();
    let actions = transition::replace(&netlink, &plain)
        .await
        .context("restoring the live routes")?;
    for change in file_changes.iter().filter(|c| !c.is_noop()) {
        change
            .apply()
            .with_context(|| format!("restoring {}", change.path.display()))?;
    }
    PinState::remove(state_dir)?;
    text.push_str("\nApplied:\n");
    print_actions(&mut text, &model, &actions);
    for change in file_changes.iter().filter(|c| !c.is_noop()) {
        let verb = if change.after.is_some() {
            "restored"
        } else {
            "removed "
        };
        let _ = writeln!(text, "  {verb} {}", change.path.display());
    }
    let mut reloaded = None;
    if args.reload {
        let how = reload::reload_networkd()?;
        let _ = writeln!(text, "  reloaded systemd-networkd (`{how}`)");
        reloaded = Some(how);
    }
    text.push_str("\nUnpinned: the routes and files are as before the pin.\n");
    let report = UnpinReport {
        applied: true,
        dry_run: false,
        routes,
        files,
        actions: Some(actions.iter().map(ToString::to_string).collect()),
        reloaded: Some(reloaded.map(str::to_owned)),
    };
    finish(args.json, &text, &report)
}
