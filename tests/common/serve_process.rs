//! `quicall serve` as a process of its own: certificates written by
//! `quicall certs`, the address read from its first line, SIGKILL on demand
//! and on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `quicall serve` and the address it listens on.
pub struct ServeProcess {
    pub child: Child,
    pub addr: String,
}

impl ServeProcess {
    /// Starts `quicall serve --listen LISTEN` with the certificates that
    /// [`write_certs`] wrote in `dir`.
    pub fn start(dir: &Path, listen: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quicall"))
            .arg("serve")
            .args(["--listen", listen])
            .arg("--cert")
            .arg(dir.join("node.crt"))
            .arg("--key")
            .arg(dir.join("node.key"))
            .arg("--ca")
            .arg(dir.join("ca.crt"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = listening_address(&mut child);
        Self { child, addr }
    }

    /// SIGKILL: the process ends without a word to its clients.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA, a server certificate `node` (localhost, 127.0.0.1) and a client
/// certificate `ops` in `dir`, written by `quicall certs`.
pub fn write_certs(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .args(["--server", "node,localhost,127.0.0.1", "--client", "ops"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads the address from the server's "... on ADDR ..." first line, and
/// keeps draining its output so that it never writes to a closed pipe.
pub fn listening_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server printed nothing");
    line.split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}
