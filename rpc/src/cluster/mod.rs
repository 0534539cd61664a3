//! The cluster client: calls spread over many servers by a selection policy,
//! with ejection of failing servers, retries within a budget, hedging, DNS
//! discovery and per-method and per-server metrics.

mod attempt;
mod discovery;
mod member;
mod streams;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use quicall_transport::{ClientEndpoint, ClientTls, Pool, PoolOptions, SlotStatus};
use tokio::time::Instant;

pub use discovery::{Discovery, Resolve, SystemResolver, host_of};

use crate::balance::{
    EjectionConfig, Policy, RetryBudget, RetryBudgetConfig, Throttle, ThrottleConfig,
};
use crate::metrics::{Stats, StatsSnapshot};
use crate::{CallOptions, ClientOptions, Code, Encode, Message, Method, Msg, Status};
use member::Member;

/// Settings of a [`Cluster`].
///
/// ```
/// use quicall_rpc::balance::Policy;
/// use quicall_rpc::cluster::ClusterOptions;
/// let options = ClusterOptions { policy: Policy::RoundRobin, ..ClusterOptions::default() };
/// assert_eq!(options.max_attempts, 3);
/// ```
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How calls are spread over servers. Default: power of two choices by
    /// peak-EWMA latency × (calls in flight + 1).
    pub policy: Policy,
    /// When failing servers are ejected.
    pub ejection: EjectionConfig,
    /// How many retries and hedges the cluster may send.
    pub retry_budget: RetryBudgetConfig,
    /// Attempts of one call at most (first + retries), whatever the budget. Default 3.
    pub max_attempts: u32,
    /// Client-side throttling: when the servers shed more than they accept
    /// (by `k`), part of the calls are refused here, before they are sent,
    /// with RESOURCE_EXHAUSTED (not processed), so that the servers spend
    /// their CPU on calls rather than on refusals. High-priority calls
    /// ([`Priority::High`](crate::admission::Priority)) are never refused
    /// here. `None` turns it off. Default: on, `k` 2, a 2 s window.
    pub throttle: Option<ThrottleConfig>,
    /// Latency estimate of a server not yet observed. Default 1 ms: low, so
    /// that a new server is tried soon.
    pub initial_latency: Duration,
    /// Time constant of the latency estimate's decay. Default 5 s.
    pub latency_decay: Duration,
    /// Per-connection client settings: transport limits, response size
    /// limit, default deadline.
    pub client: ClientOptions,
    /// Pool settings: connection cap, idle timeout, reconnection backoff.
    pub pool: PoolOptions,
    /// How often a DNS discovery is resolved again. Default 5 s.
    pub resolve_interval: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            ejection: EjectionConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
            max_attempts: 3,
            throttle: Some(ThrottleConfig::default()),
            initial_latency: Duration::from_millis(1),
            latency_decay: Duration::from_secs(5),
            client: ClientOptions::default(),
            pool: PoolOptions::default(),
            resolve_interval: Duration::from_secs(5),
        }
    }
}

/// A client of a set of replicas.
///
/// Each call goes to the server the policy picks among those that take calls
/// (not ejected, not draining, not waiting to reconnect). A call that fails in
/// a way that is safe to repeat (the method is idempotent, or the server
/// provably never ran it) is sent again to another server, if the retry budget
/// allows and the deadline has not passed. Hedged methods send a second copy
/// when the first is slow. Cloning is cheap.
///
/// ```no_run
/// use quicall_rpc::cluster::{Cluster, ClusterOptions, Discovery};
/// use quicall_rpc::Method;
/// # async fn run(tls: quicall_transport::ClientTls) -> Result<(), quicall_rpc::Status> {
/// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo").idempotent();
/// let servers = Discovery::fixed([("127.0.0.1:4433", "localhost"), ("127.0.0.1:4434", "localhost")]);
/// let cluster = Cluster::new(servers, tls, ClusterOptions::default()).await?;
/// let reply = cluster.call(&ECHO, "hello").await?;
/// for server in cluster.snapshot().servers {
///     println!("{} took {} calls", server.addr, server.stats.calls);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: Pool,
    endpoint: ClientEndpoint,
    servers: RwLock<Arc<Vec<Arc<Member>>>>,
    methods: RwLock<HashMap<u64, Arc<MethodEntry>>>,
    turn: AtomicU64,
    budget: Mutex<RetryBudget>,
    throttle: Option<Mutex<Throttle>>,
    /// Calls refused by the throttle, for Prometheus.
    throttled: prometheus_client::metrics::counter::Counter,
    origin: Instant,
    options: ClusterOptions,
    total: Stats,
    /// Calls per method and attempts per server, for Prometheus.
    method_metrics: crate::meter::Metrics,
    server_metrics: crate::meter::Metrics,
    registry: prometheus_client::registry::Registry,
}

struct MethodEntry {
    name: &'static str,
    stats: Stats,
    meter: crate::meter::MethodMeter,
}

/// A server as seen from a [`Cluster`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerSnapshot {
    /// Its address.
    pub addr: SocketAddr,
    /// Its TLS name.
    pub name: String,
    /// Attempts sent to it and their latencies.
    pub stats: StatsSnapshot,
    /// Whether it is ejected now.
    pub ejected: bool,
    /// Its connection's state.
    pub status: SlotStatus,
    /// Its latency estimate now.
    pub latency_estimate: Duration,
    /// Attempts on it now.
    pub in_flight: u32,
}

/// Everything a [`Cluster`] measured, at one instant.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterSnapshot {
    /// Per server (attempts, including retries and hedges).
    pub servers: Vec<ServerSnapshot>,
    /// Per method (calls, as the caller saw them).
    pub methods: Vec<(&'static str, StatsSnapshot)>,
    /// All calls.
    pub total: StatsSnapshot,
}

impl Cluster {
    /// A cluster client of the servers `discovery` names (resolved now; a DNS
    /// discovery is resolved again in the background). Connections are opened
    /// on first use. Must be called within a tokio runtime.
    pub async fn new(
        discovery: Discovery,
        tls: ClientTls,
        options: ClusterOptions,
    ) -> Result<Cluster, Status> {
        let endpoint = ClientEndpoint::new(tls, options.client.transport.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let pool = Pool::new(endpoint.clone(), options.pool.clone());
        let mut method_metrics = crate::meter::Metrics::new("method");
        let mut server_metrics = crate::meter::Metrics::new("server");
        let mut registry = prometheus_client::registry::Registry::default();
        method_metrics.register_client(&mut registry, "call");
        server_metrics.register_client(&mut registry, "attempt");
        let throttled = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "quicall_client_throttled",
            "Calls refused by this client's throttle, not sent (the servers shed more than they accepted)",
            throttled.clone(),
        );
        let inner = Arc::new(Inner {
            pool,
            endpoint,
            servers: RwLock::new(Arc::new(Vec::new())),
            methods: RwLock::new(HashMap::new()),
            turn: AtomicU64::new(0),
            budget: Mutex::new(RetryBudget::new(options.retry_budget)),
            throttle: options.throttle.map(|c| Mutex::new(Throttle::new(c))),
            throttled,
            origin: Instant::now(),
            total: Stats::default(),
            options,
            registry,
            method_metrics,
            server_metrics,
        });
        let servers = discovery.resolve().await.map_err(|e| {
            Status::unavailable(format!("cannot resolve servers: {e}")).not_processed()
        })?;
        inner.set_servers(&servers);
        if discovery.is_dynamic() {
            tokio::spawn(follow(Arc::downgrade(&inner), discovery));
        }
        Ok(Cluster { inner })
    }

    /// Calls `method` with the default deadline.
    pub async fn call<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
    ) -> Result<Msg<Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        self.call_with(method, request, CallOptions::default())
            .await
    }

    /// Calls `method` with per-call options. The deadline covers every
    /// attempt; dropping the future cancels every stream of the call.
    pub async fn call_with<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
    ) -> Result<Msg<Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        self.call_inner(method, request, options, false)
            .await
            .map(|response| response.message)
    }

    /// Calls `method` and returns the response with the metadata its
    /// server sent back (with a failure too: [`Status::metadata`]).
    pub async fn call_full<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
    ) -> Result<crate::Response<Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        self.call_inner(method, request, options, true).await
    }

    async fn call_inner<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
        read_metadata: bool,
    ) -> Result<crate::Response<Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        let inner = &*self.inner;
        let start = Instant::now();
        let budget = options.deadline.or(inner.options.client.default_deadline);
        let deadline = budget.map(|b| start + b);
        let interceptors = &inner.options.client.interceptors;
        let throttled = attempt::may_throttle(&options);
        let (span, framed) = crate::client::begin_call(
            method,
            request,
            budget,
            options.metadata,
            interceptors,
            read_metadata,
        );
        let (head, tail) = match framed {
            Ok(framed) => framed,
            Err(status) => {
                if !interceptors.is_empty() {
                    interceptors.after(method.name(), status.code(), start.elapsed());
                }
                return Err(status);
            }
        };
        let entry = inner.method_entry(method.id(), method.name());
        entry.stats.begin();
        let meter = entry.meter.begin(start.into_std());
        let sent = head.len() + tail.len();
        let call = attempt::Call {
            exchange: attempt::Unary {
                max_response: inner.options.client.max_response_size,
                keep_chunks: Resp::KEEPS_CHUNKS,
            },
            inner,
            stats: &entry.stats,
            idempotent: method.is_idempotent(),
            hedge: method.hedge().filter(|_| method.is_idempotent()),
            throttled,
            head,
            tail,
            deadline,
        };
        // Attempts (retries, hedges) are spans inside the call's.
        let answer = match &span {
            Some(span) => {
                let run = tracing::Instrument::instrument(call.run(), (**span).clone());
                crate::client::within(start, budget, method.name(), run).await
            }
            None => crate::client::within(start, budget, method.name(), call.run()).await,
        };
        let result = answer.and_then(|answer| {
            let message = method
                .response(answer.body)
                .map_err(|e| Status::internal(format!("bad response: {e}")))?;
            Ok(crate::Response {
                message,
                metadata: answer.metadata.map(|m| *m).unwrap_or_default(),
            })
        });
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        let flow = entry.meter.flow();
        flow.requests(1, sent);
        if let Ok(response) = &result {
            flow.responses(1, response.message.bytes().len());
        }
        entry.stats.end();
        meter.finish(code);
        entry.stats.record(start.elapsed(), code);
        inner.total.record(start.elapsed(), code);
        crate::client::end_span(span, code, start);
        if !interceptors.is_empty() {
            interceptors.after(method.name(), code, start.elapsed());
        }
        result
    }

    /// The cluster's metrics in the Prometheus text format (OpenMetrics):
    /// per method, `quicall_client_calls_total{method, code}`,
    /// `quicall_client_call_duration_seconds` (histogram buckets) and
    /// `quicall_client_calls_in_flight`; per server, the same for attempts
    /// (`quicall_client_attempts_total{server, code}` ...): retries and
    /// hedges are attempts.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// Serves [`Cluster::metrics_text`] over HTTP on `addr`, for Prometheus
    /// to scrape, until the cluster is dropped; the address it listens on.
    pub async fn serve_metrics(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<std::net::SocketAddr> {
        let inner = Arc::downgrade(&self.inner);
        crate::exporter::serve_http(addr, move || {
            let inner = inner.upgrade()?;
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, &inner.registry);
            Some(text)
        })
        .await
    }

    /// Every measurement: per server, per method, in total.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let inner = &*self.inner;
        let now = inner.now();
        let servers = inner
            .servers()
            .iter()
            .map(|m| ServerSnapshot {
                addr: m.slot.addr(),
                name: m.slot.server_name().to_owned(),
                stats: m.stats.snapshot(),
                ejected: m.health().is_ejected(now),
                status: m.slot.status(),
                latency_estimate: m.ewma().estimate(now),
                in_flight: m.slot.in_flight(),
            })
            .collect();
        let mut methods: Vec<_> = inner
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| (e.name, e.stats.snapshot()))
            .collect();
        methods.sort_by_key(|(name, _)| *name);
        ClusterSnapshot {
            servers,
            methods,
            total: inner.total.snapshot(),
        }
    }

    /// The servers' addresses now.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.inner.servers().iter().map(|m| m.slot.addr()).collect()
    }

    /// Connections open or opening now.
    pub fn open_connections(&self) -> usize {
        self.inner.pool.open_connections()
    }

    /// Closes every connection; calls in flight fail with UNAVAILABLE.
    pub fn close(&self) {
        self.inner.pool.close();
        self.inner.endpoint.close(0, b"cluster client closed");
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("servers", &self.servers())
            .field("policy", &self.inner.options.policy)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Time since the cluster was made: the clock of the pure balancing logic.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn servers(&self) -> Arc<Vec<Arc<Member>>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the throttle (if on) what became of an attempt at `now`.
    fn throttle_learns(&self, now: Duration, learn: impl FnOnce(&mut Throttle, Duration)) {
        if let Some(throttle) = &self.throttle {
            learn(&mut throttle.lock().unwrap_or_else(|e| e.into_inner()), now);
        }
    }

    fn method_entry(&self, id: u64, name: &'static str) -> Arc<MethodEntry> {
        if let Some(entry) = self
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return entry.clone();
        }
        let mut methods = self.methods.write().unwrap_or_else(|e| e.into_inner());
        methods
            .entry(id)
            .or_insert_with(|| {
                Arc::new(MethodEntry {
                    name,
                    stats: Stats::default(),
                    meter: self.method_metrics.method(name),
                })
            })
            .clone()
    }

    /// Replaces the server set: members that stay keep their state.
    fn set_servers(&self, wanted: &[(SocketAddr, String)]) {
        let current = self.servers();
        let mut next = Vec::with_capacity(wanted.len());
        for (addr, name) in wanted {
            let existing = current
                .iter()
                .find(|m| m.slot.addr() == *addr && m.slot.server_name() == name);
            next.push(match existing {
                Some(m) => m.clone(),
                None => {
                    tracing::info!(%addr, name, "server added");
                    Arc::new(Member::new(
                        self.pool.slot(*addr, name),
                        self.options.initial_latency,
                        self.options.latency_decay,
                        self.server_metrics.method(format!("{addr}")),
                    ))
                }
            });
        }
        for gone in current.iter().filter(|m| {
            !wanted
                .iter()
                .any(|(a, n)| *a == m.slot.addr() && n == m.slot.server_name())
        }) {
            tracing::info!(addr = %gone.slot.addr(), "server removed");
            self.pool.remove(gone.slot.addr(), gone.slot.server_name());
        }
        *self.servers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }
}

/// Resolves a DNS discovery again every interval, until the cluster is dropped.
async fn follow(inner: Weak<Inner>, discovery: Discovery) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => inner.options.resolve_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let resolved = discovery.resolve().await;
        let Some(inner) = inner.upgrade() else { return };
        match resolved {
            Ok(servers) if !servers.is_empty() => inner.set_servers(&servers),
            // Keep the last good set rather than forget every server.
            Ok(_) => tracing::warn!(
                ?discovery,
                "discovery found no server; keeping the last set"
            ),
            Err(e) => tracing::warn!(?discovery, "discovery failed: {e}; keeping the last set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_and_their_calls_are_send() {
        use bytes::Bytes;
        fn is_send_sync<T: Send + Sync>() {}
        fn is_send<T: Send>(_: &T) {}
        is_send_sync::<Cluster>();
        const M: Method<[u8], [u8]> = Method::new("x");
        fn check(cluster: &Cluster) {
            is_send(&cluster.call(&M, Bytes::new()));
        }
        let _ = check;
    }
}
