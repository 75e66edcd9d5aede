//! Default routes as the kernel's own netlink messages.
//!
//! A pin must re-create a route with another metric and, on rollback or `unpin`,
//! restore the exact route it replaced — gateway, source, protocol, scope, flags,
//! MTU and other metrics, expiry — not an approximation rebuilt from a few fields.
//! So routes are kept as the `RTM_NEWROUTE` message the kernel dumped, with a
//! [`RouteKey`] that identifies the route the way the kernel does.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use netlink_packet_core::{
    Emitable as _, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload, Parseable as _,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAttribute, RouteFlags, RouteMessage, RouteType},
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{
    Family, Route, RouteKind, convert,
    dump::{DumpError, Netlink},
    table,
};

/// A netlink request about routes failed.
#[derive(Debug, Error)]
pub enum RouteRequestError {
    /// The kernel refused the request.
    #[error("the kernel refused to {action} {route}: {source}")]
    Refused {
        /// `add` or `delete`.
        action: &'static str,
        /// The route, as `ip route` would print it.
        route: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// The socket failed.
    #[error("netlink request to {action} {route} failed: {source}")]
    Socket {
        /// `add` or `delete`.
        action: &'static str,
        /// The route.
        route: String,
        /// The error.
        #[source]
        source: rtnetlink::Error,
    },
    /// Dumping the routes failed.
    #[error(transparent)]
    Dump(#[from] DumpError),
}

/// What identifies a single-path route to the kernel: two routes with the same key
/// cannot coexist, and deleting by key removes exactly that route (for IPv6, that
/// next hop of a multipath route).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteKey {
    /// Address family.
    pub family: Family,
    /// Routing table.
    pub table: u32,
    /// Destination prefix.
    pub dst: IpNet,
    /// Metric.
    pub metric: u32,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub ifindex: u32,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = if self.dst.prefix_len() == 0 {
            "default".to_owned()
        } else {
            self.dst.to_string()
        };
        write!(f, "{} {dst}", self.family)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        write!(f, " dev if{} metric {}", self.ifindex, self.metric)?;
        if self.table != table::MAIN {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

impl RouteKey {
    /// The default route with the interface's name from `model`.
    pub fn describe(&self, model: &crate::model::NetworkModel) -> String {
        let mut out = format!("{} default", self.family);
        if let Some(gateway) = self.gateway {
            out.push_str(&format!(" via {gateway}"));
        }
        out.push_str(&format!(
            " dev {} metric {}",
            model.link_name(self.ifindex),
            self.metric
        ));
        out
    }
}

/// A single-path route as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    /// The route's identity.
    pub key: RouteKey,
    /// The message, ready to be sent back as `RTM_NEWROUTE`/`RTM_DELROUTE`.
    pub message: RouteMessage,
}

impl KernelRoute {
    /// Builds the route from a dumped message; `None` for routes that are not
    /// single-path unicast routes with an output interface.
    pub fn from_message(mut message: RouteMessage) -> Option<Self> {
        if message.header.kind != RouteType::Unicast {
            return None;
        }
        // Dump-only attributes: the kernel rejects or ignores them in requests.
        message
            .attributes
            .retain(|attr| !matches!(attr, RouteAttribute::CacheInfo(_)));
        let route = convert::route(&message, 0)?;
        if route.nexthops.len() != 1 {
            return None;
        }
        let key = key_of(&route)?;
        Some(Self { key, message })
    }

    /// The route with another metric, everything else unchanged.
    pub fn with_metric(&self, metric: u32) -> Self {
        let mut message = self.message.clone();
        message
            .attributes
            .retain(|attr| !matches!(attr, RouteAttribute::Priority(_)));
        message.attributes.push(RouteAttribute::Priority(metric));
        Self {
            key: RouteKey {
                metric,
                ..self.key.clone()
            },
            message,
        }
    }

    /// The message in netlink wire format, for the pin state file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.message.buffer_len()];
        self.message.emit(&mut bytes);
        bytes
    }

    /// Parses a message saved with [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        RouteMessage::parse(bytes).ok().and_then(Self::from_message)
    }

    /// Adds the route (`NLM_F_CREATE | NLM_F_APPEND`: it joins routes of the same
    /// prefix instead of replacing them; an identical route is an error).
    pub async fn add(&self, netlink: &Netlink) -> Result<(), RouteRequestError> {
        self.request(
            netlink,
            RouteNetlinkMessage::NewRoute(self.message.clone()),
            NLM_F_CREATE | NLM_F_APPEND,
            "add",
        )
        .await
    }

    /// Deletes exactly this route (for IPv6, only this next hop).
    pub async fn delete(&self, netlink: &Netlink) -> Result<(), RouteRequestError> {
        self.request(
            netlink,
            RouteNetlinkMessage::DelRoute(self.message.clone()),
            0,
            "delete",
        )
        .await
    }

    async fn request(
        &self,
        netlink: &Netlink,
        payload: RouteNetlinkMessage,
        flags: u16,
        action: &'static str,
    ) -> Result<(), RouteRequestError> {
        let mut request = NetlinkMessage::from(payload);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let route = self.key.to_string();
        let socket = |source| RouteRequestError::Socket {
            action,
            route: route.clone(),
            source,
        };
        let mut handle = netlink.handle().clone();
        let mut responses = handle.request(request).map_err(socket)?;
        use futures::StreamExt as _;
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::Error(err) = response.payload
                && err.code.is_some()
            {
                return Err(RouteRequestError::Refused {
                    action,
                    route,
                    source: err.to_io(),
                });
            }
        }
        Ok(())
    }
}

fn key_of(route: &Route) -> Option<RouteKey> {
    let hop = route.nexthops.first()?;
    Some(RouteKey {
        family: route.family,
        table: route.table,
        dst: route.dst,
        metric: route.metric,
        gateway: hop.gateway,
        ifindex: hop.ifindex?,
    })
}

/// Splits a multipath IPv6 route into one message per next hop, as the kernel
/// stores them (siblings); other messages pass through.
fn single_paths(message: RouteMessage) -> Vec<RouteMessage> {
    let hops = message.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::MultiPath(hops) => Some(hops.clone()),
        _ => None,
    });
    let Some(hops) = hops else {
        return vec![message];
    };
    if message.header.address_family != AddressFamily::Inet6 {
        // An IPv4 multipath route is one route; it stays whole (and is not
        // pinnable: see `KernelRoute::from_message`).
        return vec![message];
    }
    hops.into_iter()
        .map(|hop| {
            let mut single = message.clone();
            single
                .attributes
                .retain(|attr| !matches!(attr, RouteAttribute::MultiPath(_)));
            single.header.flags = RouteFlags::from_bits_retain(u32::from(hop.flags.bits()));
            single.attributes.extend(
                hop.attributes
                    .into_iter()
                    .filter(|attr| matches!(attr, RouteAttribute::Gateway(_))),
            );
            single
                .attributes
                .push(RouteAttribute::Oif(hop.interface_index));
            single
        })
        .collect()
}

/// The unicast default routes of the main table, both families, one entry per next
/// hop for IPv6. IPv4 multipath default routes are returned in `multipath`
/// (routemon does not split or pin them).
#[derive(Clone, Debug, Default)]
pub struct DefaultRoutes {
    /// Single-path routes.
    pub routes: Vec<KernelRoute>,
    /// Keys (first next hop) of IPv4 multipath default routes.
    pub multipath: Vec<RouteKey>,
}

impl DefaultRoutes {
    /// Dumps them from the kernel.
    pub async fn dump(netlink: &Netlink) -> Result<Self, RouteRequestError> {
        let mut found = Self::default();
        for family in [Family::Ipv4, Family::Ipv6] {
            for message in netlink.route_messages(family).await? {
                let is_main_default = convert::route(&message, 0).is_some_and(|r| {
                    r.table == table::MAIN && r.is_default() && r.kind == RouteKind::Unicast
                });
                if !is_main_default {
                    continue;
                }
                for single in single_paths(message) {
                    if let Some(route) = KernelRoute::from_message(single.clone()) {
                        found.routes.push(route);
                    } else if let Some(key) = convert::route(&single, 0).and_then(|mut r| {
                        r.nexthops.truncate(1);
                        key_of(&r)
                    }) {
                        found.multipath.push(key);
                    }
                }
            }
        }
        Ok(found)
    }

    /// The keys of the routes of one family.
    pub fn keys(&self, family: Family) -> impl Iterator<Item = &RouteKey> {
        self.routes
            .iter()
            .map(|r| &r.key)
            .filter(move |k| k.family == family)
    }

    /// The route with this key.
    pub fn get(&self, key: &RouteKey) -> Option<&KernelRoute> {
        self.routes.iter().find(|r| &r.key == key)
    }

    /// Whether a route with this key exists.
    pub fn contains(&self, key: &RouteKey) -> bool {
        self.get(key).is_some()
    }

    /// The routes leaving by `ifindex`.
    pub fn of_interface(&self, ifindex: u32) -> impl Iterator<Item = &KernelRoute> {
        self.routes.iter().filter(move |r| r.key.ifindex == ifindex)
    }
}
