//! Command-line interface.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{ebpf::AttachMode, selection::InterfacePattern};

/// routemon: see and fix equal-metric default routes and cross-ENI egress on
/// multi-ENI Linux nodes (EKS on Amazon Linux 2023 with Cilium, and friends).
#[derive(Debug, Parser)]
#[command(name = "routemon", version, propagate_version = true)]
#[command(
    after_long_help = "Examples:\n  routemon routes                      # the routing state and findings\n  \
routemon routes --json | jq .findings\n  sudo routemon snapshot -d 30s        # where egress goes, per interface and route\n  \
sudo routemon snapshot -i 'ens*' --primary ens5 --json"
)]
#[command(
    long_about = "routemon shows which default route and which interface a node's egress really \
uses, and finds the routing states that break multi-ENI nodes — above all two default routes \
with the same metric, which makes the Cilium agent refuse to start and lets traffic leave by \
the wrong ENI.\n\n`routes` reads the kernel's routing state over netlink (no privileges needed). \
`snapshot` also attaches eBPF counters (TC, egress and ingress) for a while and reports packets \
and bytes per interface and per route; it needs root (CAP_BPF and CAP_NET_ADMIN).\n\n\
Exit status: 0 success, 1 runtime failure, 2 bad usage (unknown interface, bad value), \
77 missing privileges."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
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
}

/// Options shared by `routes` and `snapshot`.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Monitor interfaces matching PATTERN (shell glob: ens*, enp*s0, eth?, ens5).
    /// Repeatable. Default: every non-loopback interface that holds a default route
    /// or is named like an uplink (ens*, enp*, eth*).
    #[arg(short, long = "interface", value_name = "PATTERN")]
    pub interfaces: Vec<InterfacePattern>,

    /// The primary interface, whose default route should win. Default: the
    /// uplink-named interface with the lowest ifindex (the first ENI attached).
    #[arg(long, value_name = "IF")]
    pub primary: Option<String>,

    /// Print JSON (schema in README.md) instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Also list routes of the local table in the human output (JSON always has them).
    #[arg(long)]
    pub all_tables: bool,
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
    fn interface_patterns_parse_at_the_cli() {
        let cli = Cli::try_parse_from(["routemon", "routes", "-i", "ens*", "--interface", "eth0"])
            .unwrap();
        let Command::Routes(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.selection.interfaces.len(), 2);
        assert!(Cli::try_parse_from(["routemon", "routes", "-i", "ens[5"]).is_err());
    }
}
