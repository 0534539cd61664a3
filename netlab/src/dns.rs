//! A real DNS server on a lab host: Debian's dnsmasq, answering A records
//! for names the caller sets (a hosts file that dnsmasq rereads on
//! SIGHUP), with no upstream, no cache and a TTL of 0.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Host, LabError, install};

/// dnsmasq on a lab host, port 53; killed (and its files removed) when
/// dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    dir: std::path::PathBuf,
    addr: Ipv4Addr,
}

impl Dnsmasq {
    /// Starts it on `host` (installing Debian's `dnsmasq-base` where it is
    /// missing); `Unavailable` where it cannot be run.
    pub fn start(host: &Host) -> Result<Dnsmasq, LabError> {
        let runs = || {
            Command::new("dnsmasq")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !runs() {
            install("dnsmasq-base");
        }
        if !runs() {
            return Err(LabError::Unavailable(
                "dnsmasq is not installed (Debian: apt-get install dnsmasq-base)".into(),
            ));
        }
        let dir = std::env::temp_dir().join(format!("{}-dns", host.namespace()));
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("hosts"), ""))
            .map_err(|e| LabError::Unavailable(format!("dnsmasq's hosts file: {e}")));
        made?;
        let child = Command::new("ip")
            .args(["netns", "exec", host.namespace(), "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--local-ttl=0",
                "--cache-size=0",
            ])
            .arg(format!("--listen-address={}", host.addr()))
            .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LabError::Unavailable(format!("dnsmasq could not be started: {e}")))?;
        // Until it listens (it binds before it forks nothing: a short wait).
        std::thread::sleep(Duration::from_millis(300));
        Ok(Dnsmasq {
            child,
            dir,
            addr: host.addr(),
        })
    }

    /// Where it answers (port 53, UDP and TCP).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Answers `name` with these addresses from now on (none: no record).
    pub fn answer(&self, name: &str, addrs: &[Ipv4Addr]) -> Result<(), LabError> {
        let lines: String = addrs.iter().map(|a| format!("{a} {name}\n")).collect();
        std::fs::write(self.dir.join("hosts"), lines).map_err(|e| LabError::Command {
            command: "writing dnsmasq's hosts file".into(),
            stderr: e.to_string(),
        })?;
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).map_err(|e| {
            LabError::Command {
                command: "kill -HUP dnsmasq".into(),
                stderr: e.to_string(),
            }
        })
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
