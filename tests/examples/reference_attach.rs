//! Attaches the bench's floor programs — an empty TC program and the
//! one-flow-lookup reference (`routemon::ebpf::reference`), one instance of each
//! per hook (`ref_empty_tx`, `ref_flow_tx`, `ref_empty_rx`, `ref_flow_rx`) — to an
//! interface of the current network namespace with TCX links, prints
//! `attached`, and keeps them attached until its standard input closes (then the
//! links close and the programs detach). The bench runs it next to routemon under
//! the same traffic, so the kernel's statistics give the floor of the same run.
//!
//! By hand (as root): `nsenter --net=/run/netns/NS target/release/examples/reference_attach ens5`.

use std::io::Read as _;

use anyhow::{Context as _, Result};
use routemon::ebpf::reference::{Reference, ReferenceProgram};

fn main() -> Result<()> {
    let interface = std::env::args()
        .nth(1)
        .context("usage: reference_attach INTERFACE")?;
    let name = std::ffi::CString::new(interface.clone())?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(ifindex > 0, "no interface {interface} in this namespace");
    // One instance per hook, named so that the kernel's statistics tell them apart.
    let mut links = Vec::new();
    let mut programs = Vec::new();
    for (egress, hook) in [(true, "tx"), (false, "rx")] {
        for (reference, prefix) in [
            (Reference::Empty, "ref_empty"),
            (Reference::FlowLookup, "ref_flow"),
        ] {
            let program = ReferenceProgram::load_as(reference, &format!("{prefix}_{hook}"))
                .with_context(|| format!("loading {prefix}_{hook}"))?;
            links.push(
                program
                    .attach_tcx(ifindex, egress)
                    .with_context(|| format!("attaching {prefix}_{hook} (TCX)"))?,
            );
            programs.push(program);
        }
    }
    println!("attached");
    // Until the bench closes our standard input.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(links);
    Ok(())
}
