//! `quicall demo`: a mutual-TLS cluster of three servers on loopback. Part
//! one shows who is answered and who is refused; part two runs a cluster
//! client through a slow server, a killed server and its restart; part
//! three offers five times a cluster's capacity, with fixed limits and with
//! adaptive admission.

mod phases;
mod spike;
mod tls;

pub use tls::add_request;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use quicall::certs::{CertificateAuthority, NodeSpec, read_certs, read_key};
use quicall::demo::Knobs;
use quicall::{ClientAuth, Server, ServerOptions, ServerTls};

/// Arguments of `quicall demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Concurrent callers in the load phases.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds each load phase lasts.
    #[arg(long, default_value_t = 2.0)]
    pub phase_secs: f64,
}

pub const SERVERS: usize = 3;
pub const CLIENT: &str = "demo-client";
pub const INSIDER: &str = "demo-insider";
/// The demo CA's name (public: it is in every demo certificate).
pub const CA_NAME: &str = "quicall demo CA";

pub async fn run(args: Args) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(180), demo(args))
        .await
        .context("the demo did not finish within 180 s")?
}

/// One demo server: its certificate files, its knobs, and the running server
/// (none while killed): in this process, or a `quicall serve` process of its
/// own, which the demo can kill the hard way (SIGKILL: no close reaches its
/// clients).
pub struct DemoServer {
    pub name: String,
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    pub server: Option<Server>,
    process: Option<Child>,
    own_process: bool,
    dir: PathBuf,
}

impl DemoServer {
    fn start(
        dir: &Path,
        name: String,
        addr: SocketAddr,
        knobs: Arc<Knobs>,
        own_process: bool,
    ) -> anyhow::Result<Self> {
        let mut server = DemoServer {
            name,
            addr,
            knobs,
            server: None,
            process: None,
            own_process,
            dir: dir.to_owned(),
        };
        server.bind()?;
        Ok(server)
    }

    fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.name))
    }

    fn bind(&mut self) -> anyhow::Result<()> {
        if self.own_process {
            return self.spawn();
        }
        let tls = ServerTls::new(
            read_certs(&self.file("crt"))?,
            read_key(&self.file("key"))?,
            ClientAuth::Required(read_certs(&self.dir.join("ca.crt"))?),
        );
        let router = quicall::demo::router_with(self.knobs.clone());
        let server = Server::bind(self.addr, tls, router, ServerOptions::default())?;
        self.addr = server.local_addr();
        self.server = Some(server);
        Ok(())
    }

    /// Starts `quicall serve` (this very binary) for this server, spending
    /// the knobs' service time on every call, and reads its address.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--cert")
            .arg(self.file("crt"))
            .arg("--key")
            .arg(self.file("key"))
            .arg("--ca")
            .arg(self.dir.join("ca.crt"))
            .arg("--service-time-ms")
            .arg((self.knobs.service_time().as_secs_f64() * 1e3).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `quicall serve`")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line)?;
        // Keep draining, so that the child never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse::<SocketAddr>().ok());
        self.process = Some(child);
        self.addr = addr.with_context(|| format!("no address in {line:?}"))?;
        Ok(())
    }

    /// Whether it runs as a process of its own (killed with SIGKILL).
    pub fn own_process(&self) -> bool {
        self.own_process
    }

    /// Stops at once, without grace: a server in this process closes every
    /// connection now; a server process is killed with SIGKILL, so that its
    /// clients hear nothing at all.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Binds the same port again (waiting for the old socket to close).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        for _ in 0..250 {
            if std::net::UdpSocket::bind(self.addr).is_ok() {
                return self.bind();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("port {} still in use after 5 s", self.addr)
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn demo(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("quicall-demo-").tempdir()?;
    write_certificates(dir.path())?;
    println!("quicall demo: {SERVERS} servers on loopback, mutual TLS required");
    println!(
        "certificates written to {} and read back from there\n",
        dir.path().display()
    );

    let mut servers = Vec::new();
    for i in 1..=SERVERS {
        let knobs = Arc::new(Knobs::default());
        knobs.set_service_time(phases::NORMAL);
        // The last one runs as a process of its own, to be killed hard.
        let server = DemoServer::start(
            dir.path(),
            format!("server-{i}"),
            "127.0.0.1:0".parse()?,
            knobs,
            i == SERVERS,
        )?;
        println!(
            "  {} listening on {}{}",
            server.name,
            server.addr,
            if server.own_process() {
                " (a `quicall serve` process of its own)"
            } else {
                ""
            }
        );
        servers.push(server);
    }

    tls::answers_and_refusals(dir.path(), &servers).await?;
    phases::run(dir.path(), &mut servers, &args).await?;
    spike::run(
        dir.path(),
        Duration::from_secs_f64(args.phase_secs.max(0.5)),
    )
    .await?;

    for server in &mut servers {
        if let Some(server) = server.server.take() {
            server.shutdown(Duration::from_secs(5)).await;
        }
        server.kill();
    }
    println!(
        "\ndemo finished: every answer right, every stranger refused, no idempotent call lost"
    );
    Ok(())
}

/// Makes the cluster CA with three servers and one client, and a rogue CA
/// with a client of its own, as PEM files in `dir`.
pub fn write_certificates(dir: &Path) -> anyhow::Result<()> {
    let validity = Duration::from_secs(86_400);
    let ca = CertificateAuthority::new(CA_NAME, validity)?;
    ca.write_pem(dir, "ca")?;
    for i in 1..=SERVERS {
        let spec = NodeSpec::server(format!("server-{i}"))
            .san("localhost")
            .san("127.0.0.1")
            .validity(validity);
        ca.issue(&spec)?.write_pem(dir)?;
    }
    ca.issue(&NodeSpec::client(CLIENT).validity(validity))?
        .write_pem(dir)?;
    // An insider for the soak's attacks: a valid certificate of its own.
    ca.issue(&NodeSpec::client(INSIDER).validity(validity))?
        .write_pem(dir)?;
    let rogue = CertificateAuthority::new("rogue CA", validity)?;
    rogue.write_pem(dir, "rogue-ca")?;
    rogue
        .issue(&NodeSpec::client("rogue-client").validity(validity))?
        .write_pem(dir)?;
    Ok(())
}

/// A latency for people: microseconds below 10 ms, milliseconds above.
pub fn fmt_latency(latency: Option<Duration>) -> String {
    match latency {
        None => "-".into(),
        Some(d) if d >= Duration::from_millis(10) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{} µs", d.as_micros()),
    }
}
