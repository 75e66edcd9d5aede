//! `routemon snapshot`: count egress and ingress with eBPF for a while, then report.

use std::time::Instant;

use anyhow::Context as _;

use super::print_report;
use crate::{
    cli::SnapshotArgs,
    model::{
        dump::Netlink,
        events::{Groups, Notification, Subscription},
    },
    preflight,
    report::{Measured, SnapshotInfo},
    samples::SampleCollector,
    session::{Counting, Investigation, Readings},
    signals::Shutdown,
};

/// Flows listed per interface.
const TOP_FLOWS: usize = 10;

/// How often samples are read from the kernel's ring buffer during a count.
const SAMPLE_DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs `snapshot`.
pub async fn run(args: &SnapshotArgs) -> anyhow::Result<u8> {
    let mut shutdown = Shutdown::install().context("installing signal handlers")?;
    preflight::require_ebpf_privileges("snapshot")?;
    if !preflight::kernel_has_btf() {
        tracing::info!(
            "the kernel exposes no BTF (/sys/kernel/btf/vmlinux); routemon does not need it"
        );
    }

    let netlink = Netlink::connect()?;
    // Subscribed before the dump, so no address change falls between the two.
    let mut address_events = Subscription::subscribe(Groups::Addresses)?;
    let mut counting = Counting::start(&netlink, &args.selection.selection(), args.attach).await?;
    let via = counting.attached_via();
    eprintln!(
        "routemon: counting on {} ({via}) for {}; Ctrl-C stops early",
        counting.interface_names().join(", "),
        humantime::format_duration(args.duration)
    );

    let mut sample_reader = counting.monitor.take_samples()?;
    let mut samples = SampleCollector::default();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration;
    // Drain sampled packets while counting, so the ring buffer never fills up.
    let mut drain = tokio::time::interval(SAMPLE_DRAIN_INTERVAL);
    let interrupted = loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break None,
            signal = shutdown.recv() => break Some(signal),
            _ = drain.tick() => samples.add(sample_reader.drain()),
            Some(change) = address_events.next() => {
                // Secondary IPs come and go (the VPC CNI assigns them to pods' ENIs):
                // keep the cross-ENI owner map current.
                let (addr, owner) = match change {
                    Notification::AddressAdded(a) if counting.found.monitored.contains(&a.ifindex) => {
                        (a.addr.addr(), Some(a.ifindex))
                    }
                    Notification::AddressRemoved(a) => (a.addr.addr(), None),
                    _ => continue,
                };
                if let Err(err) = counting.monitor.set_source_owner(addr, owner) {
                    tracing::warn!("could not update the owner of {addr}: {err}");
                }
            }
        }
    };
    samples.add(sample_reader.drain());
    let elapsed = started.elapsed();
    if let Some(signal) = interrupted {
        eprintln!(
            "routemon: {signal} received after {:.1}s; detaching",
            elapsed.as_secs_f64()
        );
    }

    // Read the counters, then detach whatever happened while reading; a failed
    // detach is reported after the counts, which are not thrown away.
    let counters = counting.read();
    let Counting {
        found,
        plan,
        monitor,
        drops_unavailable,
    } = counting;
    let detached = monitor.detach(&netlink).await;
    let Readings {
        interfaces,
        routes,
        cross_eni,
        asymmetric,
        tables,
        flows,
        drops,
    } = counters.context("reading the eBPF counters")?;
    let findings = crate::findings::merge(
        found.findings.clone(),
        crate::findings::traffic(
            &found.model,
            &cross_eni,
            &asymmetric,
            &samples,
            found.primary.as_ref(),
        ),
    );
    let changes = changes_during_count(&netlink, &found).await;

    let mut report = found.report(
        findings,
        Some(Measured {
            interfaces: &interfaces,
            routes: &routes,
            plan: &plan,
        }),
    );
    let mut top_flows = crate::flows::top_per_interface(&found.model, &flows, TOP_FLOWS);
    for iface in &mut report.interfaces {
        if changes.gone.contains(&iface.ifindex) {
            iface.state = "gone".to_owned();
        }
        iface.top_flows = Some(top_flows.remove(&iface.ifindex).unwrap_or_default());
        if drops_unavailable.is_none() {
            iface.drops = Some(
                drops
                    .iter()
                    .filter(|((ifindex, _), _)| *ifindex == iface.ifindex)
                    .map(|((_, reason), n)| (reason.clone(), *n))
                    .collect(),
            );
        }
    }
    report.snapshot = Some(SnapshotInfo {
        requested_seconds: args.duration.as_secs_f64(),
        duration_seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        interrupted: interrupted.is_some(),
        attached_via: via,
        routes_added_during: changes.routes_added,
        routes_removed_during: changes.routes_removed,
        interfaces_added_during: changes.interfaces_added,
        tables,
        drops_unavailable,
    });
    let status = print_report(&report, &args.selection)?;
    detached.context("detaching routemon's programs")?;
    Ok(status)
}

/// What changed in the network while routemon counted.
#[derive(Default)]
struct Changes {
    /// Monitored interfaces that no longer exist (deleted, or their index reused by
    /// another device). Their counts up to the deletion are kept.
    gone: Vec<u32>,
    /// Routes present at the end but not at the start (attributed as of the start).
    routes_added: usize,
    /// Routes present at the start but not at the end.
    routes_removed: usize,
    /// Interfaces that appeared during the count (not monitored by this snapshot).
    interfaces_added: Vec<String>,
}

async fn changes_during_count(netlink: &Netlink, found: &Investigation) -> Changes {
    let now = match netlink.dump().await {
        Ok(model) => model,
        Err(err) => {
            tracing::warn!("could not re-read the network state after counting: {err}");
            return Changes::default();
        }
    };
    let gone = found
        .monitored
        .iter()
        .filter(|ifindex| {
            let before = found.model.links.get(ifindex).map(|l| &l.name);
            now.links.get(ifindex).map(|l| &l.name) != before
        })
        .copied()
        .collect();
    let identity = |r: &crate::model::Route| {
        (
            r.family,
            r.table,
            r.dst,
            r.metric,
            r.kind,
            r.nexthops.clone(),
        )
    };
    let before: std::collections::HashSet<_> = found.model.routes.iter().map(identity).collect();
    let after: std::collections::HashSet<_> = now.routes.iter().map(identity).collect();
    let names_before: std::collections::HashSet<&str> = found
        .model
        .links
        .values()
        .map(|l| l.name.as_str())
        .collect();
    let mut interfaces_added: Vec<String> = now
        .links
        .values()
        .filter(|l| !names_before.contains(l.name.as_str()))
        .map(|l| l.name.clone())
        .collect();
    interfaces_added.sort();
    Changes {
        gone,
        routes_added: after.difference(&before).count(),
        routes_removed: before.difference(&after).count(),
        interfaces_added,
    }
}
