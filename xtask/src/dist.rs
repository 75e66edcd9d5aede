//! `cargo xtask dist`: routemon as a package installs it — the binary, shell
//! completions and man pages — laid out under a prefix (`target/dist` by default)
//! that `cp -r` or a package builder puts under `/usr/local` or `/usr`.
//!
//! The completions and man pages come from routemon's clap definitions through
//! its `dist` example: xtask itself does not link routemon, whose build needs the
//! eBPF toolchain that `cargo xtask setup` installs.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::util;

/// Copies the release binary to `<prefix>/bin/routemon` and writes completions and
/// man pages under `prefix`; returns the files written.
pub fn write(prefix: &Path, binary: &Path) -> Result<Vec<PathBuf>> {
    let dir = prefix.join("bin");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join("routemon");
    fs::copy(binary, &target)
        .with_context(|| format!("copying {} to {}", binary.display(), target.display()))?;
    let mut written = vec![target];
    let prefix = prefix.to_str().context("the prefix is not UTF-8")?;
    let listed = util::output(&mut util::cargo_command(
        &[
            "run",
            "--quiet",
            "--release",
            "-p",
            "routemon",
            "--example",
            "dist",
            "--",
            prefix,
        ],
        &[],
    ))?;
    written.extend(listed.lines().map(PathBuf::from));
    Ok(written)
}
