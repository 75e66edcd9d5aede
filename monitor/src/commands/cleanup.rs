//! `routemon cleanup`: removes whatever routemon left in the kernel.

use crate::{
    cli::CleanupArgs,
    ebpf::{orphans, pinning::PinStore, remove_clsact_if_unused},
    model::dump::Netlink,
    preflight,
};

/// Runs `cleanup`.
pub async fn run(args: &CleanupArgs) -> anyhow::Result<()> {
    preflight::require_ebpf_privileges("cleanup")?;
    let removed = PinStore::remove_all(&args.pin_dir).map_err(|err| {
        anyhow::anyhow!(
            "removing routemon's pins under {} failed: {err}",
            args.pin_dir.display()
        )
    })?;
    for path in &removed {
        println!("removed pin {}", path.display());
    }

    // Only orphans: the filters of a routemon that is still running stay.
    let netlink = Netlink::connect()?;
    let links: Vec<(u32, String)> = netlink
        .links()
        .await?
        .values()
        .map(|l| (l.index, l.name.clone()))
        .collect();
    let found = orphans::find(&netlink, links.iter().cloned()).await;
    let mut filters = 0;
    let mut failures = Vec::new();
    for orphan in &found {
        match orphans::remove(&netlink, orphan).await {
            Ok(()) => {
                println!(
                    "removed clsact filter {} (program id {}) from {} {}",
                    orphan.program, orphan.prog_id, orphan.interface, orphan.direction
                );
                filters += 1;
            }
            Err(err) => failures.push(format!(
                "{} {} on {}: {err}",
                orphan.program, orphan.direction, orphan.interface
            )),
        }
    }
    // The clsact qdiscs routemon added, once nothing uses them any more.
    let mut qdiscs = 0;
    for (ifindex, name) in &links {
        if orphans::created_clsact(*ifindex, name)
            && remove_clsact_if_unused(&netlink, *ifindex, name).await
        {
            println!("removed the clsact qdisc routemon added to {name}");
            qdiscs += 1;
        }
    }
    println!(
        "routemon cleanup: {} pinned object(s), {filters} clsact filter(s) and {qdiscs} clsact \
         qdisc(s) removed",
        removed.len()
    );
    anyhow::ensure!(
        failures.is_empty(),
        "some orphaned filters could not be removed: {}",
        failures.join("; ")
    );
    Ok(())
}
