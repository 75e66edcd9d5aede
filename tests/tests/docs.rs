//! The documentation generated from the code stays true: `docs/usage.md` is every
//! subcommand's `--help`, and the README's usage table names every subcommand.
//! `ROUTEMON_BLESS=1` rewrites `docs/usage.md` instead of comparing.

use std::path::Path;

routemon_testbed::new_machine_view!();

const SUBCOMMANDS: [&str; 8] = [
    "routes", "snapshot", "top", "pin", "unpin", "watch", "cleanup", "doctor",
];

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(routemon_testbed::routemon::binary())
        .args(args)
        .output()
        .expect("running routemon");
    assert!(out.status.success(), "routemon {args:?} failed");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

fn usage_md() -> String {
    let mut out = String::from(
        "# Usage\n\nEvery subcommand's `--help`, generated from the code \
         (`tests/tests/docs.rs` checks it; `ROUTEMON_BLESS=1 cargo xtask test docs` \
         rewrites it).\n\n## routemon\n\n```text\n",
    );
    out.push_str(&help(&["--help"]));
    out.push_str("```\n");
    for sub in SUBCOMMANDS {
        out.push_str(&format!("\n## routemon {sub}\n\n```text\n"));
        out.push_str(&help(&[sub, "--help"]));
        out.push_str("```\n");
    }
    out
}

#[test]
fn usage_md_is_the_help_of_every_subcommand() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/usage.md");
    let generated = usage_md();
    if std::env::var_os("ROUTEMON_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing docs/usage.md");
        return;
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == generated,
        "docs/usage.md is out of date with routemon --help: run \
         `ROUTEMON_BLESS=1 cargo xtask test docs`"
    );
}

#[test]
fn the_readme_names_every_subcommand() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    for sub in SUBCOMMANDS {
        assert!(
            readme.contains(&format!("| `routemon {sub}` |")),
            "README's usage table lacks {sub}"
        );
    }
    // Every subcommand `--help` lists is one this test (and so the README) knows.
    let listed = help(&["--help"]);
    let commands = listed
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .expect("a Commands: section");
    for line in commands
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
    {
        let name = line.split_whitespace().next().unwrap();
        assert!(
            name == "help" || SUBCOMMANDS.contains(&name),
            "a new subcommand {name}: add it to SUBCOMMANDS, the README and docs/usage.md"
        );
    }
}
