//! Nexthop-object notifications (`RTNLGRP_NEXTHOP`), read on a socket of their own
//! because rtnetlink's message types do not decode them.
//!
//! They matter for one kernel behaviour: deleting a nexthop object removes every
//! IPv4 route that uses it without an `RTM_DELROUTE`. `remove_nexthop` sends
//! `RTM_DELNEXTHOP`, then `__remove_nexthop_fib` marks the IPv4 routes dead and
//! `fib_flush` removes them silently, while IPv6 routes go through `ip6_del_rt`,
//! which announces them (net/ipv4/nexthop.c). A group that loses its last member
//! is removed the same way, with an `RTM_DELNEXTHOP` of its own.

use std::io;

use tokio::io::unix::AsyncFd;

/// `RTNLGRP_NEXTHOP` (include/uapi/linux/rtnetlink.h).
const RTNLGRP_NEXTHOP: u32 = 32;
/// `RTM_NEWNEXTHOP`.
const RTM_NEWNEXTHOP: u16 = 104;
/// `RTM_DELNEXTHOP`.
const RTM_DELNEXTHOP: u16 = 105;
/// `NHA_ID`: the nexthop object's id (u32).
const NHA_ID: u16 = 1;
/// `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `struct nhmsg`.
const NHMSG_LEN: usize = 8;

/// One nexthop-object change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NexthopChange {
    /// A nexthop object was created or changed (`RTM_NEWNEXTHOP`): replaced, or a
    /// group whose members changed.
    Changed(u32),
    /// A nexthop object was deleted (`RTM_DELNEXTHOP`).
    Removed(u32),
    /// Notifications were lost (`ENOBUFS`).
    Overrun,
}

/// A non-blocking netlink socket subscribed to `RTNLGRP_NEXTHOP`.
pub struct NexthopSocket {
    socket: AsyncFd<netlink_sys::Socket>,
    buffer: Vec<u8>,
}

impl NexthopSocket {
    /// Opens the socket and joins the group (kernels before 5.3 have no nexthop
    /// objects and refuse the group: the caller goes on without it).
    pub fn subscribe() -> io::Result<Self> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.add_membership(RTNLGRP_NEXTHOP)?;
        socket.set_non_blocking(true)?;
        Ok(Self {
            // SAFETY: the socket owns its descriptor, which is neither replaced nor
            // closed while the `AsyncFd` holds it.
            socket: unsafe { AsyncFd::register(socket)? },
            buffer: Vec::with_capacity(16 * 1024),
        })
    }

    /// Waits for the next datagram and returns the changes it holds (possibly none).
    pub async fn next(&mut self) -> Vec<NexthopChange> {
        loop {
            let mut guard = match self.socket.readable().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::warn!("nexthop notifications: {err}");
                    return std::future::pending().await;
                }
            };
            let buffer = &mut self.buffer;
            match guard.try_io(|socket| receive(socket.get_ref(), buffer)) {
                Ok(changes) => return changes.unwrap_or_default(),
                Err(_would_block) => {}
            }
        }
    }

    /// The changes of the next datagram if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<Vec<NexthopChange>> {
        // `Err` is only `WouldBlock`: nothing queued.
        receive(self.socket.get_ref(), &mut self.buffer).ok()
    }
}

/// Reads one datagram: `Err` only when none is queued (`WouldBlock`). A lost
/// notification (`ENOBUFS`) is [`NexthopChange::Overrun`]; any other error is
/// logged and reads as no change.
fn receive(socket: &netlink_sys::Socket, buffer: &mut Vec<u8>) -> io::Result<Vec<NexthopChange>> {
    buffer.clear();
    match socket.recv(buffer, 0) {
        Ok(_) => Ok(parse(buffer)),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(err),
        Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => Ok(vec![NexthopChange::Overrun]),
        Err(err) => {
            tracing::warn!("reading nexthop notifications: {err}");
            Ok(Vec::new())
        }
    }
}

/// The nexthop changes in one datagram of netlink messages; anything else, and
/// anything truncated, is skipped.
fn parse(mut datagram: &[u8]) -> Vec<NexthopChange> {
    let mut changes = Vec::new();
    while datagram.len() >= NLMSG_HDRLEN {
        let length = u32::from_ne_bytes(datagram[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap_or_default());
        if length < NLMSG_HDRLEN || length > datagram.len() {
            break;
        }
        let payload = &datagram[NLMSG_HDRLEN..length];
        let change: Option<fn(u32) -> NexthopChange> = match kind {
            RTM_NEWNEXTHOP => Some(NexthopChange::Changed),
            RTM_DELNEXTHOP => Some(NexthopChange::Removed),
            _ => None,
        };
        if let (Some(change), Some(id)) = (change, payload.get(NHMSG_LEN..).and_then(nexthop_id)) {
            changes.push(change(id));
        }
        datagram = datagram.get(align(length)..).unwrap_or_default();
    }
    changes
}

/// `NHA_ID` among the attributes of an `nhmsg`.
fn nexthop_id(mut attributes: &[u8]) -> Option<u32> {
    while attributes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == NHA_ID && length >= 8 {
            return Some(u32::from_ne_bytes(attributes[4..8].try_into().ok()?));
        }
        attributes = attributes.get(align(length)..).unwrap_or_default();
    }
    None
}

/// Netlink's 4-byte alignment.
fn align(length: usize) -> usize {
    (length + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One nexthop message: header, `nhmsg` and the given attributes.
    fn message(kind: u16, attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![0u8; NHMSG_LEN];
        for (attr, value) in attributes {
            let length = 4 + value.len();
            body.extend_from_slice(&(length as u16).to_ne_bytes());
            body.extend_from_slice(&attr.to_ne_bytes());
            body.extend_from_slice(value);
            body.resize(align(body.len()), 0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_the_id_of_each_change_in_a_datagram() {
        /// `NHA_OIF`, before the id in no particular order.
        const NHA_OIF: u16 = 5;
        let mut datagram = message(
            RTM_DELNEXTHOP,
            &[
                (NHA_OIF, &3u32.to_ne_bytes()),
                (NHA_ID, &7u32.to_ne_bytes()),
            ],
        );
        datagram.extend(message(RTM_NEWNEXTHOP, &[(NHA_ID, &8u32.to_ne_bytes())]));
        // RTM_NEWROUTE: not a nexthop message.
        datagram.extend(message(24, &[(NHA_ID, &9u32.to_ne_bytes())]));
        assert_eq!(
            parse(&datagram),
            [NexthopChange::Removed(7), NexthopChange::Changed(8)]
        );
    }

    #[test]
    fn skips_truncated_messages_and_attributes() {
        let whole = message(RTM_DELNEXTHOP, &[(NHA_ID, &7u32.to_ne_bytes())]);
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), [], "cut at {cut}");
        }
        // An id attribute shorter than 4 bytes of value.
        assert_eq!(parse(&message(RTM_DELNEXTHOP, &[(NHA_ID, &[1, 2])])), []);
        // A message without an id.
        assert_eq!(parse(&message(RTM_DELNEXTHOP, &[])), []);
    }
}
