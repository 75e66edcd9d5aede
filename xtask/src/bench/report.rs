//! The bench's outputs: a table on stdout, `target/bench/results.json`, and a
//! Markdown summary for docs/performance.md.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::{Figure, Plan, measure::Verdict};

/// What the machine is, for reading the numbers.
#[derive(Debug, Serialize)]
struct Machine {
    kernel: String,
    cpu: String,
    cores: usize,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Machine {
        kernel: routemon_testbed::cmd::run("uname", &["-r"])
            .map(|k| k.trim().to_owned())
            .unwrap_or_default(),
        cpu,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
    }
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn verdict(f: &Figure) -> String {
    match (&f.target, f.verdict) {
        (Some(target), Verdict::Met) => format!("{target} ✓"),
        (Some(target), Verdict::Missed) => format!("{target} ✗"),
        _ => String::new(),
    }
}

/// Prints and writes the results.
pub fn write(figures: &[Figure], plan: Plan, took: Duration) -> Result<()> {
    let machine = machine();
    let mut markdown = format!(
        "Machine: {} ({} cores), Linux {}. Mode: {}. Bench time: {:.0} s.\n\n\
         | section | case | median | min | max | runs | unit | target |\n\
         |---|---|---:|---:|---:|---:|---|---|\n",
        machine.cpu,
        machine.cores,
        machine.kernel,
        if plan.quick { "quick" } else { "full" },
        took.as_secs_f64()
    );
    println!();
    for f in figures {
        let line = format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f.section,
            f.case,
            number(f.stats.median),
            number(f.stats.min),
            number(f.stats.max),
            f.stats.runs,
            f.unit,
            verdict(f)
        );
        markdown.push_str(&line);
    }
    print!("{markdown}");
    let dir = crate::util::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    #[derive(Serialize)]
    struct Results<'a> {
        machine: Machine,
        quick: bool,
        seconds: f64,
        figures: &'a [Figure],
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&Results {
            machine,
            quick: plan.quick,
            seconds: took.as_secs_f64(),
            figures,
        })?,
    )?;
    std::fs::write(dir.join("summary.md"), &markdown)?;
    let missed: Vec<&Figure> = figures
        .iter()
        .filter(|f| f.verdict == Verdict::Missed)
        .collect();
    println!(
        "\nbench: {} figures, {} targets missed; written to {}",
        figures.len(),
        missed.len(),
        dir.display()
    );
    Ok(())
}
