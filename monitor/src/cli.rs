//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    cilium::CiliumFamilies,
    condition::Condition,
    ebpf::AttachMode,
    findings::Severity,
    pin::{
        networkd::UnmanageMatch,
        plan::{DeviceNumber, SEED_DEFAULT_METRIC, Scheme},
    },
    selection::InterfacePattern,
};

/// routemon: see and fix equal-metric default routes and cross-ENI egress on
/// multi-ENI Linux nodes (EKS on Amazon Linux 2023 with Cilium, and friends).
#[derive(Debug, Parser)]
#[command(name = "routemon", version, propagate_version = true)]
#[command(
    after_long_help = "Examples:\n  routemon routes                      # the routing state and findings\n  \
routemon routes --json | jq .findings\n  sudo routemon snapshot -d 30s        # where egress goes, per interface and route\n  \
sudo routemon snapshot -i 'ens*' --primary ens5 --json\n  \
routemon pin --persist networkd             # the plan to fix an equal-metric tie\n  \
sudo routemon pin --persist networkd --apply\n  \
sudo routemon unpin --apply"
)]
#[command(
    long_about = "routemon shows which default route and which interface a node's egress really \
uses, and finds the routing states that break multi-ENI nodes — above all two default routes \
with the same metric: the kernel then sends egress by one of them and can switch uplink \
without any route change, and the Cilium agent's default-route lookup (ENI IPAM, egress \
gateway, IPsec) fails with \"Found multiple default routes with the same priority\". Every \
report carries Cilium's verdict per family, computed with Cilium's own rules \
(--cilium-family says which families the agent uses).\n\n`routes` reads the kernel's routing state over netlink (no privileges needed). \
`snapshot` also attaches eBPF counters (TC, egress and ingress) for a while and reports packets \
and bytes per interface and per route; it needs root (CAP_BPF and CAP_NET_ADMIN).\n\n\
Exit status: 0 success, 1 findings at or above --fail-on, 2 bad usage (unknown interface, \
bad value), 70 runtime failure, 77 missing privileges; `check` follows node-problem-detector's \
plugin contract instead (0 ok, 1 problem, 2 unknown)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). RUST_LOG and --log-level
    /// override.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log level on stderr: error, warn, info, debug, trace, or a tracing filter
    /// such as `routemon=debug`. Default: warn (info for `watch`). RUST_LOG is used
    /// when this is not given.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log format on stderr: plain text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line (for journald/Fluent Bit/Loki pipelines).
    Json,
}

/// Whether `watch` prints events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventFormat {
    /// One JSON object per line on stdout.
    Json,
    /// No events.
    None,
}

/// routemon's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show interfaces, default routes (and which one the kernel uses) and findings,
    /// from netlink only.
    #[command(
        long_about = "Show the monitored interfaces, every default route with its metric and \
whether the kernel uses it, the other routes of the monitored interfaces, the policy rules, \
and the findings (equal-metric default routes, primary interface not preferred, strict \
rp_filter on a secondary uplink). Reads netlink only: no eBPF, \
no privileges needed."
    )]
    Routes(RoutesArgs),
    /// Count egress and ingress per interface and per route with eBPF for a while,
    /// then report (needs root).
    #[command(
        long_about = "Attach routemon's TC programs (egress and ingress) to the monitored \
interfaces, count packets and bytes for --duration, detach, and report the counts per \
interface and per route next to the routing state and findings. Ctrl-C or SIGTERM ends the \
count early and still prints the report. Nothing stays attached after routemon exits: TCX \
links are closed by the kernel even if routemon is killed, and clsact filters are removed \
on every orderly exit.\n\nEach egress packet is attributed to the most specific route for \
its destination among the routes that leave by its egress interface (in the table a \
`from <prefix> lookup <table>` rule selects for its source, else the main table), else to \
that interface's default route. Egress that no such route matches (ARP, other traffic) is \
counted as unrouted on the interface.\n\nBeyond the routing findings, a snapshot reports \
cross_eni_egress (packets leaving by one interface with another interface's source \
address, which the VPC's source/destination check drops; with sampled 5-tuples) and \
asymmetric_flow (flows that arrived on one interface and left by another)."
    )]
    Snapshot(SnapshotArgs),
    /// Live full-screen view: per-ENI rates and default routes, top flows, kernel
    /// drops by reason, findings (needs root and a terminal).
    #[command(
        long_about = "Attach routemon's programs like `snapshot` and redraw every --interval: \
per ENI the egress and ingress packets/s and bits/s with a minute of history, the default \
route it carries with its metric and whether the kernel uses it; per route the egress rate \
and each default route's share; the busiest flows (5-tuple) of each ENI over the interval, \
asymmetric (arrived on one ENI, left by another) and cross-ENI flows in red; packets the \
kernel dropped on each ENI by the kernel's drop reason (IP_RPFILTER, NEIGH_FAILED, \
QDISC_DROP, NO_SOCKET, …); the findings at the top, coloured by severity.\n\nKeys: q (or \
Esc, Ctrl-C) quit, s sort flows, p pause, i interface filter, ? help. The terminal is \
restored and everything detached on every exit, including SIGTERM. Without a terminal \
routemon refuses: use `snapshot --json` for scripts and `watch` for monitoring."
    )]
    Top(TopArgs),
    /// Give the primary interface the only best default route: live, without a gap,
    /// and persisted as systemd-networkd configuration (dry run unless --apply).
    #[command(long_about = PIN_ABOUT)]
    Pin(PinArgs),
    /// Undo `routemon pin`: restore the previous routes and files from the saved
    /// state (dry run unless --apply).
    #[command(
        long_about = "Restore what `routemon pin --apply` changed, from the state it saved: the default routes as they were (each original route is re-added and read back before the \
pinned one is deleted) and every networkd file it wrote (restored from its backup, or removed \
if the pin created it). Without --apply, prints what it would do and changes nothing."
    )]
    Unpin(UnpinArgs),
    /// Run continuously: follow routing changes, attach to interfaces as they
    /// appear, serve Prometheus metrics, print events, optionally guard the pin.
    #[command(
        long_about = "Run as a daemon. routemon follows the kernel's link, address, route and \
rule notifications (no polling), attaches its TC programs to every monitored interface \
as it appears (an ENI attached by Cilium) and releases it when it goes away, re-evaluates \
the findings on every change, and every --interval evaluates the traffic findings \
(cross-ENI egress, asymmetric flows).\n\n\
Prometheus metrics and /healthz are served on --listen (default 127.0.0.1:9987; binding \
another address must be asked for). Events (findings raised/cleared, interfaces \
attached/detached, default routes added/removed, resyncs, guard actions) are printed as \
JSON lines on stdout; logs go to stderr.\n\n\
Maps and TCX links are kept in the BPF filesystem under --bpffs-dir, so a restarted \
routemon continues the counts and the interface is never without its counter: with \
--keep-attached the programs stay attached between runs. Without it, SIGINT/SIGTERM \
detach everything. \
`routemon cleanup` removes whatever routemon left.\n\n\
--guard keeps --primary's default route at --metric: when DHCP, networkd or a new ENI \
undoes the pin, the guard re-applies it live (add before delete). If something keeps \
undoing it, the guard backs off and reports instead of fighting."
    )]
    Watch(WatchArgs),
    /// Remove everything routemon pinned or attached (after `watch --keep-attached`,
    /// or a killed routemon).
    #[command(
        long_about = "Remove routemon's pinned maps and links under --bpffs-dir (the kernel \
detaches a TCX link when its pin is gone and no process holds it) and routemon's clsact \
filters on every interface. Safe to run when nothing is left: it reports what it removed."
    )]
    Cleanup(CleanupArgs),
    /// Check a node's bootstrap user data (NodeConfig) and its systemd-networkd
    /// configuration before they fail; exit 1 when a check warns or fails (--fail-on).
    #[command(long_about = DOCTOR_ABOUT)]
    Doctor(DoctorArgs),
    /// One node condition for node-problem-detector's custom plugin monitor: exit 0
    /// ok, 1 problem, 2 unknown, and one line of at most 80 characters.
    #[command(long_about = CHECK_ABOUT)]
    Check(CheckArgs),
}

const CHECK_ABOUT: &str = "Judge one node condition from netlink only (no eBPF, no \
privileges needed) and answer as a node-problem-detector custom plugin: exit status 0 when \
the condition is ok, 1 when the problem is present, 2 when routemon cannot tell (a netlink \
error, an unknown --primary or interface pattern), and exactly one line on stdout of at most \
80 characters (NPD's default max_output_length), which becomes the condition's message. \
Details of an error go to stderr.\n\n\
--condition equal-metric (NPD condition MultipleDefaultRoutes): the best default routes of \
a table that traffic uses share a metric (the critical equal_metric_default_routes \
finding), e.g. `equal-metric default routes: ens5,ens6 (ipv4 main metric 1024)`.\n\n\
--condition cilium (NPD condition CiliumDefaultRouteConflict): Cilium's default-route \
lookup fails or has no usable device for a family of --cilium-family (the \
cilium_default_route finding), or with --cilium-family dual the families' default routes \
leave by different links (cilium_dual_stack_links).\n\n\
This is the one subcommand whose exit status is not routemon's table (docs/commands.md, \
\"Exit status\"): node-problem-detector reads it.";

const DOCTOR_ABOUT: &str = "Check a node's configuration before it fails, on the node or on \
files in CI. Exit status 1 when a check warns or fails (--fail-on), else 0.\n\n\
--user-data: the EC2 user data nodeadm reads — a NodeConfig YAML document, a MIME multipart \
message whose application/node.eks.aws parts hold NodeConfig (other parts, such as shell \
scripts, are reported and skipped), or base64 of either. Checked: apiVersion \
node.eks.aws/v1alpha1, kind NodeConfig, spec.cluster.name, apiServerEndpoint (https URL), \
certificateAuthority (base64 of a PEM certificate), cidr (the field whose absence fails \
nodeadm-config.service), unrendered ${...} placeholders (errors) and unknown fields \
(warnings), each with its YAML path and line.\n\n\
networkd: reads the .network files and drop-ins of --networkd-dir (repeatable, highest \
precedence first; default: networkd's own directories) with networkd's rules and predicts, for \
each ENI — present or future (ens*, enp*s0, eth*) — which file manages it and the metric of \
its DHCPv4 default route. Equal best metrics on two ENIs (a tie for the kernel and for \
Cilium's default-route lookup) are an error; \
secondaries networkd would manage, deprecated [DHCP] sections and negated Name= matches that \
also catch lo or veths are warnings.\n\n\
--live adds the running node: its links are the present interfaces and its default routes \
are compared with the prediction. --fix DIR writes the files that correct the networkd \
problems into DIR (the same content `routemon pin --persist` writes); it never touches the \
live configuration.";

const PIN_ABOUT: &str = "Pin the primary interface's default-route metric so that exactly one \
default route is the best, the fix for systemd-networkd's equal metric 1024 on every ENI.\n\n\
Without --apply this is a dry run: it prints the plan (live route changes per family, before \
→ after, and the networkd files as a diff) and changes nothing.\n\n\
Live change: each new route (same gateway, source, protocol, flags and metrics; only the \
metric differs) is added and read back from netlink before the old one is deleted and read \
back as gone; on any failure every change is rolled back to the exact previous routes. The \
node is never without its default routes.\n\n\
Schemes: `seed` gives the primary --metric (default 1000, 1-1023) and leaves the others at \
networkd's 1024; `ec2` gives every ENI 512 + 100 × network card + device number (device \
numbers in interface-index order unless --device says otherwise), as amazon-ec2-net-utils \
does. A plan that would tie two best default routes, or not make the primary preferred, is \
refused.\n\n\
--persist networkd writes 05-<primary>.network (a copy of the settings of the file that \
configures the primary now, with [DHCPv4] RouteMetric= and [IPv6AcceptRA] RouteMetric=, and \
KeepConfiguration=dhcp-on-stop so that networkd restarts keep the routes) atomically, backing \
up whatever it replaces into --state-dir; it refuses to overwrite files it did not write or \
to write a file another would shadow. networkd picks the file up at its next restart; \
--reload asks it now (`networkctl reload`) and waits until the routes agree. Note that \
systemd-networkd re-acquires the DHCP lease of a link whose .network file changes, which \
briefly removes that link's address and routes; that is why --reload is not the default.\n\n\
`routemon unpin --apply` restores the previous routes and files. Exit status: 0 done or \
nothing to do, 70 failure (rolled back), 2 refused plan or bad input (nothing changed), 77 \
missing privileges.";

/// Where `pin` keeps what `unpin` restores.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Directory for the pin state and the backups of replaced files.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/routemon")]
    pub state_dir: PathBuf,
}

/// What `--persist` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Persist {
    /// systemd-networkd `.network` files.
    Networkd,
}

/// `routemon pin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// The primary interface. Default: the ENI-named interface (ens*, enp*, eth*)
    /// with the lowest interface index.
    #[arg(long, value_name = "IF")]
    pub primary: Option<String>,

    /// Seed scheme: the primary's metric (1-1023, below networkd's default 1024).
    #[arg(long, default_value_t = SEED_DEFAULT_METRIC, value_parser = parse_seed_metric)]
    pub metric: u32,

    /// How metrics are chosen: seed (primary gets --metric) or ec2
    /// (512 + 100 × card + device for every ENI).
    #[arg(long, value_enum, default_value_t = Scheme::Seed)]
    pub scheme: Scheme,

    /// ec2 scheme: an ENI's device number and optionally its network card
    /// (IF=DEVICE or IF=DEVICE@CARD). Repeatable.
    #[arg(long = "device", value_name = "IF=DEVICE[@CARD]")]
    pub devices: Vec<DeviceNumber>,

    /// ENIs for the ec2 scheme and --unmanage-others (shell globs). Default: the
    /// interfaces named ens*, enp*, eth*.
    #[arg(short, long = "interface", value_name = "PATTERN")]
    pub interfaces: Vec<InterfacePattern>,

    /// Persist the pin as configuration.
    #[arg(long, value_enum)]
    pub persist: Option<Persist>,

    /// Where networkd files are written.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/network")]
    pub networkd_dir: PathBuf,

    /// Also write a file that sets `[Link] Unmanaged=yes` for the other ENIs (listed
    /// by exact name or MAC, never by pattern), for interfaces Cilium owns.
    #[arg(long, requires = "persist")]
    pub unmanage_others: bool,

    /// How --unmanage-others matches the interfaces.
    #[arg(long, value_enum, default_value_t = UnmanageMatch::Name, requires = "unmanage_others")]
    pub unmanage_match: UnmanageMatch,

    /// Carry the plan out (default: print it and change nothing).
    #[arg(long)]
    pub apply: bool,

    /// After writing files, make networkd reload them and wait until its routes
    /// agree with the pin.
    #[arg(long, requires_all = ["persist", "apply"])]
    pub reload: bool,

    /// Where the state for `unpin` is kept.
    #[command(flatten)]
    pub state: StateArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `routemon unpin`.
#[derive(Debug, Args)]
pub struct UnpinArgs {
    /// Carry it out (default: print what would be restored).
    #[arg(long)]
    pub apply: bool,

    /// After restoring files, make networkd reload them.
    #[arg(long, requires = "apply")]
    pub reload: bool,

    /// Where the pin state is.
    #[command(flatten)]
    pub state: StateArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The interfaces a command looks at and the primary among them (shared by
/// `routes`, `snapshot`, `top` and `watch`).
#[derive(Debug, Args, Clone, Default)]
pub struct InterfaceArgs {
    /// Monitor interfaces matching PATTERN (shell glob: ens*, enp*s0, eth?, ens5).
    /// Repeatable; `watch` also takes interfaces that appear later. Default: every
    /// non-loopback interface that holds a default route or is named like an uplink
    /// (ens*, enp*, eth*).
    #[arg(short, long = "interface", value_name = "PATTERN")]
    pub interfaces: Vec<InterfacePattern>,

    /// The primary interface, whose default route should win. Default: the
    /// uplink-named interface with the lowest ifindex (the first ENI attached).
    #[arg(long, value_name = "IF")]
    pub primary: Option<String>,
}

/// Options shared by `routes` and `snapshot`.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Which interfaces, and the primary.
    #[command(flatten)]
    pub interfaces: InterfaceArgs,

    /// Print JSON (schema in docs/json.md) instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Also list routes of the local table in the human output (JSON always has them).
    #[arg(long)]
    pub all_tables: bool,

    /// Which families the Cilium agent uses.
    #[command(flatten)]
    pub cilium: CiliumArgs,

    /// Exit with status 1 when a finding of this severity or a worse one is
    /// reported (never: findings do not change the exit status). The report is
    /// printed either way.
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Never)]
    pub fail_on: FailOn,
}

/// `--cilium-family` (shared by `routes`, `snapshot` and `check`).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct CiliumArgs {
    /// The address families the Cilium agent uses (its enable-ipv4/enable-ipv6
    /// settings, which routemon cannot see). Cilium's default-route verdict is
    /// reported for both families; its findings only for these.
    #[arg(long, value_enum, value_name = "FAMILIES", default_value_t = CiliumFamilies::Ipv4)]
    pub cilium_family: CiliumFamilies,
}

/// `--fail-on` of `routes` and `snapshot`: the least severity that makes the exit
/// status 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Findings never change the exit status.
    Never,
    /// Any finding.
    Info,
    /// Warnings and critical findings.
    Warning,
    /// Critical findings only.
    Critical,
}

impl FailOn {
    /// The exit status for a report with findings of `severities`:
    /// [`EXIT_FINDINGS`] when one reaches the threshold, else 0.
    pub fn exit_status(self, severities: impl IntoIterator<Item = Severity>) -> u8 {
        let threshold = match self {
            Self::Never => return 0,
            Self::Info => Severity::Info,
            Self::Warning => Severity::Warning,
            Self::Critical => Severity::Critical,
        };
        if severities.into_iter().any(|s| s >= threshold) {
            EXIT_FINDINGS
        } else {
            0
        }
    }
}

/// `--fail-on` of `doctor`: the least check status that makes the exit status 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DoctorFailOn {
    /// Problems never change the exit status.
    Never,
    /// Warnings and errors.
    Warning,
    /// Errors only.
    Error,
}

/// A request the command line makes that cannot be carried out as asked: the
/// exit status is [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit status: success, and no finding at or above `--fail-on`.
pub const EXIT_OK: u8 = 0;
/// Exit status: findings (or `doctor` checks) at or above `--fail-on`.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: bad usage — an invalid option, an unknown interface, a request the
/// node's state rules out (clap uses the same).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: a runtime failure — netlink, eBPF, files (sysexits `EX_SOFTWARE`).
pub const EXIT_RUNTIME: u8 = 70;
/// Exit status: missing privileges (sysexits `EX_NOPERM`).
pub const EXIT_NOPERM: u8 = 77;

impl SelectionArgs {
    /// What the library needs of these arguments.
    pub fn selection(&self) -> crate::session::Selection {
        crate::session::Selection {
            interfaces: self.interfaces.interfaces.clone(),
            primary: self.interfaces.primary.clone(),
            cilium_family: self.cilium.cilium_family,
        }
    }
}

/// `routemon routes`.
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// Interface selection and output format.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// `routemon snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Interface selection and output format.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// How long to count: a number with a unit, e.g. 10s, 500ms, 2m.
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// How to attach: TCX links where available (auto), or force tcx or clsact.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,
}

/// `routemon top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Which interfaces, and the primary.
    #[command(flatten)]
    pub interfaces: InterfaceArgs,

    /// How often to refresh: a number with a unit (1s, 2s, 5s; at least 1s).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// How to attach: TCX links where available (auto), or force tcx or clsact.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,
}

/// `routemon watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Which interfaces, and the primary.
    #[command(flatten)]
    pub interfaces: InterfaceArgs,

    /// Serve /metrics and /healthz on ADDR:PORT. Binding to all addresses
    /// (0.0.0.0, [::]) must be asked for explicitly.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9987",
        conflicts_with = "no_listen"
    )]
    pub listen: std::net::SocketAddr,

    /// Serve nothing: no /metrics, no /healthz (formerly --no-metrics).
    #[arg(long, alias = "no-metrics")]
    pub no_listen: bool,

    /// TLS (certificate, key, client CA for mTLS) and basic-auth users (bcrypt
    /// hashes) for --listen, in the Prometheus exporter toolkit's web configuration
    /// format, as node_exporter's --web.config.file reads it.
    #[arg(
        long,
        alias = "web.config.file",
        value_name = "FILE",
        conflicts_with = "no_listen"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Events on stdout: json (one object per line) or none.
    #[arg(long, value_enum, default_value_t = EventFormat::Json)]
    pub events: EventFormat,

    /// Keep --primary's default route at --metric, re-applying the pin live when
    /// something undoes it.
    #[arg(long, requires = "primary")]
    pub guard: bool,

    /// The metric the guard keeps the primary at (1-1023, below networkd's 1024).
    #[arg(long, default_value_t = SEED_DEFAULT_METRIC, value_parser = parse_seed_metric, requires = "guard")]
    pub metric: u32,

    /// Where maps and links are kept in the BPF filesystem, so that a restarted
    /// routemon continues the counts (mounted if absent; formerly --pin-dir).
    #[arg(long, alias = "pin-dir", value_name = "DIR", default_value = crate::ebpf::pinning::DEFAULT_PIN_DIR, conflicts_with = "ephemeral")]
    pub bpffs_dir: PathBuf,

    /// Keep nothing in the BPF filesystem: counters start at zero and programs
    /// detach when routemon exits (formerly --no-pin).
    #[arg(long, alias = "no-pin")]
    pub ephemeral: bool,

    /// At exit, leave the programs attached and counting, for the next routemon to
    /// adopt (restarts without a gap). `routemon cleanup` removes them (formerly
    /// --keep-pinned).
    #[arg(long, alias = "keep-pinned", conflicts_with = "ephemeral")]
    pub keep_attached: bool,

    /// How to attach: TCX links where available (auto), or force tcx or clsact
    /// (clsact cannot be pinned; implies nothing survives an exit).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// How often traffic findings (cross-ENI egress, asymmetric flows) are
    /// evaluated; a finding clears after 6 quiet intervals (at least 30s).
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Netlink receive buffer in bytes (the kernel reserves twice this, as it does
    /// for every SO_RCVBUF). Larger buffers lose fewer notifications under route
    /// churn (a loss triggers a full re-read).
    #[arg(long, value_name = "BYTES", default_value_t = crate::model::events::DEFAULT_RECEIVE_BUFFER)]
    pub netlink_buffer: usize,

    /// The address families the Cilium agent uses (its enable-ipv4/enable-ipv6
    /// settings, which routemon cannot see). Cilium's default-route verdict is
    /// reported for both families; its findings only for these.
    #[arg(long, value_enum, value_name = "FAMILIES", default_value_t = CiliumFamilies::Ipv4)]
    pub cilium_family: CiliumFamilies,
}

/// `routemon doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// User data to check: a file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub user_data: Option<PathBuf>,
    /// A networkd configuration directory (repeatable, highest precedence first).
    #[arg(long = "networkd-dir", value_name = "DIR")]
    pub networkd_dirs: Vec<PathBuf>,
    /// Skip the networkd checks (only --user-data).
    #[arg(long, conflicts_with_all = ["networkd_dirs", "live"])]
    pub no_networkd: bool,
    /// Also check the running node's links and default routes.
    #[arg(long)]
    pub live: bool,
    /// The primary ENI (default: the first of its naming scheme: ens5, eth0, enp39s0).
    #[arg(long, value_name = "IF")]
    pub primary: Option<String>,
    /// Print every check as JSON.
    #[arg(long)]
    pub json: bool,
    /// The address families the Cilium agent uses (its enable-ipv4/enable-ipv6
    /// settings, which routemon cannot see). Cilium's default-route verdict is
    /// reported for both families; its findings only for these.
    #[arg(long, value_enum, value_name = "FAMILIES", default_value_t = CiliumFamilies::Ipv4)]
    pub cilium_family: CiliumFamilies,
    /// Write the files that fix the networkd problems into DIR (not a live
    /// networkd directory).
    #[arg(long, value_name = "DIR")]
    pub fix: Option<PathBuf>,
    /// Exit with status 1 when a check has this status or a worse one (never:
    /// only errors of routemon itself change the exit status).
    #[arg(long, value_enum, value_name = "STATUS", default_value_t = DoctorFailOn::Warning)]
    pub fail_on: DoctorFailOn,
}

/// `routemon check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The condition to judge: equal-metric (MultipleDefaultRoutes) or cilium
    /// (CiliumDefaultRouteConflict).
    #[arg(long, value_enum)]
    pub condition: Condition,

    /// Which interfaces, and the primary.
    #[command(flatten)]
    pub interfaces: InterfaceArgs,

    /// Which families the Cilium agent uses.
    #[command(flatten)]
    pub cilium: CiliumArgs,
}

/// `routemon cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The BPF filesystem directory `watch` used (formerly --pin-dir).
    #[arg(long, alias = "pin-dir", value_name = "DIR", default_value = crate::ebpf::pinning::DEFAULT_PIN_DIR)]
    pub bpffs_dir: PathBuf,

    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses a pinned metric: 1-1023, below the 1024 networkd gives every DHCP
/// default route, so that the primary's route wins.
pub fn parse_seed_metric(text: &str) -> Result<u32, String> {
    let metric: u32 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a metric (a whole number, 1-1023)"))?;
    if (1..=1023).contains(&metric) {
        Ok(metric)
    } else {
        Err(format!(
            "--metric {metric} is out of range: it must be 1-1023, below the 1024 that \
             systemd-networkd gives every DHCP default route"
        ))
    }
}

/// Parses `--interval`: 1s to 1h.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text)
        .map_err(|err| format!("invalid interval '{text}' ({err}); use e.g. 10s, 1m"))?;
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(3600) {
        return Err(format!(
            "the interval must be between 1s and 1h (got {text})"
        ));
    }
    Ok(interval)
}

/// Longest accepted `--duration`: a snapshot is an investigation, not a daemon.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a `--duration` value.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| {
        format!("invalid duration '{text}' ({err}); use a number with a unit, e.g. 10s, 500ms, 2m")
    })?;
    if duration.is_zero() {
        return Err("the duration must be greater than zero".to_owned());
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "the duration must be at most 24h (got {text}): a snapshot is a bounded investigation"
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(
            parse_duration("abc")
                .unwrap_err()
                .contains("invalid duration 'abc'")
        );
        assert!(parse_duration("10").is_err(), "a unit is required");
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(parse_duration("3d").unwrap_err().contains("at most 24h"));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_options_are_checked() {
        let parse = |args: &[&str]| {
            let mut full = vec!["routemon", "watch"];
            full.extend_from_slice(args);
            Cli::try_parse_from(full)
        };
        let Command::Watch(args) = parse(&[]).unwrap().command else {
            panic!()
        };
        assert_eq!(
            args.listen.to_string(),
            "127.0.0.1:9987",
            "loopback by default"
        );
        assert_eq!(args.interval, Duration::from_secs(10));
        assert!(!args.keep_attached && !args.ephemeral && !args.guard);
        assert!(parse(&["--guard"]).is_err(), "--guard needs --primary");
        assert!(parse(&["--guard", "--primary", "ens5", "--metric", "1024"]).is_err());
        assert!(
            parse(&["--metric", "900"]).is_err(),
            "--metric belongs to --guard"
        );
        assert!(parse(&["--guard", "--primary", "ens5", "--metric", "900"]).is_ok());
        assert!(
            parse(&["--listen", "localhost"]).is_err(),
            "an address and a port"
        );
        assert!(parse(&["--no-pin", "--keep-pinned"]).is_err());
        assert!(parse(&["--ephemeral", "--keep-attached"]).is_err());
        assert!(parse(&["--no-metrics", "--listen", "0.0.0.0:9987"]).is_err());
        assert!(parse(&["--no-listen", "--listen", "0.0.0.0:9987"]).is_err());
        // The old spellings still work, hidden.
        let Command::Watch(old) = parse(&["--pin-dir", "/sys/fs/bpf/x", "--keep-pinned"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(old.bpffs_dir, std::path::Path::new("/sys/fs/bpf/x"));
        assert!(old.keep_attached);
        assert!(parse(&["--interval", "100ms"]).is_err());
        assert!(parse(&["--events", "xml"]).is_err());
    }

    #[test]
    fn interface_patterns_parse_at_the_cli() {
        let cli = Cli::try_parse_from(["routemon", "routes", "-i", "ens*", "--interface", "eth0"])
            .unwrap();
        let Command::Routes(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.selection.interfaces.interfaces.len(), 2);
        assert!(Cli::try_parse_from(["routemon", "routes", "-i", "ens[5"]).is_err());
    }
}
