//! Making systemd-networkd read the files routemon wrote, and waiting until the
//! routes it then installs agree with the pin.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{kernel_route::DefaultRoutes, plan::Target};
use crate::model::dump::Netlink;

/// How long the routes must agree with the pin to count as converged: networkd
/// applies a reload asynchronously and may first remove what it re-adds.
const SETTLE: Duration = Duration::from_secs(2);
/// How often routes are read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Asks networkd to reload its configuration (`networkctl reload`, which
/// reconfigures every link whose `.network` file changed); falls back to
/// `systemctl restart systemd-networkd`. Returns the command that worked.
pub fn reload_networkd() -> anyhow::Result<&'static str> {
    let attempts: [(&'static str, &str, &[&str]); 2] = [
        ("networkctl reload", "networkctl", &["reload"]),
        (
            "systemctl restart systemd-networkd",
            "systemctl",
            &["restart", "systemd-networkd"],
        ),
    ];
    let mut failures = Vec::new();
    for (label, program, args) in attempts {
        match Command::new(program).args(args).output() {
            Ok(out) if out.status.success() => return Ok(label),
            Ok(out) => failures.push(format!(
                "`{label}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(err) => failures.push(format!("`{label}`: {err}")),
        }
    }
    bail!(
        "could not make systemd-networkd reload ({}); the files are written and the live routes \
         are pinned, restart systemd-networkd yourself",
        failures.join("; ")
    )
}

/// Waits until every target interface has default routes only at its pinned
/// metric, continuously for [`SETTLE`]; returns how long it took.
pub async fn wait_converged(
    netlink: &Netlink,
    targets: &[Target],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut agreeing_since: Option<Instant> = None;
    loop {
        let defaults = DefaultRoutes::dump(netlink)
            .await
            .context("reading routes while waiting for networkd")?;
        let agree = targets.iter().all(|t| {
            let mut routes = defaults.of_interface(t.ifindex).peekable();
            routes.peek().is_some() && routes.all(|r| r.key.metric == t.metric)
        });
        let now = Instant::now();
        match (agree, agreeing_since) {
            (true, Some(since)) if now - since >= SETTLE => return Ok(since - start),
            (true, None) => agreeing_since = Some(now),
            (false, _) => agreeing_since = None,
            _ => {}
        }
        if now - start > timeout {
            bail!(
                "systemd-networkd did not converge to the pinned metrics within {timeout:?}; \
                 check `networkctl status` and `ip route show default`"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
