//! The tarpc baseline: an echo service over TCP with bincode, no TLS (as
//! tarpc's own examples run it), one connection, calls multiplexed on it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_bytes::ByteBuf;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context, serde_transport};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The service: the request's bytes back.
#[tarpc::service]
pub trait Echo {
    async fn echo(data: ByteBuf) -> ByteBuf;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, data: ByteBuf) -> ByteBuf {
        data
    }
}

/// Largest frame either side takes (the benchmark's largest payloads).
const MAX_FRAME: usize = 64 << 20;

/// tarpc's framing (a length before each frame) and bincode over `stream`,
/// with `TCP_NODELAY` as the gRPC baseline has it (tarpc's own `tcp`
/// module leaves Nagle on, which would add up to 40 ms to small calls).
fn transport<Item, SinkItem>(
    stream: TcpStream,
) -> std::io::Result<serde_transport::Transport<TcpStream, Item, SinkItem, Bincode<Item, SinkItem>>>
where
    Item: for<'de> serde::Deserialize<'de>,
    SinkItem: serde::Serialize,
{
    stream.set_nodelay(true)?;
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    Ok(serde_transport::new(
        Framed::new(stream, codec),
        Bincode::default(),
    ))
}

/// Starts the server on `ip`, every connection served by its own task and
/// every request by a task of its own; returns its address.
pub async fn serve(ip: IpAddr) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(transport) = transport(stream) else {
                continue;
            };
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(EchoServer.serve())
                    .for_each(|call| async {
                        tokio::spawn(call);
                    }),
            );
        }
    });
    Ok((addr, task))
}

/// A client: one TCP connection, calls multiplexed on it.
pub struct TarpcClient {
    client: EchoClient,
}

impl TarpcClient {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let transport = transport(TcpStream::connect(addr).await?)?;
        let config = client::Config::default();
        Ok(Self {
            client: EchoClient::new(config, transport).spawn(),
        })
    }

    /// One echo call; the length of the answer.
    pub async fn echo(&self, data: &[u8]) -> anyhow::Result<usize> {
        let mut ctx = context::current();
        ctx.deadline = Instant::now() + Duration::from_secs(60);
        let answer = self.client.echo(ctx, ByteBuf::from(data)).await?;
        Ok(answer.len())
    }
}
