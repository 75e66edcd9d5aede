//! routemon's kernel side: TC classifiers that count, per interface and per route,
//! what leaves and enters the node, and a tracepoint that counts what the kernel
//! drops on the monitored interfaces.
//!
//! Every program returns `TC_ACT_UNSPEC` whatever happens: it never drops, redirects
//! or alters a packet, and with TCX links (and clsact's default) `TC_ACT_UNSPEC`
//! lets the next program or the stack carry on as if routemon were not there.
//!
//! This file holds only the entry points. The data path, in the order a packet
//! meets it:
//!
//! - [`maps`]: every map and global the programs share with userspace (by name).
//! - [`counting`]: what one packet does to the counters, per hook.
//! - [`parse`]: the Ethernet, VLAN, IPv4 and IPv6 headers, down to the 5-tuple.
//! - [`stacking`]: packets that a monitored device stacked on this one counts.
//! - [`flows`]: the flow tables (where a flow arrived and left, its traffic).
//! - [`routes`]: the route and source owner of a packet leaving by an interface.
//! - [`sampling`]: rate-limited samples of cross-ENI flows for userspace.
//! - [`drops`]: the `kfree_skb` tracepoint's counting.
//! - [`debug_log`]: debug records for userspace (`debug-log` feature only).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod counting;
mod debug_log;
mod drops;
mod flows;
mod maps;
mod parse;
mod routes;
mod sampling;
mod stacking;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, raw_tracepoint},
    programs::{RawTracePointContext, TcContext},
};

use crate::{
    counting::{count_egress, count_ingress},
    drops::count_drop,
    parse::LinkLayer,
};

/// Egress of interfaces with an Ethernet header.
#[classifier]
pub fn routemon_tx(ctx: TcContext) -> i32 {
    count_egress(&ctx, LinkLayer::Ethernet);
    TC_ACT_UNSPEC
}

/// Ingress of interfaces with an Ethernet header.
#[classifier]
pub fn routemon_rx(ctx: TcContext) -> i32 {
    count_ingress(&ctx, LinkLayer::Ethernet);
    TC_ACT_UNSPEC
}

/// Egress of interfaces that carry bare IP packets (tun, wireguard).
#[classifier]
pub fn routemon_tx_l3(ctx: TcContext) -> i32 {
    count_egress(&ctx, LinkLayer::None);
    TC_ACT_UNSPEC
}

/// Ingress of interfaces that carry bare IP packets.
#[classifier]
pub fn routemon_rx_l3(ctx: TcContext) -> i32 {
    count_ingress(&ctx, LinkLayer::None);
    TC_ACT_UNSPEC
}

/// `kfree_skb(skb, location, reason, rx_sk)`: a packet dropped anywhere in the
/// kernel. Counted when its device is a monitored interface of routemon's
/// namespace. Runs only for drops, never on the forwarding path.
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn routemon_drop(ctx: RawTracePointContext) -> i32 {
    let _ = count_drop(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The object's license as the kernel reads it: "Dual MIT/GPL" is GPL-compatible
/// (`license_is_gpl_compatible`), which the GPL-only `bpf_probe_read_kernel` of the
/// drop counter needs; it matches this crate's `MIT OR GPL-2.0-only`.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
