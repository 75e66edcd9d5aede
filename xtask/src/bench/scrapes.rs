//! The metrics endpoint under load: scrape latency at 1, 50 and 200 concurrent
//! scrapers, and how long a routing change takes to become a finding while 200
//! scrapers hammer the endpoint, next to the same without them (interleaved).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use routemon_testbed::{
    Testbed,
    watch::{Watch, net_launcher},
};

use super::{Figure, Plan, Stats, traffic::fill_routes};

/// Where `watch` serves in the bench.
const ADDR: &str = "127.0.0.1:9987";
/// Routes on ens5, so that the exposition has the size (about 95 KB).
const ROUTES: usize = 300;

/// A scraper thread: it returns its latencies (ms) and how many scrapes failed.
type Scraper = JoinHandle<Result<(Vec<f64>, usize)>>;

/// One scrape: connect, `GET /metrics`, read to the end; its duration, or `None`
/// when it failed or was refused.
fn scrape(addr: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    response
        .starts_with(b"HTTP/1.1 200")
        .then(|| started.elapsed())
}

/// `clients` scrapers in the node's namespace, each scraping in a loop until
/// `stop`; each returns its latencies (ms) and its failures.
fn scrapers(bed: &Testbed, clients: usize, stop: &Arc<AtomicBool>) -> Result<Vec<Scraper>> {
    let addr: SocketAddr = ADDR.parse()?;
    (0..clients)
        .map(|_| {
            let stop = Arc::clone(stop);
            bed.node.spawn_in(move || {
                let (mut latencies, mut failed) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    match scrape(addr) {
                        Some(took) => latencies.push(took.as_secs_f64() * 1e3),
                        None => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect()
}

fn collect(handles: Vec<Scraper>) -> Result<(Vec<f64>, usize)> {
    let (mut all, mut failed) = (Vec::new(), 0);
    for handle in handles {
        let (latencies, f) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a scraper panicked"))??;
        all.extend(latencies);
        failed += f;
    }
    Ok((all, failed))
}

/// Milliseconds from a route change that makes a tie to the `finding_raised`
/// event, over `trials` changes.
fn detection(bed: &Testbed, watch: &mut Watch, trials: usize) -> Result<Vec<f64>> {
    let gateway = bed.uplink("ens6").gw4.to_string();
    let mut latencies = Vec::new();
    for _ in 0..trials {
        watch.forget();
        bed.delete_default("ens6", &gateway, 1000)?;
        let changed = SystemTime::now();
        bed.set_default("ens6", &gateway, 1024)?;
        let raised = watch.wait_for("the tie", Duration::from_secs(10), |e| {
            e["event"] == "finding_raised"
        })?;
        let at = humantime::parse_rfc3339(raised["ts"].as_str().context("ts")?)?;
        latencies.push(at.duration_since(changed).unwrap_or_default().as_secs_f64() * 1e3);
        bed.delete_default("ens6", &gateway, 1024)?;
        bed.set_default("ens6", &gateway, 1000)?;
        watch.wait_for("the tie to clear", Duration::from_secs(10), |e| {
            e["event"] == "finding_cleared"
        })?;
    }
    Ok(latencies)
}

/// The section: scrape latency per concurrency, then detection latency idle and
/// under a 200-scraper storm, in interleaved rounds.
pub fn under_load(plan: Plan) -> Result<Vec<Figure>> {
    let seconds = if plan.quick { 1 } else { 5 };
    let bed = Testbed::ens5_ens6(1024, 1000)?;
    fill_routes(&bed.node, "ens5", 0, ROUTES)?;
    let mut watch = Watch::start(&net_launcher(&bed.node), &["--ephemeral", "--listen", ADDR])?;
    let mut figures = Vec::new();
    for clients in [1, 50, 200] {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = scrapers(&bed, clients, &stop)?;
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        let (latencies, failed) = collect(handles)?;
        let answered = latencies.len();
        println!("  {clients} scrapers: {answered} scrapes answered 200, {failed} not");
        for p in [50.0, 99.0] {
            figures.push(Figure::new(
                "scrapes",
                format!("latency p{p} at {clients} concurrent scrapers ({answered} scrapes)"),
                Stats::of(&[Stats::percentile(&latencies, p)]),
                "ms",
            ));
        }
    }

    let (rounds, trials) = if plan.quick { (1, 10) } else { (3, 30) };
    let (mut idle, mut storm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        idle.extend(detection(&bed, &mut watch, trials)?);
        let stop = Arc::new(AtomicBool::new(false));
        let handles = scrapers(&bed, 200, &stop)?;
        std::thread::sleep(Duration::from_millis(500));
        let measured = detection(&bed, &mut watch, trials);
        stop.store(true, Ordering::Relaxed);
        collect(handles)?;
        storm.extend(measured?);
    }
    watch.stop_cleanly()?;
    let (idle_p99, storm_p99) = (
        Stats::percentile(&idle, 99.0),
        Stats::percentile(&storm, 99.0),
    );
    let limit = (2.0 * idle_p99).max(idle_p99 + 5.0);
    figures.push(Figure::new(
        "scrapes",
        format!("netlink → finding p99, idle ({} trials)", idle.len()),
        Stats::of(&[idle_p99]),
        "ms",
    ));
    figures.push(
        Figure::new(
            "scrapes",
            format!(
                "netlink → finding p99 under 200 scrapers ({} trials; target max(2 × idle, idle + 5 ms))",
                storm.len()
            ),
            Stats::of(&[storm_p99]),
            "ms",
        )
        .at_most((limit * 10.0).round() / 10.0),
    );
    Ok(figures)
}
