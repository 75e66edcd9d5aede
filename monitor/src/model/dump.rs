//! Fetches the model from the kernel with rtnetlink dumps.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::{AddressFamily, route::RouteMessage};
use rtnetlink::{Handle, IpVersion, MulticastGroup, new_connection, new_multicast_connection};
use thiserror::Error;

use super::{Address, Family, Link, NetworkModel, convert};

/// Failure to read the network state from the kernel.
#[derive(Debug, Error)]
pub enum DumpError {
    /// The netlink socket could not be opened.
    #[error("cannot open a NETLINK_ROUTE socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A dump request failed.
    #[error("netlink dump of {what} failed: {source}")]
    Dump {
        /// What was being dumped (`links`, `IPv4 routes`, …).
        what: &'static str,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
}

/// A connection to the kernel's routing netlink (`NETLINK_ROUTE`) of the current
/// network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the socket and spawns its connection task on the current tokio runtime.
    pub fn connect() -> Result<Self, DumpError> {
        let (connection, handle, _) = new_connection().map_err(DumpError::Socket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The underlying rtnetlink handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Dumps the links only.
    pub async fn links(&self) -> Result<BTreeMap<u32, Link>, DumpError> {
        let mut links = BTreeMap::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(msg) = next(&mut stream, "links").await? {
            if let Some(link) = convert::link(&msg) {
                links.insert(link.index, link);
            }
        }
        Ok(links)
    }

    /// Dumps the routes of every table of one family, as the kernel's messages.
    pub async fn route_messages(&self, family: Family) -> Result<Vec<RouteMessage>, DumpError> {
        let (address_family, what) = match family {
            Family::Ipv4 => (AddressFamily::Inet, "IPv4 routes"),
            Family::Ipv6 => (AddressFamily::Inet6, "IPv6 routes"),
        };
        let mut request = RouteMessage::default();
        // Table 0 (RT_TABLE_UNSPEC) and no attributes: every table is dumped.
        request.header.address_family = address_family;
        let mut routes = self.handle.route().get(request).execute();
        let mut messages = Vec::new();
        while let Some(msg) = next(&mut routes, what).await? {
            messages.push(msg);
        }
        Ok(messages)
    }

    /// Dumps links, addresses, routes of every table and policy rules.
    pub async fn dump(&self) -> Result<NetworkModel, DumpError> {
        let mut model = NetworkModel {
            links: self.links().await?,
            ..NetworkModel::default()
        };

        let mut addresses = self.handle.address().get().execute();
        while let Some(msg) = next(&mut addresses, "addresses").await? {
            model.addresses.extend(convert::address(&msg));
        }

        for family in [Family::Ipv4, Family::Ipv6] {
            for msg in self.route_messages(family).await? {
                let order = model.routes.len();
                model.routes.extend(convert::route(&msg, order));
            }
        }

        for (version, what) in [(IpVersion::V4, "IPv4 rules"), (IpVersion::V6, "IPv6 rules")] {
            let mut rules = self.handle.rule().get(version).execute();
            while let Some(msg) = next(&mut rules, what).await? {
                model.rules.extend(convert::rule(&msg));
            }
        }
        model.rp_filter = super::sysctl::rp_filter(model.links.values());
        Ok(model)
    }
}

/// A change to an interface address, announced by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressChange {
    /// An address was added.
    Added(Address),
    /// An address was removed.
    Removed(Address),
}

/// Kernel notifications of address changes (`RTNLGRP_IPV4_IFADDR`, `…IPV6_IFADDR`).
pub struct AddressEvents {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
        netlink_sys::SocketAddr,
    )>,
}

impl AddressEvents {
    /// Subscribes; notifications queue up from this moment on.
    pub fn subscribe() -> Result<Self, DumpError> {
        let (connection, _, messages) =
            new_multicast_connection(&[MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr])
                .map_err(DumpError::Socket)?;
        tokio::spawn(connection);
        Ok(Self { messages })
    }

    /// The next address change; `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<AddressChange> {
        use futures::StreamExt as _;
        loop {
            let (message, _) = self.messages.next().await?;
            if let netlink_packet_core::NetlinkPayload::InnerMessage(inner) = message.payload {
                match inner {
                    RouteNetlinkMessage::NewAddress(msg) => {
                        if let Some(addr) = convert::address(&msg) {
                            return Some(AddressChange::Added(addr));
                        }
                    }
                    RouteNetlinkMessage::DelAddress(msg) => {
                        if let Some(addr) = convert::address(&msg) {
                            return Some(AddressChange::Removed(addr));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn next<T, S>(stream: &mut S, what: &'static str) -> Result<Option<T>, DumpError>
where
    S: futures::Stream<Item = Result<T, rtnetlink::Error>> + Unpin,
{
    stream
        .try_next()
        .await
        .map_err(|source| DumpError::Dump { what, source })
}
