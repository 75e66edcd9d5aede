//! `routemon cleanup`: removes whatever routemon left in the kernel.

use aya::programs::tc::{self, TcAttachType};
use monitor_common::program;

use crate::{cli::CleanupArgs, ebpf::pinning::PinStore, model::dump::Netlink, preflight};

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

    let netlink = Netlink::connect()?;
    let mut filters = 0;
    for link in netlink.links().await?.values() {
        for name in [
            program::EGRESS,
            program::INGRESS,
            program::EGRESS_L3,
            program::INGRESS_L3,
        ] {
            for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
                // Fails when there is no clsact qdisc or no such filter: nothing to do.
                if tc::qdisc_detach_program(&link.name, attach_type, name).is_ok() {
                    println!("removed clsact filter {name} from {}", link.name);
                    filters += 1;
                }
            }
        }
    }
    println!(
        "routemon cleanup: {} pinned object(s) and {filters} clsact filter(s) removed",
        removed.len()
    );
    Ok(())
}
