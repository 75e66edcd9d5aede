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

/// Echoes up to `count` UDP datagrams on `addr:port` inside `ns` (a service bound to
/// one ENI's address replies from that address), on a background thread that ends
/// after `count` datagrams or 10 s. Returns once the socket is bound.
pub fn spawn_udp_echo(
    ns: &NetNs,
    addr: IpAddr,
    port: u16,
    count: usize,
) -> Result<std::thread::JoinHandle<usize>> {
    let path = ns.path();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || -> usize {
        let bound = (|| -> Result<UdpSocket> {
            let file = std::fs::File::open(&path)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let domain = if addr.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            socket.bind(&SocketAddr::new(addr, port).into())?;
            let socket: UdpSocket = socket.into();
            socket.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            Ok(socket)
        })();
        let socket = match bound {
            Ok(socket) => {
                let _ = ready_tx.send(Ok(()));
                socket
            }
            Err(err) => {
                let _ = ready_tx.send(Err(err));
                return 0;
            }
        };
        let mut echoed = 0;
        let mut buf = [0u8; 2048];
        while echoed < count {
            let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                break;
            };
            if socket.send_to(&buf[..len], peer).is_ok() {
                echoed += 1;
            }
        }
        echoed
    });
    ready_rx.recv().context("echo thread")??;
    Ok(handle)
}

/// Sends `count` ICMPv6 echo requests with identifier `id` from inside `ns` (the
/// kernel fills in the checksum of raw ICMPv6 sockets).
pub fn send_icmpv6_echo(
    ns: &NetNs,
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    id: u16,
    count: u16,
) -> Result<()> {
    ns.run_in(move || -> Result<()> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .context("raw ICMPv6 socket")?;
        socket
            .bind(&SocketAddr::new(src.into(), 0).into())
            .context("bind")?;
        let target = SocketAddr::new(dst.into(), 0).into();
        for seq in 0..count {
            let [id_hi, id_lo] = id.to_be_bytes();
            let [seq_hi, seq_lo] = seq.to_be_bytes();
            let request = [128, 0, 0, 0, id_hi, id_lo, seq_hi, seq_lo, b'r', b'm'];
            socket.send_to(&request, &target).context("sendto")?;
        }
        Ok(())
    })?
}

/// A client that sends HTTP GET requests back to back from inside a namespace
/// until stopped, counting successes and failures (each request has a 2 s
/// timeout). Killed if dropped unfinished.
pub struct HttpLoop {
    child: Option<std::process::Child>,
    stop_file: std::path::PathBuf,
}

/// What an [`HttpLoop`] counted.
#[derive(Debug)]
pub struct HttpLoopResult {
    /// Requests answered.
    pub ok: u64,
    /// Requests that failed or timed out.
    pub failed: u64,
    /// The first few errors.
    pub errors: Vec<String>,
}

const HTTP_LOOP: &str = r#"
import json, os, socket, sys
host, port, stop, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ok = failed = 0
errors = []
def get():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        if device:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        s.connect((host, port))
        s.sendall(b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        if not reply.startswith(b"HTTP/1.0 200") and not reply.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("unexpected reply: %r" % reply[:40])
while not os.path.exists(stop):
    try:
        get()
        ok += 1
    except Exception as err:
        failed += 1
        errors.append(repr(err))
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:5]}))
"#;

impl HttpLoop {
    /// Starts requesting `http://addr/` from namespace `ns` (or behind a launcher
    /// such as `nsenter …`, given as the full command prefix).
    pub fn start(prefix: &[String], addr: SocketAddr) -> Result<Self> {
        Self::start_on(prefix, addr, None)
    }

    /// Like [`Self::start`], with every request's socket bound to `device`
    /// (`SO_BINDTODEVICE`): only routes through that interface carry them.
    pub fn start_on(prefix: &[String], addr: SocketAddr, device: Option<&str>) -> Result<Self> {
        let stop_file = std::env::temp_dir().join(format!(
            "routemon-http-loop-{}-{}",
            std::process::id(),
            addr
        ));
        let _ = std::fs::remove_file(&stop_file);
        let (program, args) = prefix.split_first().context("empty prefix")?;
        let child = std::process::Command::new(program)
            .args(args)
            .args(["python3", "-c", HTTP_LOOP])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(&stop_file)
            .arg(device.unwrap_or_default())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("starting the HTTP client loop")?;
        Ok(Self {
            child: Some(child),
            stop_file,
        })
    }

    /// Stops the loop after its current request and returns the counts.
    pub fn finish(mut self) -> Result<HttpLoopResult> {
        std::fs::write(&self.stop_file, b"")?;
        let child = self.child.take().context("finished twice")?;
        let output = child.wait_with_output()?;
        let _ = std::fs::remove_file(&self.stop_file);
        let json: serde_json::Value =
            serde_json::from_slice(&output.stdout).with_context(|| {
                format!(
                    "client loop output: {}",
                    String::from_utf8_lossy(&output.stdout)
                )
            })?;
        Ok(HttpLoopResult {
            ok: json["ok"].as_u64().context("ok")?,
            failed: json["failed"].as_u64().context("failed")?,
            errors: json["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e.as_str().unwrap_or_default().to_owned())
                .collect(),
        })
    }
}

impl Drop for HttpLoop {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.stop_file);
    }
}
