//! Fetches the model from the kernel with rtnetlink dumps.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use netlink_packet_route::{AddressFamily, route::RouteMessage};
use rtnetlink::{Handle, IpVersion, new_connection};
use thiserror::Error;

use super::{Link, NetworkModel, convert};

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

        for (family, what) in [
            (AddressFamily::Inet, "IPv4 routes"),
            (AddressFamily::Inet6, "IPv6 routes"),
        ] {
            let mut request = RouteMessage::default();
            // Table 0 (RT_TABLE_UNSPEC) and no attributes: every table is dumped.
            request.header.address_family = family;
            let mut routes = self.handle.route().get(request).execute();
            while let Some(msg) = next(&mut routes, what).await? {
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

async fn next<T, S>(stream: &mut S, what: &'static str) -> Result<Option<T>, DumpError>
where
    S: futures::Stream<Item = Result<T, rtnetlink::Error>> + Unpin,
{
    stream
        .try_next()
        .await
        .map_err(|source| DumpError::Dump { what, source })
}
