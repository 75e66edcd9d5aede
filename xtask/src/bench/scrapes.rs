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
///
/// The measured change is sent on a netlink socket of the node's namespace, timed
/// at the `send` (the kernel applies it and notifies inside that call): an `ip`
/// process would add its own start-up, which under 200 scraper threads on two
/// cores is milliseconds of the bench's, not routemon's.
pub(super) fn detection(bed: &Testbed, watch: &mut Watch, trials: usize) -> Result<Vec<f64>> {
    let gateway = bed.uplink("ens6").gw4;
    let ifindex = u32::try_from(routemon_testbed::kernel::ifindex(&bed.node, "ens6")?)?;
    let netlink = bed
        .node
        .spawn_in(RouteSocket::open)?
        .join()
        .map_err(|_| anyhow::anyhow!("the netlink socket's thread panicked"))???;
    let gateway_text = gateway.to_string();
    let mut latencies = Vec::new();
    for _ in 0..trials {
        watch.forget();
        bed.delete_default("ens6", &gateway_text, 1000)?;
        let changed = netlink.append_default(gateway, ifindex, 1024)?;
        let raised = watch.wait_for("the tie", Duration::from_secs(10), |e| {
            e["event"] == "finding_raised"
        })?;
        let at = humantime::parse_rfc3339(raised["ts"].as_str().context("ts")?)?;
        latencies.push(at.duration_since(changed).unwrap_or_default().as_secs_f64() * 1e3);
        bed.delete_default("ens6", &gateway_text, 1024)?;
        bed.set_default("ens6", &gateway_text, 1000)?;
        watch.wait_for("the tie to clear", Duration::from_secs(10), |e| {
            e["event"] == "finding_cleared"
        })?;
    }
    Ok(latencies)
}

/// A netlink route socket (opened in a namespace, it stays in that namespace).
struct RouteSocket(std::os::fd::OwnedFd);

impl RouteSocket {
    fn open() -> Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        anyhow::ensure!(
            fd >= 0,
            "netlink socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a descriptor just returned by socket(2), owned by nothing else.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// `ip route append default via gateway dev ifindex metric metric proto dhcp`:
    /// returns the time just before the request was sent, once the kernel acked it.
    fn append_default(
        &self,
        gateway: std::net::Ipv4Addr,
        ifindex: u32,
        metric: u32,
    ) -> Result<SystemTime> {
        use std::os::fd::AsRawFd as _;
        /// rtattr types of include/uapi/linux/rtnetlink.h.
        const RTA_OIF: u16 = 4;
        const RTA_GATEWAY: u16 = 5;
        const RTA_PRIORITY: u16 = 6;
        const RTPROT_DHCP: u8 = 16;
        let mut body = vec![
            libc::AF_INET as u8, // rtm_family
            0,                   // rtm_dst_len: default
            0,                   // rtm_src_len
            0,                   // rtm_tos
            libc::RT_TABLE_MAIN,
            RTPROT_DHCP,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
            0,
            0,
            0,
            0, // rtm_flags
        ];
        for (kind, value) in [
            (RTA_GATEWAY, gateway.octets()),
            (RTA_OIF, ifindex.to_ne_bytes()),
            (RTA_PRIORITY, metric.to_ne_bytes()),
        ] {
            body.extend_from_slice(&8u16.to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(&value);
        }
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_APPEND;
        let mut message = Vec::with_capacity(16 + body.len());
        message.extend_from_slice(&u32::try_from(16 + body.len())?.to_ne_bytes());
        message.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
        message.extend_from_slice(&u16::try_from(flags)?.to_ne_bytes());
        message.extend_from_slice(&[0; 8]); // sequence and port id
        message.extend_from_slice(&body);
        let sent_at = SystemTime::now();
        // SAFETY: a valid socket and a buffer of the given length.
        let sent = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        anyhow::ensure!(
            sent >= 0,
            "sending the route: {}",
            std::io::Error::last_os_error()
        );
        let mut ack = [0u8; 1024];
        // SAFETY: a valid socket and a buffer of the given length.
        let got = unsafe { libc::recv(self.0.as_raw_fd(), ack.as_mut_ptr().cast(), ack.len(), 0) };
        // NLMSG_ERROR (2) with error 0 is the ack.
        anyhow::ensure!(
            got >= 20 && u16::from_ne_bytes([ack[4], ack[5]]) == 2,
            "no netlink ack for the route"
        );
        let error = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
        anyhow::ensure!(
            error == 0,
            "the kernel refused the route: {}",
            std::io::Error::from_raw_os_error(-error)
        );
        Ok(sent_at)
    }
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
