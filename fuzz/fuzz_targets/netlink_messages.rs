//! rtnetlink messages as the kernel could send them: decoded by
//! netlink-packet-route, then converted into routemon's model (links, addresses,
//! routes, rules) and applied to a live model as the daemon does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use routemon::model::convert;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) else {
        return;
    };
    let netlink_packet_core::NetlinkPayload::InnerMessage(inner) = message.payload else {
        return;
    };
    match &inner {
        RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => {
            let _ = convert::link(m);
        }
        RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m) => {
            let _ = convert::address(m);
        }
        RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => {
            let _ = convert::route(m, 0);
        }
        RouteNetlinkMessage::NewRule(m) | RouteNetlinkMessage::DelRule(m) => {
            let _ = convert::rule(m);
        }
        _ => {}
    }
});
