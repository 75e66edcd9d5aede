//! Running the real `routemon` binary inside a namespace.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

use crate::netns::NetNs;

/// The binary under test: `$ROUTEMON_BIN`, else `target/release/routemon` of this
/// workspace (what `cargo xtask build` produces).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ROUTEMON_BIN") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/routemon");
    assert!(
        path.exists(),
        "{} does not exist: run `cargo xtask test` (which builds it) or set ROUTEMON_BIN",
        path.display()
    );
    path
}

/// The outcome of a finished run.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Finished {
    /// Parses stdout as JSON, failing with the whole output if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "routemon printed no JSON ({err}):\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts exit status 0.
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "routemon failed ({}):\n{}",
            self.status,
            self.stderr
        );
        self
    }
}

fn command(ns: Option<&NetNs>, args: &[&str]) -> Command {
    let bin = binary();
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns.name()]).arg(bin).args(args);
            cmd
        }
        None => {
            let mut cmd = Command::new(bin);
            cmd.args(args);
            cmd
        }
    }
}

/// Runs routemon to completion (inside `ns` if given).
pub fn run(ns: Option<&NetNs>, args: &[&str]) -> Result<Finished> {
    finish(command(ns, args))
}

/// Runs routemon to completion behind a launcher such as
/// [`crate::eks::EksNode::launcher`] (`nsenter -t PID -m -n`).
pub fn run_with(launcher: &[String], args: &[&str]) -> Result<Finished> {
    let (program, prefix) = launcher.split_first().context("empty launcher")?;
    let mut cmd = Command::new(program);
    cmd.args(prefix).arg(binary()).args(args);
    finish(cmd)
}

fn finish(mut cmd: Command) -> Result<Finished> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .context("spawning routemon")?;
    Ok(Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The `kind` of every finding of a report, in the report's order.
pub fn finding_kinds(report: &Value) -> Vec<&str> {
    report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .map(|f| f["kind"].as_str().expect("finding kind"))
        .collect()
}

/// Runs `routemon routes --json <args>` in `ns` and returns the parsed report.
pub fn routes_json(ns: &NetNs, args: &[&str]) -> Value {
    let mut full = vec!["routes", "--json"];
    full.extend_from_slice(args);
    run(Some(ns), &full)
        .expect("routemon runs")
        .success()
        .json()
}

/// A `routemon snapshot` running in the background. Killed if dropped unfinished.
pub struct Running {
    child: Option<Child>,
    /// Reads stdout while routemon runs, so a large report never blocks it.
    stdout: Option<thread::JoinHandle<String>>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

/// The line `snapshot` prints on stderr once every program is attached.
pub const READY_MARKER: &str = "routemon: counting on";

impl Running {
    /// Starts `routemon <args>` in `ns` and waits until it reports that it is
    /// counting (or fails).
    pub fn start(ns: &NetNs, args: &[&str]) -> Result<Self> {
        let mut child = command(Some(ns), args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning routemon")?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut out = child.stdout.take().context("stdout")?;
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child: Some(child),
            stdout: Some(stdout),
            stderr_lines: rx,
            stderr_seen: Vec::new(),
        };
        running.wait_for_line(READY_MARKER, Duration::from_secs(60))?;
        Ok(running)
    }

    /// Waits up to 30 s for a successful exit and returns the JSON report it
    /// printed (for `--json` runs).
    pub fn report(self) -> Value {
        self.wait(Duration::from_secs(30))
            .expect("routemon did not exit")
            .success()
            .json()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr_seen.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(_) => bail!(
                    "routemon did not print '{needle}' within {timeout:?}; stderr so far:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.pid()).context("pid")?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal).context("kill")
    }

    /// Waits for the process to exit (at most `timeout`) and collects its output.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let mut child = self.child.take().context("already waited")?;
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("routemon did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self
            .stdout
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default();
        // The reader thread ends at EOF; give it a moment to hand over the last lines.
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr_seen.push(line);
        }
        Ok(Finished {
            status,
            stdout,
            stderr: self.stderr_seen.join("\n"),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The interface called `name` in a report's `interfaces`.
pub fn interface<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["interfaces"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no interface {name} in {report:#}"))
}

/// The main-table route to `dst` via `dev` in a report's `routes`.
pub fn main_route<'a>(report: &'a Value, dst: &str, dev: &str) -> &'a Value {
    report["routes"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|r| r["dst"] == dst && r["dev"] == dev && r["table"] == "main")
        })
        .unwrap_or_else(|| panic!("no route {dst} dev {dev} in {report:#}"))
}
