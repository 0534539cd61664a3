//! Overload over real QUIC: a server with adaptive admission and a
//! CPU-bound handler, offered far more than it can do, sheds the excess at
//! once and keeps answering what it admits; a cluster client sends shed
//! calls elsewhere, and fails fast when every server sheds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Pki, bounded, cluster_of, loopback, serve_with};
use quicall::rpc::admission::Adaptive;
use quicall::{
    CallOptions, Client, ClusterOptions, Code, Method, Router, Server, ServerOptions, Status,
};

const SPIN: Method<[u8], [u8]> = Method::new("test.Load/Spin").idempotent();

/// Burns `cost` of CPU on the worker that runs it (no await: what a
/// CPU-bound handler does to a runtime).
fn spin(cost: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < cost {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn spinning_router(cost: Duration) -> Router {
    Router::new()
        .route(&SPIN, move |_ctx, _req: quicall::Msg<[u8]>| async move {
            spin(cost);
            Ok::<_, Status>(&b"done"[..])
        })
        .unwrap()
}

/// What a caller saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    shed: AtomicUsize,
    other: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn count(&self, result: Result<impl Sized, Status>) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(s) if s.code() == Code::ResourceExhausted && s.was_not_processed() => {
                self.shed.fetch_add(1, Ordering::Relaxed)
            }
            Err(s) => {
                self.other.lock().unwrap().push(s.to_string());
                0
            }
        };
    }
}

/// `callers` tasks, each calling back to back until `length` has passed
/// (pausing `pause` after a refusal, as a client that backs off would).
async fn closed_loop(
    client: &Client,
    callers: usize,
    length: Duration,
    pause: Duration,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let end = Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (client, tally) = (client.clone(), tally.clone());
        tasks.spawn(async move {
            let options = CallOptions::deadline(Duration::from_secs(2));
            while Instant::now() < end {
                let result = client.call_with(&SPIN, &b"x"[..], options.clone()).await;
                let refused = result.is_err();
                tally.count(result);
                if refused {
                    tokio::time::sleep(pause).await;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    tally
}

#[test]
fn an_overloaded_server_sheds_at_once_keeps_serving_and_recovers() {
    let pki = Pki::new();
    // The server on two workers of its own: its capacity is two calls at a
    // time, 2 ms of CPU each.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = ServerOptions {
        admission: Some(Adaptive {
            min_limit: 2,
            window_calls: 25,
            min_window_calls: 10,
            ..Adaptive::default()
        }),
        ..ServerOptions::default()
    };
    let server = server_rt
        .block_on(async { serve_with(&pki, spinning_router(Duration::from_millis(2)), options) });
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let client = common::connect(&pki, &server).await;
        // 32 callers against a capacity of 2 calls at a time.
        let overload = bounded(closed_loop(
            &client,
            32,
            Duration::from_secs(4),
            Duration::from_millis(10),
        ))
        .await;
        let (ok, shed) = (
            overload.ok.load(Ordering::Relaxed),
            overload.shed.load(Ordering::Relaxed),
        );
        let gauges = server.gauges();
        println!(
            "overload: {ok} answered, {shed} shed, limit {:?}, {} shed by the server",
            gauges.concurrency_limit, gauges.calls_shed
        );
        // Every call ended with an answer or a refusal: none ran out of
        // time waiting in a queue.
        let other = std::mem::take(&mut *overload.other.lock().unwrap());
        assert!(
            other.is_empty(),
            "{} other ends: {:?}",
            other.len(),
            &other[..other.len().min(5)]
        );
        assert!(ok >= 100, "admitted calls keep completing: {ok}");
        assert!(shed > 0, "the excess is shed");
        assert_eq!(gauges.calls_shed as usize, shed);
        let limit = gauges.concurrency_limit.unwrap();
        assert!(limit < 32, "the limit was learned: {limit}");
        // The refusal names the cause.
        let refused = bounded(async {
            loop {
                let mut burst = tokio::task::JoinSet::new();
                for _ in 0..64 {
                    let client = client.clone();
                    burst.spawn(async move { client.call(&SPIN, &b"x"[..]).await.map(|_| ()) });
                }
                let results = burst.join_all().await;
                if let Some(Err(s)) = results.into_iter().find(Result::is_err) {
                    break s;
                }
            }
        })
        .await;
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.was_not_processed());
        assert!(refused.message().contains("overloaded"), "{refused}");

        // Load drops to one caller: nothing is shed, and the limit comes
        // back up as the headroom grows again.
        let shed_before = server.gauges().calls_shed;
        let calm = bounded(closed_loop(
            &client,
            1,
            Duration::from_secs(3),
            Duration::from_millis(10),
        ))
        .await;
        assert_eq!(calm.shed.load(Ordering::Relaxed), 0);
        assert!(calm.other.lock().unwrap().is_empty());
        assert_eq!(server.gauges().calls_shed, shed_before);
        let recovered = server.gauges().concurrency_limit.unwrap();
        println!(
            "calm: {} answered, limit {recovered}",
            calm.ok.load(Ordering::Relaxed)
        );
        // Back to its full headroom for bursts: twice the no-load
        // concurrency (the two workers), whatever it was at under load.
        assert!(recovered >= 4, "{recovered} after {limit}");
        // The gauge and the counter are exported.
        let metrics = server.metrics_text();
        assert!(
            metrics.contains("quicall_server_concurrency_limit "),
            "{metrics}"
        );
        assert!(metrics.contains(&format!("quicall_server_calls_shed_total {shed_before}")));
    });
    drop(server_rt);
}

/// A method whose handler waits until the test lets it go.
const HOLD: Method<[u8], [u8]> = Method::new("test.Load/Hold").idempotent();

fn holding_server(pki: &Pki, gate: Arc<tokio::sync::Semaphore>, calls: usize) -> Server {
    holding_server_with(
        pki,
        gate,
        ServerOptions {
            max_calls_in_flight: calls,
            ..ServerOptions::default()
        },
        Arc::default(),
    )
}

/// A server of [`HOLD`] whose handlers count themselves in `entered`
/// before they wait (and of the demo's server stream `COUNT`).
fn holding_server_with(
    pki: &Pki,
    gate: Arc<tokio::sync::Semaphore>,
    options: ServerOptions,
    entered: Arc<AtomicUsize>,
) -> Server {
    let router = Router::new()
        .route(&HOLD, move |_ctx, _req: quicall::Msg<[u8]>| {
            let gate = gate.clone();
            entered.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = gate.acquire().await.unwrap();
                Ok::<_, Status>(&b"held"[..])
            }
        })
        .and_then(|r| r.route_server_stream(&quicall::demo::COUNT, quicall::demo::count))
        .unwrap();
    Server::bind(loopback(), pki.server_tls(), router, options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_sheds_calls_fail_fast_and_say_so() {
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, b) = (
        holding_server(&pki, gate.clone(), 1),
        holding_server(&pki, gate.clone(), 1),
    );
    // The servers' own refusals (the client's throttle, which would refuse
    // most of these calls itself, is tested below).
    let options = ClusterOptions {
        retry_budget: quicall::rpc::balance::RetryBudgetConfig {
            min_per_second: 100,
            ..Default::default()
        },
        throttle: None,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &[&a, &b], options).await;
    // Two calls fill both servers (the second goes to the free one: the
    // first server's refusal sends it on).
    let held: Vec<_> = (0..2)
        .map(|_| {
            let cluster = cluster.clone();
            tokio::spawn(async move { cluster.call(&HOLD, &b""[..]).await })
        })
        .collect();
    bounded(async {
        while a.calls_in_flight() + b.calls_in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Every further call is shed by both servers and fails at once, while
    // the held calls are still running.
    for _ in 0..10 {
        let status = bounded(cluster.call(&HOLD, &b""[..])).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.was_not_processed());
        assert!(
            status
                .message()
                .contains("overloaded: every attempt was shed (3 attempts, 2 servers)"),
            "{status}"
        );
    }
    assert_eq!(a.calls_in_flight() + b.calls_in_flight(), 2);
    gate.add_permits(2);
    for call in held {
        assert_eq!(&*bounded(call).await.unwrap().unwrap(), b"held");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_calls_go_elsewhere_and_the_shedding_server_gets_fewer() {
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    // `a` takes one call at a time (and holds it); `b` takes many.
    let a = holding_server(&pki, gate.clone(), 1);
    let b = holding_server(&pki, gate.clone(), 1024);
    let cluster = cluster_of(&pki, &[&a, &b], ClusterOptions::default()).await;
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let cluster = cluster.clone();
            tokio::spawn(async move { cluster.call(&HOLD, &b""[..]).await })
        })
        .collect();
    bounded(async {
        while a.calls_in_flight() + b.calls_in_flight() < 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Every call was admitted somewhere: `a` holds one, `b` the rest.
    assert_eq!(a.calls_in_flight(), 1);
    assert_eq!(b.calls_in_flight(), 39);
    gate.add_permits(40);
    for call in calls {
        assert!(bounded(call).await.unwrap().is_ok());
    }
    // The refusals raised `a`'s latency estimate above `b`'s at once.
    let snapshot = cluster.snapshot();
    let estimate = |server: &Server| {
        snapshot
            .servers
            .iter()
            .find(|s| s.addr == server.local_addr())
            .unwrap()
            .latency_estimate
    };
    assert!(
        estimate(&a) > estimate(&b),
        "{:?} vs {:?}",
        estimate(&a),
        estimate(&b)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_retries_when_every_server_sheds() {
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let servers: Vec<_> = (0..3)
        .map(|_| holding_server(&pki, gate.clone(), 1))
        .collect();
    let refs: Vec<_> = servers.iter().collect();
    let options = ClusterOptions {
        retry_budget: quicall::rpc::balance::RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 0,
            ttl: Duration::from_secs(10),
        },
        max_attempts: 5,
        // The budget alone (the throttle would refuse most calls first).
        throttle: None,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &refs, options).await;
    // Fill every server (from a client of its own), then send 200 calls
    // that all are shed.
    let filler = cluster_of(&pki, &refs, ClusterOptions::default()).await;
    let held: Vec<_> = (0..3)
        .map(|_| {
            let filler = filler.clone();
            tokio::spawn(async move { filler.call(&HOLD, &b""[..]).await })
        })
        .collect();
    bounded(async {
        while servers.iter().map(Server::calls_in_flight).sum::<usize>() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let before = cluster.snapshot().total;
    let calls = 200;
    for _ in 0..calls {
        let status = bounded(cluster.call(&HOLD, &b""[..])).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    }
    let total = cluster.snapshot().total.since(&before);
    println!(
        "{calls} calls shed: {} retries, {} refused by the budget",
        total.retries, total.budget_exhausted
    );
    // Each call deposits 0.2 of a retry: at most 40, however many servers
    // shed and however many attempts a call may make.
    assert!(total.retries <= 40, "{} retries", total.retries);
    assert!(total.budget_exhausted > 0);
    gate.add_permits(3);
    for call in held {
        assert!(bounded(call).await.unwrap().is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_throttles_itself_while_its_servers_shed_and_lets_go_when_they_accept() {
    use quicall::rpc::admission::Priority;
    use quicall::rpc::balance::ThrottleConfig;
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    // Three servers that admit one call each (nothing ends until the gate
    // opens, so the limit stays 1) and count what they shed.
    let options = ServerOptions {
        admission: Some(Adaptive {
            min_limit: 1,
            initial_limit: 1,
            ..Adaptive::default()
        }),
        ..ServerOptions::default()
    };
    let servers: Vec<_> = (0..3)
        .map(|_| holding_server_with(&pki, gate.clone(), options.clone(), Arc::default()))
        .collect();
    let refs: Vec<_> = servers.iter().collect();
    let filler = cluster_of(
        &pki,
        &refs,
        ClusterOptions {
            throttle: None,
            ..ClusterOptions::default()
        },
    )
    .await;
    let held: Vec<_> = (0..3)
        .map(|_| {
            let filler = filler.clone();
            tokio::spawn(async move { filler.call(&HOLD, &b""[..]).await })
        })
        .collect();
    let in_flight = || servers.iter().map(Server::calls_in_flight).sum::<usize>();
    let shed = || servers.iter().map(|s| s.gauges().calls_shed).sum::<u64>();
    bounded(async {
        while in_flight() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // 1,000 calls while every server is full: each is shed by a server or
    // refused by the client itself, and the servers see only a few.
    let options = ClusterOptions {
        throttle: Some(ThrottleConfig {
            k: 2.0,
            window: Duration::from_secs(1),
        }),
        max_attempts: 1,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &refs, options).await;
    let shed_before = shed();
    let calls = 1000u64;
    let mut refused_here = 0u64;
    for _ in 0..calls {
        let status = bounded(cluster.call(&HOLD, &b""[..])).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.was_not_processed(), "{status}");
        if status
            .message()
            .contains("refused by this client before sending")
        {
            refused_here += 1;
        }
    }
    let sent = shed() - shed_before;
    let total = cluster.snapshot().total;
    println!("{calls} calls: {sent} shed by the servers, {refused_here} refused by the client");
    assert_eq!(total.throttled, refused_here);
    assert_eq!(sent + refused_here, calls);
    assert!(
        sent <= 100,
        "the servers were sent {sent} of {calls} calls they all shed"
    );
    let metrics = cluster.metrics_text();
    assert!(
        metrics.contains(&format!("quicall_client_throttled_total {refused_here}")),
        "{metrics}"
    );

    // A high-priority call is never refused by the client: it reaches a
    // server, which admits it above the limit.
    let high = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let options = CallOptions::default().with_metadata(Priority::High.metadata());
            cluster.call_with(&HOLD, &b""[..], options).await
        })
    };
    bounded(async {
        while in_flight() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // The servers accept again: within the window the client sends every
    // call again.
    gate.add_permits(1);
    for call in held {
        assert!(bounded(call).await.unwrap().is_ok());
    }
    assert!(bounded(high).await.unwrap().is_ok());
    bounded(async {
        let mut in_a_row = 0;
        while in_a_row < 50 {
            match cluster.call(&HOLD, &b""[..]).await {
                Ok(_) => in_a_row += 1,
                Err(status) => {
                    assert!(
                        status.message().contains("refused by this client"),
                        "{status}"
                    );
                    in_a_row = 0;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_calls_are_shed_first_and_high_priority_ones_last() {
    use quicall::rpc::admission::Priority;
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    // A limit of 4 that nothing changes (no call ends until the gate opens).
    let options = ServerOptions {
        admission: Some(Adaptive {
            min_limit: 4,
            initial_limit: 4,
            ..Adaptive::default()
        }),
        ..ServerOptions::default()
    };
    let entered = Arc::new(AtomicUsize::new(0));
    let server = holding_server_with(&pki, gate.clone(), options, entered.clone());
    let client = common::connect(&pki, &server).await;
    assert_eq!(server.gauges().concurrency_limit, Some(4));
    let mut held = Vec::new();
    // Sends a call of `priority`: Some(task) if the server holds it, None
    // if it was refused for overload.
    let mut send = async |priority: Priority| {
        let before = entered.load(Ordering::SeqCst);
        let options = CallOptions::default().with_metadata(priority.metadata());
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.call_with(&HOLD, &b""[..], options).await.map(|_| ()) }
        });
        // Held (its handler runs) or answered (refused).
        bounded(async {
            while entered.load(Ordering::SeqCst) == before && !call.is_finished() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        if call.is_finished() {
            let status = call.await.unwrap().unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
            assert!(status.was_not_processed());
            false
        } else {
            held.push(call);
            true
        }
    };
    // Half the limit in flight: a low-priority call no longer gets in, a
    // normal one does, up to the limit; a high one, up to half again.
    assert!(send(Priority::Normal).await);
    assert!(send(Priority::Normal).await);
    assert!(!send(Priority::Low).await);
    assert!(send(Priority::Normal).await);
    assert!(send(Priority::Normal).await);
    assert!(!send(Priority::Normal).await);
    assert!(send(Priority::High).await);
    assert!(send(Priority::High).await);
    assert!(!send(Priority::High).await);
    assert!(!send(Priority::Low).await);
    assert_eq!(server.gauges().calls_shed, 4);
    gate.add_permits(held.len());
    for call in held {
        assert!(bounded(call).await.unwrap().is_ok());
    }
}

/// Waits (bounded) until `n` handlers have entered.
async fn entered_reaches(entered: &AtomicUsize, n: usize) {
    bounded(async {
        while entered.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_held_to_the_fixed_limits_alone() {
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    // An adaptive limit of one call; room for two in the fixed limits.
    let options = ServerOptions {
        admission: Some(Adaptive {
            min_limit: 1,
            initial_limit: 1,
            ..Adaptive::default()
        }),
        max_calls_in_flight: 2,
        ..ServerOptions::default()
    };
    let server = holding_server_with(&pki, gate.clone(), options, entered.clone());
    let client = common::connect(&pki, &server).await;
    assert_eq!(server.gauges().concurrency_limit, Some(1));
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.call(&HOLD, &b""[..]).await.map(|_| ()) }
    });
    entered_reaches(&entered, 1).await;
    // The adaptive limit is full: a unary call is shed...
    let status = bounded(client.call(&HOLD, &b""[..])).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("overloaded"), "{status}");
    // ...and a server stream is not: it counts against the fixed limits only.
    let mut numbers = bounded(client.server_stream(
        &quicall::demo::COUNT,
        &zerocopy::little_endian::U64::new(5),
        CallOptions::default(),
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Some(n) = bounded(numbers.message()).await.unwrap() {
        got.push(n.get());
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(server.gauges().calls_shed, 1);
    gate.add_permits(1);
    assert!(bounded(held).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixed_limits_stay_the_outer_bounds() {
    let pki = Pki::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    // An adaptive limit asked to start at 8, on a server that takes 2.
    let options = ServerOptions {
        admission: Some(Adaptive {
            min_limit: 8,
            initial_limit: 8,
            ..Adaptive::default()
        }),
        max_calls_in_flight: 2,
        ..ServerOptions::default()
    };
    let server = holding_server_with(&pki, gate.clone(), options, entered.clone());
    assert_eq!(server.gauges().concurrency_limit, Some(2));
    assert!(
        ServerOptions::default().admission.is_none(),
        "off by default"
    );
    let client = common::connect(&pki, &server).await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(&HOLD, &b""[..]).await.map(|_| ()) })
        })
        .collect();
    entered_reaches(&entered, 2).await;
    // The third is refused by the fixed limit, and says so.
    let status = bounded(client.call(&HOLD, &b""[..])).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.was_not_processed());
    assert!(
        status.message().contains("server busy: 2 calls in flight"),
        "{status}"
    );
    assert_eq!(server.gauges().calls_shed, 0);
    gate.add_permits(2);
    for call in held {
        assert!(bounded(call).await.unwrap().is_ok());
    }
}
