//! Builds `monitor-ebpf` for the BPF target with aya-build, as aya-template does. The
//! object lands in `$OUT_DIR/routemon` and is embedded by `include_bytes_aligned!`.
//! routemon's `debug-log` feature turns on the eBPF crate's feature of that name.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

const EBPF_PACKAGE: &str = "monitor-ebpf";

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE} package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    // Cargo tells a build script its package's features through the environment.
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_DEBUG_LOG").is_some() {
        &["debug-log"]
    } else {
        &[]
    };
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        features,
        root_dir: manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
            .as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
        .context("building the eBPF programs failed; `cargo xtask setup` installs bpf-linker and the nightly rust-src they need")
}
