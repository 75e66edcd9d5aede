//! `routemon doctor`: user data and networkd checks, optionally against the live
//! node, with the fixing files written on request.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    cli::DoctorArgs,
    doctor::{self, Check, Location, Status, networkd, userdata},
    model::dump::Netlink,
    pin::{
        files::write_atomically,
        networkd::{
            ConfigFile, LinkFacts, NetworkdConfig, STANDARD_DIRS, UnmanageMatch, render_pinned,
            render_unmanaged,
        },
    },
};

/// The metric `--fix` gives the primary: below networkd's 1024, as the seed's fix.
const FIX_METRIC: u32 = 1000;

/// Runs `doctor`; returns the exit status (1 for checks at or above `--fail-on`).
pub async fn run(args: &DoctorArgs) -> anyhow::Result<u8> {
    let mut checks = Vec::new();
    let mut predictions = Vec::new();
    if let Some(path) = &args.user_data {
        match read_bounded(path) {
            Ok((source, input)) => checks.extend(userdata::check(&source, &input)),
            Err(err) => checks.push(
                Check::new(
                    "userdata.read",
                    Status::Error,
                    Location {
                        source: path.display().to_string(),
                        path: None,
                        line: None,
                    },
                    format!("{err:#}"),
                )
                .fix("pass the user data file (or - and the data on stdin)"),
            ),
        }
    }
    if !args.no_networkd {
        let (networkd_checks, predicted) = check_networkd(args).await?;
        checks.extend(networkd_checks);
        predictions = predicted;
    }
    if args.json {
        let code = doctor::exit_code(&checks, args.fail_on);
        let summary = serde_json::json!({
            "exit_code": code,
            "errors": checks.iter().filter(|c| c.status == Status::Error).count(),
            "warnings": checks.iter().filter(|c| c.status == Status::Warning).count(),
            "checks": checks,
            "networkd_predictions": predictions,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", doctor::render(&checks));
    }
    Ok(doctor::exit_code(&checks, args.fail_on))
}

/// Reads at most one byte more than user data may have, so a huge file is
/// reported, not loaded.
fn read_bounded(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let limit = u64::try_from(userdata::MAX_INPUT_BYTES + 1).unwrap_or(u64::MAX);
    let mut input = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut input)
            .context("reading user data from stdin")?;
        return Ok(("user data (stdin)".into(), input));
    }
    std::fs::File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut input))
        .with_context(|| format!("cannot read the user data {}", path.display()))?;
    Ok((path.display().to_string(), input))
}

/// The networkd checks and the prediction per interface.
async fn check_networkd(
    args: &DoctorArgs,
) -> anyhow::Result<(Vec<Check>, Vec<networkd::Prediction>)> {
    let dirs: Vec<PathBuf> = if args.networkd_dirs.is_empty() {
        STANDARD_DIRS.iter().map(PathBuf::from).collect()
    } else {
        args.networkd_dirs.clone()
    };
    let config = match NetworkdConfig::from_dirs(dirs.clone()) {
        Ok(config) => config,
        Err(err) => {
            let check = Check::new(
                "networkd.read",
                Status::Error,
                location(&dirs),
                format!("cannot read the networkd configuration: {err}"),
            )
            .fix("check the directories' permissions; .network files are UTF-8 text");
            return Ok((vec![check], Vec::new()));
        }
    };
    let model = if args.live {
        Some(Netlink::connect()?.dump().await?)
    } else {
        None
    };
    let present: Vec<LinkFacts> = model
        .iter()
        .flat_map(|m| m.links.values())
        .filter(|l| networkd::scheme_of(&l.name).is_some())
        .map(LinkFacts::of)
        .collect();
    let outcome = networkd::check(&config, &present, args.primary.as_deref());
    let mut checks = outcome.checks;
    if let Some(model) = &model {
        checks.extend(doctor::live::checks(
            model,
            &outcome.predictions,
            args.cilium_family,
        ));
    }
    if let Some(dir) = &args.fix {
        checks.extend(write_fixes(
            dir,
            &config,
            &outcome.fixes,
            &present,
            args.primary.as_deref(),
        )?);
    }
    Ok((checks, outcome.predictions))
}

fn location(dirs: &[PathBuf]) -> Location {
    Location {
        source: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        path: None,
        line: None,
    }
}

/// Writes the fixing files into `dir` and checks the prediction with them.
fn write_fixes(
    dir: &Path,
    config: &NetworkdConfig,
    fixes: &[(String, Option<PathBuf>, Vec<String>)],
    present: &[LinkFacts],
    primary: Option<&str>,
) -> anyhow::Result<Vec<Check>> {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if STANDARD_DIRS.iter().any(|d| Path::new(d) == canonical) {
        return Err(crate::cli::UsageError(format!(
            "--fix {} is a live networkd directory; doctor never changes the live \
             configuration. Write into another directory, review, then copy (or use \
             `routemon pin --apply`)",
            dir.display()
        ))
        .into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut unmanaged = Vec::new();
    for (interface, file, secondaries) in fixes {
        let base = file
            .as_ref()
            .and_then(|path| config.files.iter().find(|f| &f.path == path))
            .cloned()
            .unwrap_or_else(|| ConfigFile {
                path: PathBuf::from("(none)"),
                content: "[Network]\nDHCP=ipv4\n".into(),
            });
        let drop_ins = config.drop_ins(&base.file_name()).unwrap_or_default();
        let path = dir.join(format!("05-{interface}.network"));
        write_atomically(
            &path,
            &render_pinned(interface, FIX_METRIC, &base, &drop_ins, false),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
        unmanaged.extend(secondaries.iter().map(|name| LinkFacts {
            name: name.clone(),
            ..LinkFacts::default()
        }));
    }
    if !unmanaged.is_empty() {
        let path = dir.join("05-routemon-unmanaged.network");
        write_atomically(&path, &render_unmanaged(&unmanaged, UnmanageMatch::Name))
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    if written.is_empty() {
        return Ok(Vec::new());
    }
    // What networkd would do with the fix in place.
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(config.dirs.iter().filter(|d| *d != dir).cloned());
    let fixed = NetworkdConfig::from_dirs(dirs)?;
    let after = networkd::check(&fixed, present, primary);
    let remaining = after
        .checks
        .iter()
        .filter(|c| c.id.starts_with("networkd.") && c.status >= Status::Warning)
        .count();
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    Ok(vec![Check::new(
        "fix.written",
        Status::Info,
        Location {
            source: dir.display().to_string(),
            path: None,
            line: None,
        },
        format!(
            "wrote {}; with them, {remaining} networkd problems remain. Copy them to \
             /etc/systemd/network and restart systemd-networkd",
            names.join(", ")
        ),
    )])
}
