//! Small helpers: running commands, finding the workspace, root checks.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Runs a command to completion, failing if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `cargo <args>` in the workspace root.
pub fn cargo(args: &[&str]) -> Result<()> {
    run(&mut cargo_command(args, &[]))
}

/// `cargo <args>` (the cargo running xtask) in the workspace root, with `env` set.
pub fn cargo_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .current_dir(workspace_root())
        .envs(env.iter().copied());
    cmd
}

/// What one `cargo test …` run counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestRun {
    /// Tests that passed, over every `test result:` line.
    pub passed: u64,
    /// Tests that failed, likewise.
    pub failed: u64,
    /// Whether cargo itself exited 0 (false also when a build failed).
    pub succeeded: bool,
}

/// Runs `cargo test …` like [`cargo`], echoing its output, and returns the totals
/// of its `test result:` lines and whether cargo succeeded. Fails only if cargo
/// cannot be started.
pub fn cargo_test(args: &[&str], env: &[(&str, &str)]) -> Result<TestRun> {
    let mut cmd = cargo_command(args, env);
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut run = TestRun::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            run.passed += count_before(summary, " passed");
            run.failed += count_before(summary, " failed");
        }
    }
    run.succeeded = child.wait()?.success();
    Ok(run)
}

/// The number right before `label` in `text` ("ok. 5 passed; 0 failed; …").
fn count_before(text: &str, label: &str) -> u64 {
    text.find(label)
        .and_then(|end| text[..end].rsplit([' ', '.']).next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with a helpful message unless running as root.
pub fn require_root(why: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{why}: run as root, e.g. `sudo -E env \"PATH=$PATH\" cargo xtask …` (keeps rustup's cargo on PATH)"
        );
    }
    Ok(())
}

/// Replaces this process with `bin args…`, through sudo when not root.
pub fn exec_as_root(bin: &Path, args: &[String]) -> Result<()> {
    let err = if is_root() {
        Command::new(bin).args(args).exec()
    } else {
        Command::new("sudo").arg(bin).args(args).exec()
    };
    Err(err).with_context(|| format!("executing {}", bin.display()))
}

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn parses_cargo_test_summaries() {
        let line =
            "ok. 42 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count_before(line, " passed"), 42);
        assert_eq!(count_before(line, " failed"), 3);
        assert_eq!(count_before("FAILED. 0 passed; 1 failed;", " failed"), 1);
    }
}
