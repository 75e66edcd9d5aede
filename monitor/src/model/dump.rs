//! Fetches the model from the kernel with rtnetlink dumps.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use netlink_packet_route::{AddressFamily, route::RouteMessage};
use rtnetlink::{Handle, IpVersion, new_connection};
use thiserror::Error;

use super::{Address, Family, Link, NetworkModel, Route, Rule, convert};

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
        let mut messages = Vec::new();
        self.each_route_message(family, |msg| messages.push(msg))
            .await?;
        Ok(messages)
    }

    /// Dumps the routes of every table of one family, handing each message to
    /// `each` as it arrives (a million-route table is never held as messages).
    async fn each_route_message(
        &self,
        family: Family,
        mut each: impl FnMut(RouteMessage),
    ) -> Result<(), DumpError> {
        let (address_family, what) = match family {
            Family::Ipv4 => (AddressFamily::Inet, "IPv4 routes"),
            Family::Ipv6 => (AddressFamily::Inet6, "IPv6 routes"),
        };
        let mut request = RouteMessage::default();
        // Table 0 (RT_TABLE_UNSPEC) and no attributes: every table is dumped.
        request.header.address_family = address_family;
        let mut routes = self.handle.route().get(request).execute();
        while let Some(msg) = next(&mut routes, what).await? {
            each(msg);
        }
        Ok(())
    }

    /// Dumps the addresses of every link.
    pub async fn addresses(&self) -> Result<Vec<Address>, DumpError> {
        let mut out = Vec::new();
        let mut addresses = self.handle.address().get().execute();
        while let Some(msg) = next(&mut addresses, "addresses").await? {
            out.extend(convert::address(&msg));
        }
        Ok(out)
    }

    /// Dumps the routes of every table of one family, in the kernel's order;
    /// `first_order` numbers the first one.
    pub async fn routes(
        &self,
        family: Family,
        first_order: usize,
    ) -> Result<Vec<Route>, DumpError> {
        let mut routes = Vec::new();
        self.each_route_message(family, |msg| {
            routes.extend(convert::route(&msg, first_order + routes.len()));
        })
        .await?;
        routes.shrink_to_fit();
        Ok(routes)
    }

    /// Dumps the policy rules of both families.
    pub async fn rules(&self) -> Result<Vec<Rule>, DumpError> {
        let mut out = Vec::new();
        for (version, what) in [(IpVersion::V4, "IPv4 rules"), (IpVersion::V6, "IPv6 rules")] {
            let mut rules = self.handle.rule().get(version).execute();
            while let Some(msg) = next(&mut rules, what).await? {
                out.extend(convert::rule(&msg));
            }
        }
        Ok(out)
    }

    /// Dumps links, addresses, routes of every table and policy rules.
    pub async fn dump(&self) -> Result<NetworkModel, DumpError> {
        let mut model = NetworkModel {
            links: self.links().await?,
            addresses: self.addresses().await?,
            ..NetworkModel::default()
        };
        for family in [Family::Ipv4, Family::Ipv6] {
            let routes = self.routes(family, model.routes.len()).await?;
            model.routes.extend(routes);
        }
        model.rules = self.rules().await?;
        model.rp_filter = super::sysctl::rp_filter(model.links.values());
        Ok(model)
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
