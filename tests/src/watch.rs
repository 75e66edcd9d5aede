//! Running `routemon watch` in the background: its JSON events, its metrics
//! endpoint, and a private pin directory removed afterwards.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

use crate::netns::NetNs;

/// Where `watch` serves metrics by default (inside the namespace it runs in).
pub const METRICS_ADDR: &str = "127.0.0.1:9987";

static PIN_COUNTER: AtomicUsize = AtomicUsize::new(0);
const PIN_PREFIX: &str = "/sys/fs/bpf/routemon-test-";

/// A pin directory of this test process, removed (with `routemon cleanup`) on drop.
#[derive(Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    /// A fresh, not yet existing directory under `/sys/fs/bpf`.
    pub fn new() -> Self {
        remove_stale_pin_dirs();
        let n = PIN_COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "{PIN_PREFIX}{}x{n}",
            std::process::id()
        )))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a string argument.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }

    /// Pinned links (file names) now.
    pub fn links(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.0.join("links"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = Command::new(crate::routemon::binary())
                .args(["cleanup", "--bpffs-dir"])
                .arg(&self.0)
                .output();
            // What cleanup leaves by design (a test's "foreign" pin) goes too.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Removes pin directories of test processes that no longer run.
fn remove_stale_pin_dirs() {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(rest) = path.to_str().and_then(|p| p.strip_prefix(PIN_PREFIX)) else {
            continue;
        };
        let pid = rest.split('x').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            let _ = Command::new(crate::routemon::binary())
                .args(["cleanup", "--bpffs-dir"])
                .arg(&path)
                .output();
        }
    }
}

/// A running `routemon watch`. Killed if dropped unfinished.
pub struct Watch {
    child: Option<Child>,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    /// Starts `routemon watch <args>` behind `launcher` (e.g.
    /// [`crate::eks::EksNode::launcher`] or [`net_launcher`]) and waits for its
    /// `started` event.
    pub fn start(launcher: &[String], args: &[&str]) -> Result<Self> {
        let (program, prefix) = launcher.split_first().context("empty launcher")?;
        let mut child = Command::new(program)
            .args(prefix)
            .arg(crate::routemon::binary())
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning routemon watch")?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or_else(
                    |err| serde_json::json!({"event": "unparsable", "line": line, "error": err.to_string()}),
                );
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut watch = Self {
            child: Some(child),
            events,
            seen: Vec::new(),
            stderr: log,
        };
        watch.wait_for("started", Duration::from_secs(60), |e| {
            e["event"] == "started"
        })?;
        Ok(watch)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for an event matching `matches` (also among those already received)
    /// and returns it.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        if let Some(found) = self.seen.iter().find(|e| matches(e)) {
            return Ok(found.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    let found = matches(&event);
                    self.seen.push(event.clone());
                    if found {
                        return Ok(event);
                    }
                }
                Err(_) => bail!(
                    "no '{what}' event within {timeout:?}; events:\n{}\nstderr:\n{}",
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Every event received so far (after draining what is queued).
    pub fn events(&mut self) -> &[Value] {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        &self.seen
    }

    /// Forgets the events received so far, so that [`Self::wait_for`] only sees
    /// later ones.
    pub fn forget(&mut self) {
        let _ = self.events();
        self.seen.clear();
    }

    /// The daemon's resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Result<u64> {
        crate::kernel::proc_status_kib(self.pid(), "VmRSS:")
    }

    /// What routemon logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("log lock").join("\n")
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.pid()).context("pid")?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal).context("kill")
    }

    /// Sends `signal` and waits (at most `timeout`) for the exit; returns the
    /// status and how long the exit took.
    pub fn stop(mut self, signal: Signal, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        self.signal(signal)?;
        let mut child = self.child.take().context("already stopped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                let took = started.elapsed();
                // Collect the last events (e.g. `stopping`).
                let mut rest = String::new();
                if let Some(mut out) = child.stdout.take() {
                    let _ = out.read_to_string(&mut rest);
                }
                return Ok((status, took));
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "routemon watch did not exit within {timeout:?} of {signal}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Watch {
    /// SIGTERM, then checks that the exit was clean (status 0 within 2 s) and that
    /// no routemon program is left in the kernel. Returns how long the exit took.
    pub fn stop_cleanly(self) -> Result<Duration> {
        let (status, took) = self.stop(Signal::SIGTERM, Duration::from_secs(5))?;
        anyhow::ensure!(status.success(), "routemon watch exited with {status}");
        anyhow::ensure!(took < Duration::from_secs(2), "the exit took {took:?}");
        let left = crate::kernel::routemon_programs_after(Duration::from_secs(5))?;
        anyhow::ensure!(left.is_empty(), "left in the kernel: {left:?}");
        Ok(took)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A launcher that enters only `ns`'s network namespace (the host's mount
/// namespace, so `/sys/fs/bpf` is the host's BPF filesystem).
pub fn net_launcher(ns: &NetNs) -> Vec<String> {
    vec![
        "nsenter".to_owned(),
        format!("--net={}", ns.path().display()),
    ]
}

/// `launcher` followed by `setpriv`, so that what it runs has only `caps` (lower
/// case, without `cap_`) in its bounding set, as under a systemd unit's
/// `CapabilityBoundingSet` or a container's `capabilities.add`.
pub fn limited_to(mut launcher: Vec<String>, caps: &[&str]) -> Vec<String> {
    let bounding = caps.iter().map(|c| format!(",+{c}")).collect::<String>();
    launcher.extend([
        "setpriv".to_owned(),
        format!("--bounding-set=-all{bounding}"),
        "--inh-caps=-all".to_owned(),
    ]);
    launcher
}

/// `GET path` on `addr` inside `ns`: (status code, body).
pub fn http_request(ns: &NetNs, addr: &str, request: &str) -> Result<(u16, String)> {
    let addr: SocketAddr = addr.parse().context("address")?;
    let request = request.to_owned();
    ns.run_in(move || -> Result<(u16, String)> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })?
}

/// Scrapes `/metrics` inside `ns`.
pub fn scrape(ns: &NetNs) -> Result<String> {
    let (status, body) = http_request(
        ns,
        METRICS_ADDR,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )?;
    if status != 200 {
        bail!("/metrics answered {status}: {body}");
    }
    Ok(body)
}

/// Every sample of `name` as (label text, value); comment lines are skipped.
pub fn samples(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some(())?;
            Some((labels.trim_end_matches('}').to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the sample of `name` whose labels include every `(label, value)`
/// of `labels`; `None` when there is no such sample.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(metrics, name)
        .into_iter()
        .find_map(|(text, value)| {
            let text = format!(",{text}");
            labels
                .iter()
                .all(|(k, v)| text.contains(&format!(",{k}=\"{v}\"")))
                .then_some(value)
        })
}
