//! Every metric family `watch` exports: name, type, help and label names. The
//! renderer ([`super::metrics`]) takes each family's type and help from here, a unit
//! test checks every rendered series against it, and `docs/metrics-and-events.md`
//! holds the same table (checked by a test, regenerated with `ROUTEMON_BLESS=1`).

/// One metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricFamily {
    /// The family's name.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The label names its series carry.
    pub labels: &'static [&'static str],
}

/// The labels of a counted route's series.
const ROUTE_LABELS: &[&str] = &[
    "destination",
    "family",
    "gateway",
    "interface",
    "metric",
    "table",
];

/// Every family, in the order the exposition lists them.
pub const FAMILIES: &[MetricFamily] = &[
    MetricFamily {
        name: "routemon_build_info",
        kind: "gauge",
        help: "routemon's version; always 1.",
        labels: &["version"],
    },
    MetricFamily {
        name: "process_cpu_seconds_total",
        kind: "counter",
        help: "User and system CPU time spent by routemon, in seconds.",
        labels: &[],
    },
    MetricFamily {
        name: "process_resident_memory_bytes",
        kind: "gauge",
        help: "Resident memory of routemon, in bytes.",
        labels: &[],
    },
    MetricFamily {
        name: "process_virtual_memory_bytes",
        kind: "gauge",
        help: "Virtual memory of routemon, in bytes.",
        labels: &[],
    },
    MetricFamily {
        name: "process_open_fds",
        kind: "gauge",
        help: "Open file descriptors of routemon.",
        labels: &[],
    },
    MetricFamily {
        name: "process_max_fds",
        kind: "gauge",
        help: "The soft limit on routemon's open file descriptors.",
        labels: &[],
    },
    MetricFamily {
        name: "process_start_time_seconds",
        kind: "gauge",
        help: "Start time of routemon since the Unix epoch, in seconds.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_interface_egress_packets_total",
        kind: "counter",
        help: "Packets seen leaving the interface (TC egress).",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_egress_bytes_total",
        kind: "counter",
        help: "Bytes seen leaving the interface, link-layer header included.",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_ingress_packets_total",
        kind: "counter",
        help: "Packets seen arriving on the interface (TC ingress).",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_ingress_bytes_total",
        kind: "counter",
        help: "Bytes seen arriving on the interface, link-layer header included.",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_egress_unattributed_packets_total",
        kind: "counter",
        help: "Egress packets no route of the interface matched (ARP, policy routing, bound sockets).",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_egress_unattributed_bytes_total",
        kind: "counter",
        help: "Bytes of routemon_interface_egress_unattributed_packets_total.",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_unparsed_packets_total",
        kind: "counter",
        help: "Packets, both ways, with a truncated or invalid IP header (IPv4 IHL below 5, wrong version, too many IPv6 extension headers): never counted as a flow.",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_unparsed_bytes_total",
        kind: "counter",
        help: "Bytes of routemon_interface_unparsed_packets_total.",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_interface_attached",
        kind: "gauge",
        help: "1 while routemon's programs are attached to the interface, 0 after it went away (its counters are kept).",
        labels: &["interface"],
    },
    MetricFamily {
        name: "routemon_route_egress_packets_total",
        kind: "counter",
        help: "Egress packets attributed to the route (most specific route of the egress interface for the destination).",
        labels: ROUTE_LABELS,
    },
    MetricFamily {
        name: "routemon_route_egress_bytes_total",
        kind: "counter",
        help: "Egress bytes attributed to the route, link-layer header included.",
        labels: ROUTE_LABELS,
    },
    MetricFamily {
        name: "routemon_default_route_info",
        kind: "gauge",
        help: "Default routes of every table; preferred=\"true\" for those the kernel uses. Always 1.",
        labels: &[
            "family",
            "gateway",
            "interface",
            "metric",
            "preferred",
            "table",
        ],
    },
    MetricFamily {
        name: "routemon_finding",
        kind: "gauge",
        help: "Active findings, one series per finding (asymmetric_flow: per interface pair, value: flows). kind is the finding kind of routes --json; the other labels identify it and depend on the kind.",
        labels: &[
            "kind",
            "family",
            "table",
            "metric",
            "interfaces",
            "primary",
            "preferred_interface",
            "interface",
            "outcome",
            "ipv4_device",
            "ipv6_device",
            "egress_interface",
            "source_interface",
            "ingress_interface",
            "severity",
        ],
    },
    MetricFamily {
        name: "routemon_cilium_default_route_outcome",
        kind: "gauge",
        help: "Cilium's default-route lookup per family, computed with Cilium's rules: 1 for the current outcome (ok, tie, no_default_route, multipath_default, reject_default), 0 for the others.",
        labels: &["family", "outcome"],
    },
    MetricFamily {
        name: "routemon_kernel_read_failures_total",
        kind: "counter",
        help: "Failed reads of a kernel counter map during scrapes; the series it feeds are left out of that scrape.",
        labels: &["map"],
    },
    MetricFamily {
        name: "routemon_findings",
        kind: "gauge",
        help: "Active findings by severity.",
        labels: &["severity"],
    },
    MetricFamily {
        name: "routemon_cross_eni_egress_packets_total",
        kind: "counter",
        help: "Packets leaving by egress_interface with a source address of source_interface (dropped by the VPC's source/destination check).",
        labels: &["egress_interface", "source_interface"],
    },
    MetricFamily {
        name: "routemon_cross_eni_egress_bytes_total",
        kind: "counter",
        help: "Bytes leaving by egress_interface with a source address of source_interface (dropped by the VPC's source/destination check).",
        labels: &["egress_interface", "source_interface"],
    },
    MetricFamily {
        name: "routemon_asymmetric_egress_packets_total",
        kind: "counter",
        help: "Packets of flows that arrived on ingress_interface and left by egress_interface.",
        labels: &["egress_interface", "ingress_interface"],
    },
    MetricFamily {
        name: "routemon_asymmetric_egress_bytes_total",
        kind: "counter",
        help: "Bytes of flows that arrived on ingress_interface and left by egress_interface.",
        labels: &["egress_interface", "ingress_interface"],
    },
    MetricFamily {
        name: "routemon_model_routes",
        kind: "gauge",
        help: "Routes of every table in routemon's model of the kernel, by family.",
        labels: &["family"],
    },
    MetricFamily {
        name: "routemon_netlink_resyncs_total",
        kind: "counter",
        help: "Full re-reads of the routing state after lost netlink notifications (ENOBUFS).",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_netlink_notifications_total",
        kind: "counter",
        help: "rtnetlink notifications received.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_routes_uncounted",
        kind: "gauge",
        help: "Routes of monitored interfaces without a counter because every route id is in use.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_interfaces_unattached",
        kind: "gauge",
        help: "Interfaces routemon should watch but could not attach to (e.g. more than its 256 interface counters); retried on every change.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_guard_repins_total",
        kind: "counter",
        help: "Times the guard re-applied the pinned metric.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_events_total",
        kind: "counter",
        help: "Events emitted.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_table_entries",
        kind: "gauge",
        help: "Entries in routemon's bounded kernel tables (flows, flows_v6: the IPv4 and IPv6 flow tables of top flows and asymmetry; unanswered, unanswered_v6: tuples that arrived and were not answered, kept apart so they never evict a flow; read at most every 10 s).",
        labels: &["table"],
    },
    MetricFamily {
        name: "routemon_table_capacity",
        kind: "gauge",
        help: "Entries the bounded kernel table can hold.",
        labels: &["table"],
    },
    MetricFamily {
        name: "routemon_table_evictions_total",
        kind: "counter",
        help: "Entries the LRU tables evicted to make room (replies of evicted flows are not checked for asymmetry; evicted asymmetric flows lose their per-flow counts).",
        labels: &["table"],
    },
    MetricFamily {
        name: "routemon_cross_eni_uncounted_packets_total",
        kind: "counter",
        help: "Cross-ENI packets not counted because the interface-pair table was full.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_drops_uncounted_total",
        kind: "counter",
        help: "Kernel drops not counted because the (interface, reason) table was full.",
        labels: &[],
    },
    MetricFamily {
        name: "routemon_samples_total",
        kind: "counter",
        help: "Packet samples sent to userspace (outcome=\"sent\") or held back by the rate limit or a full ring buffer (outcome=\"suppressed\").",
        labels: &["outcome"],
    },
    MetricFamily {
        name: "routemon_drops_total",
        kind: "counter",
        help: "Packets the kernel dropped on the interface, by drop reason (skb:kfree_skb; IP_RPFILTER, NEIGH_FAILED, QDISC_DROP, NO_SOCKET, …).",
        labels: &["interface", "reason"],
    },
    MetricFamily {
        name: "routemon_bpf_program_run_seconds_total",
        kind: "counter",
        help: "Time the kernel spent in routemon's eBPF program (kernel.bpf_stats_enabled=1 only).",
        labels: &["program"],
    },
    MetricFamily {
        name: "routemon_bpf_program_runs_total",
        kind: "counter",
        help: "Runs of routemon's eBPF program (kernel.bpf_stats_enabled=1 only).",
        labels: &["program"],
    },
    MetricFamily {
        name: "routemon_http_connections_shed_total",
        kind: "counter",
        help: "Metrics endpoint connections closed or refused before being served normally, by reason: header_timeout (no complete request head within 5 s), write_timeout (the client read nothing for 5 s), evicted_head, evicted_idle, evicted_stalled (closed to make room: no complete head yet, idle keep-alive, response stalled), overload (refused with 503 and Retry-After), oversized_head (head over 8 KiB, answered with 431), tls_handshake (a failed TLS handshake), unauthorized (no valid basic-auth credentials, answered with 401).",
        labels: &["reason"],
    },
    MetricFamily {
        name: "routemon_http_requests_total",
        kind: "counter",
        help: "Responses of the metrics endpoint, by status code.",
        labels: &["code"],
    },
];

/// The family called `name`.
///
/// # Panics
/// When `name` is not in [`FAMILIES`]: every family the renderer writes must be
/// listed there (a unit test renders them all).
pub fn family(name: &str) -> &'static MetricFamily {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("metric family {name} is not in FAMILIES"))
}

/// The families as a Markdown table (name, type, labels, help), as the docs hold it.
pub fn markdown_table() -> String {
    let mut out = String::from("| name | type | labels | help |\n|---|---|---|---|\n");
    for f in FAMILIES {
        let labels = f
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.name,
            f.kind,
            labels,
            f.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "<!-- metric-families:start -->\n";
    const END: &str = "<!-- metric-families:end -->";

    /// `docs/metrics-and-events.md` lists exactly these families; with
    /// `ROUTEMON_BLESS=1` the test writes the table instead of comparing.
    #[test]
    fn the_docs_list_every_family() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics-and-events.md");
        let text = std::fs::read_to_string(&path).expect("docs/metrics-and-events.md");
        let start = text.find(START).expect("start marker") + START.len();
        let end = text.find(END).expect("end marker");
        let table = markdown_table();
        if std::env::var_os("ROUTEMON_BLESS").is_some() {
            let blessed = format!("{}{table}{}", &text[..start], &text[end..]);
            std::fs::write(&path, blessed).expect("writing the docs");
            return;
        }
        assert_eq!(
            &text[start..end],
            table,
            "docs/metrics-and-events.md is out of date: run with ROUTEMON_BLESS=1"
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }
}
