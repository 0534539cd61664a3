//! The methods served by the demo cluster and by `quicall serve`: `add`,
//! `sum`, `echo`, `whoami`, `count` and `each`. They show the shapes of a
//! message: a fixed-layout struct, an rkyv archive of variable length, raw
//! bytes, the caller's identity from mTLS, a server stream and a
//! bidirectional one.
//!
//! ```
//! use quicall::demo::{ADD, ECHO};
//! assert_eq!(ADD.name(), "calc.Calc/Add");
//! assert!(ECHO.is_idempotent());
//! let router = quicall::demo::router();
//! assert_eq!(router.methods().count(), 6);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quicall_rpc::{Chunks, Context, Method, Msg, Requests, Rkyv, Router, Status, stream};
use zerocopy::little_endian::{I64, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Request of [`ADD`]: two signed 64-bit integers (16 bytes, little-endian).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AddRequest {
    /// First addend.
    pub a: I64,
    /// Second addend.
    pub b: I64,
}

/// Response of [`ADD`]: the sum (8 bytes, little-endian).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AddResponse {
    /// `a + b`.
    pub sum: I64,
}

/// Adds two integers; OUT_OF_RANGE if the sum overflows.
pub const ADD: Method<AddRequest, AddResponse> = Method::new("calc.Calc/Add").idempotent().exact();

/// Sums a list of signed integers, sent as an rkyv archive of a `Vec<i64>`
/// (any length, read in place); OUT_OF_RANGE if the sum overflows.
pub const SUM: Method<Rkyv<Vec<i64>>, Rkyv<i64>> = Method::new("calc.Calc/Sum").idempotent();

/// Returns the request bytes unchanged (without copying them). Hedged by a
/// [`Cluster`](quicall_rpc::cluster::Cluster) after its 95th percentile latency.
pub const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo")
    .idempotent()
    .hedged(quicall_rpc::Hedge::Percentile(0.95));

/// [`ECHO`] as the demo server serves it: the same method (the same name
/// and identifier, the same bytes on the wire), its body taken and sent
/// back as the chunks QUIC delivered, never gathered into one buffer. A
/// caller may use either.
pub const ECHO_CHUNKS: Method<Chunks, Chunks> = Method::new("demo.Echo/Echo")
    .idempotent()
    .hedged(quicall_rpc::Hedge::Percentile(0.95));

/// Returns the caller's certificate name, as the server verified it.
pub const WHOAMI: Method<[u8], [u8]> = Method::new("demo.Echo/WhoAmI").idempotent();

/// Streams the integers from 0 up to (not including) the request, each a
/// little-endian `u64` message: a server-streaming method (docs/wire.md
/// section 15).
pub const COUNT: Method<U64, U64> = Method::new("demo.Count/Up").server_streaming().idempotent();

/// The handler of [`COUNT`].
pub async fn count(
    _ctx: Context,
    req: Msg<U64>,
) -> Result<impl stream::Stream<Item = Result<U64, Status>> + Send + 'static, Status> {
    Ok(stream::iter((0..req.get()).map(|n| Ok(U64::new(n)))))
}

/// Sends each request message back as a response message, in order, as
/// it arrives: a bidirectional method (docs/wire.md section 16).
pub const EACH: Method<[u8], [u8]> = Method::new("demo.Echo/Each").bidi_streaming();

/// The handler of [`EACH`]: the requests are the responses (each read when
/// the server is ready to send it, so a caller that stops reading stops
/// being read).
pub async fn each(_ctx: Context, requests: Requests<[u8]>) -> Result<Requests<[u8]>, Status> {
    Ok(requests)
}

/// The handler of [`ADD`].
pub async fn add(_ctx: Context, req: Msg<AddRequest>) -> Result<AddResponse, Status> {
    let sum = req
        .a
        .get()
        .checked_add(req.b.get())
        .ok_or_else(|| Status::new(quicall_rpc::Code::OutOfRange, "sum overflows i64"))?;
    Ok(AddResponse { sum: I64::new(sum) })
}

/// The handler of [`SUM`].
pub async fn sum(_ctx: Context, req: Msg<Rkyv<Vec<i64>>>) -> Result<i64, Status> {
    req.iter()
        .try_fold(0i64, |sum, x| sum.checked_add(x.to_native()))
        .ok_or_else(|| Status::new(quicall_rpc::Code::OutOfRange, "sum overflows i64"))
}

/// The handler of [`ECHO`] (as [`ECHO_CHUNKS`]): the request's bytes, and
/// its metadata sent back as the response's (to a caller that reads it).
pub async fn echo(ctx: Context, req: Msg<Chunks>) -> Result<Msg<Chunks>, Status> {
    if !ctx.metadata().is_empty() {
        // Checked when received; shared, not copied.
        let _ = ctx.merge_reply_metadata(ctx.metadata());
    }
    Ok(req)
}

/// The handler of [`WHOAMI`].
pub async fn whoami(ctx: Context, _req: Msg<[u8]>) -> Result<String, Status> {
    match ctx.peer() {
        Some(peer) => Ok(peer.name().to_owned()),
        None => Err(Status::unauthenticated("no client certificate")),
    }
}

/// A router serving [`ADD`], [`SUM`], [`ECHO`], [`WHOAMI`], [`COUNT`] and
/// [`EACH`].
pub fn router() -> Router {
    Router::new()
        .route(&ADD, add)
        .and_then(|r| r.route(&SUM, sum))
        .and_then(|r| r.route(&ECHO_CHUNKS, echo))
        .and_then(|r| r.route(&WHOAMI, whoami))
        .and_then(|r| r.route_server_stream(&COUNT, count))
        .and_then(|r| r.route_bidi_stream(&EACH, each))
        .expect("demo methods have distinct identifiers")
}

/// Knobs of a demo server, turned while it runs: a service time added to
/// every call (to show how clients steer around a slow server).
///
/// ```
/// use quicall::demo::Knobs;
/// use std::time::Duration;
/// let knobs = Knobs::default();
/// knobs.set_service_time(Duration::from_millis(20));
/// assert_eq!(knobs.service_time(), Duration::from_millis(20));
/// ```
#[derive(Debug, Default)]
pub struct Knobs {
    service_us: AtomicU64,
}

impl Knobs {
    /// Sets the time every call spends in the server before it is answered.
    pub fn set_service_time(&self, time: Duration) {
        self.service_us
            .store(time.as_micros() as u64, Ordering::Relaxed);
    }

    /// The time every call spends in the server.
    pub fn service_time(&self) -> Duration {
        Duration::from_micros(self.service_us.load(Ordering::Relaxed))
    }

    async fn serve_time(&self) {
        let time = self.service_time();
        if !time.is_zero() {
            tokio::time::sleep(time).await;
        }
    }
}

/// [`router`], with every call first spending the service time of `knobs`
/// (a stream, before its first message).
pub fn router_with(knobs: Arc<Knobs>) -> Router {
    let (k5, k6) = (knobs.clone(), knobs.clone());
    let (k1, k2, k3, k4) = (knobs.clone(), knobs.clone(), knobs.clone(), knobs);
    Router::new()
        .route(&ADD, move |ctx, req| {
            let knobs = k1.clone();
            async move {
                knobs.serve_time().await;
                add(ctx, req).await
            }
        })
        .and_then(|r| {
            r.route(&ECHO_CHUNKS, move |ctx, req| {
                let knobs = k2.clone();
                async move {
                    knobs.serve_time().await;
                    echo(ctx, req).await
                }
            })
        })
        .and_then(|r| {
            r.route(&WHOAMI, move |ctx, req| {
                let knobs = k3.clone();
                async move {
                    knobs.serve_time().await;
                    whoami(ctx, req).await
                }
            })
        })
        .and_then(|r| {
            r.route(&SUM, move |ctx, req| {
                let knobs = k4.clone();
                async move {
                    knobs.serve_time().await;
                    sum(ctx, req).await
                }
            })
        })
        .and_then(|r| {
            r.route_server_stream(&COUNT, move |ctx, req| {
                let knobs = k5.clone();
                async move {
                    knobs.serve_time().await;
                    count(ctx, req).await
                }
            })
        })
        .and_then(|r| {
            r.route_bidi_stream(&EACH, move |ctx, requests| {
                let knobs = k6.clone();
                async move {
                    knobs.serve_time().await;
                    each(ctx, requests).await
                }
            })
        })
        .expect("demo methods have distinct identifiers")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identifiers docs/wire.md gives for the demo methods.
    #[test]
    fn demo_method_ids_are_the_specified_ones() {
        assert_eq!(ADD.id(), 0xafb4_42d5_7b90_fc97);
        assert_eq!(ECHO.id(), 0xe016_e9c0_3b12_8d43);
        assert_eq!(ECHO_CHUNKS.id(), ECHO.id());
        assert_eq!(WHOAMI.id(), 0x24a5_ffc5_4e15_aa5b);
        assert_eq!(SUM.id(), 0x4af9_1bd5_d354_a41f);
        assert_eq!(COUNT.id(), 0x8cc8_3f87_4231_5d65);
        assert_eq!(EACH.id(), 0xceb3_7ac0_3135_021f);
    }

    /// The bytes docs/wire.md section 10 gives for a `calc.Calc/Sum` body.
    #[test]
    fn sum_body_is_the_specified_one() {
        let body = quicall_rpc::encode::<Rkyv<Vec<i64>>>(vec![1i64, 2, 3]).unwrap();
        let mut expected = Vec::new();
        for x in [1i64, 2, 3] {
            expected.extend_from_slice(&x.to_le_bytes());
        }
        expected.extend_from_slice(&[0; 8]); // padding: the root at 32
        expected.extend_from_slice(&(-32i32).to_le_bytes()); // to the elements
        expected.extend_from_slice(&3u32.to_le_bytes()); // length
        expected.extend_from_slice(&8u32.to_le_bytes()); // root size
        assert_eq!(&body[..], &expected[..]);
        let answer = quicall_rpc::encode::<Rkyv<i64>>(6i64).unwrap();
        assert_eq!(&answer[..], &[6, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
    }
}
