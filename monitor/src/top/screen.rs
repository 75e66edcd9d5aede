//! The screen loop of `top`: redraw every interval, take keys, until the user quits
//! or a signal arrives.

use std::{time::Duration, time::Instant};

use anyhow::Context as _;
use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures::StreamExt as _;

use super::{
    state::TopState,
    terminal::TerminalSession,
    ui::{self, View},
};
use crate::{session::Counting, signals::Shutdown};

/// The screen loop. Returns when the user quits or a signal arrives.
pub async fn show(
    counting: &Counting,
    interval: Duration,
    shutdown: &mut Shutdown,
) -> anyhow::Result<()> {
    let mut session = TerminalSession::enter().context("preparing the terminal")?;
    let interfaces = counting.interface_names();
    let mut view = View {
        interval: humantime::format_duration(interval).to_string(),
        via: counting.attached_via(),
        drops_unavailable: counting.drops_unavailable.clone(),
        ..View::default()
    };
    let mut state = TopState::default();
    let mut events = EventStream::new();
    let mut refresh = tokio::time::interval(interval);
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
