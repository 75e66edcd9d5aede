//! The documentation generated from the code stays true: `docs/usage.md` is every
//! subcommand's `--help`, and the README's usage table names every subcommand.
//! `ROUTEMON_BLESS=1` rewrites `docs/usage.md` instead of comparing. Every relative
//! link of the Markdown documentation reaches a file and, with an anchor, a heading.

use std::{
    fs,
    path::{Path, PathBuf},
};

use routemon_testbed::markdown::{anchors, prose_lines};

routemon_testbed::new_machine_view!();

const SUBCOMMANDS: [&str; 9] = [
    "routes", "snapshot", "top", "pin", "unpin", "watch", "cleanup", "doctor", "check",
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

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Markdown files whose links are checked.
fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md"), root.join("SECURITY.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|err| panic!("reading {dir:?}: {err}")) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The targets of inline links `[text](target)` outside code.
fn link_targets(line: &str) -> Vec<String> {
    // Drop inline code spans, which may hold `](` that is no link.
    let mut prose = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            prose.push_str(part);
        }
    }
    let mut targets = Vec::new();
    let mut rest = prose.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].trim().to_string());
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn relative_links_reach_files_and_headings() {
    let root = repo_root();
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = fs::read_to_string(&file).unwrap_or_else(|err| panic!("{file:?}: {err}"));
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for line in prose_lines(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path_part, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let target_file = if path_part.is_empty() {
                    file.clone()
                } else {
                    file.parent().expect("file has a directory").join(path_part)
                };
                if !target_file.exists() {
                    broken.push(format!("{shown}: ({target}): no such file"));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if target_file.extension().is_none_or(|ext| ext != "md") {
                    continue;
                }
                let target_text = fs::read_to_string(&target_file).expect("reading link target");
                if !anchors(&target_text).contains(anchor) {
                    broken.push(format!("{shown}: ({target}): no heading with that anchor"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in the documentation:\n  {}",
        broken.join("\n  ")
    );
}
