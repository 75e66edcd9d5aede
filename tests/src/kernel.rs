//! The kernel's own view, as ground truth: interface statistics, loaded BPF
//! programs, tc filters and qdiscs.

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::{cmd::run, netns::NetNs};

/// Interface counters from `ip -s link`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Received packets.
    pub rx_packets: u64,
    /// Received bytes.
    pub rx_bytes: u64,
}

impl LinkStats {
    /// `self - before`, field by field.
    pub fn since(self, before: Self) -> Self {
        Self {
            tx_packets: self.tx_packets - before.tx_packets,
            tx_bytes: self.tx_bytes - before.tx_bytes,
            rx_packets: self.rx_packets - before.rx_packets,
            rx_bytes: self.rx_bytes - before.rx_bytes,
        }
    }
}

/// Reads `ip -j -s link show dev <dev>` inside `ns`.
pub fn link_stats(ns: &NetNs, dev: &str) -> Result<LinkStats> {
    let json: Value = serde_json::from_str(&ns.ip(&["-j", "-s", "link", "show", "dev", dev])?)?;
    let stats = &json[0]["stats64"];
    let field = |dir: &str, name: &str| {
        stats[dir][name]
            .as_u64()
            .with_context(|| format!("no stats64.{dir}.{name} for {dev}"))
    };
    Ok(LinkStats {
        tx_packets: field("tx", "packets")?,
        tx_bytes: field("tx", "bytes")?,
        rx_packets: field("rx", "packets")?,
        rx_bytes: field("rx", "bytes")?,
    })
}

/// Waits until the interfaces send and receive nothing for `quiet_ms`, so that a
/// measurement window contains only the test's traffic. Gives up after 10 s.
pub fn wait_quiet(ns: &NetNs, devs: &[&str], quiet_ms: u64) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let read = || -> Result<Vec<LinkStats>> { devs.iter().map(|d| link_stats(ns, d)).collect() };
    let mut last = read()?;
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = read()?;
        if now != last {
            last = now;
            quiet_since = std::time::Instant::now();
        } else if quiet_since.elapsed().as_millis() as u64 >= quiet_ms {
            return Ok(());
        }
    }
    anyhow::bail!("interfaces {devs:?} did not go quiet within 10 s")
}

fn bpftool_json(args: &[&str]) -> Result<Vec<Value>> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let json: Value = serde_json::from_str(&run("bpftool", &full)?)?;
    Ok(json.as_array().cloned().unwrap_or_default())
}

fn routemon_program_ids() -> Result<Vec<(u64, String)>> {
    Ok(bpftool_json(&["prog", "show"])?
        .iter()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .filter(|(_, name)| name.starts_with("routemon"))
        .collect())
}

/// Names of loaded BPF programs that belong to routemon (`routemon_*`), system-wide.
pub fn routemon_programs() -> Result<Vec<String>> {
    Ok(routemon_program_ids()?
        .into_iter()
        .map(|(_, name)| name)
        .collect())
}

/// Number of TCX links, system-wide, whose program is one of routemon's.
pub fn routemon_tcx_links() -> Result<usize> {
    let ids: Vec<u64> = routemon_program_ids()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    Ok(bpftool_json(&["link", "show"])?
        .iter()
        // bpftool 7.1 (Debian 12) predates TCX and prints its link type as the number 11.
        .filter(|l| l["type"].as_str() == Some("tcx") || l["type"].as_u64() == Some(11))
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .count())
}

/// `tc filter show dev <dev> ingress` and `egress` output, concatenated.
pub fn tc_filters(ns: &NetNs, dev: &str) -> Result<String> {
    let ingress = ns.exec("tc", &["filter", "show", "dev", dev, "ingress"])?;
    let egress = ns.exec("tc", &["filter", "show", "dev", dev, "egress"])?;
    Ok(format!("{ingress}{egress}"))
}

/// Whether `dev` has a clsact qdisc.
pub fn has_clsact(ns: &NetNs, dev: &str) -> Result<bool> {
    Ok(ns
        .exec("tc", &["qdisc", "show", "dev", dev])?
        .contains("clsact"))
}

/// The ifindex of `dev` inside `ns`.
pub fn ifindex(ns: &NetNs, dev: &str) -> Result<u64> {
    let json: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", dev])?)?;
    json[0]["ifindex"].as_u64().context("no ifindex")
}

/// Waits up to `timeout` for every routemon program to be unloaded and returns
/// those still loaded. The kernel frees a program asynchronously (after an RCU
/// grace period) once its last reference is gone, so "gone" needs a short wait.
pub fn routemon_programs_after(timeout: std::time::Duration) -> Result<Vec<String>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = routemon_programs()?;
        if left.is_empty() || std::time::Instant::now() > deadline {
            return Ok(left);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Entries of `bpftool net show` inside `ns` (tc filters and XDP programs) whose
/// program is routemon's. Debian's bpftool 7.1 does not list TCX links here; see
/// [`routemon_tcx_links`] for those.
pub fn bpftool_net_routemon(ns: &NetNs) -> Result<usize> {
    let json: Value = serde_json::from_str(&ns.exec("bpftool", &["-j", "net", "show"])?)?;
    let mut count = 0;
    for section in json.as_array().into_iter().flatten() {
        for (_, entries) in section.as_object().into_iter().flatten() {
            count += entries
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("routemon"))
                })
                .count();
        }
    }
    Ok(count)
}

/// Records `ip monitor route` of a namespace until stopped: the kernel's own
/// sequence of route additions and deletions.
pub struct RouteMonitor {
    child: Option<std::process::Child>,
}

impl RouteMonitor {
    /// Starts recording.
    pub fn start(ns: &NetNs) -> Result<Self> {
        let child = std::process::Command::new("ip")
            .args(["-n", ns.name(), "monitor", "route"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting ip monitor")?;
        // ip monitor subscribes right after it starts.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(Self { child: Some(child) })
    }

    /// Stops and returns the event lines, in order.
    pub fn finish(mut self) -> Result<Vec<String>> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut child = self.child.take().context("finished twice")?;
        let _ = child.kill();
        let output = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect())
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}
