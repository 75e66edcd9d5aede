//! `routemon cleanup`: removes whatever routemon left in the kernel.

use serde::Serialize;

use crate::{
    cli::CleanupArgs,
    ebpf::{orphans, pinning::PinStore, remove_clsact_if_unused},
    model::dump::Netlink,
    preflight,
};

/// What `cleanup --json` prints.
#[derive(Debug, Default, Serialize)]
pub struct CleanupReport {
    /// Pinned maps and links removed, by path.
    pub pins: Vec<String>,
    /// Orphaned clsact filters removed.
    pub filters: Vec<RemovedFilter>,
    /// Interfaces whose clsact qdisc (added by routemon, now unused) was removed.
    pub qdiscs: Vec<String>,
    /// Filters that could not be removed, with why.
    pub failures: Vec<String>,
}

/// An orphaned clsact filter that was removed.
#[derive(Debug, Serialize)]
pub struct RemovedFilter {
    /// Interface name.
    pub interface: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// The program's name.
    pub program: String,
    /// The program's id.
    pub program_id: u32,
}

/// Runs `cleanup`.
pub async fn run(args: &CleanupArgs) -> anyhow::Result<()> {
    preflight::require_ebpf_privileges("cleanup")?;
    let mut report = CleanupReport {
        pins: PinStore::remove_all(&args.bpffs_dir)
            .map_err(|err| {
                anyhow::anyhow!(
                    "removing routemon's pins under {} failed: {err}",
                    args.bpffs_dir.display()
                )
            })?
            .iter()
            .map(|path| path.display().to_string())
            .collect(),
        ..CleanupReport::default()
    };

    // Only orphans: the filters of a routemon that is still running stay.
    let netlink = Netlink::connect()?;
    let links: Vec<(u32, String)> = netlink
        .links()
        .await?
        .values()
        .map(|l| (l.index, l.name.clone()))
        .collect();
    for orphan in &orphans::find(&netlink, links.iter().cloned()).await {
        match orphans::remove(&netlink, orphan).await {
            Ok(()) => report.filters.push(RemovedFilter {
                interface: orphan.interface.clone(),
                direction: orphan.direction.to_string(),
                program: orphan.program.clone(),
                program_id: orphan.prog_id,
            }),
            Err(err) => report.failures.push(format!(
                "{} {} on {}: {err}",
                orphan.program, orphan.direction, orphan.interface
            )),
        }
    }
    // The clsact qdiscs routemon added, once nothing uses them any more.
    for (ifindex, name) in &links {
        if orphans::created_clsact(*ifindex, name)
            && remove_clsact_if_unused(&netlink, *ifindex, name).await
        {
            report.qdiscs.push(name.clone());
        }
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    anyhow::ensure!(
        report.failures.is_empty(),
        "some orphaned filters could not be removed: {}",
        report.failures.join("; ")
    );
    Ok(())
}

fn print_text(report: &CleanupReport) {
    for path in &report.pins {
        println!("removed pin {path}");
    }
    for f in &report.filters {
        println!(
            "removed clsact filter {} (program id {}) from {} {}",
            f.program, f.program_id, f.interface, f.direction
        );
    }
    for name in &report.qdiscs {
        println!("removed the clsact qdisc routemon added to {name}");
    }
    println!(
        "routemon cleanup: {} pinned object(s), {} clsact filter(s) and {} clsact qdisc(s) \
         removed",
        report.pins.len(),
        report.filters.len(),
        report.qdiscs.len()
    );
}
