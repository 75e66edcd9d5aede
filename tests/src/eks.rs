//! A faithful model of an EKS node on Amazon Linux 2023, in network namespaces:
//!
//! - `vpc`: the VPC router. One subnet per ENI (`10.0.N.0/24`, router `10.0.N.1`),
//!   a real dnsmasq DHCP server per subnet that leases the ENI's address
//!   (`10.0.N.10`), the "internet" host `198.51.100.10` with an HTTP server, and
//!   nftables rules modelling the EC2 source/destination check: a packet that
//!   arrives from an ENI with a source address that is not that ENI's is counted
//!   (named counter `spoof_<vpc side>`) and dropped.
//! - `node`: the EKS node, running the real systemd-networkd with an AL2023-like
//!   `80-ec2.network` (`Name=<pattern>`, `DHCP=ipv4`), so DHCP installs the default
//!   routes with metric 1024.
//!
//! ENIs are hot-attached after boot, as Cilium does. Everything started here is
//! stopped and removed on drop (daemons first, then the scratch directory and the
//! namespaces), also while a failing test unwinds.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    INTERNET_V4,
    daemon::Daemon,
    netns::{NetNs, veth_pair},
};

/// The client host's address (see [`EksNode::add_client`]).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 100, 2);
/// The VPC router's address on the client's subnet.
pub const CLIENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 100, 1);

/// `routemon pin` of ens5 with networkd persistence, applied.
pub const PIN_ENS5: [&str; 6] = [
    "pin",
    "--primary",
    "ens5",
    "--persist",
    "networkd",
    "--apply",
];

/// systemd-networkd's binary on Debian and Amazon Linux.
pub const NETWORKD: &str = "/lib/systemd/systemd-networkd";

/// One attached ENI.
#[derive(Clone, Debug)]
pub struct Eni {
    /// Interface name inside the node.
    pub name: String,
    /// Its peer in the VPC router.
    pub vpc_side: String,
    /// The address DHCP leases to it.
    pub addr: Ipv4Addr,
    /// Its subnet's router.
    pub gateway: Ipv4Addr,
}

/// A scratch directory removed on drop.
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The VPC router and the node; see the module documentation.
#[derive(Debug)]
pub struct EksNode {
    /// Attached ENIs, in attach order (the first is the primary).
    pub enis: Vec<Eni>,
    /// The client namespace, once added.
    pub client: Option<NetNs>,
    servers: Vec<Daemon>,
    dhcp: Vec<Daemon>,
    networkd: Option<Daemon>,
    dbus: Option<Daemon>,
    mount_ns: Option<Daemon>,
    dir: ScratchDir,
    /// The node namespace.
    pub node: NetNs,
    /// The VPC router namespace.
    pub vpc: NetNs,
}

impl EksNode {
    /// Boots a node whose networkd manages interfaces matching `pattern` (e.g.
    /// `ens*`), with the primary ENI `primary` attached, and waits for its DHCP
    /// default route.
    pub fn boot(pattern: &str, primary: &str) -> Result<Self> {
        Self::boot_with(pattern, primary, &[])
    }

    /// Like [`Self::boot`], with extra `.network` files (name, content) in place
    /// before networkd starts — e.g. the documented `05-ens5.network` fix.
    pub fn boot_with(pattern: &str, primary: &str, files: &[(&str, &str)]) -> Result<Self> {
        let ec2 = format!("[Match]\nName={pattern}\n\n[Network]\nDHCP=ipv4\n");
        let mut all = vec![("80-ec2.network", ec2.as_str())];
        all.extend_from_slice(files);
        Self::boot_config(primary, &all)
    }

    /// Boots the node with exactly these `.network` files (name, content) and
    /// attaches `primary`.
    pub fn boot_config(primary: &str, files: &[(&str, &str)]) -> Result<Self> {
        crate::netns::cleanup_stale();
        let vpc = NetNs::new("v")?;
        let node = NetNs::new("n")?;
        let dir = std::env::temp_dir().join(format!("{}-{}", node.name(), "eks"));
        std::fs::create_dir_all(dir.join("network"))?;
        let mut eks = Self {
            enis: Vec::new(),
            client: None,
            servers: Vec::new(),
            dhcp: Vec::new(),
            networkd: None,
            dbus: None,
            mount_ns: None,
            dir: ScratchDir(dir),
            node,
            vpc,
        };
        eks.setup_vpc()?;
        for (name, content) in files {
            eks.write_network_file(name, content)?;
        }
        eks.start_mount_ns()?;
        eks.start_networkd()?;
        eks.attach_eni(primary)?;
        Ok(eks)
    }

    fn scratch(&self) -> &Path {
        &self.dir.0
    }

    fn setup_vpc(&mut self) -> Result<()> {
        self.vpc.sysctl(&["net.ipv4.ip_forward=1"])?;
        self.vpc
            .ip(&["addr", "add", &format!("{INTERNET_V4}/32"), "dev", "lo"])?;
        let ruleset = "table inet vpc {\n\
             chain srccheck {\n\
               type filter hook prerouting priority -300; policy accept;\n\
             }\n\
           }\n";
        let rules = self.scratch().join("vpc.nft");
        std::fs::write(&rules, ruleset)?;
        self.vpc
            .exec("nft", &["-f", rules.to_str().context("path")?])?;
        let internet = self.vpc.name().to_owned();
        self.serve_http(
            &internet,
            INTERNET_V4.into(),
            80,
            "hello from the internet\n",
        )
    }

    /// Starts `python3 -m http.server` in namespace `ns` on `bind:port`, serving a
    /// page with `body`; stopped with the testbed.
    fn serve_http(
        &mut self,
        ns: &str,
        bind: std::net::IpAddr,
        port: u16,
        body: &str,
    ) -> Result<()> {
        let root = self.scratch().join(format!("www-{ns}-{port}"));
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("index.html"), body)?;
        let (port, bind) = (port.to_string(), bind.to_string());
        let root = root.to_str().context("path")?.to_owned();
        let args = [
            "netns",
            "exec",
            ns,
            "python3",
            "-m",
            "http.server",
            &port,
            "--bind",
            &bind,
        ];
        let mut args = args.to_vec();
        args.extend(["--directory", &root]);
        let server = Daemon::spawn("http server", "ip", &args, None)?;
        self.servers.push(server);
        Ok(())
    }

    /// Writes a file into the node's `/etc/systemd/network` (takes effect at the
    /// next networkd start or restart).
    pub fn write_network_file(&self, name: &str, content: &str) -> Result<()> {
        std::fs::write(self.scratch().join("network").join(name), content)
            .with_context(|| format!("writing {name}"))
    }

    /// Starts the node's private mount namespace, held open by a sleeping process:
    /// its own `/etc/systemd/network` (the scratch directory), `/run/systemd` and
    /// `/run/dbus`, a `/var/lib` whose writes stay in the scratch directory (a new
    /// node's: no `/var/lib/routemon`), a read-only `/sys` (networkd then does not
    /// wait for udev) and the host's BPF filesystem on `/sys/fs/bpf`, as on a real
    /// node. A system D-Bus runs in it, so that `networkctl` works as on a real node.
    fn start_mount_ns(&mut self) -> Result<()> {
        let network = self.scratch().join("network");
        let var_lib = self.scratch().join("var-lib");
        for layer in ["upper", "work"] {
            std::fs::create_dir_all(var_lib.join(layer))?;
        }
        // Inside the node's network namespace: a sysfs of its own (read-only), the
        // host's BPF filesystem (stashed before entering), the node's files.
        let inner = format!(
            "mount -t sysfs -o ro sysfs /sys && \
             mount --bind \"$stash\" /sys/fs/bpf && umount \"$stash\" && rmdir \"$stash\" && \
             mount -t overlay overlay \
               -o lowerdir=/var/lib,upperdir={lib}/upper,workdir={lib}/work /var/lib && \
             rm -rf /var/lib/routemon && \
             mount --bind {} /etc/systemd/network && \
             mount -t tmpfs tmpfs /run/systemd && \
             mkdir -p /run/dbus && mount -t tmpfs tmpfs /run/dbus && \
             mkdir -p /run/systemd/netif && \
             chown systemd-network:systemd-network /run/systemd/netif && \
             exec sleep infinity",
            network.display(),
            lib = var_lib.display(),
        );
        let outer = format!(
            "stash=$(mktemp -d) && mount --bind /sys/fs/bpf \"$stash\" && export stash && \
             exec nsenter --net={} bash -c '{inner}'",
            self.node.path().display()
        );
        let holder = Daemon::spawn(
            "node mount namespace",
            "unshare",
            &["-m", "--propagation", "private", "bash", "-c", &outer],
            None,
        )?;
        let pid = holder.pid().context("holder pid")?;
        self.mount_ns = Some(holder);
        // The mounts are in place once /run/systemd/netif exists in there.
        let netif = PathBuf::from(format!("/proc/{pid}/root/run/systemd/netif"));
        wait_until(
            Duration::from_secs(10),
            "the node's mount namespace",
            || netif.exists(),
        )?;
        let args = self.nsenter_args("dbus-daemon", &["--system", "--nofork", "--nopidfile"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let socket = PathBuf::from(format!("/proc/{pid}/root/run/dbus/system_bus_socket"));
        let log = self.scratch().join("dbus.log");
        // dbus-daemon rarely fails to come up on a loaded machine: one more try,
        // with its log in the error if that fails too.
        let mut failures = Vec::new();
        for _ in 0..2 {
            let mut dbus = Daemon::spawn("dbus-daemon", "nsenter", &args, Some(&log))?;
            let up = wait_until(Duration::from_secs(10), "the node's D-Bus socket", || {
                socket.exists()
            });
            if up.is_ok() {
                self.dbus = Some(dbus);
                return Ok(());
            }
            dbus.stop();
            failures.push(std::fs::read_to_string(&log).unwrap_or_default());
        }
        bail!(
            "the node's D-Bus did not start; its log:\n{}",
            failures.join("\n---\n")
        )
    }

    /// The command prefix that runs a program inside the node: its network and
    /// mount namespaces (`nsenter -t PID -m -n`).
    pub fn launcher(&self) -> Vec<String> {
        let pid = self
            .mount_ns
            .as_ref()
            .and_then(Daemon::pid)
            .expect("the node's mount namespace runs");
        ["nsenter", "-t", &pid.to_string(), "-m", "-n"]
            .map(str::to_owned)
            .to_vec()
    }

    /// The arguments of `nsenter` that run `program args…` inside the node.
    fn nsenter_args(&self, program: &str, args: &[&str]) -> Vec<String> {
        let mut all = self.launcher().split_off(1);
        all.push(program.to_owned());
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// Runs a program inside the node (network and mount namespace) and returns
    /// its stdout; fails with its stderr if it fails.
    pub fn node_exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let all = self.nsenter_args(program, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::cmd::run("nsenter", &all)
    }

    /// The node's `/etc/systemd/network`, seen from outside.
    pub fn network_dir(&self) -> PathBuf {
        self.scratch().join("network")
    }

    fn start_networkd(&mut self) -> Result<()> {
        let log = self.scratch().join("networkd.log");
        let args = self.nsenter_args(NETWORKD, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.networkd = Some(Daemon::spawn(
            "systemd-networkd",
            "nsenter",
            &args,
            Some(&log),
        )?);
        Ok(())
    }

    /// Restarts networkd, as `systemctl restart systemd-networkd` does (`/run`
    /// survives, as on a real node).
    pub fn restart_networkd(&mut self) -> Result<()> {
        if let Some(mut networkd) = self.networkd.take() {
            networkd.stop();
        }
        self.start_networkd()
    }

    /// The networkd log so far.
    pub fn networkd_log(&self) -> String {
        std::fs::read_to_string(self.scratch().join("networkd.log")).unwrap_or_default()
    }

    /// Attaches an ENI named `name` (hot plug): a veth to the VPC router, a new
    /// subnet with its DHCP server and source check, then waits until networkd has
    /// installed its DHCP default route.
    pub fn attach_eni(&mut self, name: &str) -> Result<Eni> {
        let eni = self.plug_eni(name)?;
        self.wait_for_default(&eni, Duration::from_secs(30))?;
        Ok(eni)
    }

    /// Like [`Self::attach_eni`] without waiting for networkd to configure it (an
    /// ENI networkd leaves unmanaged never gets a default route).
    pub fn plug_eni(&mut self, name: &str) -> Result<Eni> {
        let n = u8::try_from(self.enis.len() + 1).context("at most 254 ENIs")?;
        let eni = Eni {
            name: name.to_owned(),
            vpc_side: format!("gw{n}"),
            addr: Ipv4Addr::new(10, 0, n, 10),
            gateway: Ipv4Addr::new(10, 0, n, 1),
        };
        let vpc = &self.vpc;
        veth_pair(&self.node, name, vpc, &eni.vpc_side)?;
        vpc.ip(&[
            "addr",
            "add",
            &format!("{}/24", eni.gateway),
            "dev",
            &eni.vpc_side,
        ])?;
        vpc.ip(&["link", "set", &eni.vpc_side, "up"])?;
        self.add_source_check(&eni)?;
        let addr = eni.addr.to_string();
        let leases = self.scratch().join(format!("leases{n}"));
        let log = self.scratch().join(format!("dnsmasq{n}.log"));
        let dnsmasq = Daemon::spawn(
            "dnsmasq",
            "ip",
            &[
                "netns",
                "exec",
                vpc.name(),
                "dnsmasq",
                "--keep-in-foreground",
                "--port=0",
                "--bind-interfaces",
                &format!("--interface={}", eni.vpc_side),
                &format!("--dhcp-range={addr},{addr},255.255.255.0,1h"),
                &format!("--dhcp-option=3,{}", eni.gateway),
                "--conf-file=/dev/null",
                &format!("--dhcp-leasefile={}", leases.display()),
                "--log-dhcp",
                &format!("--log-facility={}", log.display()),
                &format!(
                    "--pid-file={}",
                    self.scratch().join(format!("dnsmasq{n}.pid")).display()
                ),
            ],
            None,
        )?;
        self.dhcp.push(dnsmasq);
        self.enis.push(eni.clone());
        Ok(eni)
    }

    fn add_source_check(&self, eni: &Eni) -> Result<()> {
        let counter = format!("spoof_{}", eni.vpc_side);
        self.vpc
            .exec("nft", &["add", "counter", "inet", "vpc", &counter])?;
        // DHCP DISCOVER/REQUEST come from 0.0.0.0 before the lease.
        let rule = format!(
            "add rule inet vpc srccheck iifname \"{}\" ip saddr != {{ 0.0.0.0, {} }} counter name \"{counter}\" drop",
            eni.vpc_side, eni.addr
        );
        let rule_args: Vec<&str> = rule.split(' ').collect();
        self.vpc.exec("nft", &rule_args).map(drop)
    }

    /// Packets and bytes the VPC's source check dropped on arrival from `eni`.
    pub fn spoofed(&self, eni: &Eni) -> Result<(u64, u64)> {
        let json: Value = serde_json::from_str(&self.vpc.exec(
            "nft",
            &[
                "-j",
                "list",
                "counter",
                "inet",
                "vpc",
                &format!("spoof_{}", eni.vpc_side),
            ],
        )?)?;
        let counter = json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|item| item.get("counter"))
            .context("no counter in nft output")?;
        Ok((
            counter["packets"].as_u64().context("packets")?,
            counter["bytes"].as_u64().context("bytes")?,
        ))
    }

    /// Waits until the node has a DHCP default route via `eni`.
    pub fn wait_for_default(&self, eni: &Eni, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let routes: Value =
                serde_json::from_str(&self.node.ip(&["-j", "-4", "route", "show", "default"])?)?;
            let found = routes.as_array().into_iter().flatten().any(|r| {
                r["dev"] == eni.name.as_str() && r["gateway"] == eni.gateway.to_string().as_str()
            });
            if found {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.networkd_log();
                bail!(
                    "no DHCP default route via {} after {timeout:?}; networkd log:\n{log}",
                    eni.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Adds a client host behind the VPC router (`10.0.100.2`, like a load balancer
    /// or a peer in another subnet) and returns its namespace.
    pub fn add_client(&mut self) -> Result<&NetNs> {
        let client = NetNs::new("c")?;
        veth_pair(&client, "cl0", &self.vpc, "cl")?;
        self.vpc
            .ip(&["addr", "add", &format!("{CLIENT_GATEWAY}/24"), "dev", "cl"])?;
        self.vpc.ip(&["link", "set", "cl", "up"])?;
        client.ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "cl0"])?;
        client.ip(&["link", "set", "cl0", "up"])?;
        client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &CLIENT_GATEWAY.to_string(),
        ])?;
        self.client = Some(client);
        Ok(self.client.as_ref().expect("just set"))
    }

    /// Starts an HTTP server inside the node on `0.0.0.0:port` (a pod or node
    /// service that a load balancer targets).
    pub fn serve_http_on_node(&mut self, port: u16) -> Result<()> {
        let node = self.node.name().to_owned();
        let any = std::net::Ipv4Addr::UNSPECIFIED.into();
        self.serve_http(&node, any, port, "hello from the node\n")
    }

    /// The ENI named `name`.
    pub fn eni(&self, name: &str) -> &Eni {
        self.enis
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no ENI {name}"))
    }
}

/// Polls `done` every 50 ms until it holds, failing after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
