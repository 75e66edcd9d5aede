//! Builders for unit tests of the pure decision code.

use std::net::IpAddr;

use crate::model::{Family, Link, LinkLayer, NetworkModel, NextHop, OperState, Route, RouteKind};

/// A model whose links are `names` with ifindex 1, 2, …; `lo` is loopback.
pub fn model_with_links(names: &[&str]) -> NetworkModel {
    let mut model = NetworkModel::default();
    for (i, name) in names.iter().enumerate() {
        let index = u32::try_from(i).unwrap() + 1;
        model.links.insert(
            index,
            Link {
                index,
                name: (*name).to_owned(),
                kind: None,
                link_layer: if *name == "lo" {
                    LinkLayer::Loopback
                } else {
                    LinkLayer::Ethernet
                },
                oper_state: OperState::Up,
                admin_up: true,
                mac: None,
                mtu: Some(1500),
                lower: None,
                controller: None,
            },
        );
    }
    model
}

/// A unicast route `dst` via `gateway` out of `ifindex`.
pub fn route(dst: &str, ifindex: u32, gateway: Option<&str>, metric: u32, table: u32) -> Route {
    let dst: ipnet::IpNet = dst.parse().unwrap();
    let gateway: Option<IpAddr> = gateway.map(|g| g.parse().unwrap());
    Route {
        family: Family::of(&dst.addr()),
        table,
        dst,
        nexthops: smallvec::smallvec![NextHop {
            gateway,
            ifindex: Some(ifindex),
            hops: 0,
            flags: 0,
        }],
        metric,
        protocol: 16,
        scope: 0,
        kind: RouteKind::Unicast,
        pref_src: None,
        flags: 0,
        realm: 0,
        nexthop_id: None,
        multipath: false,
        order: 0,
    }
}

/// An IPv4 default route out of `ifindex`.
pub fn default_route(ifindex: u32, gateway: Option<&str>, metric: u32, table: u32) -> Route {
    route("0.0.0.0/0", ifindex, gateway, metric, table)
}

/// Appends routes to the model, numbering them in dump order.
pub fn push_routes(model: &mut NetworkModel, routes: impl IntoIterator<Item = Route>) {
    for mut r in routes {
        r.order = model.routes.len();
        model.routes.push(r);
    }
}
