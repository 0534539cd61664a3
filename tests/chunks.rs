//! Large bodies over real QUIC: raw bytes declared as `Chunks` arrive in
//! the chunks QUIC delivered and go back the same way, uncopied; every other
//! kind gets them gathered into one buffer, whatever the chunking.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Pki, bounded, connect, serve, settles};
use quicall::demo::{ECHO, ECHO_CHUNKS, SUM};
use quicall::{CallOptions, Chunks, Code, Metadata, Method, Msg, Router, Status};

const STORE: Method<Chunks, Chunks> = Method::new("test.Blob/Store");
const STORE_FLAT: Method<[u8], [u8]> = Method::new("test.Blob/Store");

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// A server whose STORE handler records how many chunks the request came
/// in, checks its metadata, and sends the request's chunks back.
fn blob_server(pki: &Pki, chunks_seen: Arc<AtomicUsize>) -> quicall::Server {
    let router = Router::new()
        .route(&STORE, move |ctx: quicall::Context, req: Msg<Chunks>| {
            let seen = chunks_seen.clone();
            async move {
                seen.store(req.chunk_count(), Ordering::SeqCst);
                if let Some(tag) = ctx.metadata().get("tag") {
                    // The metadata was read off the front of the body's
                    // first chunks: all of it, and none of the body.
                    if tag != pattern(tag.len(), 7).as_slice() {
                        return Err(Status::invalid_argument("metadata damaged"));
                    }
                }
                Ok::<_, Status>(req)
            }
        })
        .unwrap();
    serve(pki, router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_arrive_as_chunks_and_go_back_as_they_came() {
    let pki = Pki::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = blob_server(&pki, seen.clone());
    let client = connect(&pki, &server).await;
    for (len, seed) in [(3 << 20, 1u32), (1 << 20, 2), (100_000, 3), (17, 4), (0, 5)] {
        let body = pattern(len, seed);
        let reply = bounded(client.call(&STORE, bytes::Bytes::from(body.clone())))
            .await
            .unwrap();
        assert_eq!(reply.len(), len);
        assert_eq!(reply.to_bytes(), body, "{len} bytes");
        let (sent, received) = (seen.load(Ordering::SeqCst), reply.chunk_count());
        if len >= 1 << 20 {
            // A megabyte does not fit one QUIC packet: the server took it,
            // and the client gets it back, in many chunks, none gathered.
            assert!(
                sent > 10 && received > 10,
                "{len}: {sent} / {received} chunks"
            );
        }
        assert!(reply.iter().all(|chunk| !chunk.is_empty()));
    }
    // A caller that declared the same method as [u8] reads one buffer.
    let body = pattern(2 << 20, 9);
    let flat = bounded(client.call(&STORE_FLAT, body.clone()))
        .await
        .unwrap();
    assert_eq!(&*flat, &body[..]);
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_before_a_chunked_body_is_split_off_exactly() {
    let pki = Pki::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = blob_server(&pki, seen);
    let client = connect(&pki, &server).await;
    // Blocks of several sizes, up to the limit of 8 KiB: the largest spans
    // more than one packet, so the body starts inside a later chunk.
    for tag_len in [1usize, 1000, 5000, 8000] {
        let mut metadata = Metadata::new();
        metadata.insert("tag", pattern(tag_len, 7)).unwrap();
        let body = pattern(1 << 20, tag_len as u32);
        let options = CallOptions::default().with_metadata(metadata);
        let reply = bounded(client.call_with(&STORE, bytes::Bytes::from(body.clone()), options))
            .await
            .unwrap();
        assert_eq!(reply.to_bytes(), body, "metadata of {tag_len} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_echo_serves_both_declarations() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    let body = pattern(1 << 20, 11);
    let flat = bounded(client.call(&ECHO, body.clone())).await.unwrap();
    assert_eq!(&*flat, &body[..]);
    let chunked = bounded(client.call(&ECHO_CHUNKS, &body[..])).await.unwrap();
    assert_eq!(chunked.to_bytes(), body);
    // Over the request limit (4 MiB) is refused from its header for both.
    let big = vec![0u8; (4 << 20) + 1];
    for status in [
        bounded(client.call(&ECHO, big.clone())).await.unwrap_err(),
        bounded(client.call(&ECHO_CHUNKS, big)).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
        assert!(status.was_not_processed());
    }
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_in_many_chunks_is_gathered_and_read_in_place() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    // 400,000 numbers: 3.2 MB of archive, many packets.
    let numbers: Vec<i64> = (0..400_000).map(|n| n - 100_000).collect();
    let expected: i64 = numbers.iter().sum();
    let sum = bounded(client.call(&SUM, numbers)).await.unwrap();
    assert_eq!(sum.to_native(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_in_tiny_pieces_is_copied_together_not_kept_piece_by_piece() {
    use quicall::transport::ClientEndpoint;
    use quicall::wire::RequestHead;
    let pki = Pki::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = blob_server(&pki, seen.clone());
    let endpoint = ClientEndpoint::new(pki.client_tls(), quicall::Limits::default()).unwrap();
    let conn = bounded(endpoint.connect(server.local_addr(), "localhost"))
        .await
        .unwrap();
    // 300 pieces of 10 bytes, each in a packet of its own: kept as they
    // came, each would hold a packet buffer for 10 bytes.
    let body = pattern(3000, 5);
    let head = RequestHead {
        method_id: STORE.id(),
        body_len: body.len() as u32,
        deadline: None,
        metadata_len: None,
        stream: false,
    };
    let (mut send, mut recv) = conn.quinn().open_bi().await.unwrap();
    send.write_all(&head.encode()).await.unwrap();
    for piece in body.chunks(10) {
        send.write_all(piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let _ = send.finish();
    let mut answer = Vec::new();
    while let Ok(Some(chunk)) = bounded(recv.read_chunk(usize::MAX, true)).await {
        answer.extend_from_slice(&chunk.bytes);
    }
    // The OK header (8 bytes), then the body back, intact.
    assert_eq!(&answer[8..], &body[..]);
    let chunks = seen.load(Ordering::SeqCst);
    assert!(chunks <= 2, "kept in {chunks} chunks");
}
