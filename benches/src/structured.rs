//! The structured workload: a List response of 100 entries with string
//! keys (about 4 KiB), as a fixed-layout message, an rkyv archive and a
//! protobuf message, with the same content in each, and a tonic service
//! answering the protobuf one over gRPC.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use quicall::rkyv::{Archive, Serialize};
use quicall::rpc::{Proto, Rkyv};
use quicall::zerocopy::little_endian::U64;
use quicall::zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};
use quicall::{Method, Msg, Router, Status};
use tonic::transport::server::TcpIncoming;

/// Entries per List response.
pub const ENTRIES: usize = 100;
/// Bytes per key in the fixed layout (keys are shorter, zero-padded).
pub const KEY_BYTES: usize = 32;

/// The keys and sizes every kind of message carries.
pub fn keys() -> impl Iterator<Item = (String, u64)> {
    (0..ENTRIES).map(|i| (format!("tenant-7/user/{i:05}/profile"), 100 + i as u64 * 37))
}

/// A fixed-layout entry: the key zero-padded to 32 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[zerocopy(crate = "quicall::zerocopy")]
#[repr(C)]
pub struct FixedEntry {
    pub key: [u8; KEY_BYTES],
    pub size: U64,
}

/// The fixed-layout List response: 100 entries of 40 bytes (4,000 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[zerocopy(crate = "quicall::zerocopy")]
#[repr(C)]
pub struct FixedListing {
    pub entries: [FixedEntry; ENTRIES],
}

/// A List request: a prefix, zero-padded (fixed layout).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[zerocopy(crate = "quicall::zerocopy")]
#[repr(C)]
pub struct FixedPrefix {
    pub prefix: [u8; KEY_BYTES],
}

/// An rkyv entry.
#[derive(Archive, Serialize, Clone)]
#[rkyv(crate = quicall::rkyv)]
pub struct Entry {
    pub key: String,
    pub size: u64,
}

/// The rkyv List response.
#[derive(Archive, Serialize, Clone)]
#[rkyv(crate = quicall::rkyv)]
pub struct Listing {
    pub entries: Vec<Entry>,
}

/// The rkyv List request.
#[derive(Archive, Serialize)]
#[rkyv(crate = quicall::rkyv)]
pub struct ListRequest {
    pub prefix: String,
}

/// `message Entry { string key = 1; uint64 size = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
}

/// `message Listing { repeated Entry entries = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbListing {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<PbEntry>,
}

/// `message ListRequest { string prefix = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbListRequest {
    #[prost(string, tag = "1")]
    pub prefix: String,
}

pub static FIXED: LazyLock<FixedListing> = LazyLock::new(|| {
    let mut listing = FixedListing::new_zeroed();
    for (entry, (key, size)) in listing.entries.iter_mut().zip(keys()) {
        entry.key[..key.len()].copy_from_slice(key.as_bytes());
        entry.size = U64::new(size);
    }
    listing
});

pub static LISTING: LazyLock<Listing> = LazyLock::new(|| Listing {
    entries: keys().map(|(key, size)| Entry { key, size }).collect(),
});

pub static PB_LISTING: LazyLock<PbListing> = LazyLock::new(|| PbListing {
    entries: keys().map(|(key, size)| PbEntry { key, size }).collect(),
});

pub const LIST_FIXED: Method<FixedPrefix, FixedListing> = Method::new("bench.List/Fixed");
pub const LIST_RKYV: Method<Rkyv<ListRequest>, Rkyv<Listing>> = Method::new("bench.List/Rkyv");
pub const LIST_PROTO: Method<Proto<PbListRequest>, Proto<PbListing>> =
    Method::new("bench.List/Proto");

/// What a client reads of a response: every key's length and every size,
/// so that each kind is read completely.
pub fn digest_fixed(listing: &FixedListing) -> u64 {
    listing
        .entries
        .iter()
        .map(|e| e.key.iter().position(|&b| b == 0).unwrap_or(KEY_BYTES) as u64 + e.size.get())
        .sum()
}

pub fn digest_rkyv(listing: &ArchivedListing) -> u64 {
    listing
        .entries
        .iter()
        .map(|e| e.key.len() as u64 + e.size.to_native())
        .sum()
}

pub fn digest_proto(listing: &PbListing) -> u64 {
    listing
        .entries
        .iter()
        .map(|e| e.key.len() as u64 + e.size)
        .sum()
}

/// The digest every response must have.
pub fn expected_digest() -> u64 {
    keys().map(|(key, size)| key.len() as u64 + size).sum()
}

/// A router with the three List methods, each answering the same content
/// from a prebuilt value, encoded per call.
pub fn router() -> Router {
    Router::new()
        .route(&LIST_FIXED, |_ctx, _req: Msg<FixedPrefix>| async {
            Ok::<_, Status>(&*FIXED)
        })
        .and_then(|r| {
            r.route(&LIST_RKYV, |_ctx, _req: Msg<Rkyv<ListRequest>>| async {
                Ok::<_, Status>(&*LISTING)
            })
        })
        .and_then(|r| {
            r.route(&LIST_PROTO, |_ctx, _req: Msg<Proto<PbListRequest>>| async {
                Ok::<_, Status>(&*PB_LISTING)
            })
        })
        .expect("three distinct methods")
}

const PATH: &str = "/bench.List/Proto";

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// `bench.List` over tonic: the protobuf List, answered with a clone of the
/// prebuilt message (tonic's handlers return owned messages).
#[derive(Clone, Default)]
pub struct TonicList;

struct Unary;

impl tonic::server::UnaryService<PbListRequest> for Unary {
    type Response = PbListing;
    type Future = std::future::Ready<Result<tonic::Response<PbListing>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<PbListRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(PB_LISTING.clone())))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for TonicList {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if request.uri().path() == PATH {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Unary, request).await)
            } else {
                Ok(tonic::Status::unimplemented(request.uri().path().to_owned()).into_http())
            }
        })
    }
}

impl tonic::server::NamedService for TonicList {
    const NAME: &'static str = "bench.List";
}

/// Starts the tonic List server on loopback with mutual TLS.
pub async fn serve_tonic(
    tls: &crate::harness::grpc::GrpcTls,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let router = tonic::transport::Server::builder()
        .tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.server_cert, &tls.server_key))
                .client_ca_root(Certificate::from_pem(&tls.ca)),
        )?
        .add_service(TonicList);
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    Ok((addr, task))
}

/// Calls the tonic List server; the response's digest.
pub async fn call_tonic(
    grpc: &tonic::client::Grpc<tonic::transport::Channel>,
) -> anyhow::Result<u64> {
    let mut grpc = grpc.clone();
    grpc.ready().await?;
    let response: tonic::Response<PbListing> = grpc
        .unary(
            tonic::Request::new(PbListRequest {
                prefix: "tenant-7/user/".into(),
            }),
            http::uri::PathAndQuery::from_static(PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(digest_proto(response.get_ref()))
}
