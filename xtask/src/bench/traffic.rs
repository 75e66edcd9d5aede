//! Traffic for the bench (iperf3 between the node and the router's "internet"
//! address), the baselines (nftables and tc counters), throughput and footprint.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use routemon_testbed::{
    INTERNET_V4, Testbed, UplinkSpec,
    daemon::Daemon,
    kernel::proc_status_kib,
    netns::NetNs,
    watch::{Watch, net_launcher},
};
use serde_json::Value;

use super::{Figure, Plan, Stats};

/// An iperf3 server on the router's internet address.
pub struct Iperf {
    _server: Daemon,
}

impl Iperf {
    /// Starts the server in the router namespace.
    pub fn serve(bed: &Testbed) -> Result<Self> {
        let server = Daemon::spawn(
            "iperf3",
            "ip",
            &[
                "netns",
                "exec",
                bed.router.name(),
                "iperf3",
                "-s",
                "-B",
                &INTERNET_V4.to_string(),
            ],
            None,
        )?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { _server: server })
    }

    /// Client arguments for a TCP stream (MTU-size segments).
    pub fn tcp_args(plan: Plan) -> Vec<String> {
        vec!["-t".into(), plan.seconds().to_string()]
    }

    /// Client arguments for 64-byte UDP datagrams as fast as possible.
    pub fn small_udp_args(plan: Plan) -> Vec<String> {
        ["-u", "-l", "64", "-b", "0", "-t"]
            .map(str::to_owned)
            .into_iter()
            .chain([plan.seconds().to_string()])
            .collect()
    }

    /// Runs the client in the node; returns iperf3's JSON report.
    pub fn client(&self, bed: &Testbed, args: &[String]) -> Result<Value> {
        self.client_in(&bed.node, args)
    }

    /// Runs the client in `ns` (the node, or a pod behind it); returns iperf3's JSON
    /// report.
    pub fn client_in(&self, ns: &NetNs, args: &[String]) -> Result<Value> {
        let mut all = vec!["-c".to_owned(), INTERNET_V4.to_string(), "-J".to_owned()];
        all.extend(args.iter().cloned());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        // iperf3 refuses a new test while the server finishes the last one.
        for _ in 0..20 {
            match ns.exec("iperf3", &all) {
                Ok(out) => return serde_json::from_str(&out).context("iperf3 -J output"),
                Err(err) if err.to_string().contains("busy") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
        bail!("the iperf3 server stayed busy")
    }
}

/// A pod behind the node, as in Cilium's ENI mode: its own namespace on a veth
/// whose node end is not monitored; the node forwards its traffic out of `ens5`
/// (no socket on the node), and the router routes the pod subnet back by the node.
pub struct Pod {
    /// The pod's namespace (dropped last: it takes the veth with it).
    pub ns: NetNs,
}

impl Pod {
    const SUBNET: &str = "10.200.0.0/24";

    /// Creates the pod and its routes.
    pub fn attach(bed: &Testbed) -> Result<Self> {
        let ns = NetNs::new("pod")?;
        routemon_testbed::netns::veth_pair(&ns, "eth0", &bed.node, "vethpod")?;
        ns.ip(&["addr", "add", "10.200.0.2/24", "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", "10.200.0.1"])?;
        bed.node
            .ip(&["addr", "add", "10.200.0.1/24", "dev", "vethpod"])?;
        bed.node.ip(&["link", "set", "vethpod", "up"])?;
        bed.node.sysctl(&["net.ipv4.ip_forward=1"])?;
        let ens5 = bed.uplink("ens5");
        bed.router.ip(&[
            "route",
            "add",
            Self::SUBNET,
            "via",
            &ens5.addr4.to_string(),
            "dev",
            &ens5.router_side,
        ])?;
        Ok(Self { ns })
    }
}

/// TCP goodput in Gbit/s from an iperf3 report.
fn tcp_gbps(report: &Value) -> Result<f64> {
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("no sum_received in the iperf3 report")
}

/// Datagrams per second sent, from an iperf3 UDP report.
fn udp_pps(report: &Value) -> Result<f64> {
    let sum = &report["end"]["sum"];
    let packets = sum["packets"].as_f64().context("no UDP packet count")?;
    let seconds = sum["seconds"].as_f64().context("no UDP duration")?;
    Ok(packets / seconds)
}

/// Adds `/32` routes via `dev` in 100.64.0.0/10 so the node has `to` of them
/// (from `from`), with `ip -batch`.
pub fn fill_routes(ns: &NetNs, dev: &str, from: usize, to: usize) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut batch = String::with_capacity((to - from) * 40);
    for i in from..to {
        let addr = Ipv4Addr::from(base + u32::try_from(i).context("route count")?);
        batch.push_str(&format!("route add {addr}/32 dev {dev}\n"));
    }
    let path = std::env::temp_dir().join(format!("{}-routes.batch", ns.name()));
    std::fs::write(&path, batch)?;
    let result = ns.ip(&["-batch", path.to_str().context("path")?]);
    let _ = std::fs::remove_file(&path);
    result.map(drop)
}

/// Fills routemon's ingress flow table (65 536 entries): 70 000 datagrams from
/// distinct source ports arrive on the node's ens5.
pub fn fill_flow_table(bed: &Testbed) -> Result<()> {
    let node = bed.uplink("ens5").addr4;
    let script = format!(
        "import socket\n\
         for port in range(0, 70000):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('{INTERNET_V4}', 0))\n\
         \x20   s.sendto(b'x', ('{node}', 10000 + port % 50000))\n\
         \x20   s.close()\n"
    );
    bed.router.exec("python3", &["-c", &script]).map(drop)
}

/// One way of counting traffic that an SRE could choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counting {
    /// Nothing attached: the physical limit here.
    None,
    /// `routemon watch`.
    Routemon,
    /// nftables `counter` rules per interface and per route.
    Nftables,
}

impl Counting {
    // A plain tc filter with counting actions would be a fourth baseline, but this
    // kernel has no cls_matchall, cls_u32, cls_flower or act_gact to build one.
    const ALL: [Self; 3] = [Self::None, Self::Routemon, Self::Nftables];

    fn name(self) -> &'static str {
        match self {
            Self::None => "no program",
            Self::Routemon => "routemon",
            Self::Nftables => "nftables counters",
        }
    }
}

/// Whatever a [`Counting`] set up; undone on drop.
enum Installed<'a> {
    Nothing,
    /// Killed on drop (its TCX links go with it).
    Routemon {
        _watch: Box<Watch>,
    },
    Nftables(&'a NetNs),
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        match self {
            Self::Nothing | Self::Routemon { .. } => {}
            Self::Nftables(ns) => {
                let _ = ns.exec("nft", &["delete", "table", "inet", "routemon_bench"]);
            }
        }
    }
}

fn install(counting: Counting, bed: &Testbed) -> Result<Installed<'_>> {
    Ok(match counting {
        Counting::None => Installed::Nothing,
        Counting::Routemon => Installed::Routemon {
            _watch: Box::new(Watch::start(
                &net_launcher(&bed.node),
                &["--ephemeral", "--no-listen", "-i", "ens5"],
            )?),
        },
        Counting::Nftables => {
            // What routemon counts, as rules: the interface both ways and each of
            // its routes on egress.
            let routes = bed.node.ip(&["-4", "route", "show", "dev", "ens5"])?;
            let mut egress = String::from("oifname \"ens5\" counter\n");
            for line in routes.lines() {
                let dst = line.split(' ').next().unwrap_or_default();
                let dst = if dst == "default" { "0.0.0.0/0" } else { dst };
                egress.push_str(&format!("oifname \"ens5\" ip daddr {dst} counter\n"));
            }
            let ruleset = format!(
                "table inet routemon_bench {{\n\
                   chain egress {{ type filter hook postrouting priority 0; policy accept;\n{egress}}}\n\
                   chain ingress {{ type filter hook prerouting priority 0; policy accept;\n\
                     iifname \"ens5\" counter\n}}\n\
                 }}\n"
            );
            let path: PathBuf = std::env::temp_dir().join(format!("{}-bench.nft", bed.node.name()));
            std::fs::write(&path, ruleset)?;
            let result = bed
                .node
                .exec("nft", &["-f", path.to_str().context("path")?]);
            let _ = std::fs::remove_file(&path);
            result?;
            Installed::Nftables(&bed.node)
        }
    })
}

/// TCP stream and small-packet UDP rate with each way of counting, interleaved.
pub fn throughput(plan: Plan) -> Result<Vec<Figure>> {
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1024)], false)?;
    let iperf = Iperf::serve(&bed)?;
    let mut tcp: Vec<Vec<f64>> = vec![Vec::new(); Counting::ALL.len()];
    let mut udp: Vec<Vec<f64>> = vec![Vec::new(); Counting::ALL.len()];
    // Ratios per round: each variant against the no-program run of the same round.
    let mut tcp_ratio: Vec<Vec<f64>> = vec![Vec::new(); Counting::ALL.len()];
    let mut udp_ratio: Vec<Vec<f64>> = vec![Vec::new(); Counting::ALL.len()];
    for round in 0..plan.throughput_rounds() {
        let mut round_tcp = [0.0; Counting::ALL.len()];
        let mut round_udp = [0.0; Counting::ALL.len()];
        for k in 0..Counting::ALL.len() {
            // Rotate the order each round so no variant always runs first.
            let i = (k + round) % Counting::ALL.len();
            let installed = install(Counting::ALL[i], &bed)?;
            round_tcp[i] = tcp_gbps(&iperf.client(&bed, &Iperf::tcp_args(plan))?)?;
            round_udp[i] = udp_pps(&iperf.client(&bed, &Iperf::small_udp_args(plan))?)?;
            drop(installed);
            tcp[i].push(round_tcp[i]);
            udp[i].push(round_udp[i]);
        }
        for i in 0..Counting::ALL.len() {
            tcp_ratio[i].push(round_tcp[i] / round_tcp[0]);
            udp_ratio[i].push(round_udp[i] / round_udp[0]);
        }
    }
    let mut figures = Vec::new();
    for (i, counting) in Counting::ALL.iter().enumerate() {
        figures.push(Figure::new(
            "throughput",
            format!("TCP stream, {}", counting.name()),
            Stats::of(&tcp[i]),
            "Gbit/s",
        ));
        figures.push(Figure::new(
            "throughput",
            format!("64 B UDP, {}", counting.name()),
            Stats::of(&udp[i]),
            "packets/s",
        ));
        if i == 0 {
            continue;
        }
        for (traffic, ratios, target) in [
            ("TCP", &tcp_ratio[i], TCP_RATIO_TARGET),
            ("64 B UDP", &udp_ratio[i], UDP_RATIO_TARGET),
        ] {
            let ratio = Figure::new(
                "throughput",
                format!("{traffic} ratio to no program, {}", counting.name()),
                Stats::of(ratios),
                "ratio",
            );
            if let Some(note) = resolution(&ratio.stats) {
                println!("bench: {traffic} ratio, {}: {note}", counting.name());
            }
            figures.push(if *counting == Counting::Routemon {
                ratio.at_least(target)
            } else {
                ratio
            });
        }
    }
    Ok(figures)
}

/// Throughput ratios routemon must reach against no program.
const TCP_RATIO_TARGET: f64 = 0.98;
const UDP_RATIO_TARGET: f64 = 0.97;
/// The difference the throughput comparison is meant to resolve.
const RESOLUTION: f64 = 0.03;

/// A sentence when the rounds cannot tell a [`RESOLUTION`] difference from noise:
/// fewer than 7 of them, or their spread (max − min) over twice the resolution.
fn resolution(stats: &Stats) -> Option<String> {
    let spread = stats.max - stats.min;
    (stats.runs < 7 || spread / 2.0 > RESOLUTION).then(|| {
        format!(
            "{} rounds spread {:.3}–{:.3}: a {:.0} % difference is not distinguishable from \
             noise in this run",
            stats.runs,
            stats.min,
            stats.max,
            RESOLUTION * 100.0
        )
    })
}

/// RSS and CPU of `routemon watch` while 100 000 packets/s leave by the interface.
pub fn footprint(plan: Plan) -> Result<Vec<Figure>> {
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1024)], false)?;
    let iperf = Iperf::serve(&bed)?;
    let watch = Watch::start(&net_launcher(&bed.node), &["--ephemeral", "-i", "ens5"])?;
    let pid = watch.pid();
    let seconds = if plan.quick { 5 } else { 60 };
    // 100 000 datagrams/s of 64 bytes: 51.2 Mbit/s of payload.
    let args: Vec<String> = ["-u", "-l", "64", "-b", "51.2M", "-t", &seconds.to_string()]
        .map(str::to_owned)
        .to_vec();
    let ticks_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let sampler = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut rss = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(kib) = proc_status_kib(pid, "VmRSS:") {
                    rss.push(kib as f64 / 1024.0);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            rss
        });
        (stop, handle)
    };
    let report = iperf.client(&bed, &args)?;
    let elapsed = started.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid)? - ticks_before;
    sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let rss = sampler
        .1
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    watch.stop_cleanly()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_percent = ticks as f64 / hz / elapsed * 100.0;
    let pps = udp_pps(&report)?;
    Ok(vec![
        Figure::new("footprint", "offered load", Stats::of(&[pps]), "packets/s"),
        Figure::new(
            "footprint",
            format!("daemon RSS over {seconds} s"),
            Stats::of(&rss),
            "MiB",
        )
        .at_most(20.0),
        Figure::new(
            "footprint",
            format!("daemon CPU over {seconds} s"),
            Stats::of(&[cpu_percent]),
            "% of a core",
        )
        .at_most(1.0),
    ])
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_or_short_series_is_said_to_be_unresolved() {
        let tight: Vec<f64> = (0..7).map(|i| 0.97 + f64::from(i) * 0.005).collect();
        assert!(resolution(&Stats::of(&tight)).is_none());
        let wide: Vec<f64> = (0..7).map(|i| 0.85 + f64::from(i) * 0.03).collect();
        assert!(
            resolution(&Stats::of(&wide))
                .unwrap()
                .contains("not distinguishable")
        );
        assert!(resolution(&Stats::of(&tight[..2])).is_some());
    }
}
