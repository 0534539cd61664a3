//! Malformed streams written by hand over a real mTLS connection: each ends
//! in a status or a reset stream, and never disturbs the server or other calls.

mod common;

use std::time::Duration;

use common::{Pki, bounded, connect, serve, serve_with};
use quicall::demo::{ADD, AddRequest};
use quicall::transport::quinn::{ReadError, VarInt};
use quicall::transport::{ClientEndpoint, Connection};
use quicall::wire::{self, ErrorCode, RequestHead};
use quicall::{Code, Limits, Server, ServerOptions};
use zerocopy::IntoBytes;
use zerocopy::little_endian::I64;

async fn raw_connection(pki: &Pki, server: &Server) -> Connection {
    let endpoint = ClientEndpoint::new(pki.client_tls(), Limits::default()).unwrap();
    bounded(endpoint.connect(server.local_addr(), "localhost"))
        .await
        .unwrap()
}

/// Writes `bytes` on a new stream, finishes it, and reads the whole answer.
async fn exchange(conn: &Connection, bytes: &[u8]) -> Result<Vec<u8>, ReadError> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        out.extend_from_slice(&chunk.bytes);
    }
    Ok(out)
}

fn status_of(answer: &[u8]) -> (Code, String) {
    let head = wire::decode_response(answer, u32::MAX).unwrap();
    let message = &answer[wire::RESPONSE_HEADER_LEN..];
    assert_eq!(
        message.len(),
        head.body_len as usize,
        "message length matches its header"
    );
    (
        Code::from_u16(head.status),
        String::from_utf8_lossy(message).into_owned(),
    )
}

fn add_header(body_len: u32) -> [u8; wire::REQUEST_HEADER_LEN] {
    RequestHead {
        method_id: ADD.id(),
        body_len,
        deadline: None,
        metadata_len: None,
        stream: false,
    }
    .encode()
}

fn add_body() -> Vec<u8> {
    AddRequest {
        a: I64::new(40),
        b: I64::new(2),
    }
    .as_bytes()
    .to_vec()
}

async fn still_serves(pki: &Pki, server: &Server) {
    let client = connect(pki, server).await;
    let reply = bounded(client.call(
        &ADD,
        &AddRequest {
            a: I64::new(1),
            b: I64::new(2),
        },
    ))
    .await
    .unwrap();
    assert_eq!(reply.sum.get(), 3);
}

#[tokio::test]
async fn hand_written_call_matches_the_spec() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let conn = raw_connection(&pki, &server).await;
    let mut request = add_header(16).to_vec();
    request.extend_from_slice(&add_body());
    let answer = bounded(exchange(&conn, &request)).await.unwrap();
    assert_eq!(answer.len(), wire::RESPONSE_HEADER_LEN + 8);
    assert_eq!(&answer[..8], &[1, 0, 0, 0, 8, 0, 0, 0]);
    assert_eq!(i64::from_le_bytes(answer[8..].try_into().unwrap()), 42);
}

#[tokio::test]
async fn a_request_trickling_in_pieces_is_understood() {
    // The header split across packets, and the body starting in the packet
    // that ends the header: the server reads the header with whatever came
    // after it, then gathers the rest. Each piece is sent on its own (a pause
    // lets the connection transmit it before the next is written).
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let conn = raw_connection(&pki, &server).await;
    let mut request = add_header(16).to_vec();
    request.extend_from_slice(&add_body());
    for pieces in [[5, 20, 31], [23, 24, 30], [1, 2, 39]] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut start = 0;
        for end in pieces.into_iter().chain([request.len()]) {
            send.write_all(&request[start..end]).await.unwrap();
            start = end;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        send.finish().unwrap();
        let answer = bounded(recv.read_to_end(1024)).await.unwrap();
        assert_eq!(&answer[..8], &[1, 0, 0, 0, 8, 0, 0, 0], "pieces {pieces:?}");
        assert_eq!(i64::from_le_bytes(answer[8..].try_into().unwrap()), 42);
    }
}

#[tokio::test]
async fn truncated_header_resets_the_stream_only() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let conn = raw_connection(&pki, &server).await;
    for len in [0, 1, 10, wire::REQUEST_HEADER_LEN - 1] {
        let err = bounded(exchange(&conn, &add_header(16)[..len]))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ReadError::Reset(VarInt::from_u32(ErrorCode::PROTOCOL.get()))
        );
    }
    // Same connection, a good call.
    let mut request = add_header(16).to_vec();
    request.extend_from_slice(&add_body());
    let answer = bounded(exchange(&conn, &request)).await.unwrap();
    assert_eq!(i64::from_le_bytes(answer[8..].try_into().unwrap()), 42);
    still_serves(&pki, &server).await;
}

#[tokio::test]
async fn lying_lengths_are_invalid_argument() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let conn = raw_connection(&pki, &server).await;
    // Announces 16 bytes, sends 5 and finishes.
    let mut short = add_header(16).to_vec();
    short.extend_from_slice(&[0; 5]);
    let (code, message) = status_of(&bounded(exchange(&conn, &short)).await.unwrap());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("truncated"), "{message}");
    // Announces 16 bytes, sends 20.
    let mut long = add_header(16).to_vec();
    long.extend_from_slice(&[0; 20]);
    let (code, message) = status_of(&bounded(exchange(&conn, &long)).await.unwrap());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("after"), "{message}");
    // Announces and sends 8 bytes, for a 16-byte request type: named by the
    // method, not by the server's Rust type path.
    let mut wrong = add_header(8).to_vec();
    wrong.extend_from_slice(&[0; 8]);
    let (code, message) = status_of(&bounded(exchange(&conn, &wrong)).await.unwrap());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("calc.Calc/Add"), "{message}");
    assert!(!message.contains("::"), "{message}");
    // No handler ran for any of them.
    for request in [&short, &long, &wrong] {
        let answer = bounded(exchange(&conn, request)).await.unwrap();
        let head = wire::decode_response(&answer, u32::MAX).unwrap();
        assert!(head.flags.contains(wire::ResponseFlags::NOT_PROCESSED));
    }
    still_serves(&pki, &server).await;
}

#[tokio::test]
async fn huge_announced_length_is_refused_without_reading_the_body() {
    let pki = Pki::new();
    let options = ServerOptions {
        max_request_size: 64 << 10,
        ..ServerOptions::default()
    };
    let server = serve_with(&pki, quicall::demo::router(), options);
    let conn = raw_connection(&pki, &server).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // Claims 4 GiB and sends only the header, without finishing: the answer
    // must come from the header alone.
    send.write_all(&add_header(u32::MAX)).await.unwrap();
    let mut answer = Vec::new();
    while let Some(chunk) = bounded(recv.read_chunk(usize::MAX, true)).await.unwrap() {
        answer.extend_from_slice(&chunk.bytes);
    }
    let (code, message) = status_of(&answer);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("4294967295"), "{message}");
    // And the server asked us to stop sending the body.
    let stopped = bounded(send.stopped()).await.unwrap();
    assert_eq!(stopped, Some(VarInt::from_u32(ErrorCode::REJECTED.get())));
    still_serves(&pki, &server).await;
}

#[tokio::test]
async fn reset_mid_body_does_not_disturb_the_server() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let conn = raw_connection(&pki, &server).await;
    let mut answers = Vec::new();
    for k in 0..20 {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        // Half a header, or a header and half a body, then a reset.
        if k % 2 == 0 {
            send.write_all(&add_header(16)[..10]).await.unwrap();
        } else {
            send.write_all(&add_header(16)).await.unwrap();
            send.write_all(&[0; 7]).await.unwrap();
        }
        send.reset(VarInt::from_u32(99)).unwrap();
        answers.push(tokio::spawn(async move { recv.read_to_end(1024).await }));
    }
    // The server's answer is always the same: its response side reset with
    // CANCELLED, nothing sent (docs/wire.md, section 5).
    for answer in answers {
        let answer = bounded(answer).await.unwrap();
        assert!(
            matches!(
                answer,
                Err(quicall::transport::quinn::ReadToEndError::Read(ReadError::Reset(code)))
                    if code == VarInt::from_u32(ErrorCode::CANCELLED.get())
            ),
            "{answer:?}"
        );
    }
    let mut request = add_header(16).to_vec();
    request.extend_from_slice(&add_body());
    let answer = bounded(exchange(&conn, &request)).await.unwrap();
    assert_eq!(i64::from_le_bytes(answer[8..].try_into().unwrap()), 42);
    still_serves(&pki, &server).await;
}

#[tokio::test]
async fn bad_version_reserved_bits_and_garbage_are_invalid_argument() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let conn = raw_connection(&pki, &server).await;
    let mut v2 = add_header(0);
    v2[0] = 2;
    let mut flags = add_header(0);
    flags[1] = 0x40;
    let garbage = [0xa5u8; 64];
    for bytes in [&v2[..], &flags[..], &garbage[..]] {
        let (code, message) = status_of(&bounded(exchange(&conn, bytes)).await.unwrap());
        assert_eq!(code, Code::InvalidArgument, "{message}");
    }
    still_serves(&pki, &server).await;
}

#[tokio::test]
async fn silent_stream_is_reset_after_the_header_timeout() {
    let pki = Pki::new();
    let options = ServerOptions {
        header_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let server = serve_with(&pki, quicall::demo::router(), options);
    let conn = raw_connection(&pki, &server).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // Open the stream with two header bytes, then say nothing more.
    send.write_all(&[1, 0]).await.unwrap();
    let err = bounded(recv.read_chunk(usize::MAX, true))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ReadError::Reset(VarInt::from_u32(ErrorCode::TIMEOUT.get()))
    );
    still_serves(&pki, &server).await;
}

/// Hostile rkyv and protobuf bodies: thousands of random and corrupted
/// bodies reach the handler only when they are valid messages (counted on
/// both sides), and the rest are INVALID_ARGUMENT, not processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rkyv_and_protobuf_bodies_never_reach_a_handler_unvalidated() {
    use quicall::rpc::{Proto, Rkyv, encode};
    use quicall::{Method, Msg, Router, Status};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(quicall::rkyv::Archive, quicall::rkyv::Serialize)]
    #[rkyv(crate = quicall::rkyv)]
    struct Put {
        key: String,
        value: Vec<u8>,
        ttl: Option<u32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct ProtoPut {
        #[prost(string, tag = "1")]
        key: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    const PUT: Method<Rkyv<Put>, [u8]> = Method::new("hostile.Kv/Put");
    const PROTO_PUT: Method<Proto<ProtoPut>, [u8]> = Method::new("hostile.Kv/ProtoPut");
    const RAW_PUT: Method<[u8], [u8]> = Method::new("hostile.Kv/Put");
    const RAW_PROTO_PUT: Method<[u8], [u8]> = Method::new("hostile.Kv/ProtoPut");

    let handled = Arc::new(AtomicUsize::new(0));
    let (h1, h2) = (handled.clone(), handled.clone());
    let router = Router::new()
        .route(&PUT, move |_ctx, put: Msg<Rkyv<Put>>| {
            h1.fetch_add(1, Ordering::Relaxed);
            // Reads it all: a validated archive.
            let len = put.key.len() + put.value.len();
            async move { Ok::<_, Status>(len.to_string()) }
        })
        .and_then(|r| {
            r.route(&PROTO_PUT, move |_ctx, put: Msg<Proto<ProtoPut>>| {
                h2.fetch_add(1, Ordering::Relaxed);
                let len = put.key.len() + put.value.len();
                async move { Ok::<_, Status>(len.to_string()) }
            })
        })
        .unwrap();
    let pki = Pki::new();
    let server = serve(&pki, router);
    let client = connect(&pki, &server).await;
    let good = encode::<Rkyv<Put>>(&Put {
        key: "a key of some length".into(),
        value: vec![7; 100],
        ttl: Some(60),
    })
    .unwrap();
    let good_proto = encode::<Proto<ProtoPut>>(&ProtoPut {
        key: "k".into(),
        value: vec![7; 100],
    })
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..1200 {
        let (method, base) = if i % 2 == 0 {
            (&RAW_PUT, &good)
        } else {
            (&RAW_PROTO_PUT, &good_proto)
        };
        let body: Vec<u8> = match i % 3 {
            0 => (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect(),
            _ => {
                let mut body = base.to_vec();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..body.len());
                    body[at] ^= rng.u8(1..);
                }
                body
            }
        };
        match bounded(client.call(method, body)).await {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status}");
                assert!(status.was_not_processed(), "{status}");
                refused += 1;
            }
        }
    }
    assert_eq!(handled.load(Ordering::Relaxed), accepted);
    assert!(
        refused > 0 && accepted > 0,
        "{refused} refused, {accepted} accepted"
    );
    // And good calls, on a new connection, are answered.
    let client = connect(&pki, &server).await;
    let reply = bounded(client.call(&RAW_PUT, good)).await.unwrap();
    assert_eq!(&reply[..], b"120");
}
