//! Top flows and kernel drop reasons (`snapshot --json`), on the two-ENI testbed.

use std::time::Duration;

use routemon_testbed::{
    INTERNET_V4, Testbed,
    cmd::require_root,
    kernel,
    routemon::{Running, interface},
    traffic::{UdpBurst, send_udp, spawn_udp_echo},
};
use serde_json::Value;

routemon_testbed::new_machine_view!();

/// The flow of `interface`'s top flows whose node-side port is `port`.
fn top_flow<'a>(report: &'a Value, interface_name: &str, port: u16) -> &'a Value {
    interface(report, interface_name)["top_flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["src_port"] == port)
        .unwrap_or_else(|| panic!("no flow with port {port} on {interface_name}: {report:#}"))
}

/// `count` datagrams of 100 bytes from the internet host to port 9 of ens6's
/// address, sent by the router into the node's ens6.
fn from_internet_into_ens6(bed: &Testbed, count: usize) -> UdpBurst {
    UdpBurst {
        dst: bed.uplink("ens6").addr4.into(),
        device: Some(bed.uplink("ens6").router_side.clone()),
        src: Some(INTERNET_V4.into()),
        count,
        payload: 100,
    }
}

/// ens5 preferred (metric 1000 against 1024) and strict reverse-path filtering on
/// ens6: what arrives on ens6 from the internet fails the check.
fn strict_rp_filter_on_ens6() -> Testbed {
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    bed.node
        .sysctl(&[
            "net.ipv4.conf.all.rp_filter=1",
            "net.ipv4.conf.ens6.rp_filter=1",
        ])
        .unwrap();
    bed
}

/// The asymmetric path of the seed's incidents: a request in by the secondary ENI
/// (ens6), its reply out of the primary (ens5, the preferred default). The flow is
/// among the top flows of both, marked asymmetric, with its traffic each way.
#[test]
fn an_asymmetric_flow_is_a_top_flow_of_both_enis() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let ens6_addr = bed.uplink("ens6").addr4;
    let echo = spawn_udp_echo(&bed.node, ens6_addr.into(), 9, 6).unwrap();
    let running = Running::start(&bed.node, &["snapshot", "--duration", "2s", "--json"]).unwrap();
    send_udp(&bed.router, &from_internet_into_ens6(&bed, 6)).unwrap();
    let report = running.report();
    assert_eq!(echo.join().unwrap(), 6, "the node echoed every datagram");
    for dev in ["ens5", "ens6"] {
        let flow = top_flow(&report, dev, 9);
        assert_eq!(flow["protocol"], "udp");
        assert_eq!(flow["src"], ens6_addr.to_string());
        assert_eq!(flow["dst"], INTERNET_V4.to_string());
        assert_eq!(flow["arrived_on"], "ens6");
        assert_eq!(flow["left_by"], "ens5");
        assert_eq!(flow["asymmetric"], true);
        assert_eq!(flow["ingress_packets"], 6);
        assert_eq!(flow["egress_packets"], 6);
        // 100 bytes of payload + UDP, IPv4 and Ethernet headers.
        assert_eq!(flow["ingress_bytes"], 6 * (100 + 8 + 20 + 14));
    }
    assert!(
        kernel::routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
}

/// Strict reverse-path filtering on ens6 while the preferred default leaves by
/// ens5: traffic from the internet arriving on ens6 is dropped by the node itself.
/// The snapshot counts it under the kernel's reason, IP_RPFILTER, on ens6, and
/// shows the flow among ens6's top flows (it passed the ingress hook first).
#[test]
fn an_rp_filter_drop_is_counted_under_its_reason() {
    require_root();
    let bed = strict_rp_filter_on_ens6();
    let running = Running::start(&bed.node, &["snapshot", "--duration", "2s", "--json"]).unwrap();
    send_udp(&bed.router, &from_internet_into_ens6(&bed, 5)).unwrap();
    let report = running.report();
    let ens6 = interface(&report, "ens6");
    assert_eq!(
        ens6["drops"]["IP_RPFILTER"], 5,
        "drops on ens6: {}",
        ens6["drops"]
    );
    assert_eq!(
        interface(&report, "ens5")["drops"]
            .as_object()
            .unwrap()
            .get("IP_RPFILTER"),
        None
    );
    let flow = top_flow(&report, "ens6", 9);
    assert_eq!(flow["arrived_on"], "ens6");
    assert_eq!(flow["ingress_packets"], 5);
    assert_eq!(flow["egress_packets"], 0, "no reply: dropped on the way in");
    assert_eq!(report["snapshot"].get("drops_unavailable"), None);
}

/// `watch` exports the same drops, per interface and reason only (bounded
/// cardinality).
#[test]
fn watch_exports_drops_per_interface_and_reason() {
    use routemon_testbed::watch::{PinDir, Watch, net_launcher, sample, scrape};
    require_root();
    let bed = strict_rp_filter_on_ens6();
    let pins = PinDir::new();
    let watch = Watch::start(&net_launcher(&bed.node), &["--bpffs-dir", &pins.arg()]).unwrap();
    send_udp(&bed.router, &from_internet_into_ens6(&bed, 7)).unwrap();
    let metrics = scrape(&bed.node).unwrap();
    let drops = |interface: &str| {
        sample(
            &metrics,
            "routemon_drops_total",
            &[("interface", interface), ("reason", "IP_RPFILTER")],
        )
    };
    assert_eq!(drops("ens6"), Some(7.0), "{metrics}");
    assert_eq!(drops("ens5"), None);
    watch.stop_cleanly().unwrap();
}

/// A tmux session running one command on a private tmux server, killed on drop.
struct Tmux {
    session: String,
}

impl Tmux {
    /// `routemon top ARGS` in the node's namespace; after it exits the pane shows
    /// `routemon-exit=<status>` and the terminal's `icanon` or `-icanon` mode.
    fn top(bed: &Testbed, args: &str) -> Self {
        Self::start(
            &format!("routemon-top-{}", bed.node.name()),
            &format!(
                "nsenter --net={} {} top {args}; echo routemon-exit=$?; stty -a | tr ' ' '\\n' \
             | grep -x -e icanon -e -icanon; sleep 60",
                bed.node.path().display(),
                routemon_testbed::routemon::binary().display(),
            ),
        )
    }

    /// After `top` was told to stop: it exited 0, the terminal is in canonical
    /// mode on the primary screen, and nothing of routemon's is left in the kernel.
    fn assert_exited_cleanly(&self) {
        let after = self.wait_for("routemon-exit=", Duration::from_secs(15));
        assert!(after.contains("routemon-exit=0"), "{after}");
        assert!(
            after.lines().any(|l| l.trim() == "icanon"),
            "the terminal is back in canonical mode:\n{after}"
        );
        assert_eq!(
            self.query("#{alternate_on}"),
            "0",
            "back on the primary screen"
        );
        assert!(
            kernel::routemon_programs_after(Duration::from_secs(5))
                .unwrap()
                .is_empty()
        );
    }

    /// Starts `command` in a new tmux session on a tmux server of its own (its
    /// own socket): a server the machine already runs, with another environment
    /// and mount namespace, is never used.
    fn start(session: &str, command: &str) -> Self {
        let tmux = Self {
            session: session.to_owned(),
        };
        let size = ["-x", "180", "-y", "50"];
        let mut args = vec!["new-session", "-d", "-s", session];
        args.extend(size);
        args.push(command);
        tmux.run(&args).unwrap();
        tmux
    }

    /// Runs `tmux args…` against this session's own server.
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-L", self.session.as_str()];
        all.extend_from_slice(args);
        routemon_testbed::cmd::run("tmux", &all)
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
            .unwrap()
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", &self.session, keys]).unwrap();
    }

    fn query(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", &self.session, format])
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Waits until the screen contains `text`; returns the screen.
    fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {text:?} on the screen within {timeout:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A rate with a k/M/G prefix (at least 1 000 per second) in the screen line.
fn has_kilo_rate(line: &str) -> bool {
    line.split_whitespace().any(|token| {
        token.len() > 1
            && token.ends_with(['k', 'M', 'G'])
            && token[..token.len() - 1].parse::<f64>().is_ok()
    })
}

/// `top` in a real terminal (tmux): while traffic leaves by both ENIs the screen
/// shows both with non-zero rates and the equal-metric finding; `q` exits 0 with
/// the terminal back in normal mode (cooked, primary screen) and nothing attached.
#[test]
fn top_in_a_real_terminal_shows_rates_and_findings_and_quits_cleanly() {
    require_root();
    let bed = Testbed::ens5_ens6(1024, 1024).unwrap();
    let tmux = Tmux::top(&bed, "--interval 1s");
    tmux.wait_for("Findings", Duration::from_secs(30));
    assert_eq!(
        tmux.query("#{alternate_on}"),
        "1",
        "top uses the alternate screen"
    );

    // About 1 000 datagrams per second out of each ENI for 4 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        for dev in ["ens5", "ens6"] {
            let gateway = bed.uplink(dev).gw4;
            send_udp(
                &bed.node,
                &UdpBurst {
                    dst: gateway.into(),
                    device: Some(dev.to_owned()),
                    src: None,
                    count: 100,
                    payload: 100,
                },
            )
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = tmux.screen();
    for dev in ["ens5", "ens6"] {
        let row = screen
            .lines()
            .find(|l| l.contains(&format!("│{dev}")) && l.contains("metric"))
            .unwrap_or_else(|| panic!("no {dev} row:\n{screen}"));
        assert!(
            has_kilo_rate(row),
            "{dev} has no traffic rate: {row}\n{screen}"
        );
    }
    assert!(
        screen
            .lines()
            .any(|l| l.contains("critical") && l.contains("1024")),
        "the equal-metric finding is shown:\n{screen}"
    );

    tmux.keys("?");
    tmux.wait_for("this help", Duration::from_secs(5));
    tmux.keys("q");
    tmux.assert_exited_cleanly();
}

/// Without a terminal `top` refuses, pointing to `snapshot` and `watch`.
#[test]
fn top_without_a_terminal_points_to_snapshot_and_watch() {
    require_root();
    let finished = routemon_testbed::routemon::run(None, &["top"]).unwrap();
    assert_ne!(finished.status.code(), Some(0));
    assert!(
        finished.stderr.contains("needs a terminal")
            && finished.stderr.contains("routemon snapshot")
            && finished.stderr.contains("routemon watch"),
        "{}",
        finished.stderr
    );
}

/// SIGTERM (a node shutting down, `kill`) ends `top` like `q`: exit 0, terminal
/// restored, nothing attached.
#[test]
fn top_restores_the_terminal_and_detaches_on_sigterm() {
    require_root();
    let bed = Testbed::ens5_ens6(1000, 1024).unwrap();
    let tmux = Tmux::top(&bed, "");
    tmux.wait_for("Findings", Duration::from_secs(30));
    assert!(
        kernel::routemon_tcx_links().unwrap() > 0,
        "attached while shown"
    );
    let pid = tmux.query("#{pane_pid}");
    // The shell's child is nsenter, which execs routemon.
    let routemon = routemon_testbed::cmd::run("pgrep", &["-P", &pid])
        .unwrap()
        .trim()
        .to_owned();
    routemon_testbed::cmd::run("kill", &["-TERM", &routemon]).unwrap();
    tmux.assert_exited_cleanly();
}
