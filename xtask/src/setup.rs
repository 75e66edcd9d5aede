//! `cargo xtask setup`: everything a new machine needs, each step skipped when it
//! is already done.
//!
//! 1. A nightly toolchain with `rust-src` (aya-build compiles the eBPF crate with
//!    `-Z build-std=core` for `bpfel-unknown-none`).
//! 2. `bpf-linker`, built against the libLLVM that ships inside that nightly's
//!    sysroot, so no system LLVM is needed and the LLVM major always matches the
//!    bitcode rustc emits. The version is derived at run time.
//! 3. The Debian packages the tests and the demo call.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{is_root, output, run as run_cmd};

/// The toolchain aya-build uses for the eBPF crate.
const NIGHTLY: &str = "nightly";
/// bpf-linker release line known to work with aya 0.14 and LLVM 20–22.
const BPF_LINKER_VERSION: &str = "~0.13";

/// Debian packages used by the tests and the demo, with the command each provides.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip, tc: namespaces, veths, routes, qdiscs"),
    ("bpftool", "bpftool: checks that nothing stays attached"),
    ("procps", "sysctl: per-namespace settings"),
    (
        "util-linux",
        "setpriv, unshare: unprivileged runs, networkd's mount namespace",
    ),
    (
        "systemd",
        "systemd-networkd: the EKS testbed's network manager; systemd-analyze: checks the unit in deploy/",
    ),
    (
        "dbus",
        "dbus-daemon: the node's system bus, so that networkctl works in the EKS testbed",
    ),
    (
        "dnsmasq-base",
        "dnsmasq: the VPC's DHCP servers in the EKS testbed",
    ),
    (
        "nftables",
        "nft: the VPC's source/destination check in the EKS testbed",
    ),
    (
        "python3",
        "python3 -m http.server: the testbed's internet host",
    ),
    (
        "python3-venv",
        "python3 -m venv: a private environment for the Python tools below",
    ),
    (
        "iperf3",
        "iperf3: the bench's TCP and small-packet UDP traffic",
    ),
    (
        "g++",
        "c++: cargo-fuzz builds libFuzzer (C++) for the fuzz targets",
    ),
    (
        "tmux",
        "tmux: a real terminal for `routemon top` (send-keys, capture-pane)",
    ),
    (
        "prometheus",
        "prometheus, promtool: a real server scrapes `watch`, promtool checks /metrics",
    ),
];

/// Python tools, installed into `target/tools/venv` (never into the system).
const PYTHON_TOOLS: &[(&str, &str)] = &[(
    "kubernetes-validate==1.37.0",
    "kubernetes-validate: checks deploy/kustomize against the Kubernetes API schemas",
)];

/// Where [`PYTHON_TOOLS`] are installed, relative to the workspace root.
pub const TOOLS_VENV: &str = "target/tools/venv";

/// Runs the steps building needs.
pub fn run_build_only() -> Result<()> {
    nightly_with_rust_src()?;
    bpf_linker()?;
    println!("setup: ready to build");
    Ok(())
}

/// cargo-fuzz release line (the fuzz targets in `fuzz/`).
const CARGO_FUZZ_VERSION: &str = "~0.13";

/// Runs every step.
pub fn run() -> Result<()> {
    nightly_with_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    python_tools()?;
    cargo_fuzz()?;
    println!("setup: ready");
    Ok(())
}

fn nightly_with_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (https://rustup.rs)")?;
    if !toolchains.lines().any(|l| l.starts_with(NIGHTLY)) {
        println!("setup: installing the {NIGHTLY} toolchain");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))?;
    if components.lines().any(|l| l.trim() == "rust-src") {
        println!("setup: {NIGHTLY} with rust-src: ok");
    } else {
        println!("setup: adding rust-src to {NIGHTLY}");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))?;
    }
    Ok(())
}

/// The nightly sysroot's libLLVM: (file name, LLVM major version, sysroot lib dir).
fn nightly_llvm() -> Result<(String, String, PathBuf)> {
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let lib_dir = Path::new(&sysroot).join("lib");
    let lib = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let verbose = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV reports no LLVM version")?
        .to_owned();
    Ok((lib, major, lib_dir))
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

fn bpf_linker() -> Result<()> {
    let (lib, major, lib_dir) = nightly_llvm()?;
    // One prefix per libLLVM build: a new nightly gets a new bpf-linker.
    let prefix = home()?.join(".local/lib/routemon-bpf-linker").join(&lib);
    let stamp = prefix.join("installed");
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works && stamp.exists() {
        println!("setup: bpf-linker for {lib}: ok");
        return Ok(());
    }
    println!("setup: building bpf-linker against {lib} (LLVM {major}); about a minute");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run_cmd(
        crate::util::cargo_command(&[], &[])
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    fs::write(&stamp, format!("{lib}\n"))?;
    let version = output(Command::new("bpf-linker").arg("--version"))
        .context("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?")?;
    println!("setup: {version} installed");
    Ok(())
}

fn cargo_fuzz() -> Result<()> {
    let works = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        println!("setup: cargo-fuzz: ok");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz (about a minute)");
    run_cmd(crate::util::cargo_command(&[], &[]).args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !package_installed(name))
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages: ok");
        return Ok(());
    }
    if !is_root() {
        let why: Vec<String> = PACKAGES
            .iter()
            .filter(|(n, _)| missing.contains(n))
            .map(|(n, what)| format!("  {n}: {what}"))
            .collect();
        bail!(
            "missing Debian packages:\n{}\ninstall them with: sudo apt-get install -y {}",
            why.join("\n"),
            missing.join(" ")
        );
    }
    println!("setup: installing {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

fn python_tools() -> Result<()> {
    let venv = crate::util::workspace_root().join(TOOLS_VENV);
    let pip = venv.join("bin/pip");
    let stamp = venv.join(".routemon-tools");
    let wanted: Vec<&str> = PYTHON_TOOLS.iter().map(|(spec, _)| *spec).collect();
    if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted.join(" ")) {
        println!("setup: Python tools: ok");
        return Ok(());
    }
    if !pip.exists() {
        println!("setup: creating {}", venv.display());
        run_cmd(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 -m venv failed; install python3-venv")?;
    }
    println!("setup: installing {}", wanted.join(" "));
    run_cmd(
        Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&wanted),
    )?;
    fs::write(&stamp, format!("{}\n", wanted.join(" ")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use crate::util::{cargo_command, output};

    /// The packages `xtask` links, following normal dependencies (not dev or build
    /// dependencies) through cargo's resolved graph.
    fn linked_by_xtask() -> BTreeSet<String> {
        // This machine's packages only: others' (Windows crates) may not be downloaded.
        let rustc = output(std::process::Command::new("rustc").arg("-vV")).expect("rustc -vV");
        let host = rustc
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .expect("rustc -vV names the host");
        let metadata: Value = serde_json::from_str(
            &output(&mut cargo_command(
                &[
                    "metadata",
                    "--format-version",
                    "1",
                    "--offline",
                    "--filter-platform",
                    host,
                ],
                &[],
            ))
            .expect("cargo metadata"),
        )
        .expect("cargo metadata prints JSON");
        let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
            .as_array()
            .expect("resolve.nodes")
            .iter()
            .map(|n| (n["id"].as_str().expect("node id"), n))
            .collect();
        let name_of = |id: &str| {
            metadata["packages"]
                .as_array()
                .expect("packages")
                .iter()
                .find(|p| p["id"] == id)
                .and_then(|p| p["name"].as_str())
                .expect("package of a node")
                .to_owned()
        };
        let xtask = nodes
            .keys()
            .find(|id| name_of(id) == "xtask")
            .expect("xtask in the graph");
        let mut seen = BTreeSet::new();
        let mut todo = vec![*xtask];
        while let Some(id) = todo.pop() {
            for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null());
                let dep_id = dep["pkg"].as_str().expect("dep pkg");
                if normal && seen.insert(dep_id.to_owned()) {
                    todo.push(dep_id);
                }
            }
        }
        seen.iter().map(|id| name_of(id)).collect()
    }

    /// `cargo xtask setup` is what installs the nightly `rust-src` and bpf-linker
    /// that routemon's build script needs to build the eBPF programs, so xtask must
    /// build without them: on a new machine a link to routemon (or to anything that
    /// builds the eBPF crate) makes every `cargo xtask …` fail before setup runs.
    #[test]
    fn xtask_builds_without_the_ebpf_toolchain_it_installs() {
        let linked = linked_by_xtask();
        assert!(
            linked.contains("routemon-testbed"),
            "the graph was read: {linked:?}"
        );
        for package in ["routemon", "monitor-ebpf", "aya-build"] {
            assert!(
                !linked.contains(package),
                "xtask links {package}, which needs the eBPF toolchain that `cargo xtask setup` installs"
            );
        }
    }
}
