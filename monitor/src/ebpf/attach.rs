//! Attaching TC programs with TCX links or, on older kernels, clsact filters — and
//! undoing it.
//!
//! TCX links (Linux 6.6+) are owned by a file descriptor: the kernel detaches them
//! when routemon exits, even on SIGKILL. clsact filters outlive the process, so
//! routemon removes them on every orderly exit, together with the clsact qdisc if it
//! created it and nothing else uses it.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{
            self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcError,
        },
    },
    util::KernelVersion,
};
use futures::TryStreamExt as _;
use netlink_packet_route::tc::TcHandle;

use super::EbpfError;
use crate::model::{Link, dump::Netlink};

/// How to attach the programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// TCX links where the kernel has them (6.6+), clsact filters otherwise.
    #[default]
    Auto,
    /// TCX links only.
    Tcx,
    /// clsact qdisc filters only (the pre-6.6 mechanism).
    Clsact,
}

/// How one attachment was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedVia {
    /// A TCX link.
    Tcx,
    /// A filter on the clsact qdisc.
    Clsact,
}

impl fmt::Display for AttachedVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        })
    }
}

/// Traffic direction of an attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Packets leaving the interface.
    Egress,
    /// Packets arriving on the interface.
    Ingress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        })
    }
}

impl From<Direction> for TcAttachType {
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Egress => Self::Egress,
            Direction::Ingress => Self::Ingress,
        }
    }
}

/// One program attached to one interface in one direction.
#[derive(Debug)]
pub struct Attachment {
    /// Program name.
    pub program: &'static str,
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Direction.
    pub direction: Direction,
    /// TCX or clsact.
    pub via: AttachedVia,
    /// Whether routemon created the interface's clsact qdisc for this attachment.
    pub created_clsact: bool,
    /// Whether a pinned link of a previous routemon was taken over.
    pub adopted: bool,
    handle: Handle,
}

/// Who holds the attachment.
#[derive(Debug)]
enum Handle {
    /// The program holds it; it ends when routemon detaches or exits.
    Owned(SchedClassifierLinkId),
    /// A TCX link pinned on the BPF filesystem: it outlives routemon until unpinned.
    Pinned {
        /// routemon's reference to the link.
        link: FdLink,
        /// The pin.
        path: PathBuf,
    },
}

impl Attachment {
    /// Where the link is pinned, if it is.
    pub fn pin_path(&self) -> Option<&Path> {
        match &self.handle {
            Handle::Pinned { path, .. } => Some(path),
            Handle::Owned(_) => None,
        }
    }
}

/// TCX links arrived in Linux 6.6.
fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// The error of a failed attach, given its reason.
fn attach_error(
    program: &'static str,
    link: &Link,
    direction: Direction,
) -> impl Fn(String) -> EbpfError {
    let interface = link.name.clone();
    move |reason| EbpfError::Attach {
        program,
        interface: interface.clone(),
        direction,
        reason,
    }
}

/// Attaches `program` to `link` in `direction`.
pub fn attach(
    program: &mut SchedClassifier,
    name: &'static str,
    link: &Link,
    direction: Direction,
    mode: AttachMode,
) -> Result<Attachment, EbpfError> {
    let fail = attach_error(name, link, direction);
    let use_tcx = match mode {
        AttachMode::Tcx => true,
        AttachMode::Clsact => false,
        AttachMode::Auto => tcx_supported(),
    };
    let (via, created_clsact, link_id) = if use_tcx {
        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
        match program.attach_with_options(&link.name, direction.into(), options) {
            Ok(id) => (AttachedVia::Tcx, false, id),
            Err(err) if mode == AttachMode::Auto => {
                tracing::warn!(interface = %link.name, "TCX attach failed ({err}); falling back to clsact");
                return attach(program, name, link, direction, AttachMode::Clsact);
            }
            Err(err) => {
                return Err(fail(format!(
                    "{err}. TCX links need Linux 6.6 or later; try --attach clsact"
                )));
            }
        }
    } else {
        let created = ensure_clsact(&link.name).map_err(&fail)?;
        if created {
            super::orphans::record_created_clsact(link.index, &link.name);
        }
        let options = TcAttachOptions::Netlink(NlOptions::default());
        let id = program
            .attach_with_options(&link.name, direction.into(), options)
            .map_err(|err| fail(err.to_string()))?;
        (AttachedVia::Clsact, created, id)
    };
    Ok(Attachment {
        program: name,
        interface: link.name.clone(),
        ifindex: link.index,
        direction,
        via,
        created_clsact,
        adopted: false,
        handle: Handle::Owned(link_id),
    })
}

/// Attaches `program` to `link` in `direction` with a TCX link pinned at `path`.
/// When a link is already pinned there (left by a previous routemon), `program`
/// takes its place in that link atomically instead: the interface is never without
/// a counting program and never has two.
pub fn attach_pinned(
    program: &mut SchedClassifier,
    name: &'static str,
    link: &Link,
    direction: Direction,
    path: &Path,
) -> Result<Attachment, EbpfError> {
    let fail = attach_error(name, link, direction);
    let make = |fd_link: FdLink, adopted: bool| Attachment {
        program: name,
        interface: link.name.clone(),
        ifindex: link.index,
        direction,
        via: AttachedVia::Tcx,
        created_clsact: false,
        adopted,
        handle: Handle::Pinned {
            link: fd_link,
            path: path.to_path_buf(),
        },
    };
    if path.exists() {
        match adopt(program, path) {
            Ok(fd_link) => return Ok(make(fd_link, true)),
            Err(reason) => {
                tracing::warn!(interface = %link.name, %direction, "cannot take over the pinned link ({reason}); attaching anew");
                std::fs::remove_file(path)
                    .map_err(|err| fail(format!("removing the stale pin failed: {err}")))?;
            }
        }
    }
    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    let id = program
        .attach_with_options(&link.name, direction.into(), options)
        .map_err(|err| {
            fail(format!(
                "{err}. Pinned attachments need TCX links (Linux 6.6+); on older kernels \
                 run `routemon watch --ephemeral`"
            ))
        })?;
    let fd_link = take_fd_link(program, id).map_err(&fail)?;
    let pinned = fd_link.pin(path).map_err(|err| {
        fail(format!(
            "pinning the link at {} failed: {err}",
            path.display()
        ))
    })?;
    Ok(make(pinned.into(), false))
}

/// Swaps `program` into the TCX link pinned at `path`.
fn adopt(program: &mut SchedClassifier, path: &Path) -> Result<FdLink, String> {
    let pinned = PinnedLink::from_pin(path).map_err(|err| err.to_string())?;
    let fd_link: FdLink = pinned.into();
    let link = SchedClassifierLink::try_from(fd_link).map_err(|err| err.to_string())?;
    let id = program
        .attach_to_link(link)
        .map_err(|err| format!("updating the link failed: {err}"))?;
    take_fd_link(program, id)
}

fn take_fd_link(
    program: &mut SchedClassifier,
    id: SchedClassifierLinkId,
) -> Result<FdLink, String> {
    let link = program
        .take_link(id)
        .map_err(|err| format!("taking the link failed: {err}"))?;
    FdLink::try_from(link).map_err(|err| format!("not a TCX link: {err}"))
}

/// Adds the clsact qdisc unless it exists. Returns whether it was created.
fn ensure_clsact(interface: &str) -> Result<bool, String> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(true),
        Err(TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(TcError::NetlinkError(err))
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL)
            ) =>
        {
            Err(format!(
                "the kernel has no clsact qdisc ({err}); it needs CONFIG_NET_SCH_INGRESS \
                 (module sch_ingress) or, on Linux 6.6+, TCX links"
            ))
        }
        Err(err) => Err(format!("adding the clsact qdisc failed: {err}")),
    }
}

/// Detaches one attachment (a pinned link: removes its pin and closes it).
pub fn detach(program: &mut SchedClassifier, attachment: Attachment) -> Result<(), EbpfError> {
    let fail = |reason: String| EbpfError::Attach {
        program: attachment.program,
        interface: attachment.interface.clone(),
        direction: attachment.direction,
        reason,
    };
    match attachment.handle {
        Handle::Owned(link_id) => program
            .detach(link_id)
            .map_err(|err| fail(format!("detach failed: {err}"))),
        Handle::Pinned { link, path } => {
            let removed = match std::fs::remove_file(&path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(fail(format!(
                    "removing the pin {} failed: {err}",
                    path.display()
                ))),
                _ => Ok(()),
            };
            // The last reference: the kernel detaches the program now.
            drop(link);
            removed
        }
    }
}

/// Whether an interface with this index and name still exists in this namespace.
pub fn interface_exists(ifindex: u32, name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) == ifindex }
}

/// Removes the clsact qdisc of `ifindex` (one routemon created) unless a filter of
/// someone else's is still on it; says whether it did.
pub async fn remove_clsact_if_unused(netlink: &Netlink, ifindex: u32, interface: &str) -> bool {
    let Ok(index) = i32::try_from(ifindex) else {
        return false;
    };
    let mut filters = 0usize;
    for direction in [Direction::Ingress, Direction::Egress] {
        let mut handle = netlink.handle().traffic_filter(index);
        let request = match direction {
            Direction::Ingress => handle.get().ingress(),
            Direction::Egress => handle.get().egress(),
        };
        match request.execute().try_collect::<Vec<_>>().await {
            Ok(found) => filters += found.len(),
            // The interface is gone, or the qdisc is: nothing to clean.
            Err(err) => {
                tracing::debug!(%interface, "listing tc filters failed: {err}");
                return false;
            }
        }
    }
    if filters > 0 {
        tracing::info!(%interface, "leaving the clsact qdisc in place: other filters use it");
        return false;
    }
    let mut request = netlink.handle().qdisc().del(index);
    request.message_mut().header.parent = TcHandle::CLSACT;
    request.message_mut().header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    match request.execute().await {
        Ok(()) => {
            super::orphans::forget_created_clsact(ifindex, interface);
            true
        }
        Err(err) => {
            tracing::warn!(%interface, "could not remove the clsact qdisc routemon added: {err}");
            false
        }
    }
}
