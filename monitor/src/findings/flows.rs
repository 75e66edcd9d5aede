//! The flows findings and reports name: a 5-tuple as text, and sampled flows.

use std::net::{Ipv4Addr, Ipv6Addr};

use monitor_common::FlowKey;
use serde::Serialize;

/// A 5-tuple in a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowReport {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or the protocol number.
    pub protocol: String,
    /// Source address.
    pub src: String,
    /// Source port (ICMP echo: the identifier; 0 when there is none).
    pub src_port: u16,
    /// Destination address.
    pub dst: String,
    /// Destination port.
    pub dst_port: u16,
}

impl FlowReport {
    /// Describes a kernel flow key.
    pub fn from_key(key: &FlowKey) -> Self {
        let addr = |bytes: &[u8; 16]| -> String {
            if key.ip_version == 4 {
                Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
            } else {
                Ipv6Addr::from(*bytes).to_string()
            }
        };
        Self {
            protocol: match key.protocol {
                1 => "icmp".to_owned(),
                6 => "tcp".to_owned(),
                17 => "udp".to_owned(),
                58 => "icmpv6".to_owned(),
                132 => "sctp".to_owned(),
                other => other.to_string(),
            },
            src: addr(&key.src),
            src_port: key.src_port,
            dst: addr(&key.dst),
            dst_port: key.dst_port,
        }
    }
}

impl std::fmt::Display for FlowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = |addr: &str| {
            if addr.contains(':') {
                format!("[{addr}]")
            } else {
                addr.to_owned()
            }
        };
        write!(
            f,
            "{} {}:{} -> {}:{}",
            self.protocol,
            host(&self.src),
            self.src_port,
            host(&self.dst),
            self.dst_port
        )
    }
}

/// A sampled flow and how many of its packets were sampled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SampledFlow {
    /// The 5-tuple.
    pub flow: FlowReport,
    /// Packets of it that were sampled.
    pub sampled_packets: u64,
}
