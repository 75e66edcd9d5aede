//! Cost of routemon's programs alone: `BPF_PROG_TEST_RUN` of each program on a
//! synthetic frame in the kernel (the `program_cost` example), next to an empty
//! TC program whose time is what any program costs here. No network stack, no
//! traffic generator, no statistics overhead: the steadiest kernel figure.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{Figure, Plan, Stats};

/// The target: routemon's cost over the empty program at most the one-flow-lookup
/// reference's (both measured in the same rounds, so machine speed cancels).
const TARGET_RATIO: f64 = 1.0;

/// That ratio as measured on the development machine (2026-12-02, after the hot
/// path's redesign: medians egress 1.3–1.4, ingress 1.4–1.5; before it 2.2–2.6).
/// Commit the new figure with a change that moves it.
const COMMITTED_RATIO: f64 = 1.5;

/// How far above [`COMMITTED_RATIO`] even the best round must be for a run to
/// fail: a regression that large is never noise (both programs of a round share
/// its noise, and the best of several rounds is taken).
const REGRESSION_FACTOR: f64 = 1.5;

/// Runs the example and turns its lines into figures: each program's mean time
/// per run, and that time minus the empty program's of the same round.
pub fn cost_alone(plan: Plan) -> Result<Vec<Figure>> {
    let bin = super::testbed_example("program_cost")?;
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
    let figures = figures(&lines)?;
    check_regression(&figures)?;
    Ok(figures)
}

/// Fails when a ratio to the reference regressed past [`REGRESSION_FACTOR`] ×
/// [`COMMITTED_RATIO`] in its best round.
fn check_regression(figures: &[Figure]) -> Result<()> {
    let limit = COMMITTED_RATIO * REGRESSION_FACTOR;
    let regressed: Vec<String> = figures
        .iter()
        .filter(|f| f.unit == "ratio" && f.stats.min > limit)
        .map(|f| format!("{}: best round {:.2}", f.case, f.stats.min))
        .collect();
    anyhow::ensure!(
        regressed.is_empty(),
        "routemon's programs regressed against the one-flow-lookup reference (best round \
         above {limit:.2} = {REGRESSION_FACTOR} × the committed {COMMITTED_RATIO}):\n{}",
        regressed.join("\n")
    );
    Ok(())
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
    // (frame, routes, flow table) → the flow-lookup reference's cost over empty.
    let mut references = Floors::new();
    let mut figures = Vec::new();
    for line in lines {
        if let Some(xlated) = line["xlated_bytes"].as_f64() {
            let program = field(line, "program")?;
            for (what, value, unit) in [
                ("after the verifier", xlated, "bytes"),
                (
                    "machine code",
                    line["jited_bytes"].as_f64().unwrap_or(0.0),
                    "bytes",
                ),
                (
                    "instructions the verifier processed",
                    line["verified_insns"].as_f64().unwrap_or(0.0),
                    "insns",
                ),
            ] {
                figures.push(Figure::new(
                    "program size",
                    format!("{program}, {what}"),
                    Stats::of(&[value]),
                    unit,
                ));
            }
            continue;
        }
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
        if table == "ablation" {
            if program == "empty" {
                floors.insert((frame, routes, table), ns);
            } else if let Some(floor) = floors.get(&(frame.clone(), routes, table)) {
                figures.push(ablation_figure(&program, &frame, routes, &ns, floor));
            }
            continue;
        }
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
        let key = (frame.clone(), routes, table.clone());
        let case = match program.as_str() {
            "ref_iface_array" => format!(
                "reference: interface counter (per-CPU array), {frame}, {routes} routes{flow_table}"
            ),
            "ref_flow_lookup" => format!(
                "reference: + one flow lookup (16-byte key, per-CPU LRU), {frame}, {routes} routes{flow_table}"
            ),
            _ if program.ends_with("_tx") => {
                format!("egress, {frame}, {routes} routes{flow_table}")
            }
            _ => format!("ingress, {frame}, {routes} routes{flow_table}"),
        };
        figures.push(Figure::new(
            "program alone",
            case.clone(),
            Stats::of(&ns),
            "ns/run",
        ));
        let Some(floor) = floors.get(&key) else {
            continue;
        };
        let added: Vec<f64> = ns.iter().zip(floor).map(|(p, e)| p - e).collect();
        figures.push(Figure::new(
            "program alone",
            format!("{case}, minus empty program"),
            Stats::of(&added),
            "ns/run",
        ));
        if program == "ref_flow_lookup" {
            references.insert(key, added);
        } else if program.starts_with("routemon_")
            && let Some(reference) = references.get(&key)
        {
            // Round by round: noise of one round hits both alike.
            let ratios: Vec<f64> = added
                .iter()
                .zip(reference)
                .map(|(own, floor)| own / floor.max(1.0))
                .collect();
            figures.push(
                Figure::new(
                    "program alone",
                    format!("{case}, ÷ one-flow-lookup reference (both minus empty)"),
                    Stats::of(&ratios),
                    "ratio",
                )
                .at_most(TARGET_RATIO),
            );
        }
    }
    Ok(figures)
}

/// One row of the ablation: a feature level's cost over the empty program.
fn ablation_figure(program: &str, frame: &str, routes: u64, ns: &[f64], floor: &[f64]) -> Figure {
    let (base, level) = program.split_once('@').unwrap_or((program, "all"));
    let direction = if base.ends_with("_tx") {
        "egress"
    } else {
        "ingress"
    };
    let level = match level {
        "interfaces" => "1 interface counters only",
        "routes" => "2 + IP parse and a route lookup per packet",
        "flows" => "3 + flow table, route cached per flow",
        _ => "4 + source owners (cross-ENI) and asymmetry: all",
    };
    let added: Vec<f64> = ns.iter().zip(floor).map(|(p, e)| p - e).collect();
    Figure::new(
        "ablation",
        format!("{direction}, {level}, {frame}, {routes} routes, minus empty program"),
        Stats::of(&added),
        "ns/run",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(program: &str, ns: &[u32]) -> Value {
        serde_json::json!({
            "program": program, "frame": "64 B UDP", "routes": 10, "flow_table": "empty", "ns": ns,
        })
    }

    #[test]
    fn ratios_are_taken_round_by_round_against_the_reference() {
        let lines = [
            line("empty", &[30, 40]),
            line("ref_flow_lookup", &[70, 80]),
            line("routemon_tx", &[110, 120]),
        ];
        let figures = figures(&lines).unwrap();
        let ratio = figures.iter().find(|f| f.unit == "ratio").unwrap();
        // Each round: (110 − 30) / (70 − 30) = 2 and (120 − 40) / (80 − 40) = 2.
        assert_eq!((ratio.stats.min, ratio.stats.max), (2.0, 2.0));
        assert!(ratio.case.starts_with("egress, 64 B UDP, 10 routes"));
        check_regression(&figures).unwrap();
    }

    #[test]
    fn ablation_rows_are_each_level_over_the_empty_program_of_their_rounds() {
        let ablation = |program: &str, ns: &[u32]| {
            serde_json::json!({
                "program": program, "frame": "64 B UDP", "routes": 10,
                "flow_table": "ablation", "ns": ns,
            })
        };
        let lines = [
            ablation("empty", &[30, 40]),
            ablation("routemon_tx@interfaces", &[31, 41]),
            ablation("routemon_rx@flows", &[80, 90]),
            ablation("routemon_tx", &[90, 100]),
        ];
        let figures = figures(&lines).unwrap();
        assert_eq!(figures.len(), 3);
        assert!(figures.iter().all(|f| f.section == "ablation"));
        assert!(
            figures[0]
                .case
                .starts_with("egress, 1 interface counters only")
        );
        assert_eq!(figures[0].stats.max, 1.0);
        assert!(figures[1].case.starts_with("ingress, 3 + flow table"));
        assert_eq!(figures[1].stats.min, 50.0);
        assert!(figures[2].case.starts_with("egress, 4 + source owners"));
    }

    #[test]
    fn only_a_regression_in_the_best_round_fails() {
        let limit = COMMITTED_RATIO * REGRESSION_FACTOR;
        // One noisy round far above the limit, the other below: not a regression.
        let noisy = [
            line("empty", &[30, 30]),
            line("ref_flow_lookup", &[70, 70]),
            line("routemon_tx", &[30 + (40.0 * limit * 2.0) as u32, 100]),
        ];
        check_regression(&figures(&noisy).unwrap()).unwrap();
        // Every round above it: a regression.
        let slow = [
            line("empty", &[30, 30]),
            line("ref_flow_lookup", &[70, 70]),
            line("routemon_tx", &[30 + (40.0 * (limit + 0.5)) as u32; 2]),
        ];
        assert!(check_regression(&figures(&slow).unwrap()).is_err());
    }
}
