//! Shell completions and man pages for routemon, generated from its clap
//! definitions and laid out under a prefix as a package installs them:
//! `cargo run -p routemon --example dist -- <prefix>`. `cargo xtask dist` runs it
//! next to the release binary (it lives here, not in xtask, so that xtask builds
//! without routemon's eBPF toolchain, which `cargo xtask setup` installs).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

/// Where each file goes under the prefix.
const MAN1: &str = "share/man/man1";
const BASH: &str = "share/bash-completion/completions";
const ZSH: &str = "share/zsh/site-functions";
const FISH: &str = "share/fish/vendor_completions.d";

fn main() -> Result<()> {
    let prefix = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: dist <prefix>")?;
    for path in write(&prefix)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes completions and man pages for routemon under `prefix`; returns the
/// files written.
fn write(prefix: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (shell, dir, name) in [
        (Shell::Bash, BASH, "routemon"),
        (Shell::Zsh, ZSH, "_routemon"),
        (Shell::Fish, FISH, "routemon.fish"),
    ] {
        let dir = prefix.join(dir);
        fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        let mut file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_complete::generate(
            shell,
            &mut routemon::cli::Cli::command(),
            "routemon",
            &mut file,
        );
        written.push(path);
    }
    let man = prefix.join(MAN1);
    fs::create_dir_all(&man)?;
    // routemon.1 and one page per subcommand (routemon-watch.1, …), as git does.
    clap_mangen::generate_to(routemon::cli::Cli::command(), &man)
        .with_context(|| format!("writing man pages to {}", man.display()))?;
    for entry in fs::read_dir(&man)? {
        written.push(entry?.path());
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn completions_and_man_pages_cover_every_subcommand_and_are_valid() {
        let prefix = std::env::temp_dir().join(format!("routemon-dist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&prefix);
        let written = write(&prefix).unwrap();
        let subcommands: Vec<String> = routemon::cli::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|name| name != "help")
            .collect();
        assert!(subcommands.contains(&"watch".to_owned()));
        let bash = fs::read_to_string(prefix.join(BASH).join("routemon")).unwrap();
        for sub in &subcommands {
            assert!(
                prefix.join(MAN1).join(format!("routemon-{sub}.1")).exists(),
                "no man page for {sub}"
            );
            assert!(bash.contains(sub.as_str()), "bash completion lacks {sub}");
        }
        assert!(bash.contains("--bpffs-dir"), "options are completed");
        // The shells and man parse what was generated.
        let bash_ok = Command::new("bash")
            .arg("-n")
            .arg(prefix.join(BASH).join("routemon"))
            .status()
            .unwrap();
        assert!(bash_ok.success(), "bash -n rejects the completion script");
        let page = fs::read_to_string(prefix.join(MAN1).join("routemon-watch.1")).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(
            page.contains("keep\\-attached"),
            "the watch page lists its options"
        );
        assert_eq!(written.len(), 3 + 1 + subcommands.len());
        let _ = fs::remove_dir_all(&prefix);
    }
}
