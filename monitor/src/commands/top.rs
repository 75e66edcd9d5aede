//! `routemon top`: attach, then redraw rates, top flows, drops and findings every
//! interval until `q`, Ctrl-C or a signal; detach on the way out.

use std::{io::IsTerminal as _, time::Instant};

use anyhow::Context as _;
use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures::StreamExt as _;

use super::counting::Counting;
use crate::{
    cli::{SelectionArgs, TopArgs},
    model::dump::Netlink,
    preflight,
    signals::Shutdown,
    top::{
        state::TopState,
        terminal::TerminalSession,
        ui::{self, View},
    },
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
    let selection = SelectionArgs {
        interfaces: args.interfaces.clone(),
        primary: args.primary.clone(),
        json: false,
        all_tables: false,
        cilium_family: crate::cilium::CiliumFamilies::default(),
    };
    let counting = Counting::start(&netlink, &selection, args.attach).await?;
    let shown = show(&counting, args, &mut shutdown).await;
    // The terminal is back to normal here; detach whatever happened on screen.
    let detached = counting.monitor.detach(&netlink).await;
    shown?;
    detached.context("detaching routemon's programs")?;
    Ok(())
}

/// The screen loop. Returns when the user quits or a signal arrives.
async fn show(counting: &Counting, args: &TopArgs, shutdown: &mut Shutdown) -> anyhow::Result<()> {
    let mut session = TerminalSession::enter().context("preparing the terminal")?;
    let interfaces = counting.interface_names();
    let mut view = View {
        interval: humantime::format_duration(args.interval).to_string(),
        via: counting.attached_via(),
        drops_unavailable: counting.drops_unavailable.clone(),
        ..View::default()
    };
    let mut state = TopState::default();
    let mut events = EventStream::new();
    let mut refresh = tokio::time::interval(args.interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        session
            .terminal()
            .draw(|frame| ui::draw(frame, &state, &view))
            .context("drawing")?;
        tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            _ = refresh.tick() => {
                if !view.paused {
                    let readings = counting.read().context("reading the eBPF counters")?;
                    let now = Instant::now();
                    state.update(counting, readings, now - last);
                    last = now;
                }
            }
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        _ if ctrl_c => return Ok(()),
                        KeyCode::Char('s') => view.sort = view.sort.next(),
                        KeyCode::Char('p') => view.paused = !view.paused,
                        KeyCode::Char('i') => view.filter = next_filter(&interfaces, view.filter.take()),
                        KeyCode::Char('?') => view.help = !view.help,
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err).context("reading the terminal"),
                None => return Ok(()),
            },
        }
    }
}

/// All interfaces, then each in turn, then all again.
fn next_filter(interfaces: &[String], current: Option<String>) -> Option<String> {
    match current {
        None => interfaces.first().cloned(),
        Some(name) => interfaces
            .iter()
            .skip_while(|i| **i != name)
            .nth(1)
            .cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interface_filter_cycles_through_all_then_each() {
        let names = ["ens5".to_owned(), "ens6".to_owned()];
        let first = next_filter(&names, None);
        assert_eq!(first.as_deref(), Some("ens5"));
        let second = next_filter(&names, first);
        assert_eq!(second.as_deref(), Some("ens6"));
        assert_eq!(next_filter(&names, second), None);
        assert_eq!(next_filter(&[], None), None);
    }
}
