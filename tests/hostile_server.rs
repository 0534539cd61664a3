//! The client facing a hostile or broken server: every call ends with a
//! status (never a hang, never a panic), and a call's future can always be
//! dropped.

mod common;

use std::time::Duration;

use common::{Pki, bounded};
use quicall::demo::ECHO;
use quicall::transport::quinn::VarInt;
use quicall::transport::{Limits, ServerEndpoint};
use quicall::wire::{REQUEST_HEADER_LEN, ResponseFlags, ResponseHead};
use quicall::{CallOptions, Client, ClientOptions, Code};

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    ResetStream,
    BadVersion,
    MoreThanAnnounced,
    LessThanAnnounced,
    CloseConnection,
    Silent,
    HugeLength,
    /// Response metadata of 10,000 distinct entries (60 KB): more than a
    /// client reads.
    ManyMetadataEntries,
    /// Response metadata whose length runs past the stream's end.
    LyingMetadataLength,
}

/// A server that reads each request, then misbehaves as told.
async fn hostile_server(
    pki: &Pki,
    behaviour: Behaviour,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let endpoint =
        ServerEndpoint::bind(common::loopback(), pki.server_tls(), Limits::default()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let mut header = [0u8; REQUEST_HEADER_LEN];
                        if recv.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        let ok = |len: u32| {
                            ResponseHead {
                                status: 0,
                                flags: ResponseFlags::NONE,
                                body_len: len,
                            }
                            .encode()
                        };
                        match behaviour {
                            Behaviour::ResetStream => {
                                let _ = send.reset(VarInt::from_u32(9));
                            }
                            Behaviour::BadVersion => {
                                let mut h = ok(0);
                                h[0] = 9;
                                let _ = send.write_all(&h).await;
                                let _ = send.finish();
                            }
                            Behaviour::MoreThanAnnounced => {
                                let _ = send.write_all(&ok(4)).await;
                                let _ = send.write_all(b"0123456789abcdef").await;
                                let _ = send.finish();
                            }
                            Behaviour::LessThanAnnounced => {
                                let _ = send.write_all(&ok(100)).await;
                                let _ = send.write_all(b"0123456789").await;
                                let _ = send.finish();
                            }
                            Behaviour::CloseConnection => conn.close(77, b"gone"),
                            Behaviour::Silent => {
                                // Hold the stream open until the client gives up.
                                let _ = send.stopped().await;
                            }
                            Behaviour::HugeLength => {
                                let _ = send.write_all(&ok(u32::MAX)).await;
                                let _ = send.stopped().await;
                            }
                            Behaviour::ManyMetadataEntries => {
                                let mut head = ok(0);
                                head[1] |= ResponseFlags::METADATA.bits();
                                // Entries of 6 bytes: a distinct 3-letter
                                // key, no value.
                                let letter = |i: u32| b'a' + (i % 26) as u8;
                                let block: Vec<u8> = (0..10_000u32)
                                    .flat_map(|i| {
                                        [3, 0, 0, letter(i / 676), letter(i / 26), letter(i)]
                                    })
                                    .collect();
                                let _ = send.write_all(&head).await;
                                let _ = send.write_all(&(block.len() as u16).to_le_bytes()).await;
                                let _ = send.write_all(&block).await;
                                let _ = send.finish();
                            }
                            Behaviour::LyingMetadataLength => {
                                let mut head = ok(0);
                                head[1] |= ResponseFlags::METADATA.bits();
                                let _ = send.write_all(&head).await;
                                let _ = send.write_all(&500u16.to_le_bytes()).await;
                                let _ = send.write_all(&[1, 0, 0, b'k']).await;
                                let _ = send.finish();
                            }
                        }
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    (addr, task)
}

/// A client of a hostile server behaving as told, and the server's task.
async fn client_of_hostile(behaviour: Behaviour) -> (Client, tokio::task::JoinHandle<()>) {
    let pki = Pki::new();
    let (addr, server) = hostile_server(&pki, behaviour).await;
    let client = Client::connect(
        addr,
        "localhost",
        pki.client_tls(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    (client, server)
}

async fn call_hostile(behaviour: Behaviour) -> quicall::Status {
    let (client, server) = client_of_hostile(behaviour).await;
    let status = bounded(client.call_with(
        &ECHO,
        "hello",
        CallOptions::deadline(Duration::from_millis(500)),
    ))
    .await
    .expect_err("a hostile server cannot answer well");
    server.abort();
    status
}

#[tokio::test]
async fn server_resets_the_stream() {
    let status = call_hostile(Behaviour::ResetStream).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("reset"), "{status}");
}

#[tokio::test]
async fn malformed_response_header() {
    let status = call_hostile(Behaviour::BadVersion).await;
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(
        status.message().contains("malformed response header"),
        "{status}"
    );
}

#[tokio::test]
async fn more_bytes_than_announced() {
    let status = call_hostile(Behaviour::MoreThanAnnounced).await;
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(
        status.message().contains("after the response body"),
        "{status}"
    );
}

#[tokio::test]
async fn fewer_bytes_than_announced() {
    let status = call_hostile(Behaviour::LessThanAnnounced).await;
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(
        status.message().contains("inside the response body"),
        "{status}"
    );
}

#[tokio::test]
async fn server_dies_mid_call() {
    let status = call_hostile(Behaviour::CloseConnection).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
}

#[tokio::test]
async fn silent_server_ends_at_the_deadline() {
    let status = call_hostile(Behaviour::Silent).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
}

#[tokio::test]
async fn huge_announced_response_is_refused_before_reading() {
    let status = call_hostile(Behaviour::HugeLength).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
}

#[tokio::test]
async fn a_call_to_a_silent_server_can_be_dropped() {
    let pki = Pki::new();
    let (addr, server) = hostile_server(&pki, Behaviour::Silent).await;
    let client = Client::connect(
        addr,
        "localhost",
        pki.client_tls(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(&ECHO, "hello").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    call.abort();
    assert!(bounded(call).await.unwrap_err().is_cancelled());
    // The connection still works for the next call's stream (the server is
    // silent, so it ends at its deadline, not in a hang).
    let status = bounded(client.call_with(
        &ECHO,
        "x",
        CallOptions::deadline(Duration::from_millis(100)),
    ))
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    server.abort();
}

/// Metadata only goes to a caller that reads it; these servers send it
/// anyway, and badly.
async fn call_hostile_full(behaviour: Behaviour) -> quicall::Status {
    let (client, server) = client_of_hostile(behaviour).await;
    let status = bounded(client.call_full(
        &ECHO,
        "hello",
        CallOptions::deadline(Duration::from_secs(5)),
    ))
    .await
    .expect_err("a hostile server cannot answer well");
    server.abort();
    status
}

#[tokio::test]
async fn response_metadata_of_too_many_entries_is_refused() {
    let status = call_hostile_full(Behaviour::ManyMetadataEntries).await;
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(
        status.message().contains("1024 metadata entries"),
        "{status}"
    );
}

#[tokio::test]
async fn response_metadata_past_the_end_of_the_stream_is_refused() {
    let status = call_hostile_full(Behaviour::LyingMetadataLength).await;
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(status.message().contains("response metadata"), "{status}");
}
