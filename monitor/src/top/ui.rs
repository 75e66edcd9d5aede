//! Drawing `top`'s screen with ratatui: findings, interfaces, routes, top flows and
//! drops, top to bottom, and a key line.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row, Table},
};

use super::state::{TopState, si, sparkline};
use crate::{
    findings::Severity,
    flows::FlowTraffic,
    report::{InterfaceReport, RouteReport},
};

/// How the flows are ordered (`s` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowSort {
    /// Bytes both ways.
    #[default]
    Bytes,
    /// Packets both ways.
    Packets,
    /// Asymmetric and cross-ENI flows first, then bytes.
    Flagged,
}

impl FlowSort {
    /// The next order.
    pub fn next(self) -> Self {
        match self {
            Self::Bytes => Self::Packets,
            Self::Packets => Self::Flagged,
            Self::Flagged => Self::Bytes,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::Packets => "packets",
            Self::Flagged => "flagged first",
        }
    }
}

/// The user's choices.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Flow order.
    pub sort: FlowSort,
    /// Whether refreshing is paused.
    pub paused: bool,
    /// Show only this interface (by name), or all.
    pub filter: Option<String>,
    /// Whether the help overlay is shown.
    pub help: bool,
    /// The refresh interval, for the title.
    pub interval: String,
    /// `tcx` or `clsact`, for the title.
    pub via: String,
    /// Why kernel drops are not counted, when they are not.
    pub drops_unavailable: Option<String>,
}

const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, state: &TopState, view: &View) {
    let interfaces: Vec<&InterfaceReport> = state
        .report
        .iter()
        .flat_map(|r| &r.interfaces)
        .filter(|i| view.filter.as_ref().is_none_or(|f| *f == i.name))
        .collect();
    let routes: Vec<&RouteReport> = state
        .report
        .iter()
        .flat_map(|r| &r.routes)
        .filter(|r| {
            r.table == "main" && (r.dst.ends_with("/0") || r.egress_packets.unwrap_or(0) > 0)
        })
        .filter(|r| view.filter.is_none() || r.dev == view.filter)
        .collect();
    let findings = state.findings.len().clamp(1, 4) as u16;
    let [
        title,
        findings_area,
        interfaces_area,
        routes_area,
        flows_area,
        drops_area,
        keys,
    ] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(findings + 2),
        Constraint::Length(interfaces.len() as u16 + 3),
        Constraint::Length((routes.len() as u16).clamp(1, 8) + 3),
        Constraint::Min(5),
        Constraint::Length((state.drops.len() as u16).clamp(1, 6) + 3),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let paused = if view.paused { "  [PAUSED]" } else { "" };
    frame.render_widget(
        Line::from(vec![
            Span::styled("routemon top", HEADER),
            Span::raw(format!(
                " — {} interfaces via {} — every {} — {}{paused}",
                state.report.as_ref().map_or(0, |r| r.interfaces.len()),
                view.via,
                view.interval,
                view.filter.as_deref().unwrap_or("all interfaces"),
            )),
        ]),
        title,
    );
    draw_findings(frame, findings_area, state);
    draw_interfaces(frame, interfaces_area, state, &interfaces);
    draw_routes(frame, routes_area, state, &routes);
    draw_flows(frame, flows_area, state, view);
    draw_drops(frame, drops_area, state, view);
    frame.render_widget(
        Line::from(format!(
            " q quit   s sort ({})   p {}   i interface ({})   ? help",
            view.sort.label(),
            if view.paused { "resume" } else { "pause" },
            view.filter.as_deref().unwrap_or("all"),
        ))
        .reversed(),
        keys,
    );
    if view.help {
        draw_help(frame);
    }
}

fn severity_style(severity: Severity) -> Style {
    match severity {
        Severity::Critical => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Warning => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new().fg(Color::Cyan),
    }
}

fn draw_findings(frame: &mut Frame, area: Rect, state: &TopState) {
    let lines: Vec<Line> = if state.findings.is_empty() {
        vec![Line::styled("no findings", Style::new().fg(Color::Green))]
    } else {
        state
            .findings
            .iter()
            .map(|f| {
                Line::from(vec![
                    Span::styled(format!("{:<8} ", f.severity), severity_style(f.severity)),
                    Span::raw(f.message.clone()),
                ])
            })
            .collect()
    };
    frame.render_widget(
        // One line per finding, cut at the border: the whole text is in `snapshot`.
        Paragraph::new(lines)
            .block(Block::bordered().title(format!(" Findings ({}) ", state.findings.len()))),
        area,
    );
}

fn rate(count: Option<u64>, seconds: f64, scale: f64) -> String {
    si(count.unwrap_or(0) as f64 * scale / seconds)
}

fn draw_interfaces(
    frame: &mut Frame,
    area: Rect,
    state: &TopState,
    interfaces: &[&InterfaceReport],
) {
    let routes = state.report.as_ref().map_or(&[][..], |r| &r.routes[..]);
    let rows = interfaces.iter().map(|i| {
        let default = routes.iter().find(|r| {
            r.table == "main" && r.dst.ends_with("/0") && r.dev.as_deref() == Some(&i.name)
        });
        let default = default.map_or_else(
            || "none".to_owned(),
            |r| format!("metric {}{}", r.metric, if r.preferred { " ✓" } else { "" }),
        );
        let history = state
            .history
            .get(&i.ifindex)
            .map(|h| sparkline(h, 30))
            .unwrap_or_default();
        Row::new(vec![
            Cell::from(format!("{}{}", i.name, if i.primary { " *" } else { "" })),
            Cell::from(default),
            Cell::from(rate(i.egress_packets, state.seconds, 1.0)),
            Cell::from(rate(i.egress_bytes, state.seconds, 8.0)),
            Cell::from(rate(i.ingress_packets, state.seconds, 1.0)),
            Cell::from(rate(i.ingress_bytes, state.seconds, 8.0)),
            Cell::from(history).fg(Color::Green),
        ])
    });
    frame.render_widget(
        titled_table(
            rows,
            &[
                ("ENI", Constraint::Length(12)),
                ("DEFAULT", Constraint::Length(14)),
                ("TX pkt/s", Constraint::Length(9)),
                ("TX bit/s", Constraint::Length(9)),
                ("RX pkt/s", Constraint::Length(9)),
                ("RX bit/s", Constraint::Length(9)),
                ("last minute (bit/s)", Constraint::Min(10)),
            ],
            " Interfaces (* primary, ✓ the default the kernel uses) ",
        ),
        area,
    );
}

fn draw_routes(frame: &mut Frame, area: Rect, state: &TopState, routes: &[&RouteReport]) {
    let default_total: u64 = routes
        .iter()
        .filter(|r| r.dst.ends_with("/0"))
        .filter_map(|r| r.egress_bytes)
        .sum();
    let rows = routes.iter().take(8).map(|r| {
        let share = if r.dst.ends_with("/0") && default_total > 0 {
            format!(
                "{:.0}%",
                r.egress_bytes.unwrap_or(0) as f64 * 100.0 / default_total as f64
            )
        } else {
            String::new()
        };
        let row = Row::new(vec![
            Cell::from(r.dst.clone()),
            Cell::from(r.gateway.clone().unwrap_or_default()),
            Cell::from(r.dev.clone().unwrap_or_default()),
            Cell::from(r.metric.to_string()),
            Cell::from(if r.preferred { "yes" } else { "" }),
            Cell::from(rate(r.egress_packets, state.seconds, 1.0)),
            Cell::from(rate(r.egress_bytes, state.seconds, 8.0)),
            Cell::from(share),
        ]);
        if r.dst.ends_with("/0") && !r.preferred {
            row.fg(Color::DarkGray)
        } else {
            row
        }
    });
    frame.render_widget(
        titled_table(
            rows,
            &[
                ("ROUTE", Constraint::Length(20)),
                ("VIA", Constraint::Length(16)),
                ("DEV", Constraint::Length(10)),
                ("METRIC", Constraint::Length(7)),
                ("USED", Constraint::Length(5)),
                ("pkt/s", Constraint::Length(9)),
                ("bit/s", Constraint::Length(9)),
                ("SHARE", Constraint::Min(8)),
            ],
            " Routes (main table; SHARE of the default routes' egress) ",
        ),
        area,
    );
}

fn sorted_flows<'a>(state: &'a TopState, view: &View) -> Vec<(&'a str, &'a FlowTraffic)> {
    let names: std::collections::BTreeMap<u32, &str> = state
        .report
        .iter()
        .flat_map(|r| &r.interfaces)
        .map(|i| (i.ifindex, i.name.as_str()))
        .collect();
    let mut flows: Vec<(&str, &FlowTraffic)> = state
        .flows
        .iter()
        .filter_map(|(ifindex, flows)| Some((*names.get(ifindex)?, flows)))
        .filter(|(name, _)| view.filter.as_deref().is_none_or(|f| f == *name))
        .flat_map(|(name, flows)| flows.iter().map(move |f| (name, f)))
        .collect();
    let packets = |f: &FlowTraffic| f.egress_packets + f.ingress_packets;
    match view.sort {
        FlowSort::Bytes => flows.sort_by_key(|(_, f)| std::cmp::Reverse(f.bytes())),
        FlowSort::Packets => flows.sort_by_key(|(_, f)| std::cmp::Reverse(packets(f))),
        FlowSort::Flagged => flows.sort_by_key(|(_, f)| {
            (
                std::cmp::Reverse(f.asymmetric || f.cross_eni),
                std::cmp::Reverse(f.bytes()),
            )
        }),
    }
    flows
}

fn draw_flows(frame: &mut Frame, area: Rect, state: &TopState, view: &View) {
    let flows = sorted_flows(state, view);
    let rows = flows.iter().map(|(eni, f)| {
        let flags = [(f.asymmetric, "ASYMMETRIC"), (f.cross_eni, "CROSS-ENI")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(" ");
        let row = Row::new(vec![
            Cell::from(*eni),
            Cell::from(f.flow.protocol.clone()),
            Cell::from(format!("{}:{}", f.flow.src, f.flow.src_port)),
            Cell::from(format!("{}:{}", f.flow.dst, f.flow.dst_port)),
            Cell::from(format!(
                "{} → {}",
                f.arrived_on.as_deref().unwrap_or("-"),
                f.left_by.as_deref().unwrap_or("-")
            )),
            Cell::from(si(f.egress_bytes as f64 * 8.0 / state.seconds)),
            Cell::from(si(f.ingress_bytes as f64 * 8.0 / state.seconds)),
            Cell::from(flags.clone()),
        ]);
        if flags.is_empty() {
            row
        } else {
            row.fg(Color::Red)
        }
    });
    frame.render_widget(
        titled_table(
            rows,
            &[
                ("ENI", Constraint::Length(10)),
                ("PROTO", Constraint::Length(7)),
                ("LOCAL", Constraint::Length(26)),
                ("REMOTE", Constraint::Length(26)),
                ("IN → OUT", Constraint::Length(16)),
                ("TX bit/s", Constraint::Length(9)),
                ("RX bit/s", Constraint::Length(9)),
                ("FLAGS", Constraint::Min(10)),
            ],
            format!(" Top flows of the last interval, by {} ", view.sort.label()),
        ),
        area,
    );
}

fn draw_drops(frame: &mut Frame, area: Rect, state: &TopState, view: &View) {
    let rows = state
        .drops
        .iter()
        .filter(|d| view.filter.as_deref().is_none_or(|f| f == d.interface))
        .take(6)
        .map(|d| {
            Row::new(vec![
                Cell::from(d.interface.clone()),
                Cell::from(d.reason.clone()),
                Cell::from(si(d.per_second)),
                Cell::from(d.total.to_string()),
            ])
            .fg(if d.per_second > 0.0 {
                Color::Yellow
            } else {
                Color::Reset
            })
        });
    frame.render_widget(
        titled_table(
            rows,
            &[
                ("ENI", Constraint::Length(12)),
                ("DROP REASON", Constraint::Length(28)),
                ("drops/s", Constraint::Length(9)),
                ("TOTAL", Constraint::Min(8)),
            ],
            match &view.drops_unavailable {
                None => " Kernel drops (skb:kfree_skb) ".to_owned(),
                Some(why) => format!(" Kernel drops: {why} "),
            },
        ),
        area,
    );
}

/// A bordered table with a bold header; `columns` are (heading, width).
fn titled_table<'a>(
    rows: impl IntoIterator<Item = Row<'a>>,
    columns: &[(&'a str, Constraint)],
    title: impl Into<Line<'a>>,
) -> Table<'a> {
    Table::new(rows, columns.iter().map(|(_, width)| *width))
        .header(Row::new(columns.iter().map(|(name, _)| *name)).style(HEADER))
        .block(Block::bordered().title(title))
}

fn draw_help(frame: &mut Frame) {
    let area = frame.area();
    let width = 64.min(area.width);
    let height = 14.min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let text = vec![
        Line::from("q, Esc, Ctrl-C   quit (detaches everything)"),
        Line::from("s                sort flows: bytes, packets, flagged first"),
        Line::from("p                pause / resume the display"),
        Line::from("i                next interface filter (all, then each)"),
        Line::from("?                this help"),
        Line::from(""),
        Line::from("Rates are over the last interval. Flows come from a kernel"),
        Line::from("table of 65 536 flows (least recently used evicted). Drops are"),
        Line::from("the kernel's own reasons for packets it freed on each ENI."),
    ];
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" Help ")),
        popup,
    );
}
