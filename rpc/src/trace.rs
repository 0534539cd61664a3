//! W3C trace context across calls: a call made while a traced call is
//! being served continues its trace.
//!
//! A server reads the caller's `traceparent` metadata (W3C Trace Context:
//! `00-<trace id>-<parent span id>-<flags>`) and serves the call as a new
//! span of that trace (a call without one is in no trace, or with
//! OpenTelemetry below the root of a new one); its handler runs
//! with that span as the current trace, so that every call the handler
//! makes, through any [`Client`](crate::Client) or
//! [`Cluster`](crate::cluster::Cluster), sends `traceparent` naming its own
//! new span, a child of the handler's. Both sides record a `tracing` span
//! per call with the trace and span ids, the method, the peer, the status
//! and the latency, so that logs and traces from every service line up.
//!
//! With feature `otel`, when the program's subscriber has a
//! `tracing-opentelemetry` layer, those spans are OpenTelemetry spans with
//! the very ids sent in `traceparent` (the server's span is the remote
//! child of the caller's; a client's span inside one of the program's own
//! OpenTelemetry spans is its child), so that exported traces cross
//! services; without such a layer nothing changes.

use std::fmt;
use std::future::Future;

/// A span of a trace: the trace's id, this span's id, and whether the
/// trace is sampled.
///
/// ```
/// use quicall_rpc::TraceContext;
/// let parent = TraceContext::parse(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
/// assert_eq!(parent.trace_id(), 0x0af7651916cd43dd8448eb211c80319c);
/// let child = parent.child();
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_ne!(child.span_id(), parent.span_id());
/// assert_eq!(child.traceparent().len(), 55);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace: random trace and span ids, sampled.
    pub fn root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            sampled: true,
        }
    }

    /// A new span of the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// Reads a W3C `traceparent` value (version 00; later versions by
    /// their first four fields, as the specification says). `None` for
    /// anything malformed, or all-zero ids.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let well_formed = version.len() == 2
            && version != "ff"
            && trace.len() == 32
            && span.len() == 16
            && flags.len() == 2
            && (version != "00" || parts.next().is_none());
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !well_formed || ![version, trace, span, flags].iter().all(|s| lower_hex(s)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The W3C `traceparent` value naming this span.
    pub fn traceparent(&self) -> String {
        let bytes = self.traceparent_bytes();
        // Only ASCII digits, letters and dashes.
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The `traceparent` value as bytes, made without formatting or
    /// allocating (every traced call sends one).
    pub(crate) fn traceparent_bytes(&self) -> [u8; 55] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for (i, slot) in out[3..35].iter_mut().enumerate() {
            *slot = HEX[(self.trace_id >> (124 - 4 * i) & 0xf) as usize];
        }
        for (i, slot) in out[36..52].iter_mut().enumerate() {
            *slot = HEX[(self.span_id >> (60 - 4 * i) & 0xf) as usize];
        }
        out[54] = b'0' + u8::from(self.sampled);
        out
    }

    /// The trace's id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// Whether the trace is sampled (flag 01).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The trace this task is serving or was given by [`TraceContext::scope`].
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|current| *current).ok()
    }

    /// Runs `fut` with `self` as the current trace: calls it makes are
    /// children of this span. Also how a caller starts a trace:
    /// `TraceContext::root().scope(async { ... })`.
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }

    /// A span from its ids (OpenTelemetry's).
    #[cfg(feature = "otel")]
    pub(crate) fn from_ids(trace_id: u128, span_id: u64, sampled: bool) -> Self {
        Self {
            trace_id,
            span_id,
            sampled,
        }
    }

    /// Records this span's ids, and its parent's if known, on a `tracing`
    /// span (fields `trace_id`, `span_id`, `parent_id`, in hex).
    pub(crate) fn record_on(&self, span: &tracing::Span, parent: Option<&TraceContext>) {
        span.record("trace_id", tracing::field::display(Hex128(self.trace_id)));
        span.record("span_id", tracing::field::display(Hex64(self.span_id)));
        if let Some(parent) = parent {
            span.record("parent_id", tracing::field::display(Hex64(parent.span_id)));
        }
    }

    /// Runs `f` with `self` as the current trace (the synchronous part of
    /// a handler, which makes its future).
    pub(crate) fn enter<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

/// The span a call is made or served as, a child of `parent` (the trace
/// the caller is in): with OpenTelemetry's ids when its layer records the
/// call's `span` (feature `otel`), so that exported spans and the
/// `traceparent` sent on agree; otherwise a new span id, and nothing
/// outside a trace. `inherit`: a client's span may take its parent from
/// the program's OpenTelemetry span instead of `parent`.
pub(crate) fn own_span(
    span: Option<&tracing::Span>,
    parent: Option<TraceContext>,
    inherit: bool,
) -> Option<TraceContext> {
    #[cfg(feature = "otel")]
    if let Some((span, Some((own, linked)))) =
        span.map(|span| (span, crate::otel::link(span, parent, inherit)))
    {
        own.record_on(span, linked.as_ref());
        return Some(own);
    }
    let _ = inherit;
    let own = parent.map(|parent| parent.child())?;
    if let Some(span) = span {
        own.record_on(span, parent.as_ref());
    }
    Some(own)
}

/// A trace id in hex, formatted only if a subscriber records it.
struct Hex128(u128);

impl fmt::Display for Hex128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A span id in hex.
struct Hex64(u64);

impl fmt::Display for Hex64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

fn nonzero_u128() -> u128 {
    (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(1..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_the_malformed() {
        let root = TraceContext::root();
        assert_eq!(
            TraceContext::parse(root.traceparent().as_bytes()),
            Some(root)
        );
        let spec = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(spec).unwrap();
        assert_eq!(parsed.traceparent().as_bytes(), spec);
        assert_eq!(
            parsed.traceparent(),
            format!("00-{:032x}-{:016x}-01", parsed.trace_id(), parsed.span_id())
        );
        let unsampled = b"00-00000000000000000000000000000001-8000000000000000-00";
        assert_eq!(
            &TraceContext::parse(unsampled).unwrap().traceparent_bytes(),
            unsampled
        );
        assert!(parsed.is_sampled());
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"",
            b"\xff",
        ] {
            assert_eq!(
                TraceContext::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version with more fields: its first four are read.
        assert!(
            TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }

    #[tokio::test]
    async fn the_current_trace_is_scoped_to_its_task() {
        assert_eq!(TraceContext::current(), None);
        let root = TraceContext::root();
        let seen = root.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(root));
        assert_eq!(TraceContext::current(), None);
    }
}
