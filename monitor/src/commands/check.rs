//! `routemon check`: one node condition for node-problem-detector, from netlink
//! only. Its exit code is NPD's plugin status (0 ok, 1 problem, 2 unknown) and it
//! prints exactly one line, whatever happens.

use crate::{
    cli::CheckArgs,
    condition::Answer,
    model::dump::Netlink,
    session::{Investigation, Selection},
};

/// Runs `check`: prints the answer's line and returns its status as the exit code.
/// Errors are an answer too (unknown), with the whole error on stderr.
pub async fn run(args: &CheckArgs) -> u8 {
    let answer = match judge(args).await {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("routemon: error: {err:#}");
            Answer::unknown(&format!("{err:#}"))
        }
    };
    answer_with(&answer)
}

/// Prints `answer`'s line on stdout and returns its exit code.
pub fn answer_with(answer: &Answer) -> u8 {
    println!("{}", answer.line);
    answer.status as u8
}

/// The exit code when `check` cannot even start (no async runtime).
pub fn cannot_start(error: &str) -> u8 {
    answer_with(&Answer::unknown(error))
}

async fn judge(args: &CheckArgs) -> anyhow::Result<Answer> {
    let netlink = Netlink::connect()?;
    let selection = Selection {
        interfaces: args.interfaces.interfaces.clone(),
        primary: args.interfaces.primary.clone(),
        cilium_family: args.cilium.cilium_family,
    };
    let found = Investigation::gather(&netlink, &selection).await?;
    Ok(Answer::judge(args.condition, &found.findings))
}
