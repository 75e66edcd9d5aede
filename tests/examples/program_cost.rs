//! The cost of routemon's TC programs alone, measured in the kernel with
//! `BPF_PROG_TEST_RUN`: no network stack, no traffic generator, no BPF statistics
//! around them, so the figures are the programs' own (and an empty program's time
//! says what any TC program costs here).
//!
//! Runs in a private network namespace it creates (the routes go on its loopback,
//! which is the device of every test run), and prints one JSON object per case:
//! `{"program", "frame", "routes", "flow_table", "ns": [mean ns of each round]}`.
//! Programs: `empty`, the references `ref_iface_array` and `ref_flow_lookup` (the
//! floor of a flow-tracking monitor, `routemon::ebpf::reference`), `routemon_tx`
//! and `routemon_rx`, interleaved round by round; and the ablation (`flow_table`
//! `"ablation"`): `routemon_tx@<level>`/`routemon_rx@<level>` with only the
//! interfaces, + routes, + flows features, next to the whole programs.
//!
//! `cargo xtask bench` runs it; by hand (as root):
//! `cargo run --release -p routemon-testbed --example program_cost -- --routes 10 --routes 100000`.

use std::{collections::BTreeSet, net::Ipv4Addr, os::fd::AsFd as _, process::Command};

use anyhow::{Context as _, Result, bail};
use monitor_common::{FEATURES_FLOWS, FEATURES_INTERFACES, FEATURES_ROUTES};
use routemon::{
    attribution::AttributionPlan,
    ebpf::{
        Monitor,
        reference::{Reference, ReferenceProgram},
        test_run::{load_empty_classifier, test_run},
    },
    model::{Link, dump::Netlink},
};
use routemon_testbed::frames;

/// Where the measured egress frames go: covered by the default route only.
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The namespace's own address (lo's), the source of egress frames.
const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Distinct flows sent through ingress to fill the flow table (it holds 65 536).
const FLOWS_TO_FILL: u16 = 65_535;

struct Options {
    routes: Vec<usize>,
    rounds: usize,
    repeat: u32,
}

fn options() -> Result<Options> {
    let mut options = Options {
        routes: Vec::new(),
        rounds: 5,
        repeat: 200_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--routes" => options.routes.push(value()?.parse()?),
            "--rounds" => options.rounds = value()?.parse()?,
            "--repeat" => options.repeat = value()?.parse()?,
            other => bail!("unknown argument {other}; see the source's doc comment"),
        }
    }
    if options.routes.is_empty() {
        options.routes = vec![10, 1_000, 100_000];
    }
    Ok(options)
}

fn main() -> Result<()> {
    let options = options()?;
    // SAFETY: called before any thread exists; the process gets its own namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET); run as root");
    }
    ip(&["link", "set", "lo", "up"])?;
    ip(&["route", "add", "default", "dev", "lo"])?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(measure_all(&options))
}

async fn measure_all(options: &Options) -> Result<()> {
    let empty = load_empty_classifier().context("loading the empty program")?;
    let references = References {
        interface: ReferenceProgram::load(Reference::InterfaceCounter)
            .context("loading the interface-counter reference")?,
        flow: ReferenceProgram::load(Reference::FlowLookup)
            .context("loading the flow-lookup reference")?,
    };
    let netlink = Netlink::connect()?;
    let mut installed = 1; // the default route
    for &routes in &options.routes {
        add_host_routes(installed, routes)?;
        installed = installed.max(routes);
        let model = netlink.dump().await?;
        let monitored = BTreeSet::from([1]);
        let plan = AttributionPlan::build(&model, &monitored);
        let lo: Vec<&Link> = model.links.get(&1).into_iter().collect();
        let owners: Vec<_> = model.owned_addresses(|i| i == 1).collect();
        let monitor = Monitor::load(&plan, &lo, &owners)?;
        if routes == options.routes[0] {
            for program in ["routemon_tx", "routemon_rx"] {
                let (xlated, jited, verified) = monitor.program_size(program)?;
                let line = serde_json::json!({
                    "program": program, "xlated_bytes": xlated, "jited_bytes": jited,
                    "verified_insns": verified,
                });
                println!("{line}");
            }
        }
        // The ablation: the same programs with only some features.
        let ablated: Vec<(&'static str, Monitor)> = [
            ("interfaces", FEATURES_INTERFACES),
            ("routes", FEATURES_ROUTES),
            ("flows", FEATURES_FLOWS),
        ]
        .into_iter()
        .map(|(name, features)| {
            Monitor::load_with_features(&plan, &lo, &owners, features).map(|m| (name, m))
        })
        .collect::<Result<_, _>>()?;

        let frames = [
            ("64 B UDP", udp_frame(LOCAL, REMOTE, 40_000, 5201, 64)),
            ("MTU TCP", tcp_frame(LOCAL, REMOTE, 40_000, 5201, 1514)),
        ];
        let report = |program: &str, frame: &str, flow_table: &str, ns: Vec<u32>| {
            let line = serde_json::json!({
                "program": program, "frame": frame, "routes": plan.entries.len(),
                "flow_table": flow_table, "ns": ns,
            });
            println!("{line}");
        };
        for (name, frame) in &frames {
            let reply = reversed(frame);
            let cases = [
                ("empty", frame.as_slice()),
                (Reference::InterfaceCounter.name(), frame),
                (Reference::FlowLookup.name(), frame),
                ("routemon_tx", frame),
                ("routemon_rx", &reply),
            ];
            for (program, ns) in interleaved(&monitor, &empty, &references, &cases, options)? {
                report(program, name, "empty", ns);
            }
        }
        // Ablation, 64 B UDP: each feature level's egress and ingress, in the same
        // rounds as the empty program and the whole programs.
        let (name, frame) = &frames[0];
        let reply = reversed(frame);
        let mut rounds: Vec<(String, Vec<u32>)> = Vec::new();
        for _ in 0..options.rounds {
            let mut round = vec![
                (
                    "empty".to_owned(),
                    test_run(empty.as_fd(), frame, options.repeat)?,
                ),
                (
                    "routemon_tx".to_owned(),
                    monitor.test_run("routemon_tx", frame, options.repeat)?,
                ),
                (
                    "routemon_rx".to_owned(),
                    monitor.test_run("routemon_rx", &reply, options.repeat)?,
                ),
            ];
            for (level, ablated) in &ablated {
                round.push((
                    format!("routemon_tx@{level}"),
                    ablated.test_run("routemon_tx", frame, options.repeat)?,
                ));
                round.push((
                    format!("routemon_rx@{level}"),
                    ablated.test_run("routemon_rx", &reply, options.repeat)?,
                ));
            }
            for (i, (program, run)) in round.into_iter().enumerate() {
                if rounds.len() <= i {
                    rounds.push((program, Vec::new()));
                }
                rounds[i].1.push(run.mean_ns);
            }
        }
        for (program, ns) in rounds {
            report(&program, name, "ablation", ns);
        }
        // Full flow table: egress looks up its flow among 65 536 others.
        for port in 0..FLOWS_TO_FILL {
            let frame = udp_frame(REMOTE, LOCAL, 1024 + port % 60_000, port, 64);
            monitor.test_run("routemon_rx", &frame, 1)?;
        }
        let (name, frame) = &frames[0];
        let cases = [("empty", frame.as_slice()), ("routemon_tx", frame)];
        for (program, ns) in interleaved(&monitor, &empty, &references, &cases, options)? {
            report(program, name, "full", ns);
        }
    }
    Ok(())
}

/// The reference programs: the floor of a flow-tracking monitor, measured in the
/// same rounds as routemon's programs.
struct References {
    interface: ReferenceProgram,
    flow: ReferenceProgram,
}

/// Runs each (program, frame) case once per round, the cases interleaved round
/// by round so that machine noise hits them alike; `empty` is the empty program.
fn interleaved(
    monitor: &Monitor,
    empty: &std::os::fd::OwnedFd,
    references: &References,
    cases: &[(&'static str, &[u8])],
    options: &Options,
) -> Result<Vec<(&'static str, Vec<u32>)>> {
    let mut out: Vec<(&'static str, Vec<u32>)> =
        cases.iter().map(|(p, _)| (*p, Vec::new())).collect();
    let interface = Reference::InterfaceCounter.name();
    let flow = Reference::FlowLookup.name();
    for _ in 0..options.rounds {
        for ((program, frame), (_, ns)) in cases.iter().zip(&mut out) {
            let run = match *program {
                "empty" => test_run(empty.as_fd(), frame, options.repeat)?,
                p if p == interface => test_run(references.interface.fd(), frame, options.repeat)?,
                p if p == flow => test_run(references.flow.fd(), frame, options.repeat)?,
                program => monitor.test_run(program, frame, options.repeat)?,
            };
            ns.push(run.mean_ns);
        }
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<()> {
    let status = Command::new("ip")
        .args(args)
        .status()
        .context("running ip")?;
    anyhow::ensure!(status.success(), "ip {} failed", args.join(" "));
    Ok(())
}

/// Adds /32 routes via lo in 100.64.0.0/10 so that the table has `to` of them.
fn add_host_routes(from: usize, to: usize) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut batch = String::new();
    for i in from..to {
        let addr = Ipv4Addr::from(base + u32::try_from(i)?);
        batch.push_str(&format!("route add {addr}/32 dev lo\n"));
    }
    let path = std::env::temp_dir().join(format!("program-cost-{}.batch", std::process::id()));
    std::fs::write(&path, batch)?;
    let result = ip(&["-batch", path.to_str().context("temp path")?]);
    let _ = std::fs::remove_file(&path);
    result
}

/// A UDP datagram with `payload` bytes of data from `src` to `dst`.
fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let datagram = frames::udp(sport, dport, payload);
    frames::ethernet(
        0x0800,
        &frames::ipv4(5, 17, 0, src.octets(), dst.octets(), &datagram),
    )
}

/// A TCP segment in a frame of `len` bytes.
fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let segment = frames::tcp(sport, dport, len - 14 - 20 - 20);
    frames::ethernet(
        0x0800,
        &frames::ipv4(5, 6, 0, src.octets(), dst.octets(), &segment),
    )
}

/// The same frame in the other direction (addresses and ports swapped).
fn reversed(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[26..30].copy_from_slice(&frame[30..34]);
    out[30..34].copy_from_slice(&frame[26..30]);
    out[34..36].copy_from_slice(&frame[36..38]);
    out[36..38].copy_from_slice(&frame[34..36]);
    out
}
