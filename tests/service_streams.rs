//! Streaming methods declared in a `#[quicall::service]` trait: a server
//! stream, a client stream and a bidirectional stream, served from the
//! trait's implementation and called through the generated client, over
//! one server and over a cluster.

mod common;

use common::{Pki, bounded, cluster_of, connect, serve, settles};
use quicall::stream::{self, BoxStream};
use quicall::{ClusterOptions, Context, Requests, Rkyv, Status};

#[quicall::service(package = "test")]
pub trait Numbers {
    /// 0, 1, ... up to `to` (excluded).
    #[quicall(server_stream, idempotent)]
    async fn count(&self, to: u64) -> u64;
    /// The sum of every `n` sent.
    #[quicall(client_stream)]
    async fn sum(&self, n: u64) -> u64;
    /// Each `n * by`, as they come.
    #[quicall(bidi_stream)]
    async fn scale(&self, n: u64, by: u64) -> String;
    /// A unary method beside them.
    async fn double(&self, n: u64) -> u64;
}

struct Impl;

impl Numbers for Impl {
    async fn count(&self, _ctx: Context, to: u64) -> Result<BoxStream<u64>, Status> {
        Ok(stream::boxed(stream::iter((0..to).map(Ok))))
    }

    async fn sum(
        &self,
        _ctx: Context,
        mut requests: Requests<Rkyv<numbers::SumRequest>>,
    ) -> Result<u64, Status> {
        let mut total = 0;
        while let Some(request) = requests.message().await? {
            total += request.n.to_native();
        }
        Ok(total)
    }

    async fn scale(
        &self,
        _ctx: Context,
        mut requests: Requests<Rkyv<numbers::ScaleRequest>>,
    ) -> Result<BoxStream<String>, Status> {
        let (out, replies) = stream::channel(8);
        tokio::spawn(async move {
            loop {
                let reply = match requests.message().await {
                    Ok(Some(r)) => Ok((r.n.to_native() * r.by.to_native()).to_string()),
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                let last = reply.is_err();
                if out.send(reply).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(stream::boxed(replies))
    }

    async fn double(&self, _ctx: Context, n: u64) -> Result<u64, Status> {
        Ok(n * 2)
    }
}

async fn exercise<C: quicall::Caller>(numbers: &numbers::Client<C>) {
    let mut counted = bounded(numbers.count(1000)).await.unwrap();
    let mut next = 0u64;
    while let Some(n) = bounded(counted.message()).await.unwrap() {
        assert_eq!(n.to_native(), next);
        next += 1;
    }
    assert_eq!(next, 1000);

    let mut sum = bounded(numbers.sum()).await.unwrap();
    for n in 1..=100u64 {
        sum.send(&numbers::SumRequest { n }).await.unwrap();
    }
    assert_eq!(
        bounded(sum.finish()).await.unwrap().message.to_native(),
        5050
    );

    let (mut ask, mut answers) = bounded(numbers.scale()).await.unwrap();
    for n in 0..50u64 {
        ask.send(&numbers::ScaleRequest { n, by: 3 }).await.unwrap();
        let answer = bounded(answers.message()).await.unwrap().unwrap();
        assert_eq!(answer.as_str(), (n * 3).to_string());
    }
    ask.finish();
    assert!(bounded(answers.message()).await.unwrap().is_none());

    assert_eq!(bounded(numbers.double(21)).await.unwrap(), 42);
    assert!(numbers::COUNT.is_server_streaming() && numbers::COUNT.is_idempotent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_methods_of_a_service_trait_work_end_to_end() {
    let pki = Pki::new();
    let server = serve(&pki, numbers::router(Impl).unwrap());
    let client = connect(&pki, &server).await;
    exercise(&numbers::Client::new(client)).await;
    let other = serve(&pki, numbers::router(Impl).unwrap());
    let cluster = cluster_of(&pki, &[&server, &other], ClusterOptions::default()).await;
    exercise(&numbers::Client::new(cluster)).await;
    settles(&server, 2).await;
}
