//! Services declared with `#[quicall::service]`: the generated constants,
//! the typed client over one server and over a cluster, the router, and
//! what a handler sees (archived views, validated).

mod common;

use common::{Pki, bounded, cluster_of, connect, serve};
use quicall::rkyv::{Archive, Archived, Deserialize, Serialize};
use quicall::{Caller, ClusterOptions, Code, Context, Hedge, Status};

/// The classic.
#[quicall::service(package = "calc")]
pub trait Calc {
    /// Adds two numbers.
    #[quicall(idempotent)]
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides, refusing zero.
    #[quicall(idempotent, hedge = Hedge::Percentile(0.95))]
    async fn divide(&self, a: f64, b: f64) -> f64;
    /// Says hello to a name.
    async fn greet(&self, name: String, excited: bool) -> String;
    /// Counts the calls so far; no arguments.
    #[quicall(name = "CallCount")]
    async fn calls(&self) -> u64;
    /// Forgets the count; nothing back.
    async fn reset(&self);
}

#[derive(Default)]
struct Calculator {
    calls: std::sync::atomic::AtomicU64,
}

impl Calculator {
    fn count(&self) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Calc for Calculator {
    async fn add(&self, _ctx: Context, a: i64, b: i64) -> Result<i64, Status> {
        self.count();
        a.checked_add(b)
            .ok_or_else(|| Status::out_of_range("the sum overflows"))
    }

    async fn divide(&self, _ctx: Context, a: f64, b: f64) -> Result<f64, Status> {
        self.count();
        if b == 0.0 {
            return Err(Status::invalid_argument("division by zero"));
        }
        Ok(a / b)
    }

    async fn greet(
        &self,
        ctx: Context,
        name: &Archived<String>,
        excited: bool,
    ) -> Result<String, Status> {
        self.count();
        let who = ctx
            .peer()
            .map_or("nobody".to_string(), |p| p.name().to_string());
        let end = if excited { "!" } else { "." };
        Ok(format!("hello {name}{end} (from {who})"))
    }

    async fn calls(&self, _ctx: Context) -> Result<u64, Status> {
        Ok(self.calls.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn reset(&self, _ctx: Context) -> Result<(), Status> {
        self.calls.store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn the_constants_name_the_methods() {
    assert_eq!(calc::ADD.name(), "calc.Calc/Add");
    assert_eq!(calc::ADD.id(), quicall::method_id("calc.Calc/Add"));
    assert!(calc::ADD.is_idempotent() && !calc::GREET.is_idempotent());
    assert_eq!(calc::DIVIDE.hedge(), Some(Hedge::Percentile(0.95)));
    assert_eq!(calc::CALLS.name(), "calc.Calc/CallCount");
    assert_eq!(calc::RESET.name(), "calc.Calc/Reset");
}

/// Code generic over what makes the calls.
async fn sum_of_squares<C: Caller>(calc: &calc::Client<C>, n: i64) -> Result<i64, Status> {
    let mut sum = 0;
    for i in 1..=n {
        sum = calc.add(sum, i * i).await?;
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_client_calls_a_typed_server() {
    let pki = Pki::new();
    let server = serve(&pki, calc::router(Calculator::default()).unwrap());
    let calc = calc::Client::new(connect(&pki, &server).await);

    let sum = bounded(calc.add(2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    assert_eq!(bounded(calc.divide(7.0, 2.0)).await.unwrap(), 3.5);
    let status = bounded(calc.divide(1.0, 0.0)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "division by zero");
    let status = bounded(calc.add(i64::MAX, 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);

    let greeting = bounded(calc.greet("Ada".into(), true)).await.unwrap();
    assert_eq!(greeting.as_str(), "hello Ada! (from alice)");
    assert_eq!(bounded(calc.calls()).await.unwrap(), 5);
    bounded(calc.reset()).await.unwrap();
    assert_eq!(bounded(calc.calls()).await.unwrap(), 0);

    assert_eq!(bounded(sum_of_squares(&calc, 10)).await.unwrap(), 385);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_stub_works_over_a_cluster() {
    let pki = Pki::new();
    let servers = [
        serve(&pki, calc::router(Calculator::default()).unwrap()),
        serve(&pki, calc::router(Calculator::default()).unwrap()),
    ];
    let refs: Vec<_> = servers.iter().collect();
    let cluster = cluster_of(&pki, &refs, ClusterOptions::default()).await;
    let calc = calc::Client::new(cluster).with_options(quicall::CallOptions::deadline(
        std::time::Duration::from_secs(5),
    ));
    assert_eq!(bounded(sum_of_squares(&calc, 20)).await.unwrap(), 2870);
    let greeting = bounded(calc.greet("Grace".into(), false)).await.unwrap();
    assert!(greeting.starts_with("hello Grace."), "{}", &**greeting);
}

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(crate = quicall::rkyv)]
pub struct Entry {
    pub key: String,
    pub size: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(crate = quicall::rkyv)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub truncated: bool,
}

/// A service with structured messages of its own.
#[quicall::service(package = "test", name = "Lister", crate = "quicall")]
pub trait Lists {
    #[quicall(idempotent)]
    async fn list(&self, prefix: String, limit: Option<u32>) -> Listing;
    async fn echo_bytes(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Keys(Vec<String>);

impl Lists for Keys {
    async fn list(
        &self,
        _ctx: Context,
        prefix: &Archived<String>,
        limit: &Archived<Option<u32>>,
    ) -> Result<Listing, Status> {
        let limit = limit
            .as_ref()
            .map_or(usize::MAX, |l| l.to_native() as usize);
        let matching = self.0.iter().filter(|k| k.starts_with(prefix.as_str()));
        let entries: Vec<Entry> = matching
            .clone()
            .take(limit)
            .map(|key| Entry {
                key: key.clone(),
                size: key.len() as u64,
            })
            .collect();
        Ok(Listing {
            truncated: matching.count() > entries.len(),
            entries,
        })
    }

    async fn echo_bytes(&self, _ctx: Context, data: &Archived<Vec<u8>>) -> Result<Vec<u8>, Status> {
        Ok(data.to_vec())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_messages_are_read_in_place_on_both_sides() {
    let pki = Pki::new();
    let keys = (0..5000).map(|i| format!("user/{i:05}")).collect();
    let server = serve(&pki, lists::router(Keys(keys)).unwrap());
    let lister = lists::Client::new(connect(&pki, &server).await);
    assert_eq!(lists::LIST.name(), "test.Lister/List");

    let all = bounded(lister.list("user/".into(), None)).await.unwrap();
    assert_eq!(all.entries.len(), 5000);
    assert_eq!(all.entries[4321].key, "user/04321");
    assert_eq!(all.entries[4321].size, 10);
    assert!(!all.truncated);
    let some = bounded(lister.list("user/01".into(), Some(7)))
        .await
        .unwrap();
    assert_eq!(some.entries.len(), 7);
    assert!(some.truncated);
    let owned: Listing =
        quicall::rkyv::deserialize::<Listing, quicall::rkyv::rancor::Error>(&*some).unwrap();
    assert_eq!(owned.entries[6].key, "user/01006");

    let data: Vec<u8> = (0..=255).cycle().take(100_000).collect();
    let back = bounded(lister.echo_bytes(data.clone())).await.unwrap();
    assert_eq!(back.as_slice(), &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_valid_archive_never_reaches_the_handler() {
    let pki = Pki::new();
    let server = serve(&pki, lists::router(Keys(vec!["a".into()])).unwrap());
    let client = connect(&pki, &server).await;
    // The same method, raw: garbage, a lying root size, a truncated body.
    const RAW: quicall::Method<[u8], [u8]> = quicall::Method::new("test.Lister/List");
    let good = quicall::rpc::encode::<quicall::Rkyv<lists::ListRequest>>(&lists::ListRequest {
        prefix: "a".into(),
        limit: None,
    })
    .unwrap();
    let mut lying = good.to_vec();
    let n = lying.len();
    lying[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    for body in [
        vec![0xff; 64],
        lying,
        good[..good.len() / 2].to_vec(),
        Vec::new(),
    ] {
        let status = bounded(client.call(&RAW, body)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
        assert!(status.was_not_processed());
        assert!(status.message().contains("test.Lister/List"), "{status}");
    }
    // The good body, raw, is answered.
    let reply = bounded(client.call(&RAW, good)).await.unwrap();
    let listing = quicall::Msg::<quicall::Rkyv<Listing>>::new(reply.into_bytes()).unwrap();
    assert_eq!(listing.entries.len(), 1);
}
