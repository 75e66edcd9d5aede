//! Network namespaces that remove themselves.

use std::{
    fs::File,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{Context as _, Result};
use nix::sched::{CloneFlags, setns};

use crate::cmd::run;

/// Prefix of every namespace the testbed creates; `cleanup_stale` removes leftovers.
pub const PREFIX: &str = "rmt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop together with every
/// interface inside it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `rmt<pid>x<n><role>` with `lo` up.
    pub fn new(role: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}x{n}{role}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Sets sysctls (`key=value`) inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut args = vec!["-q", "-w"];
        args.extend_from_slice(settings);
        self.exec("sysctl", &args).map(drop)
    }

    /// Runs `f` on a thread that has entered the namespace; sockets created there
    /// belong to the namespace.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.spawn_in(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread inside {} panicked", self.name))?
    }

    /// Like [`Self::run_in`] without waiting: the thread runs in the background
    /// (a capture or a receiver while the test sends).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T>>> {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        Ok(thread::spawn(move || -> Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(f())
        }))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Never panic here: this runs while a failed test unwinds.
        if let Err(err) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("testbed: could not delete netns {}: {err:#}", self.name);
        }
    }
}

/// Creates a veth pair with one end, `a`, in `ns_a` and the other, `b`, in `ns_b`.
pub fn veth_pair(ns_a: &NetNs, a: &str, ns_b: &NetNs, b: &str) -> Result<()> {
    let args = [
        "link",
        "add",
        a,
        "netns",
        ns_a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b,
    ];
    let mut args = args.to_vec();
    args.extend(["netns", ns_b.name()]);
    run("ip", &args).map(drop)
}

/// Deletes namespaces left by earlier runs whose process is gone (a test killed
/// with SIGKILL cannot clean up after itself).
pub fn cleanup_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}
