//! A network lab for tests and benchmarks: hosts, each in a network
//! namespace of its own with its own address, joined by a bridge in a hub
//! namespace, with packet loss (nftables in the hub, `numgen random`, on
//! every packet a host sends: so on both directions of every path), a rate
//! limit (`tbf`, on what the hub passes to a host) and a cut (every packet
//! to or from one host dropped). The loss happens in the hub, between the
//! hosts, as on a real network: no sender learns of it (a rule on a host's
//! own output fails its `sendmsg` with EPERM, which TCP and QUIC do not
//! treat as a loss). Nothing leaves the lab: its namespaces have no route
//! out.
//!
//! A thread joins a host with [`Host::enter`]; the sockets it makes then
//! live in that host's namespace (a tokio runtime's threads join it with
//! `on_thread_start`). Everything is removed when the [`Lab`] is dropped,
//! and labs left by a process that died are removed by the next one.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables), which it installs
//! with `apt-get` where they are missing (as on a fresh CI machine);
//! [`Lab::check`] says what is missing.
//!
//! ```no_run
//! use quicall_netlab::{Lab, Path};
//!
//! let lab = Lab::new(&["server", "client"], Path { loss: 0.01, ..Path::default() })?;
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

use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

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

/// What every host's path to the bridge does to the packets it sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Path {
    /// Fraction of packets dropped (0.01 is 1%), at random, on each host's
    /// sending side: each packet crosses one sender, so this is the loss of
    /// every packet, in both directions.
    pub loss: f64,
    /// A rate limit on what each host sends, in bits per second (`tbf`),
    /// or none.
    pub rate_bps: Option<u64>,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            loss: 0.0,
            rate_bps: None,
        }
    }
}

/// Labs made by this process, to name them apart.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Prefix of every namespace a lab makes: `qlab-<pid>-<n>-<host>`.
const PREFIX: &str = "qlab-";

/// The hosts of a lab, in their namespaces, and the hub joining them.
#[derive(Debug)]
pub struct Lab {
    hub: String,
    hosts: Vec<Host>,
}

/// One host of a lab: its namespace and address, and its port on the
/// hub's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    ns: String,
    addr: Ipv4Addr,
    hub: String,
    port: String,
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
        };
        // From here on, dropping `lab` removes whatever was made.
        ip(&["netns", "add", &lab.hub]).map_err(unavailable_if_first)?;
        ip(&["-n", &lab.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lab.hub, "link", "set", "br0", "up"])?;
        for (i, name) in hosts.iter().take(200).enumerate() {
            let host = Host {
                name: (*name).to_owned(),
                ns: format!("{id}-{i}"),
                addr: Ipv4Addr::new(10, 77, 0, 1 + i as u8),
                hub: lab.hub.clone(),
                port: format!("p{i}"),
            };
            ip(&["netns", "add", &host.ns])?;
            lab.hosts.push(host.clone());
            let port = &host.port;
            ip(&[
                "-n", &lab.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", &host.ns,
            ])?;
            ip(&["-n", &lab.hub, "link", "set", port, "master", "br0", "up"])?;
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
            // IPv4 only: no neighbour discovery or MLD chatter among the
            // packets the lab counts and drops.
            ip(&[
                "netns",
                "exec",
                &host.ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])?;
            let cidr = format!("{}/24", host.addr);
            ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
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
}

impl Drop for Lab {
    fn drop(&mut self) {
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
        let enter = |source| LabError::Enter {
            ns: self.ns.clone(),
            source,
        };
        let file = std::fs::File::open(format!("/run/netns/{}", self.ns)).map_err(enter)?;
        nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| enter(std::io::Error::from(e)))
    }

    /// Sets what happens to the host's packets: the loss of those it
    /// sends, the rate of those it receives.
    pub fn set_path(&self, path: Path) -> Result<(), LabError> {
        nft(&self.hub, &loss_rules(&self.port, path.loss))?;
        let hub = &self.hub;
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
        nft(&self.hub, &cut_rules(&self.port))
    }

    /// Undoes [`Host::cut`].
    pub fn heal(&self) -> Result<(), LabError> {
        let table = format!("qcut_{}", self.port);
        nft(
            &self.hub,
            &format!("table bridge {table} {{}}\ndelete table bridge {table}\n"),
        )
    }

    /// Packets the host sent through the hub and packets the loss dropped,
    /// since its path was last set: the loss actually applied.
    pub fn sent_and_dropped(&self) -> Result<(u64, u64), LabError> {
        let table = format!("qlab_{}", self.port);
        let out = run(Command::new("ip").args([
            "netns", "exec", &self.hub, "nft", "list", "table", "bridge", &table,
        ]))?;
        Ok(sent_and_dropped(&out))
    }
}

/// The nftables rules of the loss of what the host on `port` sends: in the
/// hub's bridge, a `loss` fraction of its IPv4 packets dropped at random (in
/// millionths; ARP is spared, as its loss would stall a path for a second),
/// and what passes, both counted.
fn loss_rules(port: &str, loss: f64) -> String {
    let below = (loss.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
    let drop = if below > 0 {
        format!(
            "  iifname \"{port}\" ether type ip numgen random mod 1000000 < {below} counter drop\n"
        )
    } else {
        String::new()
    };
    format!(
        "table bridge qlab_{port} {{}}\nflush table bridge qlab_{port}\n\
         table bridge qlab_{port} {{\n chain pass {{\n  \
         type filter hook forward priority 0; policy accept;\n{drop}  \
         iifname \"{port}\" ether type ip counter\n }}\n}}\n"
    )
}

/// The rules that cut the host on `port` off: whatever it sends and
/// whatever is sent to it, dropped in the hub's bridge.
fn cut_rules(port: &str) -> String {
    format!(
        "table bridge qcut_{port} {{}}\nflush table bridge qcut_{port}\n\
         table bridge qcut_{port} {{\n chain pass {{\n  \
         type filter hook forward priority -10; policy accept;\n  \
         iifname \"{port}\" drop\n  oifname \"{port}\" drop\n }}\n}}\n"
    )
}

/// Packets sent and dropped, from the listing of the rules of
/// [`loss_rules`]: the drop rule's counter (if any), then the counter of
/// what passed.
fn sent_and_dropped(listing: &str) -> (u64, u64) {
    let counts: Vec<u64> = listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    match counts[..] {
        [dropped, passed] => (dropped + passed, dropped),
        [passed] => (passed, 0),
        _ => (0, 0),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_random_drop_in_millionths_of_what_a_port_sends() {
        let one = loss_rules("p1", 0.01);
        assert!(
            one.contains(
                "iifname \"p1\" ether type ip numgen random mod 1000000 < 10000 counter drop"
            ),
            "{one}"
        );
        assert!(one.contains("table bridge qlab_p1 {") && one.contains("hook forward"));
        assert!(!loss_rules("p0", 0.0).contains("drop"));
        assert!(loss_rules("p0", 7.0).contains("< 1000000 counter drop"));
        let cut = cut_rules("p2");
        assert!(cut.contains("iifname \"p2\" drop") && cut.contains("oifname \"p2\" drop"));
    }

    #[test]
    fn the_counters_give_what_was_sent_and_dropped() {
        let listing = "table inet qlab {\n\tchain out {\n\t\ttype filter hook output priority filter; policy accept;\n\t\toifname \"lo\" accept\n\t\tnumgen random mod 1000000 < 10000 counter packets 12 bytes 900 drop\n\t\tcounter packets 988 bytes 70000\n\t}\n}\n";
        assert_eq!(sent_and_dropped(listing), (1000, 12));
        assert_eq!(sent_and_dropped("counter packets 5 bytes 1"), (5, 0));
        assert_eq!(sent_and_dropped("nothing"), (0, 0));
    }
}
