//! Test traffic: UDP datagrams from inside the node namespace to addresses of the
//! router namespace. Nothing leaves the namespaces the testbed made.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::NetNs;

/// Ethernet header length.
pub const ETH_HLEN: u64 = 14;
/// UDP header length.
pub const UDP_HLEN: u64 = 8;

/// Bytes on the wire (what `ip -s link` and routemon count) for one UDP datagram.
pub fn udp_wire_len(dst: IpAddr, payload: usize) -> u64 {
    let ip_header = if dst.is_ipv4() { 20 } else { 40 };
    ETH_HLEN + ip_header + UDP_HLEN + payload as u64
}

/// A burst of identical UDP datagrams.
#[derive(Clone, Debug)]
pub struct UdpBurst {
    /// Destination address (port 9, discard).
    pub dst: IpAddr,
    /// Interface to bind to (SO_BINDTODEVICE), or `None` to let routing choose.
    pub device: Option<String>,
    /// Source address to bind to, or `None` to let routing choose.
    pub src: Option<IpAddr>,
    /// Number of datagrams.
    pub count: usize,
    /// Payload bytes per datagram.
    pub payload: usize,
}

impl UdpBurst {
    /// Bytes on the wire for the whole burst.
    pub fn wire_bytes(&self) -> u64 {
        udp_wire_len(self.dst, self.payload) * self.count as u64
    }
}

/// Sends the burst from inside `ns`.
pub fn send_udp(ns: &NetNs, burst: &UdpBurst) -> Result<()> {
    let burst = burst.clone();
    ns.run_in(move || -> Result<()> {
        let domain = if burst.dst.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).context("socket")?;
        if let Some(device) = &burst.device {
            socket
                .bind_device(Some(device.as_bytes()))
                .with_context(|| format!("SO_BINDTODEVICE {device}"))?;
        }
        if let Some(src) = burst.src {
            // Binding a source address another interface owns is what a pod's SNAT or
            // an application bound to a secondary IP does.
            socket
                .bind(&SocketAddr::new(src, 0).into())
                .with_context(|| format!("bind {src}"))?;
        }
        let socket: UdpSocket = socket.into();
        let payload = vec![0x5a_u8; burst.payload];
        let target = SocketAddr::new(burst.dst, 9);
        for _ in 0..burst.count {
            socket.send_to(&payload, target).context("sendto")?;
        }
        Ok(())
    })?
}

/// Sends `GET /` to `addr` from inside `ns` and returns the status line, or the
/// error (a timeout when the replies are dropped on the way back).
pub fn http_get(ns: &NetNs, addr: SocketAddr, timeout: std::time::Duration) -> Result<String> {
    use std::io::{Read as _, Write as _};
    ns.run_in(move || -> Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.lines().next().unwrap_or_default().to_owned())
    })?
}
