//! Ethernet frames of every shape a node's interfaces see — and broken ones — for
//! the packet-robustness tests: named, deterministic (random ones from a fixed
//! seed).

/// A frame between two fixed locally administered MACs.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A frame with one tag of `ethertype` (0x8100, 0x88a8) and VLAN `vid` before
/// `inner` (the tagged frame's ethertype and payload).
pub fn vlan(ethertype: u16, vid: u16, inner: &[u8]) -> Vec<u8> {
    // inner = the tagged frame's ethertype and payload.
    let mut tag = vid.to_be_bytes().to_vec();
    tag.extend_from_slice(inner);
    ethernet(ethertype, &tag)
}

/// An IPv4 header (`ihl` words, options filled with NOPs) and `payload`.
pub fn ipv4(
    ihl: u8,
    protocol: u8,
    fragment: u16,
    src: [u8; 4],
    dst: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let header_len = usize::from(ihl) * 4;
    let mut packet = vec![1u8; header_len]; // option bytes: NOP
    packet[0] = 0x40 | ihl;
    packet[1] = 0;
    let total = u16::try_from(header_len + payload.len()).unwrap();
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet[4..6].copy_from_slice(&[0x12, 0x34]);
    packet[6..8].copy_from_slice(&fragment.to_be_bytes());
    packet[8] = 64;
    packet[9] = protocol;
    packet[10..12].copy_from_slice(&[0, 0]);
    packet[12..16].copy_from_slice(&src);
    packet[16..20].copy_from_slice(&dst);
    packet.extend_from_slice(payload);
    packet
}

/// An IPv6 header with `next_header`, a source ending in `src`, and `payload`.
pub fn ipv6(next_header: u8, src: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    packet[6] = next_header;
    packet[7] = 64;
    packet[8..10].copy_from_slice(&[0x20, 0x01]);
    packet[10..12].copy_from_slice(&[0x0d, 0xb8]);
    packet[22..24].copy_from_slice(&src.to_be_bytes());
    packet[24] = 0x20;
    packet[25] = 0x01;
    packet[39] = 1;
    packet.extend_from_slice(payload);
    packet
}

/// A UDP header with the ports and `len` bytes of payload (checksum zero).
pub fn udp(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut segment = vec![0xabu8; 8 + len];
    segment[0..2].copy_from_slice(&sport.to_be_bytes());
    segment[2..4].copy_from_slice(&dport.to_be_bytes());
    segment
}

/// A TCP header (20 bytes, ACK set) with the ports and `len` bytes of payload.
pub fn tcp(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut segment = vec![0xabu8; 20 + len];
    segment[0..2].copy_from_slice(&sport.to_be_bytes());
    segment[2..4].copy_from_slice(&dport.to_be_bytes());
    segment[4..12].fill(0);
    segment[12] = 0x50; // data offset: 5 words
    segment[13] = 0x10;
    segment[14..20].fill(0);
    segment
}

/// The named frames: every shape a node's interfaces see, and the broken ones.
pub fn shaped_frames() -> Vec<(String, Vec<u8>)> {
    const NODE: [u8; 4] = [10, 0, 1, 10];
    const OTHER_ENI: [u8; 4] = [10, 0, 2, 10];
    const REMOTE: [u8; 4] = [198, 51, 100, 10];
    let plain = ethernet(0x0800, &ipv4(5, 17, 0, NODE, REMOTE, &udp(40000, 53, 32)));
    let mut frames = vec![
        ("udp".to_owned(), plain.clone()),
        (
            "tcp".into(),
            ethernet(
                0x0800,
                &ipv4(
                    5,
                    6,
                    0,
                    NODE,
                    REMOTE,
                    &[
                        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0,
                        0,
                    ],
                ),
            ),
        ),
        (
            "cross-ENI source".into(),
            ethernet(0x0800, &ipv4(5, 17, 0, OTHER_ENI, REMOTE, &udp(1, 2, 8))),
        ),
        (
            "ICMP echo".into(),
            ethernet(
                0x0800,
                &ipv4(5, 1, 0, NODE, REMOTE, &[8, 0, 0, 0, 0x12, 0x34, 0, 1]),
            ),
        ),
        (
            "IPv4 options (IHL 15)".into(),
            ethernet(0x0800, &ipv4(15, 17, 0, NODE, REMOTE, &udp(1, 2, 8))),
        ),
        (
            "IHL below 5".into(),
            ethernet(0x0800, &ipv4(5, 17, 0, NODE, REMOTE, &udp(1, 2, 8)))
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 14 { 0x42 } else { b })
                .collect(),
        ),
        (
            "first fragment".into(),
            ethernet(0x0800, &ipv4(5, 17, 0x2000, NODE, REMOTE, &udp(1, 2, 64))),
        ),
        (
            "later fragment".into(),
            ethernet(0x0800, &ipv4(5, 17, 0x00b9, NODE, REMOTE, &[7u8; 64])),
        ),
        (
            "IPv6 UDP".into(),
            ethernet(0x86dd, &ipv6(17, 0x10, &udp(1, 2, 16))),
        ),
        (
            "IPv6 hop-by-hop + UDP".into(),
            ethernet(
                0x86dd,
                &ipv6(0, 0x10, &[17, 0, 1, 4, 0, 0, 0, 0, 0, 1, 0, 2, 0, 16, 0, 0]),
            ),
        ),
        (
            "IPv6 fragment header".into(),
            ethernet(
                0x86dd,
                &ipv6(44, 0x10, &[17, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 2]),
            ),
        ),
        (
            "ICMPv6 echo".into(),
            ethernet(0x86dd, &ipv6(58, 0x10, &[128, 0, 0, 0, 0x12, 0x34, 0, 1])),
        ),
        ("802.1Q".into(), vlan(0x8100, 100, &plain[12..])),
        (
            "802.1ad + 802.1Q".into(),
            vlan(0x88a8, 200, &vlan(0x8100, 100, &plain[12..])[12..]),
        ),
        (
            "three tags".into(),
            vlan(
                0x8100,
                1,
                &vlan(0x88a8, 2, &vlan(0x8100, 3, &plain[12..])[12..])[12..],
            ),
        ),
        (
            "ARP".into(),
            ethernet(
                0x0806,
                &[
                    0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 1, 10, 0, 0, 0, 0, 0, 0, 10,
                    0, 1, 1,
                ],
            ),
        ),
        (
            "LLDP".into(),
            ethernet(0x88cc, &[2, 7, 4, 0, 0, 0, 0, 0, 1, 0, 0]),
        ),
        (
            "jumbo UDP".into(),
            ethernet(0x0800, &ipv4(5, 17, 0, NODE, REMOTE, &udp(1, 2, 3000))),
        ),
        // The kernel test-runs frames longer than an Ethernet header only.
        (
            "one byte after the Ethernet header".into(),
            ethernet(0x0800, &[0x45]),
        ),
    ];
    // Every truncation of a TCP/UDP frame, in both families.
    let v6 = ethernet(0x86dd, &ipv6(6, 0x10, &[0u8; 20]));
    for (family, full) in [("IPv4", &plain), ("IPv6", &v6)] {
        for len in 15..full.len() {
            frames.push((
                format!("{family} truncated to {len} bytes"),
                full[..len].to_vec(),
            ));
        }
    }
    frames
}

/// Random frames from a fixed seed (xorshift64*): half with an IP ethertype, so
/// the parsers go deep, half anything.
pub fn random_frames(count: usize) -> Vec<(String, Vec<u8>)> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..count)
        .map(|i| {
            let len = 15 + (next() % 1500) as usize;
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            match i % 4 {
                0 => frame[12..14].copy_from_slice(&[0x08, 0x00]),
                1 => frame[12..14].copy_from_slice(&[0x86, 0xdd]),
                2 => frame[12..14].copy_from_slice(&[0x81, 0x00]),
                _ => {}
            }
            (format!("random frame {i} ({len} bytes)"), frame)
        })
        .collect()
}
