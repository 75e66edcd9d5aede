//! Stacked devices (bond ports, VLAN lowers, devices whose addresses an upper
//! holds): a packet seen on both an upper and its lower device counts its flow and
//! route once, on the upper.
use aya_ebpf::programs::TcContext;
use monitor_common::{IfaceSlot, ROLE_ADDRESS_LOWER, ROLE_BOND_PORT, ROLE_VLAN_LOWER};

use crate::{
    maps::{SOURCE_OWNERS_V4, SOURCE_OWNERS_V6, iface_slot},
    parse::{Packet, is_tagged},
};

/// Which address of a packet is the node's: the source on egress, the destination
/// on ingress.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

/// Whether a packet on a device with a stack role (see `IfaceSlot::role`) belongs
/// to a monitored device stacked with it, whose hooks count its flow and route. The
/// kernel runs the upper's egress and then the lower's on one skb (and ingress the
/// other way round); nothing in the skb names the other device, so the roles come
/// from userspace's view of the links.
#[inline(always)]
pub(crate) fn is_upper_packet(
    ctx: &TcContext,
    slot: &IfaceSlot,
    packet: &Packet,
    side: Side,
) -> bool {
    if slot.role & ROLE_BOND_PORT != 0 {
        return true;
    }
    if slot.role & ROLE_VLAN_LOWER != 0 && is_tagged(ctx) {
        return true;
    }
    if slot.role & ROLE_ADDRESS_LOWER != 0 {
        let owner = match packet {
            Packet::V4(flow) => {
                let addr = if side == Side::Source {
                    flow.src
                } else {
                    flow.dst
                };
                SOURCE_OWNERS_V4.get_ptr(addr)
            }
            Packet::V6(flow) => {
                let addr = if side == Side::Source {
                    flow.src
                } else {
                    flow.dst
                };
                SOURCE_OWNERS_V6.get_ptr(addr)
            }
        };
        // SAFETY: a valid pointer into the hash map's value.
        if let Some(owner) = owner.map(|owner| unsafe { *owner }) {
            return owner != slot.ifindex
                && iface_slot(owner).is_some_and(|upper| upper.lower == slot.ifindex);
        }
    }
    false
}
