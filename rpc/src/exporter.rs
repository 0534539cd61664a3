//! A minimal HTTP endpoint for Prometheus to scrape: every request, on any
//! path, is answered with the current metrics text. Bounded: requests of at
//! most 8 KiB, 5 s to send one, 64 connections at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const MAX_REQUEST: usize = 8 << 10;
const REQUEST_TIME: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `render()` on `addr` until it returns `None`; the bound address.
pub(crate) async fn serve_http(
    addr: SocketAddr,
    render: impl Fn() -> Option<String> + Send + Sync + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let render = Arc::new(render);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // dropped: too many at once
            };
            let render = render.clone();
            let Some(body) = render() else {
                return; // the server is gone
            };
            tokio::spawn(async move {
                let _slot = slot;
                let _ = tokio::time::timeout(REQUEST_TIME, answer(stream, body)).await;
            });
        }
    });
    Ok(local)
}

/// Reads one request's head and answers it with `body`.
async fn answer(mut stream: TcpStream, body: String) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
