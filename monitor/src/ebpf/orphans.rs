//! routemon programs left on clsact qdiscs with no routemon behind them.
//!
//! clsact filters outlive the process that added them: a routemon killed with
//! SIGKILL leaves `routemon_tx`/`routemon_rx` attached, still running on every
//! packet and counting into maps nobody reads. A filter is an *orphan* when its
//! program is one of routemon's and no live process holds that program (a running
//! routemon holds its programs' file descriptors, which `/proc/<pid>/fdinfo` lists
//! with their `prog_id`). TCX links never orphan: an unpinned one dies with its
//! file descriptor, a pinned one belongs to a `watch --keep-attached` daemon and is
//! taken over by the next one.
//!
//! When routemon adds a clsact qdisc it records that in [`clsact_markers`], so that
//! `cleanup` removes the qdisc of an orphan only if routemon created it.

use std::{collections::HashSet, fs, path::PathBuf};

use futures::{StreamExt as _, TryStreamExt as _};
use monitor_common::program;
use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
};

use super::Direction;
use crate::model::dump::Netlink;

/// The runtime directory when systemd does not name one (`RUNTIME_DIRECTORY`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/routemon";

/// Where routemon records the clsact qdiscs it added: `clsact/<ifindex>@<name>` in
/// its runtime directory (a tmpfs, gone with a reboot as the qdiscs are). Without
/// the record, `cleanup` leaves such a qdisc alone.
pub fn clsact_markers() -> PathBuf {
    let runtime = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|dirs| {
            // systemd separates several runtime directories with colons.
            dirs.to_str()
                .and_then(|d| d.split(':').next())
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR));
    runtime.join("clsact")
}

/// A routemon program on a clsact qdisc that no process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrphanFilter {
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Hook.
    pub direction: Direction,
    /// The program's name.
    pub program: String,
    /// The kernel's id of the program.
    pub prog_id: u32,
    /// The filter's handle and `prio << 16 | protocol`, which name it for deletion.
    handle: TcHandle,
    info: u32,
}

fn is_routemon_program(name: &str) -> bool {
    [
        program::EGRESS,
        program::INGRESS,
        program::EGRESS_L3,
        program::INGRESS_L3,
    ]
    .contains(&name)
}

/// The ids of every BPF program a live process holds, directly or through a link
/// (the `prog_id:` lines of `/proc/*/fdinfo/*`). Processes that exit or close
/// descriptors while this reads are skipped.
pub fn held_program_ids() -> HashSet<u32> {
    let mut held = HashSet::new();
    let Ok(processes) = fs::read_dir("/proc") else {
        return held;
    };
    for process in processes.flatten() {
        let name = process.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = fs::read_dir(process.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = fs::read_to_string(fd.path()) else {
                continue;
            };
            held.extend(info.lines().filter_map(|line| {
                line.strip_prefix("prog_id:")
                    .and_then(|id| id.trim().parse::<u32>().ok())
            }));
        }
    }
    held
}

/// The orphaned routemon filters on `links` (ifindex, name).
pub async fn find(
    netlink: &Netlink,
    links: impl IntoIterator<Item = (u32, String)>,
) -> Vec<OrphanFilter> {
    let mut candidates = Vec::new();
    for (ifindex, interface) in links {
        let Ok(index) = i32::try_from(ifindex) else {
            continue;
        };
        for direction in [Direction::Ingress, Direction::Egress] {
            let mut handle = netlink.handle().traffic_filter(index);
            let request = match direction {
                Direction::Ingress => handle.get().ingress(),
                Direction::Egress => handle.get().egress(),
            };
            // No clsact qdisc (the usual case), or the interface went away.
            let Ok(filters) = request.execute().try_collect::<Vec<_>>().await else {
                continue;
            };
            for filter in filters {
                if let Some((program, prog_id)) = bpf_program(&filter) {
                    candidates.push(OrphanFilter {
                        interface: interface.clone(),
                        ifindex,
                        direction,
                        program,
                        prog_id,
                        handle: filter.header.handle,
                        info: filter.header.info,
                    });
                }
            }
        }
    }
    if candidates.is_empty() {
        return candidates;
    }
    let held = held_program_ids();
    candidates.retain(|c| !held.contains(&c.prog_id));
    candidates
}

/// The routemon program of a bpf filter message, with its id.
fn bpf_program(filter: &TcMessage) -> Option<(String, u32)> {
    let mut name = None;
    let mut id = None;
    for attr in &filter.attributes {
        if let TcAttribute::Options(options) = attr {
            for option in options {
                match option {
                    TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name = Some(n.clone()),
                    TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => id = Some(*i),
                    _ => {}
                }
            }
        }
    }
    let name = name?;
    // The kernel reports the name given at attach time; aya gives the program's.
    is_routemon_program(&name).then_some((name, id?))
}

/// Deletes one orphaned filter (by its own handle and priority: never another
/// filter of the same name).
pub async fn remove(netlink: &Netlink, orphan: &OrphanFilter) -> Result<(), String> {
    let mut message = TcMessage::with_index(
        i32::try_from(orphan.ifindex).map_err(|_| "ifindex out of range".to_owned())?,
    );
    message.header.parent = TcHandle {
        major: 0xffff,
        minor: match orphan.direction {
            Direction::Ingress => TcHandle::MIN_INGRESS,
            Direction::Egress => TcHandle::MIN_EGRESS,
        },
    };
    message.header.handle = orphan.handle;
    message.header.info = orphan.info;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::DelTrafficFilter(message));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut handle = netlink.handle().clone();
    let mut response = handle.request(request).map_err(|err| err.to_string())?;
    while let Some(reply) = response.next().await {
        if let netlink_packet_core::NetlinkPayload::Error(err) = reply.payload
            && err.code.is_some()
        {
            return Err(err.to_string());
        }
    }
    Ok(())
}

fn marker(ifindex: u32, interface: &str) -> PathBuf {
    clsact_markers().join(format!("{ifindex}@{interface}"))
}

/// Records that routemon added `interface`'s clsact qdisc. Best effort: without the
/// record, `cleanup` leaves the qdisc in place (never removes one it did not add).
pub fn record_created_clsact(ifindex: u32, interface: &str) {
    if let Err(err) = fs::create_dir_all(marker(ifindex, interface)) {
        tracing::debug!(%interface, "cannot record the clsact qdisc routemon added: {err}");
    }
}

/// Whether routemon recorded adding `ifindex`'s clsact qdisc under `interface`'s name.
pub fn created_clsact(ifindex: u32, interface: &str) -> bool {
    marker(ifindex, interface).is_dir()
}

/// Forgets the record of `ifindex`'s clsact qdisc (removed, or the interface gone).
pub fn forget_created_clsact(ifindex: u32, interface: &str) {
    let _ = fs::remove_dir(marker(ifindex, interface));
}

/// Logs a warning for each orphan, saying what removes them.
pub fn warn(orphans: &[OrphanFilter]) {
    for orphan in orphans {
        tracing::warn!(
            interface = %orphan.interface,
            direction = %orphan.direction,
            program = %orphan.program,
            prog_id = orphan.prog_id,
            "a routemon program is still attached by clsact with no routemon running it \
             (left by a killed routemon; it runs on every packet and counts for nobody): \
             `routemon cleanup` removes it"
        );
    }
}
