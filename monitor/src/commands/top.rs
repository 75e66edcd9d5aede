//! `routemon top`: attach, then redraw rates, top flows, drops and findings every
//! interval until `q`, Ctrl-C or a signal; detach on the way out.

use std::io::IsTerminal as _;

use anyhow::Context as _;

use crate::{
    cli::TopArgs,
    model::dump::Netlink,
    preflight,
    session::{Counting, Selection},
    signals::Shutdown,
    top::screen,
};

/// Runs `top`.
pub async fn run(args: &TopArgs) -> anyhow::Result<()> {
    preflight::require_ebpf_privileges("top")?;
    anyhow::ensure!(
        std::io::stdout().is_terminal() && std::io::stdin().is_terminal(),
        "routemon top draws a full-screen view and needs a terminal (stdin and stdout are \
         not both TTYs). For a one-off report use `routemon snapshot` (with --json for \
         scripts); for continuous monitoring, `routemon watch` (Prometheus metrics, JSON events)"
    );
    let mut shutdown = Shutdown::install().context("installing signal handlers")?;
    let netlink = Netlink::connect()?;
    let selection = Selection {
        interfaces: args.interfaces.interfaces.clone(),
        primary: args.interfaces.primary.clone(),
        ..Selection::default()
    };
    let counting = Counting::start(&netlink, &selection, args.attach).await?;
    let shown = screen::show(&counting, args.interval, &mut shutdown).await;
    // The terminal is back to normal here; detach whatever happened on screen.
    let detached = counting.monitor.detach(&netlink).await;
    shown?;
    detached.context("detaching routemon's programs")?;
    Ok(())
}
