//! A network lab for tests and benchmarks: hosts, each in a network
//! namespace of its own with its own address, joined by a router in a hub
//! namespace, with packet loss (nftables, `numgen random`, on every packet
//! a host receives: so on both directions of every path), delay and jitter
//! (a user-space forwarder on a TUN device in the hub: this kernel has no
//! `netem`), a rate limit (`tbf`, on what the hub passes to a host) and a
//! cut (every packet to or from one host dropped in the hub). The hub
//! hands each host one packet per buffer, as a wire does (the senders keep
//! their offload batches, which the hub cuts up as a NIC would), so the
//! loss falls on packets, not batches. The loss and the delay happen
//! between the hosts, as on a real network: no sender learns of them (a
//! rule on a host's own output fails its `sendmsg` with EPERM, which TCP
//! and QUIC do not treat as a loss), and every protocol meets the same
//! path. Nothing leaves the lab: its namespaces have no route out.
//!
//! A thread joins a host with [`Host::enter`]; the sockets it makes then
//! live in that host's namespace (a tokio runtime's threads join it with
//! `on_thread_start`). Everything is removed when the [`Lab`] is dropped,
//! and labs left by a process that died are removed by the next one.
//! [`Dnsmasq`] runs a real DNS server on a host.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables), which it installs
//! with `apt-get` where they are missing (as on a fresh CI machine), and
//! `/dev/net/tun` for delay; [`Lab::check`] says what is missing.
//!
//! ```no_run
//! use std::time::Duration;
//! use quicall_netlab::{Lab, Path};
//!
//! // 1% loss each way, 10 ms each way: a 20 ms round trip.
//! let path = Path { loss: 0.01, delay: Duration::from_millis(10), ..Path::default() };
//! let lab = Lab::new(&["server", "client"], path)?;
//! let server = lab.host("server");
//! println!("server at {}", server.addr());
//! std::thread::spawn({
//!     let server = server.clone();
//!     move || {
//!         server.enter().unwrap();
//!         // sockets bound here are on the server's address
//!     }
//! });
//! # Ok::<(), quicall_netlab::LabError>(())
//! ```

mod delay;
mod dns;
mod rules;

pub use dns::Dnsmasq;

use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::CloneFlags;

/// How the lab went wrong.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// What the lab needs is not here (not root, no `ip`, no `nft`, no
    /// namespaces): the caller skips, saying this.
    #[error("network lab unavailable: {0}")]
    Unavailable(String),
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    /// Joining a namespace failed.
    #[error("entering {ns}: {source}")]
    Enter {
        ns: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a host's link to the hub does to its packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Path {
    /// Fraction of the packets the host receives that are dropped (0.01
    /// is 1%), at random, each on its own: each packet reaches one
    /// receiver, so with the same path on every host this is the loss of
    /// every packet, in both directions.
    pub loss: f64,
    /// How long every packet the host sends is held in the hub (one way:
    /// with the same path on both hosts, the round trip is twice this).
    pub delay: Duration,
    /// Up to this much more, drawn uniformly for each packet on its own,
    /// so packets overtake each other (as `netem`'s jitter does).
    pub jitter: Duration,
    /// A rate limit on what the host receives, in bits per second (`tbf`),
    /// or none.
    pub rate_bps: Option<u64>,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_bps: None,
        }
    }
}

/// Labs made by this process, to name them apart.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Prefix of every namespace a lab makes: `qlab-<pid>-<n>-<host>`.
const PREFIX: &str = "qlab-";

/// The hub's address, on each of its ports: every host's gateway.
const HUB_ADDR: &str = "10.77.0.254";

/// The hub's routing table that sends a delayed host's packets to the
/// forwarder.
const DELAY_TABLE: &str = "77";

/// The hosts of a lab, in their namespaces, and the hub joining them.
#[derive(Debug)]
pub struct Lab {
    hub: String,
    hosts: Vec<Host>,
    forwarder: Option<delay::Forwarder>,
}

/// One host of a lab: its namespace and address, and its port on the hub.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    ns: String,
    addr: Ipv4Addr,
    hub: String,
    port: String,
    /// The forwarder's table of delays (`None`: no TUN device here).
    delays: Option<Arc<delay::Delays>>,
}

impl Lab {
    /// Whether a lab can be made here; the error says what is missing.
    pub fn check() -> Result<(), LabError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::Unavailable("not running as root".into()));
        }
        for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            if !installed(tool) {
                install(package);
            }
            if !installed(tool) {
                return Err(LabError::Unavailable(format!(
                    "`{tool}` is not installed (Debian: apt-get install {package})"
                )));
            }
        }
        Ok(())
    }

    /// A lab of `hosts` (names; at most 200), addresses 10.77.0.1 onwards
    /// in that order, every path as `path` says.
    pub fn new(hosts: &[&str], path: Path) -> Result<Lab, LabError> {
        Self::check()?;
        sweep_stale();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            hub: format!("{id}-hub"),
            hosts: Vec::new(),
            forwarder: None,
        };
        // From here on, dropping `lab` removes whatever was made.
        ip(&["netns", "add", &lab.hub]).map_err(unavailable_if_first)?;
        // A router: forwarding on, no reverse-path filter (the forwarder
        // hands back packets from addresses routed elsewhere), IPv4 only
        // (no neighbour discovery or MLD chatter among the packets the lab
        // counts and drops).
        sysctl(
            &lab.hub,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
        ip(&["-n", &lab.hub, "link", "set", "lo", "up"])?;
        let delays = match delay_device(&lab.hub) {
            Ok(device) => {
                let delays = delay::no_delays();
                let forwarder = delay::Forwarder::start(device, delays.clone())
                    .map_err(|e| LabError::Unavailable(format!("delay forwarder: {e}")))?;
                lab.forwarder = Some(forwarder);
                ip(&["-n", &lab.hub, "link", "set", delay::DEVICE, "up"])?;
                ip(&[
                    "-n",
                    &lab.hub,
                    "route",
                    "add",
                    "default",
                    "dev",
                    delay::DEVICE,
                    "table",
                    DELAY_TABLE,
                ])?;
                Some(delays)
            }
            // Without a TUN device, a lab without delay still works.
            Err(_) if path.delay.is_zero() && path.jitter.is_zero() => None,
            Err(e) => return Err(e),
        };
        for (i, name) in hosts.iter().take(200).enumerate() {
            let host = Host {
                name: (*name).to_owned(),
                ns: format!("{id}-{i}"),
                addr: Ipv4Addr::new(10, 77, 0, 1 + i as u8),
                hub: lab.hub.clone(),
                port: format!("p{i}"),
                delays: delays.clone(),
            };
            ip(&["netns", "add", &host.ns])?;
            lab.hosts.push(host.clone());
            let (hub, port, ns) = (&lab.hub, &host.port, &host.ns);
            ip(&[
                "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            // The hub's side: its own address (the host's gateway), and a
            // route to the host.
            ip(&[
                "-n",
                hub,
                "addr",
                "add",
                &format!("{HUB_ADDR}/32"),
                "dev",
                port,
            ])?;
            ip(&["-n", hub, "link", "set", port, "up"])?;
            let addr = host.addr.to_string();
            ip(&["-n", hub, "route", "add", &addr, "dev", port])?;
            // The host's side: its address, and the lab's network through
            // the hub.
            sysctl(ns, &["net.ipv6.conf.all.disable_ipv6=1"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ])?;
            // The hub hands the host one packet per buffer, as a wire
            // does: a sender's TCP (TSO) or UDP (GSO) batch of up to 64 KB
            // is cut into packets on its way out of the hub (as a NIC
            // would), so the loss at the host's ingress falls on packets,
            // not on batches (TCP's are larger than QUIC's). The senders
            // keep their offloads, as on real machines.
            ip(&["-n", hub, "link", "set", "dev", port, "gso_max_segs", "1"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "route", "add", HUB_ADDR, "dev", "eth0"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "10.77.0.0/24",
                "via",
                HUB_ADDR,
                "dev",
                "eth0",
            ])?;
            host.set_path(path)?;
        }
        Ok(lab)
    }

    /// The host named `name`.
    ///
    /// # Panics
    /// If the lab has no such host (a caller's mistake).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("the lab has no host {name}"))
    }

    /// All hosts, in the order they were named.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Packets the delay forwarder dropped because its queue was full
    /// (100,000 packets): a loss on top of [`Path::loss`], zero unless a
    /// path holds more than that.
    pub fn delay_overflows(&self) -> u64 {
        self.forwarder
            .as_ref()
            .map_or(0, delay::Forwarder::overflowed)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The forwarder's threads first: its device goes with them.
        self.forwarder.take();
        for ns in self.hosts.iter().map(|h| &h.ns).chain([&self.hub]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

impl Host {
    /// The host's name in the lab.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the lab's network.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its namespace's name (`ip netns exec NAME ...`).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Moves the calling thread into the host's namespace: the sockets it
    /// makes from now on are the host's.
    pub fn enter(&self) -> Result<(), LabError> {
        enter(&self.ns)
    }

    /// Sets what happens to the host's packets: the delay of those it
    /// sends, the loss and rate of those it receives.
    pub fn set_path(&self, path: Path) -> Result<(), LabError> {
        let hub = &self.hub;
        nft(&self.ns, &rules::loss_rules("eth0", path.loss))?;
        // The delay: the host's packets routed through the forwarder, or
        // not.
        let delayed = !(path.delay.is_zero() && path.jitter.is_zero());
        let rule = |verb| {
            ip(&[
                "-n",
                hub,
                "rule",
                verb,
                "iif",
                &self.port,
                "lookup",
                DELAY_TABLE,
            ])
        };
        let _ = rule("del");
        match &self.delays {
            Some(delays) => {
                delays.set(self.octet(), path.delay, path.jitter);
                if delayed {
                    rule("add")?;
                }
            }
            None if delayed => {
                return Err(LabError::Unavailable(
                    "no TUN device (/dev/net/tun) for the lab's delay".into(),
                ));
            }
            None => {}
        }
        let _ = ip(&[
            "netns", "exec", hub, "tc", "qdisc", "del", "dev", &self.port, "root",
        ]);
        if let Some(rate) = path.rate_bps {
            // A burst of 10 ms at the rate (at least 16 KB), and at most
            // 50 ms of queue.
            let burst = (rate / 8 / 100).max(16 << 10).to_string();
            let rate = format!("{rate}bit");
            ip(&[
                "netns", "exec", hub, "tc", "qdisc", "add", "dev", &self.port, "root", "tbf",
                "rate", &rate, "burst", &burst, "latency", "50ms",
            ])?;
        }
        Ok(())
    }

    /// Cuts the host off: every packet it sends or is sent is dropped in
    /// the hub (as a host that vanished, without a word to anyone), until
    /// [`Host::heal`].
    pub fn cut(&self) -> Result<(), LabError> {
        nft(&self.hub, &rules::cut_rules(&self.port))
    }

    /// Undoes [`Host::cut`].
    pub fn heal(&self) -> Result<(), LabError> {
        nft(&self.hub, &rules::heal_rules(&self.port))
    }

    /// IPv4 packets the host received from the hub and packets the loss
    /// dropped of them, since its path was last set: the loss actually
    /// applied.
    pub fn received_and_dropped(&self) -> Result<(u64, u64), LabError> {
        let out = run(Command::new("ip").args([
            "netns", "exec", &self.ns, "nft", "list", "table", "netdev", "qlab",
        ]))?;
        Ok(rules::received_and_dropped(&out))
    }

    /// Sets kernel parameters of the host's network namespace (`sysctl -w`
    /// syntax: `"net.ipv4.tcp_congestion_control=cubic"`).
    pub fn sysctl(&self, settings: &[&str]) -> Result<(), LabError> {
        sysctl(&self.ns, settings).map(drop)
    }

    /// The value of one of the host's kernel parameters.
    pub fn sysctl_value(&self, name: &str) -> Result<String, LabError> {
        let out = ip(&["netns", "exec", &self.ns, "sysctl", "-n", name])?;
        Ok(out.trim().to_owned())
    }

    /// The last byte of its address, which names it to the forwarder.
    fn octet(&self) -> u8 {
        self.addr.octets()[3]
    }
}

/// Moves the calling thread into the namespace `ns`.
fn enter(ns: &str) -> Result<(), LabError> {
    let failed = |source| LabError::Enter {
        ns: ns.to_owned(),
        source,
    };
    let file = std::fs::File::open(format!("/run/netns/{ns}")).map_err(failed)?;
    nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| failed(std::io::Error::from(e)))
}

/// The forwarder's TUN device, made in the hub (by a thread of its own
/// that enters it: a device belongs to the namespace it is made in).
fn delay_device(hub: &str) -> Result<tun_rs::SyncDevice, LabError> {
    let hub = hub.to_owned();
    std::thread::spawn(move || {
        enter(&hub)?;
        tun_rs::DeviceBuilder::new()
            .name(delay::DEVICE)
            .mtu(1500)
            .tx_queue_len(10_000)
            .build_sync()
            .map_err(|e| LabError::Unavailable(format!("cannot make a TUN device: {e}")))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(LabError::Unavailable(
            "making the TUN device panicked".into(),
        ))
    })
}

/// Sets kernel parameters in the namespace `ns`.
fn sysctl(ns: &str, settings: &[&str]) -> Result<String, LabError> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    ip(&args)
}

/// Whether `tool` runs.
fn installed(tool: &str) -> bool {
    let flag = if tool == "ip" { "-V" } else { "--version" };
    Command::new(tool)
        .arg(flag)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Installs a Debian package (as root, where `apt-get` is: a fresh CI
/// machine), one at a time in this process.
fn install(package: &str) {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = APT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    eprintln!("network lab: installing Debian's {package}");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-q", package]) {
        let _ = apt(&["update", "-q"]) && apt(&["install", "-y", "-q", package]);
    }
}

/// Removes the namespaces of labs whose process is gone.
fn sweep_stale() {
    let Ok(out) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for ns in out.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = ns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

/// Loads `rules` into the namespace's nftables (`nft -f -`).
fn nft(ns: &str, rules: &str) -> Result<(), LabError> {
    use std::io::Write as _;
    let shown = format!("ip netns exec {ns} nft -f -");
    let failed = |stderr: String| LabError::Command {
        command: shown.clone(),
        stderr,
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

fn run(command: &mut Command) -> Result<String, LabError> {
    let shown = format!("{command:?}");
    let out = command.output().map_err(|e| LabError::Command {
        command: shown.clone(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first namespace could not be made: namespaces are not possible here
/// (a container without the capability), which is a reason to skip.
fn unavailable_if_first(e: LabError) -> LabError {
    match e {
        LabError::Command { stderr, .. } => {
            LabError::Unavailable(format!("cannot make a network namespace: {stderr}"))
        }
        other => other,
    }
}
