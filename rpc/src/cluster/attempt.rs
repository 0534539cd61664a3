//! One call through a cluster: picking servers, attempts, retries, hedges,
//! and what each outcome teaches the balancer.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quicall_transport::Connection;
use tokio::time::Instant;

use super::Inner;
use super::member::Member;
use crate::balance::{Throttle, may_eject};
use crate::client::{Answer, exchange, transport_status};
use crate::metrics::Stats;
use crate::{Chunks, Code, Hedge, Status};

/// Observations a method needs before a percentile hedge delay is trusted.
const MIN_HEDGE_SAMPLES: u64 = 20;
/// Servers remembered as tried by one call (to retry elsewhere).
const TRIED: usize = 8;

/// What one attempt does on a server's connection with the request's
/// bytes: a unary exchange, or a stream opened up to its first response.
pub(super) trait Exchange: Sync {
    /// What a successful attempt gives.
    type Output: Send;

    fn exchange<'a>(
        &'a self,
        conn: &'a Connection,
        head: Bytes,
        tail: Chunks,
    ) -> impl std::future::Future<Output = Result<Self::Output, Status>> + Send + 'a;
}

/// A unary call's attempt: one request, one response.
pub(super) struct Unary {
    pub(super) max_response: u32,
    /// Whether the response body is kept in chunks.
    pub(super) keep_chunks: bool,
}

impl Exchange for Unary {
    type Output = Answer;

    fn exchange<'a>(
        &'a self,
        conn: &'a Connection,
        head: Bytes,
        tail: Chunks,
    ) -> impl std::future::Future<Output = Result<Answer, Status>> + Send + 'a {
        exchange(conn, head, tail, (self.max_response, self.keep_chunks))
    }
}

pub(super) struct Call<'a, X> {
    pub(super) exchange: X,
    pub(super) inner: &'a Inner,
    pub(super) stats: &'a Stats,
    pub(super) idempotent: bool,
    pub(super) hedge: Option<Hedge>,
    /// Whether the client's throttle may refuse the call (not a
    /// high-priority one).
    pub(super) throttled: bool,
    pub(super) head: Bytes,
    pub(super) tail: Chunks,
    pub(super) deadline: Option<Instant>,
}

/// Servers a call has tried, by index in the server list it started with.
#[derive(Default)]
struct Tried {
    indices: [usize; TRIED],
    len: usize,
}

impl Tried {
    fn add(&mut self, i: usize) {
        if self.len < TRIED {
            self.indices[self.len] = i;
            self.len += 1;
        }
    }
    fn contains(&self, i: usize) -> bool {
        self.indices[..self.len].contains(&i)
    }
}

impl<X: Exchange> Call<'_, X> {
    pub(super) async fn run(&self) -> Result<X::Output, Status> {
        let now = self.inner.now();
        self.admit(now)?;
        self.inner.lock_budget().deposit(now);
        let servers = self.inner.servers();
        let mut tried = Tried::default();
        let (mut attempts, mut shed) = (0u32, 0u32);
        loop {
            let Some(first) = self.pick(&servers, &tried) else {
                return Err(none_available(&servers));
            };
            tried.add(first);
            let head = self.head_now(attempts);
            let result = match self.hedge_delay() {
                Some(delay) if attempts == 0 => {
                    self.hedged(&servers, first, head, delay, &mut tried).await
                }
                _ => self.attempt(&servers[first], head).await,
            };
            attempts += 1;
            let status = match result {
                Ok(body) => return Ok(body),
                Err(status) => status,
            };
            shed += u32::from(is_shed(&status));
            // The status a call gives up with says so if every attempt was
            // shed (worded only then: not for each attempt retried).
            let last = |status| {
                if shed == attempts {
                    overloaded(status, attempts, servers.len())
                } else {
                    status
                }
            };
            if !status.is_retry_safe(self.idempotent)
                || attempts >= self.inner.options.max_attempts
                || self.deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Err(last(status));
            }
            if !self.inner.lock_budget().try_withdraw(self.inner.now()) {
                self.stats.add_budget_exhausted();
                self.inner.total.add_budget_exhausted();
                return Err(exhausted(last(status)));
            }
            self.stats.add_retry();
            self.inner.total.add_retry();
            servers[first].stats.add_retry();
        }
    }

    /// The client's throttle decides whether the call is sent; a call it
    /// refuses is counted and gets RESOURCE_EXHAUSTED, not processed.
    fn admit(&self, now: Duration) -> Result<(), Status> {
        let inner = self.inner;
        let Some(throttle) = inner.throttle.as_ref().filter(|_| self.throttled) else {
            return Ok(());
        };
        let verdict = throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(now, fastrand::f64());
        verdict.map_err(|t| {
            self.stats.add_throttled();
            inner.total.add_throttled();
            inner.throttled.inc();
            Status::resource_exhausted(format!(
                "overloaded: refused by this client before sending, its servers shed {} of its last {} \
                 attempts (client-side throttling, refusing {:.0}% of calls; ClusterOptions::throttle)",
                t.requests - t.accepts,
                t.requests,
                100.0 * t.probability
            ))
            .not_processed()
        })
    }

    /// Picks a server: preferably connected and not tried by this call yet;
    /// else one that needs a connection first; else one already tried.
    fn pick(&self, servers: &[Arc<Member>], tried: &Tried) -> Option<usize> {
        let inner = self.inner;
        let now = inner.now();
        let turn = inner
            .turn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut rng = || fastrand::u64(..);
        let policy = inner.options.policy;
        let n = servers.len();
        let untried = |connected_only| {
            move |i: usize| {
                (!tried.contains(i))
                    .then(|| servers[i].candidate(now, connected_only))
                    .flatten()
            }
        };
        policy
            .pick(n, untried(true), turn, &mut rng)
            .or_else(|| policy.pick(n, untried(false), turn, &mut rng))
            .or_else(|| policy.pick(n, |i| servers[i].candidate(now, false), turn, &mut rng))
    }

    /// The request header and inline body, with the deadline left now.
    fn head_now(&self, attempts: u32) -> Bytes {
        match (attempts, self.deadline) {
            (0, _) | (_, None) => self.head.clone(),
            (_, Some(deadline)) => {
                let mut head = BytesMut::from(&self.head[..]);
                crate::wire::set_deadline(
                    &mut head,
                    Some(deadline.saturating_duration_since(Instant::now())),
                );
                head.freeze()
            }
        }
    }

    fn hedge_delay(&self) -> Option<Duration> {
        match self.hedge? {
            Hedge::After(delay) => Some(delay),
            Hedge::Percentile(q) => (self.stats.calls() >= MIN_HEDGE_SAMPLES)
                .then(|| self.stats.recent_quantile(q))
                .flatten(),
        }
    }

    /// The first attempt, and a second one on another server if the first
    /// has not answered after `delay`; the first answer wins and the other
    /// attempt is dropped, which resets its stream.
    async fn hedged(
        &self,
        servers: &[Arc<Member>],
        first: usize,
        head: Bytes,
        delay: Duration,
        tried: &mut Tried,
    ) -> Result<X::Output, Status> {
        let a = self.attempt(&servers[first], head.clone());
        tokio::pin!(a);
        tokio::select! {
            result = &mut a => return result,
            _ = tokio::time::sleep(delay) => {}
        }
        let Some(second) = self.pick(servers, tried).filter(|&s| s != first) else {
            return a.await;
        };
        if !self.inner.lock_budget().try_withdraw(self.inner.now()) {
            self.stats.add_budget_exhausted();
            self.inner.total.add_budget_exhausted();
            return a.await;
        }
        tried.add(second);
        self.stats.add_hedge();
        self.inner.total.add_hedge();
        servers[second].stats.add_hedge();
        let b = self.attempt(&servers[second], head);
        tokio::pin!(b);
        tokio::select! {
            result = &mut a => match result {
                Ok(body) => Ok(body),
                Err(_) => b.await,
            },
            result = &mut b => match result {
                Ok(body) => Ok(body),
                Err(_) => a.await,
            },
        }
    }
}

/// Whether the client's throttle may refuse a call made with `options`:
/// any but a high-priority one.
pub(super) fn may_throttle(options: &crate::CallOptions) -> bool {
    crate::admission::Priority::of(&options.metadata) != crate::admission::Priority::High
}

/// The status of a call that found no server to take it, with why the
/// servers that failed last did (UNAUTHENTICATED when every one of them
/// failed TLS, so that a certificate problem reads as one).
fn none_available(servers: &[Arc<Member>]) -> Status {
    let failures: Vec<_> = servers
        .iter()
        .filter_map(|m| m.slot.last_failure().map(|f| (m.slot.addr(), f)))
        .collect();
    let mut message = format!("no server available among {}", servers.len());
    for (addr, (_, reason)) in failures.iter().take(3) {
        message.push_str(&format!("; {addr}: {reason}"));
    }
    let all_tls = !failures.is_empty()
        && failures.len() == servers.len()
        && failures
            .iter()
            .all(|(_, (f, _))| *f == quicall_transport::Failure::Authentication);
    let status = if all_tls {
        Status::unauthenticated(message)
    } else {
        Status::unavailable(message)
    };
    status.not_processed()
}

impl<X: Exchange> Call<'_, X> {
    fn attempt<'a>(
        &'a self,
        member: &'a Arc<Member>,
        head: Bytes,
    ) -> impl std::future::Future<Output = Result<X::Output, Status>> + 'a {
        attempt(
            &self.exchange,
            self.inner,
            member,
            (head, self.tail.clone()),
            self.deadline,
        )
    }
}

/// The status of a call that every server tried shed: RESOURCE_EXHAUSTED,
/// not processed, saying so (the servers' own message kept).
fn overloaded(status: Status, attempts: u32, servers: usize) -> Status {
    let message = format!(
        "overloaded: every attempt was shed ({attempts} attempts, {servers} servers): {}",
        status.message()
    );
    status.with_message(message)
}

/// The status of a call that may not be retried for want of budget.
fn exhausted(status: Status) -> Status {
    let message = format!("{} (not retried: retry budget exhausted)", status.message());
    status.with_message(message)
}

/// One attempt on one server. Whatever its end (an answer, a failure, or
/// the future dropped by a hedge or a deadline), the server's latency
/// estimate, health and stats learn from it.
async fn attempt<X: Exchange>(
    exchange: &X,
    inner: &Inner,
    member: &Arc<Member>,
    (head, tail): (Bytes, Chunks),
    deadline: Option<Instant>,
) -> Result<X::Output, Status> {
    if !member.health().try_admit(inner.now()) {
        return Err(Status::unavailable("server ejected").not_processed());
    }
    let mut outcome = Outcome {
        inner,
        member,
        start: Instant::now(),
        done: false,
    };
    let _in_flight = member.slot.begin_call();
    let conn = match member.slot.ready() {
        Some(conn) => conn,
        None => match connect_by(member, deadline).await {
            Ok(conn) => {
                // The handshake is not the server's latency: a first call
                // that paid for it would make the server look slow.
                outcome.start = Instant::now();
                conn
            }
            Err(status) => {
                outcome.failure(&status, None);
                return Err(status);
            }
        },
    };
    let span = attempt_span(member);
    let meter = member.meter.begin(outcome.start.into_std());
    let result = exchange.exchange(&conn, head, tail).await;
    let code = result.as_ref().err().map_or(Code::Ok, Status::code);
    meter.finish(code);
    crate::client::end_span(span, code, outcome.start);
    match &result {
        Ok(_) => outcome.answer(Code::Ok),
        Err(status) if is_server_failure(status) => outcome.failure(status, Some(&conn)),
        Err(status) if is_shed(status) => outcome.shed(status.code()),
        Err(status) => outcome.answer(status.code()),
    }
    result
}

/// RESOURCE_EXHAUSTED, not processed: the server shed the call (it is
/// past its capacity, or this client past its share of it). Safe to send
/// elsewhere.
pub(super) fn is_shed(status: &Status) -> bool {
    status.code() == Code::ResourceExhausted && status.was_not_processed()
}

/// Most a shed answer raises a server's latency estimate to.
const SHED_PENALTY_CAP: Duration = Duration::from_secs(1);

/// An attempt's `tracing` span (a retry or a hedge is one more), when a
/// subscriber wants it: the server, its status and latency.
fn attempt_span(member: &Member) -> Option<Box<tracing::Span>> {
    use tracing::field::Empty;
    if !tracing::enabled!(target: "quicall", tracing::Level::DEBUG) {
        return None;
    }
    Some(Box::new(tracing::debug_span!(
        target: "quicall",
        "quicall.attempt",
        server = %member.slot.addr(),
        status = Empty,
        latency_us = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
    )))
}

/// The slot's connection, opened if needed, before the call's deadline: a
/// call that runs out of time while the handshake is still unanswered says
/// so (nothing may be listening there), instead of a bare deadline.
async fn connect_by(member: &Member, deadline: Option<Instant>) -> Result<Connection, Status> {
    let connect = member.slot.connect();
    let result = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, connect).await {
            Ok(result) => result,
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "deadline passed while connecting to {}: no answer to the handshake \
                     (is a server listening there?)",
                    member.slot.addr()
                ))
                .not_processed());
            }
        },
        None => connect.await,
    };
    result.map_err(|e| transport_status(&e))
}

/// UNAVAILABLE (connection lost or refused, stream reset, draining) and
/// UNAUTHENTICATED say the server cannot serve; other statuses are answers.
fn is_server_failure(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unauthenticated)
}

/// What an attempt teaches about its server, recorded exactly once.
struct Outcome<'a> {
    inner: &'a Inner,
    member: &'a Arc<Member>,
    start: Instant,
    done: bool,
}

impl Outcome<'_> {
    fn answer(&mut self, code: Code) {
        self.done = true;
        let latency = self.start.elapsed();
        let now = self.inner.now();
        self.member.ewma().observe(latency, now);
        self.member.health().on_success(now);
        self.member.stats.record(latency, code);
        self.inner.throttle_learns(now, Throttle::accepted);
    }

    /// The server answered, but shed the call: it is alive, and past its
    /// capacity. Its latency estimate doubles at once (from no less than a
    /// new server's), and the fast refusal is not taken as its latency.
    fn shed(&mut self, code: Code) {
        self.done = true;
        let now = self.inner.now();
        let floor = self.inner.options.initial_latency;
        self.member
            .ewma()
            .overloaded(floor, SHED_PENALTY_CAP.max(floor), now);
        self.member.health().on_success(now);
        self.member.stats.record(self.start.elapsed(), code);
        self.inner.throttle_learns(now, Throttle::shed);
    }

    fn failure(&mut self, status: &Status, conn: Option<&Connection>) {
        self.done = true;
        let latency = self.start.elapsed();
        self.member.stats.record(latency, status.code());
        // A live connection answering UNAVAILABLE, not processed: the server
        // is draining. Send nothing new there; that is not a failure.
        if status.code() == Code::Unavailable
            && status.was_not_processed()
            && conn.is_some_and(|c| c.close_reason().is_none())
        {
            self.member.slot.mark_draining();
            self.member.health().on_success(self.inner.now());
            return;
        }
        let now = self.inner.now();
        let servers = self.inner.servers();
        let ejected = servers
            .iter()
            .filter(|m| m.health().is_ejected(now))
            .count();
        let allowed = may_eject(
            ejected,
            servers.len(),
            self.inner.options.ejection.max_ejected_share,
        );
        let ejected_now = self.member.health().on_failure(
            now,
            allowed,
            fastrand::f64(),
            &self.inner.options.ejection,
        );
        if ejected_now {
            tracing::warn!(addr = %self.member.slot.addr(), "server ejected: {status}");
            self.member.stats.add_ejection();
            self.inner.total.add_ejection();
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned (a hedge lost, or the deadline passed): the server
            // was at least this slow, and a probe slot must be given back.
            let now = self.inner.now();
            self.member.ewma().observe(self.start.elapsed(), now);
            self.member.health().release_probe();
        }
    }
}
