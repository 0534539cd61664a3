//! The gRPC baseline: a tonic unary echo over HTTP/2, with mutual TLS or in
//! plaintext, written by hand (no protoc): one prost message, one service.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

/// `message Echo { bytes data = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

const PATH: &str = "/bench.Echo/Echo";

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The service `bench.Echo` with its one method, routed by path; each call
/// first burns `cost` of CPU on its worker (zero: a plain echo).
#[derive(Clone, Default)]
pub struct EchoService {
    pub cost: std::time::Duration,
}

struct Unary(std::time::Duration);

impl tonic::server::UnaryService<EchoMessage> for Unary {
    type Response = EchoMessage;
    type Future = std::future::Ready<Result<tonic::Response<EchoMessage>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
        crate::harness::spin(self.0);
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let cost = self.cost;
        Box::pin(async move {
            if request.uri().path() == PATH {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
                Ok(grpc.unary(Unary(cost), request).await)
            } else {
                Ok(tonic::Status::unimplemented(request.uri().path().to_owned()).into_http())
            }
        })
    }
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "bench.Echo";
}

/// PEM material for gRPC's TLS (the same CA and names as quicall's).
pub struct GrpcTls {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

/// Starts the echo server on `ip` (mutual TLS if `tls`), returns its address.
pub async fn serve(
    tls: Option<&GrpcTls>,
    ip: std::net::IpAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(tls, ip, EchoService::default(), None).await
}

/// [`serve`] with `service`, and with tonic's `concurrency_limit_per_connection`
/// and `load_shed` if `shed_over` is set (calls past the limit answered
/// RESOURCE_EXHAUSTED at once instead of waiting).
pub async fn serve_with(
    tls: Option<&GrpcTls>,
    ip: std::net::IpAddr,
    service: EchoService,
    shed_over: Option<usize>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let incoming = TcpIncoming::bind(SocketAddr::new(ip, 0))?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(limit) = shed_over {
        builder = builder
            .concurrency_limit_per_connection(limit)
            .load_shed(true);
    }
    if let Some(tls) = tls {
        builder = builder.tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.server_cert, &tls.server_key))
                .client_ca_root(Certificate::from_pem(&tls.ca)),
        )?;
    }
    let router = builder.add_service(service);
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    Ok((addr, task))
}

/// A client of the echo server: one HTTP/2 connection, calls multiplexed on it.
#[derive(Clone)]
pub struct GrpcClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl GrpcClient {
    pub async fn connect(addr: SocketAddr, tls: Option<&GrpcTls>) -> anyhow::Result<Self> {
        Ok(Self {
            grpc: connect(addr, tls).await?,
        })
    }

    pub async fn echo(&self, data: Bytes) -> anyhow::Result<usize> {
        let mut grpc = self.grpc.clone();
        grpc.ready().await?;
        let response: tonic::Response<EchoMessage> = grpc
            .unary(
                tonic::Request::new(EchoMessage { data }),
                http::uri::PathAndQuery::from_static(PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await?;
        Ok(response.into_inner().data.len())
    }
}

/// One HTTP/2 connection to a gRPC server at `addr` (mutual TLS if `tls`),
/// calls multiplexed on it.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&GrpcTls>,
) -> anyhow::Result<tonic::client::Grpc<Channel>> {
    let channel = match tls {
        Some(tls) => Channel::from_shared(format!("https://localhost:{}", addr.port()))?
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca))
                    .identity(Identity::from_pem(&tls.client_cert, &tls.client_key))
                    .domain_name("localhost"),
            )?,
        None => Channel::from_shared(format!("http://{addr}"))?,
    };
    // Dial `addr` whatever the URI's host (which names the TLS server).
    let channel = channel
        .tcp_nodelay(true)
        .connect_with_connector(Dial(addr))
        .await?;
    Ok(tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// A connector that always dials one address.
#[derive(Clone, Copy)]
struct Dial(SocketAddr);

impl tower::Service<http::Uri> for Dial {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
