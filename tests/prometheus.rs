//! A real Prometheus server (Debian's `prometheus`, which `.ci/run`
//! installs) scrapes a quicall server's metrics endpoint; queries through
//! its HTTP API return the calls by status code and a latency quantile
//! that Prometheus computes from the histogram's buckets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Pki, bounded, connect, serve};
use quicall::{Code, Method, Router, Status};

const GET: Method<[u8], [u8]> = Method::new("kv.Store/Get");

/// The `prometheus` binary: on PATH, or installed from Debian's archive
/// (as root) when missing.
fn prometheus_binary() -> &'static str {
    let found = |_: ()| {
        Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !found(()) {
        eprintln!("prometheus not found: installing Debian's package");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "prometheus"])
            .status();
        assert!(
            found(()),
            "this test needs Prometheus: `apt-get install prometheus` (as .ci/run does)"
        );
    }
    "prometheus"
}

/// Prometheus, killed and its data removed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second.
    fn start(target: std::net::SocketAddr) -> Self {
        let binary = prometheus_binary();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: quicall\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// The result of an instant query, as JSON; `None` until Prometheus
    /// answers.
    fn query(&self, query: &str) -> Option<serde_json::Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        write!(
            stream,
            "GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: localhost\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    }

    /// The first sample of a query's vector result, once there is one.
    fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query)?;
        let sample = result["data"]["result"].get(0)?;
        sample["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_server_and_computes_a_quantile_from_its_buckets() {
    let pki = Pki::new();
    let server = serve(
        &pki,
        Router::new()
            .route(&GET, |_ctx, key: quicall::Msg<[u8]>| async move {
                if key.starts_with(b"k") {
                    Ok(b"value".to_vec())
                } else {
                    Err(Status::not_found("no such key"))
                }
            })
            .unwrap(),
    );
    let metrics = server
        .serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let prometheus = Prometheus::start(metrics);
    let client = connect(&pki, &server).await;

    // Calls spread over about 4 s, so that several scrapes see them grow.
    for round in 0..20 {
        for i in 0..15 {
            bounded(client.call(&GET, format!("k{round}-{i}")))
                .await
                .unwrap();
        }
        let status = bounded(client.call(&GET, "missing")).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let wait_for = |query: &'static str, want: &dyn Fn(f64) -> bool| {
        let started = Instant::now();
        loop {
            let value = prometheus.value(query);
            if value.is_some_and(want) {
                return value.unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{query}: {value:?} after 60 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let found = wait_for(
        r#"quicall_server_calls_total{method="kv.Store/Get",code="OK"}"#,
        &|v| v == 300.0,
    );
    assert_eq!(found, 300.0);
    let missing = wait_for(
        r#"quicall_server_calls_total{method="kv.Store/Get",code="NOT_FOUND"}"#,
        &|v| v == 20.0,
    );
    assert_eq!(missing, 20.0);
    // A quantile Prometheus computes from the buckets (all of them, over
    // the whole run): finite and positive, under the last finite bucket.
    let p99 = wait_for(
        r#"histogram_quantile(0.99, sum by (le) (quicall_server_call_duration_seconds_bucket{method="kv.Store/Get"}))"#,
        &|v| v.is_finite() && v > 0.0,
    );
    assert!(p99 < 3.3, "p99 {p99} s");
}
