//! Cost of routemon's programs alone: `BPF_PROG_TEST_RUN` of each program on a
//! synthetic frame in the kernel (the `program_cost` example), next to an empty
//! TC program whose time is what any program costs here. No network stack, no
//! traffic generator, no statistics overhead: the steadiest kernel figure.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{Figure, Plan, Stats};
use crate::util;

/// Per-packet target of the issue, for the programs at 100 000 routes.
const TARGET_NS: f64 = 60.0;

/// Runs the example and turns its lines into figures: each program's mean time
/// per run, and that time minus the empty program's of the same round.
pub fn cost_alone(plan: Plan) -> Result<Vec<Figure>> {
    util::cargo(&[
        "build",
        "--release",
        "--quiet",
        "-p",
        "routemon-testbed",
        "--example",
        "program_cost",
    ])?;
    let bin = util::workspace_root().join("target/release/examples/program_cost");
    let mut args: Vec<String> = Vec::new();
    let counts: &[usize] = if plan.quick {
        &[10, 1_000]
    } else {
        &[10, 1_000, 100_000]
    };
    for routes in counts {
        args.extend(["--routes".to_owned(), routes.to_string()]);
    }
    args.extend(["--rounds".to_owned(), (plan.rounds() * 2 + 1).to_string()]);
    if plan.quick {
        args.extend(["--repeat".to_owned(), "20000".to_owned()]);
    }
    let out = std::process::Command::new(&bin)
        .args(&args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "program_cost failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("program_cost output")?;
    figures(&lines)
}

/// (frame, route count, flow table) → the empty program's time per round.
type Floors = BTreeMap<(String, u64, String), Vec<f64>>;

fn figures(lines: &[Value]) -> Result<Vec<Figure>> {
    let field = |line: &Value, name: &str| -> Result<String> {
        line[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {name} in {line}"))
    };
    let rounds = |line: &Value| -> Vec<f64> {
        line["ns"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let mut floors = Floors::new();
    let mut figures = Vec::new();
    for line in lines {
        let (program, frame) = (field(line, "program")?, field(line, "frame")?);
        let table = field(line, "flow_table")?;
        let routes = line["routes"].as_u64().context("no routes")?;
        let ns = rounds(line);
        if ns.is_empty() {
            continue;
        }
        let flow_table = if table == "full" {
            ", flow table full"
        } else {
            ""
        };
        if program == "empty" {
            figures.push(Figure::new(
                "program alone",
                format!("empty program, {frame}, {routes} routes{flow_table}"),
                Stats::of(&ns),
                "ns/run",
            ));
            floors.insert((frame, routes, table), ns);
            continue;
        }
        let direction = if program.ends_with("_tx") {
            "egress"
        } else {
            "ingress"
        };
        let case = format!("{direction}, {frame}, {routes} routes{flow_table}");
        figures.push(Figure::new(
            "program alone",
            case.clone(),
            Stats::of(&ns),
            "ns/run",
        ));
        if let Some(floor) = floors.get(&(frame, routes, table)) {
            let added: Vec<f64> = ns.iter().zip(floor).map(|(p, e)| p - e).collect();
            let figure = Figure::new(
                "program alone",
                format!("{case}, minus empty program"),
                Stats::of(&added),
                "ns/run",
            );
            figures.push(if routes >= 100_000 {
                figure.at_most(TARGET_NS)
            } else {
                figure
            });
        }
    }
    Ok(figures)
}
