//! What an attacker can make a server write to its log: a line a second at
//! most for refusals it can cause at will, however many it causes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Pki, bounded, serve_with};
use quicall::transport::{ClientEndpoint, Limits};
use quicall::{Server, ServerOptions};

/// Collects every line written through the global subscriber.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_logged_once_a_second_with_a_count() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    let pki = Pki::new();
    let options = ServerOptions {
        transport: Limits {
            max_connections: 2,
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let server: Server = serve_with(&pki, quicall::demo::router(), options);
    let endpoint = ClientEndpoint::new(pki.client_tls(), Limits::default()).unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            bounded(endpoint.connect(server.local_addr(), "localhost"))
                .await
                .unwrap(),
        );
    }
    // 300 connections refused in well under a second.
    let mut refused = 0;
    for _ in 0..300 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            endpoint.connect(server.local_addr(), "localhost"),
        )
        .await;
        if matches!(attempt, Ok(Err(_))) {
            refused += 1;
        }
    }
    assert_eq!(refused, 300);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("connection limit reached"))
        .count();
    println!("{refused} refusals, {warnings} warning lines");
    assert!(warnings >= 1, "no warning at all:\n{text}");
    // One line a second at most (the refusals took a few seconds at most).
    assert!(warnings <= 10, "{warnings} lines for {refused} refusals");
    drop(held);
}
