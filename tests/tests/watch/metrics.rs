//! The Prometheus metrics: what a real Prometheus server and promtool make of them,
//! and the metrics endpoint under slow and malformed clients.

use std::time::{Duration, Instant};

use routemon_testbed::{
    Testbed, UplinkSpec,
    cmd::require_root,
    eks::{EksNode, Eni, wait_until},
    netns::NetNs,
    traffic::send_udp,
    watch::{PinDir, Watch, sample, scrape},
};
use serde_json::Value;

use crate::{EVENT_TIMEOUT, egress_packets, two_uplinks_watched, udp};

/// Test 2: a real Prometheus server scrapes routemon; PromQL over its API returns
/// each ENI's egress rate and the finding gauge; `promtool check metrics` passes.
#[test]
fn prometheus_scrapes_rates_and_findings_and_promtool_accepts_the_metrics() {
    require_root();
    let mut eks = EksNode::boot("ens*", "ens5").unwrap();
    let ens6 = eks.attach_eni("ens6").unwrap();
    let ens5 = eks.enis[0].clone();
    let pins = PinDir::new();
    let mut watch = Watch::start(&eks.launcher(), &["--bpffs-dir", &pins.arg()]).unwrap();
    watch
        .wait_for("the tie", EVENT_TIMEOUT, |e| e["event"] == "finding_raised")
        .unwrap();

    check_promtool_accepts(&scrape(&eks.node).unwrap());

    let prometheus = Prometheus::start(&eks).unwrap();
    send_steady_traffic(&eks, &ens5, &ens6);
    check_egress_rates(&prometheus, &eks);
    println!(
        "daemon RSS after the traffic: {} KiB",
        watch.rss_kib().unwrap()
    );
    check_the_table_fill(&eks);
    let finding = prometheus
        .query(
            &eks.node,
            "routemon_finding{kind=\"equal_metric_default_routes\"}",
        )
        .unwrap();
    assert_eq!(finding.len(), 1, "{finding:?}");
    assert_eq!(finding[0]["metric"]["interfaces"], "ens5,ens6");
    assert_eq!(finding[0]["value"][1], "1");
    drop(prometheus);
    watch.stop_cleanly().unwrap();
}

/// `promtool check metrics` passes on `metrics`.
fn check_promtool_accepts(metrics: &str) {
    let check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(metrics.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics failed:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Steady traffic out of both ENIs for 8 s while Prometheus scrapes every second:
/// 100 datagrams by ens5 and 200 by ens6 per ~100 ms round.
fn send_steady_traffic(eks: &EksNode, ens5: &Eni, ens6: &Eni) {
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        send_udp(&eks.node, &udp(ens5.gateway.into(), "ens5", 100)).unwrap();
        send_udp(&eks.node, &udp(ens6.gateway.into(), "ens6", 200)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PromQL's egress rate of each ENI reflects the traffic sent.
fn check_egress_rates(prometheus: &Prometheus, eks: &EksNode) {
    let rates = prometheus
        .query(
            &eks.node,
            "rate(routemon_interface_egress_packets_total[5s])",
        )
        .unwrap();
    let rate_of = |interface: &str| {
        rates
            .iter()
            .find(|r| r["metric"]["interface"] == interface)
            .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no rate for {interface}: {rates:?}"))
    };
    let (rate5, rate6) = (rate_of("ens5"), rate_of("ens6"));
    println!("PromQL egress rates: ens5 {rate5:.0}/s, ens6 {rate6:.0}/s");
    // 100 and 200 datagrams per ~100 ms round: ens6 carries about twice ens5's.
    assert!(rate5 > 100.0 && rate6 > 200.0, "{rates:?}");
    assert!(rate6 > rate5 * 1.3, "{rates:?}");
}

/// The bounded tables report their fill (re-read at most every 10 s): the
/// datagrams and the gateways' ICMP replies are flows.
fn check_the_table_fill(eks: &EksNode) {
    let mut after = String::new();
    wait_until(Duration::from_secs(15), "the flow table's fill", || {
        after = scrape(&eks.node).unwrap();
        sample(&after, "routemon_table_entries", &[("table", "flows")]) >= Some(1.0)
    })
    .unwrap();
    let table = |name: &str, table: &str| sample(&after, name, &[("table", table)]);
    assert_eq!(table("routemon_table_capacity", "flows"), Some(65_536.0));
    assert_eq!(table("routemon_table_evictions_total", "flows"), Some(0.0));
    assert!(
        sample(
            &after,
            "routemon_samples_total",
            &[("outcome", "suppressed")]
        )
        .is_some()
    );
}

/// A real Prometheus scrapes `watch` over HTTPS with basic authentication, as the
/// exporter toolkit's web configuration asks: the right password gets the metrics,
/// a wrong one and plain HTTP get nothing, and routemon counts both refusals.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    require_root();
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1000)], false).unwrap();
    let pki = Pki::new();
    let dir = tempdir::Dir(std::env::temp_dir().join(format!("{}-web", bed.node.name())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("server.crt"), &pki.server_cert).unwrap();
    std::fs::write(dir.0.join("server.key"), &pki.server_key).unwrap();
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    let web = dir.0.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let pins = PinDir::new();
    let watch = Watch::start(
        &routemon_testbed::watch::net_launcher(&bed.node),
        &[
            "--bpffs-dir",
            &pins.arg(),
            "--web-config-file",
            web.to_str().unwrap(),
        ],
    )
    .unwrap();
    let job = |name: &str, password: &str| {
        [
            format!("  - job_name: {name}"),
            "    scheme: https".to_owned(),
            "    tls_config:".to_owned(),
            "      ca_file: $DIR/ca.crt".to_owned(),
            "      server_name: localhost".to_owned(),
            "    basic_auth:".to_owned(),
            "      username: prometheus".to_owned(),
            format!("      password: {password}"),
            "    static_configs:".to_owned(),
            "      - targets: ['127.0.0.1:9987']\n".to_owned(),
        ]
        .join("\n")
    };
    let plain = "  - job_name: plain\n    static_configs:\n      - targets: ['127.0.0.1:9987']\n";
    let prometheus = Prometheus::start_with(
        &bed.node,
        &format!("{}{}{plain}", job("tls", "s3cret"), job("wrong", "guess")),
        &[("ca.crt", pki.ca_cert.as_bytes())],
    )
    .unwrap();
    let up = |job: &str| -> Option<String> {
        let result = prometheus
            .query(&bed.node, &format!("up{{job=\"{job}\"}}"))
            .ok()?;
        result.first()?["value"][1].as_str().map(str::to_owned)
    };
    wait_until(Duration::from_secs(30), "every job scraped once", || {
        ["tls", "wrong", "plain"].iter().all(|j| up(j).is_some())
    })
    .unwrap();
    assert_eq!(
        up("tls").as_deref(),
        Some("1"),
        "the right password over TLS"
    );
    assert_eq!(up("wrong").as_deref(), Some("0"), "a wrong password");
    assert_eq!(up("plain").as_deref(), Some("0"), "plain HTTP");
    let build = prometheus
        .query(&bed.node, "routemon_build_info{job=\"tls\"}")
        .unwrap();
    assert_eq!(build.len(), 1, "{build:?}");
    // routemon counts both refusals; a later scrape of the tls job shows them.
    for reason in ["unauthorized", "tls_handshake"] {
        let promql =
            format!("routemon_http_connections_shed_total{{job=\"tls\",reason=\"{reason}\"}}");
        wait_until(
            Duration::from_secs(15),
            &format!("{reason} counted"),
            || {
                prometheus
                    .query(&bed.node, &promql)
                    .ok()
                    .and_then(|r| r.first()?["value"][1].as_str()?.parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
            },
        )
        .unwrap();
    }
    drop(prometheus);
    watch.stop_cleanly().unwrap();
}

/// A certificate authority and a server certificate it signed, for `localhost`
/// and 127.0.0.1, in PEM.
struct Pki {
    ca_cert: String,
    server_cert: String,
    server_key: String,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "routemon test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        server
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
        Self {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
        }
    }
}

/// A Prometheus server inside the node's network namespace, scraping routemon
/// every second; stopped on drop.
struct Prometheus {
    _daemon: routemon_testbed::daemon::Daemon,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Prometheus {
    const ADDR: &str = "127.0.0.1:9090";

    fn start(eks: &EksNode) -> anyhow::Result<Self> {
        Self::start_with(
            &eks.node,
            "  - job_name: routemon\n    static_configs:\n      - targets: ['127.0.0.1:9987']\n",
            &[],
        )
    }

    /// Starts Prometheus in `node` with these `scrape_configs` entries and these
    /// files (name, content) next to its configuration.
    fn start_with(
        node: &NetNs,
        scrape_configs: &str,
        files: &[(&str, &[u8])],
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{}-prometheus", node.name()));
        std::fs::create_dir_all(dir.join("data"))?;
        for (name, content) in files {
            std::fs::write(dir.join(name), content)?;
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n{}",
                scrape_configs.replace("$DIR", &dir.display().to_string())
            ),
        )?;
        let daemon = routemon_testbed::daemon::Daemon::spawn(
            "prometheus",
            "ip",
            &[
                "netns",
                "exec",
                node.name(),
                "prometheus",
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address={}", Self::ADDR),
                "--log.level=warn",
            ],
            Some(&dir.join("prometheus.log")),
        )?;
        let prometheus = Self {
            _daemon: daemon,
            _dir: tempdir::Dir(dir),
        };
        wait_until(Duration::from_secs(30), "Prometheus to be ready", || {
            routemon_testbed::watch::http_request(node, Self::ADDR, "GET /-/ready HTTP/1.0\r\n\r\n")
                .is_ok_and(|(status, _)| status == 200)
        })?;
        Ok(prometheus)
    }

    /// Runs an instant PromQL query and returns `data.result`.
    fn query(&self, node: &NetNs, promql: &str) -> anyhow::Result<Vec<Value>> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = routemon_testbed::watch::http_request(
            node,
            Self::ADDR,
            &format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\n\r\n"),
        )?;
        anyhow::ensure!(status == 200, "query {promql}: {status} {body}");
        let json: Value = serde_json::from_str(&body)?;
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// The metrics endpoint under a flood of idle (slowloris), malformed, oversized and
/// non-GET clients on loopback: each gets its 4xx or is closed, the daemon keeps
/// counting, its memory stays flat, and once the idle clients time out a scrape
/// succeeds again.
#[test]
fn metrics_endpoint_survives_slow_and_malformed_clients() {
    let (bed, _pins, watch) = two_uplinks_watched((1024, 1000), &[]);
    scrape(&bed.node).unwrap();
    let rss_before = watch.rss_kib().unwrap();

    let answers = flood_the_metrics_endpoint(&bed);
    assert_eq!(&answers[..4], &[405, 404, 400, 431], "{answers:?}");
    assert_eq!(answers[4], 200, "the kernel accepted every connection");

    // Still counting, and serving again once the held connections time out.
    let sent = 300;
    send_udp(
        &bed.node,
        &udp("198.51.100.10".parse().unwrap(), "ens5", sent),
    )
    .unwrap();
    let mut last = String::new();
    wait_until(
        Duration::from_secs(15),
        "a scrape after the flood",
        || match scrape(&bed.node) {
            Ok(metrics) => {
                last = metrics;
                egress_packets(&last, "ens5") >= sent as f64
            }
            Err(_) => false,
        },
    )
    .unwrap();
    let rss_after = watch.rss_kib().unwrap();
    println!("RSS before the flood {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + 4096,
        "memory stayed flat: {rss_before} → {rss_after} KiB"
    );
    watch.stop_cleanly().unwrap();
}

/// From inside the node, on loopback: a POST (405), a path other than /metrics
/// (404), garbage (400) and a 64 KiB header (431), each on its own connection, then
/// 200 idle connections held for a second. Returns the four HTTP statuses (0: no
/// answer) and then how many idle connections the kernel accepted.
fn flood_the_metrics_endpoint(bed: &Testbed) -> Vec<u16> {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = routemon_testbed::watch::METRICS_ADDR.parse().unwrap();
    bed.node
        .run_in(move || {
            let status = |request: &[u8]| -> u16 {
                let Ok(mut stream) =
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                else {
                    return 0;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let _ = stream.write_all(request);
                let mut reply = String::new();
                let _ = stream.read_to_string(&mut reply);
                reply
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            };
            let mut answers = Vec::new();
            answers.push(status(b"POST /metrics HTTP/1.1\r\n\r\n"));
            answers.push(status(b"GET /../../etc/passwd HTTP/1.1\r\n\r\n"));
            answers.push(status(b"\x00\x01\x02garbage\r\n\r\n"));
            let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
            huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
            answers.push(status(&huge));
            // 200 idle connections: held (as pending connections) until the
            // header timeout.
            let idle: Vec<_> = (0..200)
                .filter_map(|_| std::net::TcpStream::connect(addr).ok())
                .collect();
            answers.push(u16::try_from(idle.len()).unwrap());
            std::thread::sleep(Duration::from_secs(1));
            drop(idle);
            answers
        })
        .unwrap()
}
