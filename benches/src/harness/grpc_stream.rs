//! The gRPC streaming baseline: a tonic server stream and a bidirectional
//! echo over HTTP/2 with mutual TLS, written by hand (no protoc), with the
//! message of [`super::grpc`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::grpc::{EchoMessage, GrpcTls};

/// `rpc Produce(Echo) returns (stream Echo)`: the request's first 12 bytes
/// are the count (u64) and the size (u32) of the messages to send.
pub const PRODUCE: &str = "/bench.Stream/Produce";
/// `rpc Echo(stream Echo) returns (stream Echo)`.
pub const ECHO: &str = "/bench.Stream/Echo";

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

/// The service `bench.Stream`, routed by path.
#[derive(Clone, Default)]
pub struct StreamService;

/// What a producer sends: `count` messages of `size` bytes, each stamped
/// with [`crate::harness::stamp`] when it is made.
pub struct Produced {
    left: u64,
    size: usize,
}

impl Produced {
    pub fn new(count: u64, size: usize) -> Self {
        Self { left: count, size }
    }

    /// The next message's bytes, or `None` after the last.
    pub fn next_bytes(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(stamped(self.size))
    }
}

/// `size` bytes (at least 8) starting with the time now.
pub fn stamped(size: usize) -> Bytes {
    stamped_with(size, super::stamp())
}

/// `size` bytes (at least 8) starting with `stamp`.
pub fn stamped_with(size: usize, stamp: u64) -> Bytes {
    let mut bytes = vec![0u8; size.max(8)];
    bytes[..8].copy_from_slice(&stamp.to_le_bytes());
    Bytes::from(bytes)
}

impl futures_core::Stream for Produced {
    type Item = Result<EchoMessage, tonic::Status>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(
            self.get_mut()
                .next_bytes()
                .map(|data| Ok(EchoMessage { data })),
        )
    }
}

struct Producer;

impl tonic::server::ServerStreamingService<EchoMessage> for Producer {
    type Response = EchoMessage;
    type ResponseStream = Produced;
    type Future = std::future::Ready<Result<tonic::Response<Produced>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
        let data = request.into_inner().data;
        let (count, size) = parse_produce(&data);
        std::future::ready(Ok(tonic::Response::new(Produced::new(count, size))))
    }
}

/// The count and size a producer's request asks for.
pub fn parse_produce(data: &[u8]) -> (u64, usize) {
    if data.len() < 12 {
        return (0, 8);
    }
    let count = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    let size = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
    (count, size as usize)
}

/// A producer's request: `count` messages of `size` bytes.
pub fn produce_request(count: u64, size: usize) -> Bytes {
    let mut data = count.to_le_bytes().to_vec();
    data.extend_from_slice(&(size as u32).to_le_bytes());
    Bytes::from(data)
}

struct Echoer;

impl tonic::server::StreamingService<EchoMessage> for Echoer {
    type Response = EchoMessage;
    type ResponseStream = tonic::Streaming<EchoMessage>;
    type Future =
        std::future::Ready<Result<tonic::Response<tonic::Streaming<EchoMessage>>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<EchoMessage>>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for StreamService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            Ok(match request.uri().path() {
                PRODUCE => grpc.server_streaming(Producer, request).await,
                ECHO => grpc.streaming(Echoer, request).await,
                path => tonic::Status::unimplemented(path.to_owned()).into_http(),
            })
        })
    }
}

impl tonic::server::NamedService for StreamService {
    const NAME: &'static str = "bench.Stream";
}

/// Starts the streaming server on loopback with mutual TLS.
pub async fn serve(tls: &GrpcTls) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let router = tonic::transport::Server::builder()
        .tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.server_cert, &tls.server_key))
                .client_ca_root(Certificate::from_pem(&tls.ca)),
        )?
        .add_service(StreamService);
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    Ok((addr, task))
}
