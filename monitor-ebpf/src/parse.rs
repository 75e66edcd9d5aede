//! Reading a frame: the link layer (Ethernet with up to two VLAN tags, or none),
//! the IPv4 or IPv6 header with its extension headers, and the transport ports,
//! down to the 5-tuple a flow is keyed by. Nothing here touches a map.
use aya_ebpf::programs::TcContext;
use monitor_common::{FlowKey, FlowKeyV4, IfaceCounters};

use crate::debug_log::debug_log;

const ETH_HLEN: usize = 14;
const ETH_TYPE_OFFSET: usize = 12;
const VLAN_HLEN: usize = 4;
/// Tags skipped before giving up on a frame (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

/// Fixed IPv4 header; source at 12..16, destination at 16..20.
const IPV4_HLEN: usize = 20;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
/// Fixed IPv6 header; source at 8..24, destination at 24..40.
const IPV6_HLEN: usize = 40;
/// IPv6 extension headers that stand between the fixed header and the transport
/// header (RFC 8200 section 4; AH, RFC 4302, counts its length in 4-byte words).
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers walked before a packet counts as unparsed (a usual packet has
/// none; hop-by-hop + destination options + routing + fragment is already rare).
const MAX_IPV6_EXTENSIONS: usize = 4;

/// What precedes the IP header in a frame on the device.
#[derive(Clone, Copy)]
pub(crate) enum LinkLayer {
    Ethernet,
    None,
}

/// What the programs read from an IP packet: its 5-tuple, in the form of its
/// family's flow table.
pub(crate) enum Packet {
    V4(FlowKeyV4),
    V6(FlowKey),
}

/// What [`parse`] made of a frame.
pub(crate) enum Parsed {
    /// An IP packet with its 5-tuple.
    Ip(Packet),
    /// Not IP (ARP, LLDP, …): counted on the interface only.
    NotIp,
    /// IP by its ethertype, but a header that is truncated or invalid (IPv4 IHL
    /// below 5, a wrong version, more IPv6 extension headers than are walked): no
    /// 5-tuple can be trusted, so it is counted as unparsed, never as a flow.
    Malformed,
}

impl Parsed {
    /// The packet, if any; a malformed one is counted in `iface`'s `unparsed_*`.
    #[inline(always)]
    pub(crate) fn counted_in(self, iface: &mut IfaceCounters, len: u64) -> Option<Packet> {
        match self {
            Parsed::Ip(packet) => Some(packet),
            Parsed::NotIp => None,
            Parsed::Malformed => {
                iface.unparsed_packets += 1;
                iface.unparsed_bytes += len;
                None
            }
        }
    }
}

/// Reads `N` bytes at `offset` of the packet: straight from the linear data when
/// they are there (no helper call, no copy through the stack), else with
/// `bpf_skb_load_bytes` (headers in paged data, rare on the TC hooks).
#[inline(always)]
fn bytes<const N: usize>(ctx: &TcContext, offset: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N <= end {
        // SAFETY: the N bytes are inside the linear packet data (checked just above,
        // and again by the verifier); [u8; N] has no alignment requirement.
        Some(unsafe { ((start + offset) as *const [u8; N]).read() })
    } else {
        ctx.load(offset).ok()
    }
}

/// A flow key built whole: field-by-field zeroing would cost a call to a memset
/// subprogram.
#[inline(always)]
pub(crate) fn flow_key(
    ip_version: u8,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    src: [u8; 16],
    dst: [u8; 16],
) -> FlowKey {
    FlowKey {
        ip_version,
        protocol,
        pad: [0; 2],
        src_port,
        dst_port,
        src,
        dst,
    }
}

/// `N` bytes of `header` from `at`.
#[inline(always)]
fn field<const N: usize, const H: usize>(header: &[u8; H], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// An IPv4 address of `header` at `at`, in the first 4 bytes of a 16-byte slot.
/// Built from words, which the compiler stores whole (byte-wise zeroing of the
/// other 12 would be a call to a memset subprogram).
#[inline(always)]
pub(crate) fn v4_in_v6_slot<const H: usize>(header: &[u8; H], at: usize) -> [u8; 16] {
    let words = [u32::from_ne_bytes(field(header, at)), 0, 0, 0];
    // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}

/// Reads the IP header and the ports (or ICMP echo identifier) of a packet.
#[inline(always)]
pub(crate) fn parse(ctx: &TcContext, link_layer: LinkLayer) -> Parsed {
    let (ethertype, l3_offset) = match link_layer {
        LinkLayer::Ethernet => match ethertype_and_l3_offset(ctx) {
            Some(found) => found,
            None => return Parsed::NotIp,
        },
        // skb->protocol holds the ethertype in network byte order in its low 16 bits.
        LinkLayer::None => (u16::from_be(ctx.skb.protocol() as u16), 0),
    };
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, l3_offset),
        ETH_P_IPV6 => parse_ipv6(ctx, l3_offset),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, l3_offset: usize) -> Parsed {
    let Some(header) = bytes::<IPV4_HLEN>(ctx, l3_offset) else {
        debug_log!("unparsed: IPv4 header truncated (at offset {})", l3_offset);
        return Parsed::Malformed;
    };
    let header_words = header[0] & 0x0f;
    // Version 4 and at least the fixed header: below 5 words the "ports" would be
    // read from inside the IP header (the kernel drops such packets: IP_INHDR).
    if header[0] >> 4 != 4 || header_words < 5 {
        debug_log!(
            "unparsed: IPv4 header with version {} and IHL {}",
            header[0] >> 4,
            header_words
        );
        return Parsed::Malformed;
    }
    let protocol = header[9];
    // Only the first fragment carries the transport header: the others are keyed
    // with ports 0.
    let fragment_offset = u16::from_be_bytes([header[6] & 0x1f, header[7]]);
    let (src_port, dst_port) = if fragment_offset == 0 {
        let header_len = usize::from(header_words) * 4;
        ports(ctx, l3_offset + header_len, protocol, IPPROTO_ICMP)
    } else {
        (0, 0)
    };
    Parsed::Ip(Packet::V4(FlowKeyV4 {
        src: field(&header, 12),
        dst: field(&header, 16),
        src_port,
        dst_port,
        protocol,
        pad: [0; 3],
    }))
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, l3_offset: usize) -> Parsed {
    let Some(header) = bytes::<IPV6_HLEN>(ctx, l3_offset) else {
        debug_log!("unparsed: IPv6 header truncated (at offset {})", l3_offset);
        return Parsed::Malformed;
    };
    if header[0] >> 4 != 6 {
        debug_log!("unparsed: IPv6 header with version {}", header[0] >> 4);
        return Parsed::Malformed;
    }
    // Walk the extension headers to the transport protocol, so that a UDP and a TCP
    // flow between the same addresses never merge under the extension's number.
    let mut protocol = header[6];
    let mut offset = l3_offset + IPV6_HLEN;
    let mut first_fragment = true;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match protocol {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(ext) = bytes::<2>(ctx, offset) else {
                    return Parsed::Malformed;
                };
                protocol = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(ext) = bytes::<4>(ctx, offset) else {
                    return Parsed::Malformed;
                };
                protocol = ext[0];
                // The fragment offset (upper 13 bits): not 0, no transport header.
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    first_fragment = false;
                }
                offset += 8;
            }
            IPPROTO_AH => {
                let Some(ext) = bytes::<2>(ctx, offset) else {
                    return Parsed::Malformed;
                };
                protocol = ext[0];
                offset += (usize::from(ext[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    if matches!(
        protocol,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    ) {
        debug_log!(
            "unparsed: IPv6 extension header {} after {} others",
            protocol,
            MAX_IPV6_EXTENSIONS
        );
        return Parsed::Malformed;
    }
    let (src_port, dst_port) = if first_fragment {
        ports(ctx, offset, protocol, IPPROTO_ICMPV6)
    } else {
        (0, 0)
    };
    Parsed::Ip(Packet::V6(flow_key(
        6,
        protocol,
        src_port,
        dst_port,
        field(&header, 8),
        field(&header, 24),
    )))
}

/// The flow's ports from the transport header at `offset`: TCP, UDP and SCTP
/// ports, or the identifier of an ICMP echo request/reply in both; 0 and 0 for
/// anything else (or a truncated header).
#[inline(always)]
fn ports(ctx: &TcContext, offset: usize, protocol: u8, icmp: u8) -> (u16, u16) {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => match bytes::<4>(ctx, offset) {
            Some(ports) => (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
            ),
            None => (0, 0),
        },
        protocol if protocol == icmp => match bytes::<6>(ctx, offset) {
            // Echo request/reply: 8/0 for ICMP, 128/129 for ICMPv6.
            Some(header) if matches!(header[0], 0 | 8 | 128 | 129) => {
                let id = u16::from_be_bytes([header[4], header[5]]);
                (id, id)
            }
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

/// Reads the ethertype of an Ethernet frame, skipping up to two in-band VLAN tags
/// (tags offloaded to `skb->vlan_tci` are not in the packet data at all).
#[inline(always)]
fn ethertype_and_l3_offset(ctx: &TcContext) -> Option<(u16, usize)> {
    let mut type_offset = ETH_TYPE_OFFSET;
    let mut l3_offset = ETH_HLEN;
    for _ in 0..=MAX_VLAN_TAGS {
        let ethertype = u16::from_be_bytes(bytes(ctx, type_offset)?);
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Some((ethertype, l3_offset));
        }
        type_offset += VLAN_HLEN;
        l3_offset += VLAN_HLEN;
    }
    None
}

/// Whether the frame carries a VLAN tag: in the skb's metadata (where the VLAN
/// device puts it on egress and the receive path moves it on ingress) or in band.
#[inline(always)]
pub(crate) fn is_tagged(ctx: &TcContext) -> bool {
    // SAFETY: the kernel hands TC programs a valid __sk_buff context.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return true;
    }
    matches!(
        bytes::<2>(ctx, ETH_TYPE_OFFSET).map(u16::from_be_bytes),
        Some(ETH_P_8021Q | ETH_P_8021AD)
    )
}
