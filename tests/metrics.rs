//! The server's own metrics, per method and status code, in the Prometheus
//! text format, from one call and over HTTP.

mod common;

use common::{Pki, bounded, connect, serve};
use quicall::{Code, Method, Router, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GET: Method<[u8], [u8]> = Method::new("kv.Store/Get");
const ADD: Method<quicall::demo::AddRequest, quicall::demo::AddResponse> =
    Method::new("calc.Calc/Add").exact();

fn router() -> Router {
    Router::new()
        .route(&GET, |_ctx, key: quicall::Msg<[u8]>| async move {
            if &key[..] == b"present" {
                Ok(b"value".to_vec())
            } else {
                Err(Status::not_found("no such key"))
            }
        })
        .and_then(|r| r.route(&ADD, quicall::demo::add))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_method_and_status_and_scraped_over_http() {
    let pki = Pki::new();
    let server = serve(&pki, router());
    let client = connect(&pki, &server).await;
    for _ in 0..3 {
        bounded(client.call(&GET, "present")).await.unwrap();
    }
    for _ in 0..2 {
        let status = bounded(client.call(&GET, "absent")).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // A body that does not fit: the handler never runs, the call counts.
    const RAW_ADD: Method<[u8], [u8]> = Method::new("calc.Calc/Add");
    let status = bounded(client.call(&RAW_ADD, "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let text = server.metrics_text();
    for line in [
        r#"quicall_server_calls_total{method="kv.Store/Get",code="OK"} 3"#,
        r#"quicall_server_calls_total{method="kv.Store/Get",code="NOT_FOUND"} 2"#,
        r#"quicall_server_calls_total{method="calc.Calc/Add",code="INVALID_ARGUMENT"} 1"#,
        r#"quicall_server_call_duration_seconds_count{method="kv.Store/Get"} 5"#,
        r#"quicall_server_call_duration_seconds_bucket{le="+Inf",method="kv.Store/Get"} 5"#,
        r#"quicall_server_calls_in_flight{method="kv.Store/Get"} 0"#,
        r#"quicall_server_request_bytes_total{method="kv.Store/Get"} 33"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    // Response bytes: 3 × (8 + 5) and 2 × (8 + 11).
    assert!(
        text.lines()
            .any(|l| l == r#"quicall_server_response_bytes_total{method="kv.Store/Get"} 77"#),
        "{text}"
    );

    // Over HTTP, as Prometheus scrapes it.
    let addr = server
        .serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    bounded(stream.read_to_string(&mut response)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("Content-Type: application/openmetrics-text"));
    assert!(
        response.contains(r#"quicall_server_calls_total{method="kv.Store/Get",code="OK"} 3"#),
        "{response}"
    );
    assert!(response.trim_end().ends_with("# EOF"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_counts_calls_per_method_and_attempts_per_server() {
    let pki = Pki::new();
    let servers = [serve(&pki, router()), serve(&pki, router())];
    let cluster = common::cluster_of(
        &pki,
        &[&servers[0], &servers[1]],
        quicall::ClusterOptions {
            policy: quicall::Policy::RoundRobin,
            ..quicall::ClusterOptions::default()
        },
    )
    .await;
    for _ in 0..6 {
        bounded(cluster.call(&GET, "present")).await.unwrap();
    }
    for _ in 0..4 {
        let status = bounded(cluster.call(&GET, "absent")).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    let text = cluster.metrics_text();
    for line in [
        r#"quicall_client_calls_total{method="kv.Store/Get",code="OK"} 6"#,
        r#"quicall_client_calls_total{method="kv.Store/Get",code="NOT_FOUND"} 4"#,
        r#"quicall_client_call_duration_seconds_count{method="kv.Store/Get"} 10"#,
        r#"quicall_client_calls_in_flight{method="kv.Store/Get"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    // One attempt per call (nothing failed), spread over both servers (in
    // turn, but a server still connecting is passed over).
    let attempts = |server: std::net::SocketAddr, code: &str| -> u64 {
        let prefix =
            format!(r#"quicall_client_attempts_total{{server="{server}",code="{code}"}} "#);
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    let (a, b) = (servers[0].local_addr(), servers[1].local_addr());
    assert_eq!(attempts(a, "OK") + attempts(b, "OK"), 6, "{text}");
    assert_eq!(
        attempts(a, "NOT_FOUND") + attempts(b, "NOT_FOUND"),
        4,
        "{text}"
    );
    assert!(attempts(a, "OK") + attempts(a, "NOT_FOUND") > 0, "{text}");
    assert!(attempts(b, "OK") + attempts(b, "NOT_FOUND") > 0, "{text}");
    // And over HTTP.
    let addr = cluster
        .serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut response = String::new();
    bounded(stream.read_to_string(&mut response)).await.unwrap();
    assert!(response.contains(r#"quicall_client_calls_total{method="kv.Store/Get",code="OK"} 6"#));
}
