//! Kernel notifications of network changes (rtnetlink multicast groups), decoded
//! into the model's types.
//!
//! The kernel does not wait for a slow reader: when the socket's receive buffer is
//! full, notifications are lost and the next read fails with `ENOBUFS`. That
//! arrives here as [`Notification::Overrun`]; the subscriber must then re-read the
//! state it keeps (a resync). The buffer is raised at subscription to make that rare.

use std::os::fd::AsRawFd as _;

use futures::{FutureExt as _, StreamExt as _, channel::mpsc::UnboundedReceiver};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, MulticastGroup, new_multicast_connection};

use super::{
    Address, Link, Route, convert,
    dump::DumpError,
    nexthops::{NexthopChange, NexthopSocket},
};

/// Receive buffer asked for by default: room for tens of thousands of route
/// notifications between two reads.
pub const DEFAULT_RECEIVE_BUFFER: usize = 8 << 20;

/// Which notifications to receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Groups {
    /// Address changes only (IPv4 and IPv6).
    Addresses,
    /// Links, addresses, IPv4/IPv6 routes and IPv4/IPv6 rules.
    Everything,
}

impl Groups {
    fn multicast(self) -> &'static [MulticastGroup] {
        match self {
            Self::Addresses => &[MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr],
            Self::Everything => &[
                MulticastGroup::Link,
                MulticastGroup::Ipv4Ifaddr,
                MulticastGroup::Ipv6Ifaddr,
                MulticastGroup::Ipv4Route,
                MulticastGroup::Ipv6Route,
                MulticastGroup::Ipv4Rule,
                MulticastGroup::Ipv6Rule,
            ],
        }
    }
}

/// One change announced by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// A link appeared or changed (name, state, flags).
    LinkChanged(Link),
    /// A link was deleted.
    LinkRemoved(Link),
    /// An address was added.
    AddressAdded(Address),
    /// An address was removed.
    AddressRemoved(Address),
    /// A route was added; `replace` when it replaced the route with its key
    /// (`NLM_F_REPLACE`). Its `order` is 0.
    RouteAdded {
        /// The route.
        route: Route,
        /// Whether it replaced an existing route.
        replace: bool,
    },
    /// A route was deleted. Its `order` is 0.
    RouteRemoved(Route),
    /// A policy rule was added or deleted.
    RulesChanged,
    /// A nexthop object was created or changed (replaced, or a group's members).
    NexthopChanged(u32),
    /// A nexthop object was deleted: the kernel removed the IPv4 routes that used
    /// it without announcing them (see [`super::nexthops`]).
    NexthopRemoved(u32),
    /// Notifications were lost (`ENOBUFS`): what the subscriber keeps is stale.
    Overrun,
}

/// A subscription to rtnetlink notifications.
pub struct Subscription {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, netlink_sys::SocketAddr)>,
    /// Requests on the subscription's own socket (see [`Self::barrier`]).
    handle: Handle,
    receive_buffer: usize,
    /// Nexthop-object notifications (with [`Groups::Everything`]), on a socket of
    /// their own; `None` on kernels without nexthop objects.
    nexthops: Option<NexthopSocket>,
    /// Notifications decoded but not yet returned.
    pending: std::collections::VecDeque<Notification>,
}

impl Subscription {
    /// Subscribes with the default receive buffer; notifications queue up from this
    /// moment on.
    pub fn subscribe(groups: Groups) -> Result<Self, DumpError> {
        Self::with_receive_buffer(groups, DEFAULT_RECEIVE_BUFFER)
    }

    /// Subscribes asking for `bytes` of receive buffer (`SO_RCVBUFFORCE` with
    /// CAP_NET_ADMIN, else `SO_RCVBUF`, which `net.core.rmem_max` caps).
    pub fn with_receive_buffer(groups: Groups, bytes: usize) -> Result<Self, DumpError> {
        let (mut connection, handle, messages) =
            new_multicast_connection(groups.multicast()).map_err(DumpError::Socket)?;
        let fd = connection.socket_mut().as_raw_fd();
        let receive_buffer = set_receive_buffer(fd, bytes);
        tokio::spawn(connection);
        let nexthops = match groups {
            Groups::Addresses => None,
            Groups::Everything => NexthopSocket::subscribe()
                .inspect_err(|err| {
                    tracing::info!(
                        "no nexthop-object notifications ({err}): routes removed with a \
                         deleted nexthop object are seen at the next re-read"
                    );
                })
                .ok(),
        };
        Ok(Self {
            messages,
            handle,
            receive_buffer,
            nexthops,
            pending: std::collections::VecDeque::new(),
        })
    }

    /// The receive buffer the kernel granted, in bytes (as `SO_RCVBUF` reports it).
    pub fn receive_buffer(&self) -> usize {
        self.receive_buffer
    }

    /// The next notification; `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<Notification> {
        loop {
            if let Some(notification) = self.pending.pop_front() {
                return Some(notification);
            }
            let nexthops = async {
                match &mut self.nexthops {
                    Some(socket) => socket.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                changes = nexthops => self.pending.extend(changes.into_iter().map(from_nexthop)),
                message = self.messages.next() => {
                    let (message, _) = message?;
                    if let Some(notification) = decode(message) {
                        return Some(notification);
                    }
                }
            }
        }
    }

    /// Waits until every notification the kernel queued on the socket before this
    /// call has reached the subscription's queue, so that [`Self::try_next`] then
    /// returns all of them: it asks the kernel for the loopback link on the same
    /// socket, and the answer is queued behind them. (The nexthop socket needs no
    /// barrier: its messages are in its queue when the kernel call that caused them
    /// returns, and [`Self::try_next`] drains that queue first.)
    pub async fn barrier(&self) -> Result<(), DumpError> {
        use futures::TryStreamExt as _;
        /// The loopback device's index in every namespace.
        const LOOPBACK: u32 = 1;
        let mut answer = self.handle.link().get().match_index(LOOPBACK).execute();
        while answer
            .try_next()
            .await
            .map_err(|source| DumpError::Dump {
                what: "the loopback link (a barrier)",
                source,
            })?
            .is_some()
        {}
        Ok(())
    }

    /// The next notification if one is already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Notification> {
        if let Some(socket) = &mut self.nexthops {
            while let Some(changes) = socket.try_next() {
                self.pending.extend(changes.into_iter().map(from_nexthop));
            }
        }
        if let Some(notification) = self.pending.pop_front() {
            return Some(notification);
        }
        loop {
            let (message, _) = self.messages.next().now_or_never()??;
            if let Some(notification) = decode(message) {
                return Some(notification);
            }
        }
    }
}

/// A nexthop-object change as a notification.
fn from_nexthop(change: NexthopChange) -> Notification {
    match change {
        NexthopChange::Changed(id) => Notification::NexthopChanged(id),
        NexthopChange::Removed(id) => Notification::NexthopRemoved(id),
        NexthopChange::Overrun => Notification::Overrun,
    }
}

/// Decodes one message; `None` for messages routemon does not follow.
fn decode(message: NetlinkMessage<RouteNetlinkMessage>) -> Option<Notification> {
    let replace = message.header.flags & netlink_packet_core::NLM_F_REPLACE != 0;
    let inner = match message.payload {
        NetlinkPayload::Overrun(_) => return Some(Notification::Overrun),
        NetlinkPayload::InnerMessage(inner) => inner,
        _ => return None,
    };
    match inner {
        RouteNetlinkMessage::NewLink(msg) => convert::link(&msg).map(Notification::LinkChanged),
        RouteNetlinkMessage::DelLink(msg) => convert::link(&msg).map(Notification::LinkRemoved),
        RouteNetlinkMessage::NewAddress(msg) => {
            convert::address(&msg).map(Notification::AddressAdded)
        }
        RouteNetlinkMessage::DelAddress(msg) => {
            convert::address(&msg).map(Notification::AddressRemoved)
        }
        RouteNetlinkMessage::NewRoute(msg) => {
            convert::route(&msg, 0).map(|route| Notification::RouteAdded { route, replace })
        }
        RouteNetlinkMessage::DelRoute(msg) => {
            convert::route(&msg, 0).map(Notification::RouteRemoved)
        }
        RouteNetlinkMessage::NewRule(_) | RouteNetlinkMessage::DelRule(_) => {
            Some(Notification::RulesChanged)
        }
        _ => None,
    }
}

/// Sets the socket's receive buffer and returns what the kernel granted.
fn set_receive_buffer(fd: std::os::fd::RawFd, bytes: usize) -> usize {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |option| {
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        tracing::warn!(
            "could not set the netlink receive buffer: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut granted: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, output buffer and length.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut granted).cast(),
            &raw mut len,
        )
    };
    if ret == 0 {
        usize::try_from(granted).unwrap_or(0)
    } else {
        0
    }
}
