//! The cluster client over real QUIC on loopback: latency-aware selection,
//! retries of safe calls when a server dies, the retry budget, hedging,
//! restarts and DNS discovery.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LossyProxy, Pki, bounded, cluster_at, cluster_of, serve};
use quicall::{
    CallOptions, ClusterOptions, Code, Hedge, Method, Policy, Router, Server, ServerOptions, Status,
};

/// Idempotent work: sleeps the server's delay, answers the server's number.
const WORK: Method<[u8], [u8]> = Method::new("test.Work/Do").idempotent();
/// The same, not idempotent.
const WRITE: Method<[u8], [u8]> = Method::new("test.Work/Write");
/// Hedged after 50 ms.
const HEDGED: Method<[u8], [u8]> = Method::new("test.Work/Hedged")
    .idempotent()
    .hedged(Hedge::After(Duration::from_millis(50)));

/// A server's knobs and counters, shared with the test.
#[derive(Default)]
struct Knobs {
    id: u8,
    delay_us: AtomicU64,
    stall: std::sync::atomic::AtomicBool,
    fail: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
    started: AtomicUsize,
    cancelled: AtomicUsize,
}

struct CancelCount(Arc<Knobs>, bool);
impl Drop for CancelCount {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn work_router(knobs: Arc<Knobs>) -> Router {
    let handler = move |_ctx: quicall::Context, _req: quicall::Msg<[u8]>| {
        let knobs = knobs.clone();
        async move {
            knobs.started.fetch_add(1, Ordering::SeqCst);
            let mut guard = CancelCount(knobs.clone(), false);
            if knobs.fail.load(Ordering::SeqCst) {
                guard.1 = true;
                knobs.calls.fetch_add(1, Ordering::SeqCst);
                return Err(Status::unavailable("failing on purpose"));
            }
            if knobs.stall.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let delay = knobs.delay_us.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_micros(delay)).await;
            }
            guard.1 = true;
            knobs.calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(vec![knobs.id])
        }
    };
    Router::new()
        .route(&WORK, handler.clone())
        .and_then(|r| r.route(&WRITE, handler.clone()))
        .and_then(|r| r.route(&HEDGED, handler))
        .unwrap()
}

fn start(pki: &Pki, id: u8) -> (Server, Arc<Knobs>) {
    let knobs = Arc::new(Knobs {
        id,
        ..Knobs::default()
    });
    (serve(pki, work_router(knobs.clone())), knobs)
}

/// Runs `calls` calls of `method` from `concurrency` callers; the server
/// number of each answer, or the status.
async fn load(
    cluster: &quicall::Cluster,
    method: &'static Method<[u8], [u8]>,
    calls: usize,
    concurrency: usize,
    deadline: Duration,
) -> Vec<Result<u8, Status>> {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(calls)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (cluster, next, results) = (cluster.clone(), next.clone(), results.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < calls {
                let r = cluster
                    .call_with(method, "", CallOptions::deadline(deadline))
                    .await
                    .map(|reply| reply[0]);
                results.lock().unwrap().push(r);
            }
        });
    }
    bounded(async { while tasks.join_next().await.is_some() {} }).await;
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

/// Three servers spending 3 ms per call, and a cluster client of them.
async fn three_at_3ms(pki: &Pki) -> (Vec<(Server, Arc<Knobs>)>, quicall::Cluster) {
    let servers: Vec<_> = (0..3).map(|i| start(pki, i)).collect();
    for (_, knobs) in &servers {
        knobs.delay_us.store(3_000, Ordering::SeqCst);
    }
    let refs: Vec<_> = servers.iter().map(|(s, _)| s).collect();
    let cluster = cluster_of(pki, &refs, ClusterOptions::default()).await;
    (servers, cluster)
}

fn share(results: &[Result<u8, Status>], id: u8) -> f64 {
    results
        .iter()
        .filter(|r| matches!(r, Ok(i) if *i == id))
        .count() as f64
        / results.len() as f64
}

async fn slow_server_share(policy: Policy) -> f64 {
    let pki = Pki::new();
    let servers: Vec<_> = (0..3).map(|i| start(&pki, i)).collect();
    for (_, knobs) in &servers {
        knobs.delay_us.store(2_000, Ordering::SeqCst);
    }
    servers[1].1.delay_us.store(40_000, Ordering::SeqCst); // 20x slower
    let refs: Vec<_> = servers.iter().map(|(s, _)| s).collect();
    let options = ClusterOptions {
        policy,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &refs, options).await;
    let results = load(&cluster, &WORK, 600, 6, Duration::from_secs(10)).await;
    assert!(results.iter().all(Result::is_ok), "every call answered");
    let slow = share(&results, 1);
    println!(
        "{policy}: the 20x slower server got {:.1}% of 600 calls",
        slow * 100.0
    );
    slow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_avoids_a_20x_slower_server() {
    let slow = slow_server_share(Policy::PeakEwma).await;
    assert!(
        slow < 0.15,
        "the slow server got {:.0}% of the calls",
        slow * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_the_slow_server_a_third() {
    let slow = slow_server_share(Policy::RoundRobin).await;
    assert!(
        (0.25..0.42).contains(&slow),
        "the slow server got {:.0}% of the calls",
        slow * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_a_server_killed_mid_load() {
    let pki = Pki::new();
    let (mut servers, cluster) = three_at_3ms(&pki).await;
    let loader = tokio::spawn({
        let cluster = cluster.clone();
        async move { load(&cluster, &WORK, 900, 12, Duration::from_secs(10)).await }
    });
    // Kill server 0 once it has served some calls, while calls are in flight.
    bounded(async {
        while servers[0].1.calls.load(Ordering::SeqCst) < 30 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let (killed, knobs) = servers.remove(0);
    let served_before_kill = knobs.calls.load(Ordering::SeqCst);
    killed.abort();
    let results = bounded(loader).await.unwrap();
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "idempotent calls failed: {failures:?}");
    assert_eq!(results.len(), 900);
    let retries = cluster.snapshot().total.retries;
    assert!(served_before_kill >= 30);
    println!("retries after the kill: {retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_call_that_reached_a_handler_is_not_retried() {
    let pki = Pki::new();
    let (a, ka) = start(&pki, 0);
    let (b, kb) = start(&pki, 1);
    ka.stall.store(true, Ordering::SeqCst);
    kb.stall.store(true, Ordering::SeqCst);
    let cluster = cluster_of(&pki, &[&a, &b], ClusterOptions::default()).await;
    let call = tokio::spawn({
        let cluster = cluster.clone();
        async move {
            cluster
                .call_with(&WRITE, "", CallOptions::deadline(Duration::from_secs(20)))
                .await
        }
    });
    // Wait until one handler runs the call, then kill that server.
    let which = bounded(async {
        loop {
            if ka.started.load(Ordering::SeqCst) > 0 {
                return 0;
            }
            if kb.started.load(Ordering::SeqCst) > 0 {
                return 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let (victim, other_knobs) = if which == 0 { (a, kb) } else { (b, ka) };
    victim.abort();
    let status = bounded(call).await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(!status.was_not_processed());
    assert_eq!(
        other_knobs.started.load(Ordering::SeqCst),
        0,
        "not retried elsewhere"
    );
    assert_eq!(cluster.snapshot().total.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_every_server_fails() {
    let pki = Pki::new();
    let servers: Vec<_> = (0..3).map(|i| start(&pki, i)).collect();
    for (_, knobs) in &servers {
        knobs.fail.store(true, Ordering::SeqCst);
    }
    let refs: Vec<_> = servers.iter().map(|(s, _)| s).collect();
    let options = ClusterOptions {
        retry_budget: quicall::rpc::balance::RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 0,
            ttl: Duration::from_secs(10),
        },
        max_attempts: 5,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &refs, options).await;
    let calls = 300;
    let results = load(&cluster, &WORK, calls, 4, Duration::from_secs(10)).await;
    assert!(results.iter().all(Result::is_err));
    let attempts: usize = servers
        .iter()
        .map(|(_, k)| k.started.load(Ordering::SeqCst))
        .sum();
    let snapshot = cluster.snapshot();
    println!(
        "{calls} calls, {attempts} attempts, {} retries, {} refused by the budget",
        snapshot.total.retries, snapshot.total.budget_exhausted
    );
    // Each call deposits 0.2 of a token: at most 60 retries (and at least some).
    assert!(snapshot.total.retries <= 60, "{}", snapshot.total.retries);
    assert!(snapshot.total.retries > 0);
    assert!(
        attempts <= calls + 60,
        "{attempts} attempts for {calls} calls"
    );
    assert!(snapshot.total.budget_exhausted > 0);
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.message().contains("retry budget exhausted")))
        .count();
    assert!(exhausted > 0, "the status says when the budget ran out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_calls_finish_from_the_other_server_and_cancel_the_stalled_one() {
    let pki = Pki::new();
    let (a, ka) = start(&pki, 0);
    let (b, kb) = start(&pki, 1);
    ka.stall.store(true, Ordering::SeqCst);
    let cluster = cluster_of(&pki, &[&a, &b], ClusterOptions::default()).await;
    for _ in 0..20 {
        let reply =
            bounded(cluster.call_with(&HEDGED, "", CallOptions::deadline(Duration::from_secs(10))))
                .await
                .unwrap();
        assert_eq!(reply[0], 1, "answers come from the healthy server");
    }
    let snapshot = cluster.snapshot();
    let stalled = ka.started.load(Ordering::SeqCst);
    assert!(stalled > 0, "the stalled server was tried");
    assert_eq!(
        snapshot.total.hedges as usize, stalled,
        "each stalled attempt was hedged"
    );
    // Every stalled handler was cancelled when its hedge won.
    bounded(async {
        while ka.cancelled.load(Ordering::SeqCst) < stalled {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(kb.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_server_on_the_same_port_gets_calls_again() {
    let pki = Pki::new();
    let (a, ka) = start(&pki, 0);
    let addr = a.local_addr();
    let cluster = cluster_of(&pki, &[&a], ClusterOptions::default()).await;
    assert_eq!(bounded(cluster.call(&WORK, "")).await.unwrap()[0], 0);
    a.shutdown(Duration::from_secs(1)).await;
    let knobs = Arc::new(Knobs {
        id: 7,
        ..Knobs::default()
    });
    let restarted = bind_retrying(&pki, addr, work_router(knobs.clone())).await;
    let reply = bounded(async {
        loop {
            match cluster
                .call_with(&WORK, "", CallOptions::deadline(Duration::from_secs(5)))
                .await
            {
                Ok(reply) => return reply,
                Err(status) => {
                    assert!(status.code() == Code::Unavailable, "{status}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await;
    assert_eq!(reply[0], 7);
    assert!(knobs.calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(ka.calls.load(Ordering::SeqCst), 1);
    drop(restarted);
}

/// Binds `addr` again: the old socket closes a moment after its server
/// stopped, when quinn's driver task runs.
async fn bind_retrying(pki: &Pki, addr: SocketAddr, router: Router) -> Server {
    let router = Arc::new(Mutex::new(Some(router)));
    let attempt = || {
        let router = router.clone();
        async move {
            // Checking the port first keeps the router for the real bind.
            if std::net::UdpSocket::bind(addr).is_err() {
                return None;
            }
            let router = router.lock().unwrap().take().unwrap();
            Some(Server::bind(addr, pki.server_tls(), router, ServerOptions::default()).unwrap())
        }
    };
    bounded(async {
        loop {
            if let Some(server) = attempt().await {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[derive(Default)]
struct FakeResolver(Mutex<Vec<SocketAddr>>);

impl quicall::rpc::cluster::Resolve for FakeResolver {
    fn resolve<'a>(
        &'a self,
        _target: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>,
    > {
        let addrs = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_follows_servers_as_they_come_and_go() {
    let pki = Pki::new();
    let servers: Vec<_> = (0..3).map(|i| start(&pki, i)).collect();
    let addr = |i: usize| servers[i].0.local_addr();
    let resolver = Arc::new(FakeResolver::default());
    *resolver.0.lock().unwrap() = vec![addr(0), addr(1)];
    let options = ClusterOptions {
        resolve_interval: Duration::from_millis(50),
        ..ClusterOptions::default()
    };
    let discovery =
        quicall::Discovery::dns_with("replicas.test:4433", "localhost", resolver.clone());
    let cluster = quicall::Cluster::new(discovery, pki.client_tls(), options)
        .await
        .unwrap();
    let seen = |results: &[Result<u8, Status>]| {
        let mut ids: Vec<u8> = results.iter().map(|r| *r.as_ref().unwrap()).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let results = load(&cluster, &WORK, 200, 4, Duration::from_secs(5)).await;
    assert_eq!(seen(&results), [0, 1]);

    *resolver.0.lock().unwrap() = vec![addr(0), addr(1), addr(2)];
    bounded(async {
        while cluster.servers().len() != 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let results = load(&cluster, &WORK, 300, 4, Duration::from_secs(5)).await;
    assert_eq!(seen(&results), [0, 1, 2], "the new replica gets calls");

    *resolver.0.lock().unwrap() = vec![addr(2)];
    bounded(async {
        while cluster.servers() != [addr(2)] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let results = load(&cluster, &WORK, 100, 4, Duration::from_secs(5)).await;
    assert_eq!(seen(&results), [2], "removed replicas get no calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_server_gets_no_new_calls_while_its_calls_finish() {
    let pki = Pki::new();
    let (a, ka) = start(&pki, 0);
    let (b, kb) = start(&pki, 1);
    let cluster = cluster_of(&pki, &[&a, &b], ClusterOptions::default()).await;
    // Connect to both, then hold a slow call on server 0.
    for _ in 0..20 {
        bounded(cluster.call(&WORK, "")).await.unwrap();
    }
    assert!(ka.calls.load(Ordering::SeqCst) > 0 && kb.calls.load(Ordering::SeqCst) > 0);
    ka.delay_us.store(400_000, Ordering::SeqCst);
    let direct = common::connect(&pki, &a).await;
    let started_before = ka.started.load(Ordering::SeqCst) + 1;
    let slow = tokio::spawn(async move { direct.call(&WORK, "").await });
    bounded(async {
        while ka.started.load(Ordering::SeqCst) < started_before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let shutdown = tokio::spawn(a.shutdown(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    // While server 0 drains, every call succeeds and none runs there.
    let results = load(&cluster, &WORK, 100, 4, Duration::from_secs(5)).await;
    assert!(results.iter().all(|r| matches!(r, Ok(1))), "{results:?}");
    assert_eq!(
        ka.started.load(Ordering::SeqCst),
        started_before,
        "no new call on the draining server"
    );
    // The call in flight there finished, and then the server closed.
    assert_eq!(bounded(slow).await.unwrap().unwrap()[0], 0);
    assert_eq!(bounded(shutdown).await.unwrap().unfinished_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_reopened_on_demand() {
    let pki = Pki::new();
    let (a, _ka) = start(&pki, 0);
    let options = ClusterOptions {
        pool: quicall::PoolOptions {
            idle_timeout: Duration::from_millis(200),
            ..quicall::PoolOptions::default()
        },
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &[&a], options).await;
    bounded(cluster.call(&WORK, "")).await.unwrap();
    assert_eq!(cluster.open_connections(), 1);
    bounded(async {
        loop {
            // A snapshot looks at each connection, noticing closed ones.
            let _ = cluster.snapshot();
            if cluster.open_connections() == 0 && a.open_connections() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(bounded(cluster.call(&WORK, "")).await.unwrap()[0], 0);
    assert_eq!(cluster.open_connections(), 1);
}

/// Three servers (3 ms per call), each behind a proxy that can go silent,
/// and a cluster client that knows only the proxies.
async fn behind_proxies(
    pki: &Pki,
) -> (Vec<(Server, Arc<Knobs>)>, Vec<LossyProxy>, quicall::Cluster) {
    let servers: Vec<_> = (0..3).map(|i| start(pki, i)).collect();
    let mut proxies = Vec::new();
    for (server, knobs) in &servers {
        knobs.delay_us.store(3_000, Ordering::SeqCst);
        proxies.push(LossyProxy::clean(server.local_addr()).await);
    }
    let list = proxies.iter().map(|p| (p.addr.to_string(), "localhost"));
    let cluster = cluster_at(pki, list, ClusterOptions::default()).await;
    (servers, proxies, cluster)
}

/// Waits until server `i` has served `n` calls.
async fn until_served(knobs: &Knobs, n: usize) {
    bounded(async {
        while knobs.calls.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Runs `calls` idempotent calls from 12 callers with 20 s deadlines; once
/// the server of `knobs` has served 30, runs `fault`; asserts that every
/// call succeeded.
async fn no_call_fails_through(
    cluster: &quicall::Cluster,
    calls: usize,
    knobs: &Knobs,
    fault: impl std::future::Future<Output = ()>,
) {
    let loader = tokio::spawn({
        let cluster = cluster.clone();
        async move { load(&cluster, &WORK, calls, 12, Duration::from_secs(20)).await }
    });
    until_served(knobs, 30).await;
    fault.await;
    let results = bounded(loader).await.unwrap();
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "idempotent calls failed: {failures:?}");
    assert_eq!(results.len(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_a_server_that_goes_silent_mid_load() {
    // What SIGKILL or a vanished host looks like from the client: the
    // server's packets stop, and no CONNECTION_CLOSE ever comes. The calls'
    // deadline (20 s) is far beyond the liveness timeout (1 s) and below
    // QUIC's idle timeout (30 s): without the liveness check, the calls in
    // flight on the silent server would fail with DEADLINE_EXCEEDED.
    let pki = Pki::new();
    let (servers, proxies, cluster) = behind_proxies(&pki).await;
    no_call_fails_through(&cluster, 1200, &servers[0].1, async { proxies[0].cut() }).await;
    let silent = cluster
        .snapshot()
        .servers
        .into_iter()
        .find(|s| s.addr == proxies[0].addr)
        .unwrap();
    // The calls that were in flight on it failed there (and were retried).
    let unavailable = silent.stats.by_code[Code::Unavailable.as_u16() as usize];
    assert!(unavailable >= 1, "no attempt failed on the silent server");
    assert!(cluster.snapshot().total.retries >= unavailable);
    println!(
        "silent server: {unavailable} attempts failed there and were retried; {} ejections; {} datagrams dropped",
        silent.stats.ejections,
        proxies[0].dropped.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_server_is_avoided_and_used_again_when_the_partition_heals() {
    let pki = Pki::new();
    let (servers, proxies, cluster) = behind_proxies(&pki).await;
    no_call_fails_through(&cluster, 900, &servers[1].1, async { proxies[1].cut() }).await;
    // The server itself never stopped: once the partition heals, the client
    // connects again and the server gets calls (bounded: no 30 s blackout
    // is needed, and the test fails after 30 s).
    proxies[1].heal();
    let served = servers[1].1.calls.load(Ordering::SeqCst);
    let healed = tokio::time::Instant::now();
    bounded(async {
        while servers[1].1.calls.load(Ordering::SeqCst) == served {
            let r = cluster
                .call_with(&WORK, "", CallOptions::deadline(Duration::from_secs(5)))
                .await;
            assert!(r.is_ok(), "{r:?}");
        }
    })
    .await;
    println!(
        "the healed server answered again {:?} after the heal",
        healed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_mid_load_fails_no_call() {
    let pki = Pki::new();
    let (mut servers, cluster) = three_at_3ms(&pki).await;
    let (stopping, knobs) = servers.remove(0);
    no_call_fails_through(&cluster, 900, &knobs, async {
        let report = bounded(stopping.shutdown(Duration::from_secs(5))).await;
        assert_eq!(report.unfinished_calls, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_on_a_live_server_is_not_taken_for_a_dead_server() {
    // The liveness check listens for acknowledgements, not answers: a call
    // that takes 3 s (three liveness timeouts) on a live server succeeds
    // with no retry.
    let pki = Pki::new();
    let (a, knobs) = start(&pki, 0);
    knobs.delay_us.store(3_000_000, Ordering::SeqCst);
    let cluster = cluster_of(&pki, &[&a], ClusterOptions::default()).await;
    let reply =
        bounded(cluster.call_with(&WRITE, "", CallOptions::deadline(Duration::from_secs(20))))
            .await
            .unwrap();
    assert_eq!(reply[0], 0);
    assert_eq!(knobs.started.load(Ordering::SeqCst), 1);
    assert_eq!(cluster.snapshot().total.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_the_servers_is_sent_once() {
    // No server will take it: the answer must not be retried, even for an
    // idempotent method (it used to be RESOURCE_EXHAUSTED, sent three times).
    let pki = Pki::new();
    let options = ServerOptions {
        max_request_size: 1024,
        ..ServerOptions::default()
    };
    let knobs: Vec<_> = (0..3).map(|_| Arc::new(Knobs::default())).collect();
    let servers: Vec<_> = knobs
        .iter()
        .map(|k| common::serve_with(&pki, work_router(k.clone()), options.clone()))
        .collect();
    let refs: Vec<_> = servers.iter().collect();
    let cluster = cluster_of(&pki, &refs, ClusterOptions::default()).await;
    let status = bounded(cluster.call(&WORK, &[0u8; 4096][..]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    let snapshot = cluster.snapshot();
    let attempts: u64 = snapshot.servers.iter().map(|s| s.stats.calls).sum();
    assert_eq!(attempts, 1, "{status}");
    assert_eq!(snapshot.total.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_says_why_a_connection_failed() {
    // A server whose certificate does not carry the dialled name: the
    // cluster's status keeps the TLS reason, also while it backs off.
    let pki = Pki::new();
    let (a, _) = start(&pki, 0);
    let list = [(a.local_addr().to_string(), "wrong.example")];
    let cluster = cluster_at(&pki, list, ClusterOptions::default()).await;
    for _ in 0..3 {
        let status = bounded(cluster.call(&WORK, "")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
        assert!(
            status
                .message()
                .contains("certificate not valid for name \"wrong.example\""),
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_address_where_nothing_answers_says_so() {
    // A UDP socket that never answers: the handshake gets no reply. The
    // call's status names the address and the handshake, not only the
    // deadline.
    let pki = Pki::new();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let list = [(silent.local_addr().unwrap().to_string(), "localhost")];
    let cluster = cluster_at(&pki, list, ClusterOptions::default()).await;
    let status =
        bounded(cluster.call_with(&WORK, "", CallOptions::deadline(Duration::from_millis(300))))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("handshake"), "{status}");
    assert!(
        status
            .message()
            .contains(&silent.local_addr().unwrap().to_string()),
        "{status}"
    );
}
