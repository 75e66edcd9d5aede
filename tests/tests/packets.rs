//! The eBPF programs never drop, modify or stall a packet, whatever it is: every
//! program runs in the kernel (BPF_PROG_TEST_RUN) on truncated headers, IPv4
//! options, IPv6 extension headers, fragments, VLAN and QinQ tags, non-IP frames,
//! jumbo frames and thousands of random frames, and must return TC_ACT_UNSPEC with
//! the frame byte for byte unchanged — and count each one exactly once. Loading the
//! programs at all is the verifier's acceptance on this kernel.

use std::{net::IpAddr, time::Duration};

use std::os::fd::AsFd as _;

use routemon::ebpf::{
    Monitor, TrieKey,
    test_run::{load_empty_classifier, test_run},
};
use routemon_testbed::{
    Testbed, UplinkSpec,
    cmd::require_root,
    eks::wait_until,
    frames::{ethernet, ipv4, ipv6, random_frames, shaped_frames, tcp, udp},
    kernel,
    routemon::Running,
};

routemon_testbed::new_machine_view!();

/// `TC_ACT_UNSPEC`: "carry on as if no program ran".
const TC_ACT_UNSPEC: i32 = -1;
const PROGRAMS: [&str; 4] = [
    "routemon_tx",
    "routemon_rx",
    "routemon_tx_l3",
    "routemon_rx_l3",
];

#[test]
fn programs_return_every_frame_unchanged_and_count_it_once() {
    require_root();
    // Loopback (ifindex 1) is the device of every test run; nothing is attached.
    let mut monitor = Monitor::load_long_running(None).expect("the verifier accepts the programs");
    monitor.register_interface(1).unwrap();
    let key = |prefix: &str| TrieKey {
        ifindex: 1,
        table_slot: 0,
        prefix: prefix.parse().unwrap(),
    };
    monitor
        .update_route_entries(&[
            (key("0.0.0.0/0"), Some(0)),
            (key("10.0.0.0/8"), Some(1)),
            (key("::/0"), Some(2)),
        ])
        .unwrap();
    // 10.0.2.10 belongs to "another ENI": egress from it is cross-ENI (sampled).
    for (addr, owner) in [("10.0.1.10", 1), ("10.0.2.10", 2)] {
        monitor
            .set_source_owner(addr.parse::<IpAddr>().unwrap(), Some(owner))
            .unwrap();
    }

    let frames: Vec<(String, Vec<u8>)> = shaped_frames()
        .into_iter()
        .chain(random_frames(4000))
        .collect();
    // The kernel refuses to test-run some frames at all (too short for its skb
    // set-up); an empty program is the judge of which.
    let empty = load_empty_classifier().unwrap();
    let mut runs = [0u64; 4];
    let mut bytes = [0u64; 4];
    let mut refused = Vec::new();
    for (name, frame) in &frames {
        if test_run(empty.as_fd(), frame, 1).is_err() {
            refused.push(frame.len());
            continue;
        }
        for (i, program) in PROGRAMS.into_iter().enumerate() {
            let run = monitor
                .test_run(program, frame, 1)
                .unwrap_or_else(|err| panic!("{program} on {name}: {err}"));
            assert_eq!(run.verdict, TC_ACT_UNSPEC, "{program} on {name}");
            assert_eq!(&run.output, frame, "{program} changed {name}");
            runs[i] += 1;
            bytes[i] += frame.len() as u64;
        }
    }
    println!(
        "{} frames × {} programs: unchanged, TC_ACT_UNSPEC; {} frames of at most {} bytes \
         the kernel does not test-run",
        frames.len() - refused.len(),
        PROGRAMS.len(),
        refused.len(),
        refused.iter().max().unwrap_or(&0)
    );
    assert!(
        refused.iter().all(|len| *len < 64),
        "only runt frames: {refused:?}"
    );
    assert!(runs[0] > 4000, "the random frames ran");

    // Each run counted exactly once, with its length (egress: tx + tx_l3).
    let counters = monitor.interface_counters().unwrap()[&1];
    assert_eq!(counters.egress_packets, runs[0] + runs[2]);
    assert_eq!(counters.egress_bytes, bytes[0] + bytes[2]);
    assert_eq!(counters.ingress_packets, runs[1] + runs[3]);
    assert_eq!(counters.ingress_bytes, bytes[1] + bytes[3]);
}

/// The data path skips the source-rule tries while they are empty and the owner
/// lookup while no packet can leave by another interface than its source's owner;
/// the flags follow every change, and a skipped lookup is never one that would
/// have found something: a rule's table and a cross-ENI packet are still seen as
/// soon as they exist.
#[test]
fn lookups_are_skipped_only_while_they_cannot_find_anything() {
    use monitor_common::{CROSS_ENI_POSSIBLE, HAS_SOURCE_RULES_V4, HAS_SOURCE_RULES_V6};
    require_root();
    let mut monitor = Monitor::load_long_running(None).expect("the verifier accepts the programs");
    let flags = |monitor: &Monitor| monitor.data_path_config().unwrap().flags;
    assert_eq!(flags(&monitor), 0);
    monitor.register_interface(1).unwrap();
    let (own, other): (IpAddr, IpAddr) =
        ("10.0.1.10".parse().unwrap(), "10.0.2.10".parse().unwrap());
    monitor.set_source_owner(own, Some(1)).unwrap();
    assert_eq!(flags(&monitor), 0, "one interface owns everything");
    let key = |prefix: &str, table_slot| TrieKey {
        ifindex: 1,
        table_slot,
        prefix: prefix.parse().unwrap(),
    };
    monitor
        .update_route_entries(&[
            (key("0.0.0.0/0", 0), Some(0)),
            (key("0.0.0.0/0", 1), Some(1)),
        ])
        .unwrap();
    let frame_from = |src: [u8; 4]| {
        ethernet(
            0x0800,
            &ipv4(5, 17, 0, src, [198, 51, 100, 10], &udp(4000, 53, 20)),
        )
    };
    monitor
        .test_run("routemon_tx", &frame_from([10, 0, 2, 10]), 1)
        .unwrap();
    assert!(monitor.cross_eni_counters().unwrap().is_empty());

    // Another interface's address: the owner lookup is on, and the packet counted.
    monitor.set_source_owner(other, Some(2)).unwrap();
    assert_eq!(flags(&monitor), CROSS_ENI_POSSIBLE);
    monitor
        .test_run("routemon_tx", &frame_from([10, 0, 2, 10]), 1)
        .unwrap();
    let cross: u64 = monitor
        .cross_eni_counters()
        .unwrap()
        .values()
        .map(|c| c.packets)
        .sum();
    assert_eq!(cross, 1);

    // A source rule: its table's route gets the packet from then on.
    let rule = |prefix: &str| routemon::attribution::SourceRule {
        prefix: prefix.parse().unwrap(),
        table_slot: 1,
    };
    monitor
        .replace_source_rules(&[rule("10.0.1.0/24")])
        .unwrap();
    assert_eq!(flags(&monitor), CROSS_ENI_POSSIBLE | HAS_SOURCE_RULES_V4);
    monitor
        .test_run("routemon_tx", &frame_from([10, 0, 1, 10]), 1)
        .unwrap();
    let routes = monitor.route_counters(2).unwrap();
    assert_eq!(
        (routes[0].packets, routes[1].packets),
        (2, 1),
        "the rule's table"
    );
    monitor
        .replace_source_rules(&[rule("2001:db8::/64")])
        .unwrap();
    assert_eq!(flags(&monitor), CROSS_ENI_POSSIBLE | HAS_SOURCE_RULES_V6);
    monitor.replace_source_rules(&[]).unwrap();
    monitor.set_source_owner(other, None).unwrap();
    assert_eq!(flags(&monitor), 0);
}

/// The route counters read in one `BPF_MAP_LOOKUP_BATCH` call are exactly those
/// read entry by entry: 64 routes, each with its own number of packets.
#[test]
fn route_counters_read_in_one_batch_equal_those_read_one_by_one() {
    require_root();
    let mut monitor = Monitor::load_long_running(None).expect("the verifier accepts the programs");
    monitor.register_interface(1).unwrap();
    let routes: Vec<(TrieKey, Option<u32>)> = (0..64u32)
        .map(|i| {
            (
                TrieKey {
                    ifindex: 1,
                    table_slot: 0,
                    prefix: format!("10.{i}.0.0/16").parse().unwrap(),
                },
                Some(i),
            )
        })
        .collect();
    monitor.update_route_entries(&routes).unwrap();
    for i in 0..64u8 {
        let frame = ethernet(
            0x0800,
            &ipv4(5, 17, 0, [192, 0, 2, 1], [10, i, 0, 1], &udp(4000, 53, 20)),
        );
        monitor
            .test_run("routemon_tx", &frame, u32::from(i) + 1)
            .unwrap();
    }
    let ids = routemon::ebpf::pinning::PERSISTENT_ROUTE_IDS as usize;
    let batch = monitor.route_counters(ids).unwrap();
    let one_by_one = monitor.route_counters_one_by_one(ids).unwrap();
    assert_eq!(batch.len(), ids);
    assert_eq!(batch, one_by_one);
    for (i, counters) in batch.iter().enumerate().take(64) {
        assert_eq!(counters.packets, i as u64 + 1, "route id {i}");
    }
    assert!(batch[64..].iter().all(|c| c.packets == 0));
}

/// The bench's reference programs (the floor routemon is measured against) are
/// real: the verifier accepts them, they hand every frame back unchanged, and they
/// count exactly — the empty one nothing, the interface counter every frame, the flow table one entry
/// per IPv4 5-tuple with its packets, nothing for what is not IPv4.
#[test]
fn the_bench_reference_programs_count_exactly() {
    use routemon::ebpf::reference::{Reference, ReferenceProgram};
    require_root();
    let (src, dst) = ([10, 0, 1, 10], [198, 51, 100, 10]);
    let flow_a = ethernet(0x0800, &ipv4(5, 17, 0, src, dst, &udp(4000, 53, 20)));
    let flow_b = ethernet(0x0800, &ipv4(5, 6, 0, src, dst, &tcp(4001, 443, 20)));
    let arp = ethernet(0x0806, &[0u8; 28]);
    for reference in [
        Reference::Empty,
        Reference::InterfaceCounter,
        Reference::FlowLookup,
    ] {
        let program = ReferenceProgram::load(reference).expect("the verifier accepts it");
        for (frame, repeat) in [(&flow_a, 70), (&flow_b, 30), (&arp, 5)] {
            let run = test_run(program.fd(), frame, repeat).unwrap();
            assert_eq!(run.verdict, TC_ACT_UNSPEC, "{reference:?}");
            assert_eq!(&run.output, frame, "{reference:?}");
        }
        let counted = match reference {
            Reference::Empty => 0,
            _ => 105,
        };
        assert_eq!(
            program.interface_packets(1).unwrap(),
            counted,
            "{reference:?}"
        );
        let mut flows: Vec<u64> = program.flows().unwrap().iter().map(|(_, n)| *n).collect();
        flows.sort();
        let expected: &[u64] = match reference {
            Reference::Empty | Reference::InterfaceCounter => &[],
            Reference::FlowLookup => &[30, 70],
        };
        assert_eq!(flows, expected, "{reference:?}");
    }
}

/// An IPv6 extension header of 8 bytes (PadN option inside) before `payload`.
fn extension(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut header = vec![next_header, 0, 1, 4, 0, 0, 0, 0];
    header.extend_from_slice(payload);
    header
}

/// An IPv6 fragment header (offset in 8-byte units, more-fragments set) before
/// `payload`.
fn fragment6(next_header: u8, offset: u16, payload: &[u8]) -> Vec<u8> {
    let mut header = vec![next_header, 0];
    header.extend_from_slice(&((offset << 3) | 1).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0x12, 0x34]);
    header.extend_from_slice(payload);
    header
}

/// IPv4 headers shorter than 5 words or of the wrong version, and IPv6 behind more
/// extension headers than are walked, are counted as `unparsed` (both ways), never
/// as flows; IPv6 extension headers are walked to the transport protocol, so UDP
/// and TCP between the same addresses stay two flows with their ports; fragments
/// after the first are keyed with ports 0. Every program runs in the kernel
/// (BPF_PROG_TEST_RUN).
#[test]
fn unparsable_headers_are_counted_apart_and_ipv6_extensions_are_walked() {
    require_root();
    let mut monitor = Monitor::load_long_running(None).expect("the verifier accepts the programs");
    monitor.register_interface(1).unwrap();
    let (src, dst) = ([10, 0, 1, 10], [198, 51, 100, 10]);

    let mut malformed = Vec::new();
    for words in 0..5u8 {
        // Before the fix, IHL 0–4 made flows like `udp 16384→48` out of the IP header.
        let mut packet = ipv4(5, 17, 0, src, dst, &udp(4000, 53, 20));
        packet[0] = 0x40 | words;
        malformed.push(ethernet(0x0800, &packet));
    }
    let mut wrong_version = ipv4(5, 17, 0, src, dst, &udp(4000, 53, 20));
    wrong_version[0] = 0x65;
    malformed.push(ethernet(0x0800, &wrong_version));
    // Five extension headers: one more than the programs walk.
    let mut deep = extension(17, &udp(4000, 53, 20));
    for _ in 0..4 {
        deep = extension(60, &deep);
    }
    malformed.push(ethernet(0x86dd, &ipv6(60, 7, &deep)));
    for frame in &malformed {
        for program in ["routemon_tx", "routemon_rx"] {
            let run = monitor.test_run(program, frame, 1).unwrap();
            assert_eq!(run.verdict, TC_ACT_UNSPEC);
        }
    }
    let counters = monitor.interface_counters().unwrap()[&1];
    let malformed_bytes: u64 = malformed.iter().map(|f| f.len() as u64).sum();
    assert_eq!(counters.unparsed_packets, 2 * malformed.len() as u64);
    assert_eq!(counters.unparsed_bytes, 2 * malformed_bytes);
    assert_eq!(counters.egress_packets, malformed.len() as u64);
    assert_eq!(counters.egress_unattributed_packets, malformed.len() as u64);
    assert!(
        monitor.flows().unwrap().is_empty(),
        "{:?}",
        monitor.flows().unwrap()
    );

    let v6 = |next_header, payload: &[u8]| ethernet(0x86dd, &ipv6(next_header, 1, payload));
    let walked = [
        v6(60, &extension(17, &udp(5000, 53, 20))),
        v6(60, &extension(6, &tcp(5000, 53, 20))),
        v6(0, &extension(43, &extension(17, &udp(5001, 53, 20)))),
        v6(44, &fragment6(17, 0, &udp(5002, 53, 20))),
        v6(44, &fragment6(17, 185, &[0xab; 40])),
        ethernet(0x0800, &ipv4(5, 17, 0x2000, src, dst, &udp(5003, 53, 20))),
        ethernet(0x0800, &ipv4(5, 17, 185, src, dst, &[0xab; 40])),
    ];
    for frame in &walked {
        let run = monitor.test_run("routemon_tx", frame, 1).unwrap();
        assert_eq!(run.verdict, TC_ACT_UNSPEC);
    }
    let mut flows: Vec<(u8, u8, u16, u16)> = monitor
        .flows()
        .unwrap()
        .iter()
        .map(|(k, _)| (k.ip_version, k.protocol, k.src_port, k.dst_port))
        .collect();
    flows.sort();
    assert_eq!(
        flows,
        [
            // IPv4: the first fragment has ports, a later one is keyed with 0.
            (4, 17, 0, 0),
            (4, 17, 5003, 53),
            (6, 6, 5000, 53),
            (6, 17, 0, 0),
            (6, 17, 5000, 53),
            (6, 17, 5001, 53),
            (6, 17, 5002, 53),
        ]
    );
    let counters = monitor.interface_counters().unwrap()[&1];
    assert_eq!(counters.unparsed_packets, 2 * malformed.len() as u64);
}

/// An `AF_PACKET` socket on `dev` (in the calling thread's network namespace),
/// receiving every protocol, with a 200 ms receive timeout.
fn packet_socket(dev: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nothing else owns.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "no interface {dev}");
    // SAFETY: all-zero is a valid sockaddr_ll; the fields are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = i32::try_from(ifindex).unwrap();
    // SAFETY: addr is a sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: a timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            u32::try_from(std::mem::size_of::<libc::timeval>()).unwrap(),
        )
    };
    socket
}

/// Sends each frame out of the node's ens5 (AF_PACKET) and returns every frame the
/// router's side received meanwhile.
fn send_and_capture(bed: &Testbed, frames: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    use std::os::fd::AsRawFd as _;
    let router_side = bed.uplink("ens5").router_side.clone();
    let capture = bed
        .router
        .spawn_in(move || {
            let socket = packet_socket(&router_side);
            let mut frames = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let mut buf = vec![0u8; 65536];
            while std::time::Instant::now() < deadline {
                // SAFETY: buf is writable for its length.
                let n = unsafe {
                    libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if let Ok(n) = usize::try_from(n) {
                    frames.push(buf[..n].to_vec());
                }
            }
            frames
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    send_frames(&bed.node, "ens5", frames);
    capture.join().unwrap().unwrap()
}

/// Sends each frame out of `dev` in `ns` with an AF_PACKET socket.
fn send_frames(ns: &routemon_testbed::netns::NetNs, dev: &str, frames: &[(String, Vec<u8>)]) {
    use std::os::fd::AsRawFd as _;
    let sent = frames.to_vec();
    let dev = dev.to_owned();
    ns.run_in(move || {
        let socket = packet_socket(&dev);
        for (name, frame) in &sent {
            // SAFETY: frame is readable for its length.
            let n =
                unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(
                usize::try_from(n).ok(),
                Some(frame.len()),
                "sending {name}: {}",
                std::io::Error::last_os_error()
            );
        }
    })
    .unwrap();
}

/// Through programs attached to a real veth: every shaped frame sent out of the
/// node's ens5 arrives on the router byte for byte, and UDP datagrams that the
/// router fragments or sends with IP options arrive whole in a socket on the node
/// (the kernel reassembles them and verifies their checksums).
#[test]
fn attached_programs_pass_odd_frames_and_datagrams_unchanged() {
    use std::os::fd::AsRawFd as _;
    require_root();
    let bed = Testbed::new(&[UplinkSpec::new("ens5", 1000)], false).unwrap();
    let to_send: Vec<(String, Vec<u8>)> = shaped_frames()
        .into_iter()
        .filter(|(_, f)| f.len() <= 1514)
        .collect();
    // What the kernel itself delivers unchanged (it moves some VLAN tags of
    // received frames into metadata), then the same with routemon attached.
    let unchanged = |bed: &Testbed| -> Vec<String> {
        let captured = send_and_capture(bed, &to_send);
        to_send
            .iter()
            .filter(|(_, frame)| captured.contains(frame))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let baseline = unchanged(&bed);
    let before_start = kernel::link_stats(&bed.node, "ens5").unwrap();
    let snapshot = Running::start(
        &bed.node,
        &["snapshot", "-i", "ens5", "-d", "60s", "--json"],
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "routemon attached", || {
        kernel::routemon_tcx_links().unwrap_or(0) == 2
    })
    .unwrap();
    let after_start = kernel::link_stats(&bed.node, "ens5").unwrap();
    let with_routemon = unchanged(&bed);
    assert_eq!(
        with_routemon, baseline,
        "routemon changes nothing of what arrives"
    );
    assert!(baseline.len() + 4 >= to_send.len(), "{baseline:?}");
    println!(
        "{} of {} odd frames out of ens5 arrive unchanged with routemon attached, as without",
        with_routemon.len(),
        to_send.len()
    );

    // Ingress from outside: the same frames (runts, bad lengths, tags, non-IP)
    // sent by the router into ens5 go through the ingress program on the real
    // receive path. The stack drops most of them after it; the datagrams below
    // prove that the path still delivers, the counts that each was seen once.
    let router_side = bed.uplink("ens5").router_side.clone();
    send_frames(&bed.router, &router_side, &to_send);

    // Ingress: datagrams the router fragments, and one with IP options.
    let node_addr = bed.uplink("ens5").addr4;
    let receiver = bed.node.spawn_in(move || {
        let socket = std::net::UdpSocket::bind((node_addr, 7777)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < 2 {
            match socket.recv(&mut buf) {
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    let big: Vec<u8> = (0..8000u32).map(|i| (i * 7 % 251) as u8).collect();
    let small = b"with IP options".to_vec();
    let (big_sent, small_sent) = (big.clone(), small.clone());
    bed.router
        .run_in(move || {
            let plain = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            plain.send_to(&big_sent, (node_addr, 7777)).unwrap();
            let with_options = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            // Record Route with room for two addresses, padded with an End.
            let options: [u8; 12] = [7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            // SAFETY: the option bytes are readable for their length.
            let rc = unsafe {
                libc::setsockopt(
                    with_options.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_OPTIONS,
                    options.as_ptr().cast(),
                    12,
                )
            };
            assert_eq!(rc, 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
            with_options
                .send_to(&small_sent, (node_addr, 7777))
                .unwrap();
        })
        .unwrap();
    let got = receiver.unwrap().join().unwrap().unwrap();
    assert!(
        got.contains(&big),
        "the fragmented 8000-byte datagram arrived whole"
    );
    assert!(got.contains(&small), "the datagram with IP options arrived");

    kernel::wait_quiet(&bed.node, &["ens5"], 300).unwrap();
    let before_stop = kernel::link_stats(&bed.node, "ens5").unwrap();
    snapshot.signal(nix::sys::signal::Signal::SIGINT).unwrap();
    let report = snapshot
        .wait(Duration::from_secs(10))
        .unwrap()
        .success()
        .json();
    let after_stop = kernel::link_stats(&bed.node, "ens5").unwrap();
    let ingress = report["interfaces"][0]["ingress_packets"].as_u64().unwrap();
    // Every frame that arrived while attached, odd or not, counted once: between
    // what the kernel counted from the attach to the stop, and from just before
    // the start to just after the stop (the router may chatter in between).
    let least = before_stop.since(after_start).rx_packets;
    let most = after_stop.since(before_start).rx_packets;
    assert!(
        least >= to_send.len() as u64,
        "the odd frames reached ens5: {least}"
    );
    assert!(
        (least..=most).contains(&ingress),
        "routemon counted {ingress} ingress packets; the kernel {least}..={most}"
    );
    println!(
        "{} odd frames from outside through the ingress program: routemon counted {ingress} \
         ingress packets, the kernel {least}..={most}; the datagrams that followed arrived",
        to_send.len()
    );
    // The kernel frees programs after a grace period (the drop program's raw
    // tracepoint link takes a little longer to release than the TC links).
    assert!(
        kernel::routemon_programs_after(Duration::from_secs(5))
            .unwrap()
            .is_empty()
    );
}
