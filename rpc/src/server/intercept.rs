//! Server interceptors: code that runs before every handler (and may
//! refuse the call or attach values for it) and sees every outcome.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use quicall_transport::PeerIdentity;

use super::unwind::{CatchUnwind, panic_message};
use crate::{Code, Context, Status};

/// A future an interceptor returns.
pub type InterceptFuture = Pin<Box<dyn Future<Output = Result<Context, Status>> + Send>>;

/// Runs around every call a [`Router`](crate::Router) serves.
///
/// [`before`](Interceptor::before) runs after the call's header,
/// metadata and body have been received and checked, before the handler:
/// it sees the method, the verified peer and the metadata in the
/// [`Context`], and either gives the context back (perhaps with values
/// attached through [`Context::extensions_mut`]) or refuses the call with
/// a status: then the handler never runs and the answer is marked
/// NOT_PROCESSED. Interceptors run in the order they were added; the first
/// refusal ends the call. The call's deadline covers them.
/// [`after`](Interceptor::after) sees every outcome, refusals included,
/// in the same order. A panic in `before` (or in its future) refuses the
/// call with INTERNAL; one in `after` is logged, and the answer stands.
///
/// Why not `tower`: a call here is a typed method with a body read in
/// place, cancelled by dropping its future; tower's `Service<Request>`
/// (its request type, `poll_ready`, boxed layers) would cost an
/// allocation and a copy per call, which an interceptor does not.
///
/// A closure `Fn(Context) -> impl Future<Output = Result<Context, Status>>`
/// is an interceptor:
///
/// ```
/// use quicall_rpc::{Context, Method, Router, Status};
///
/// #[derive(Clone)]
/// struct Tenant(String);
///
/// const WHO: Method<[u8], [u8]> = Method::new("demo.Tenant/Who");
///
/// let router = Router::new()
///     .intercept(|mut ctx: Context| async move {
///         let token = ctx.metadata().get_str("authorization")
///             .ok_or_else(|| Status::unauthenticated("no token"))?;
///         let tenant = token.strip_prefix("Bearer tenant-")
///             .ok_or_else(|| Status::unauthenticated("bad token"))?
///             .to_owned();
///         ctx.extensions_mut().insert(Tenant(tenant));
///         Ok(ctx)
///     })
///     .route(&WHO, |ctx: Context, _req| async move {
///         let tenant = ctx.extensions().get::<Tenant>().map(|t| t.0.clone());
///         Ok::<_, Status>(tenant.unwrap_or_default())
///     })?;
/// # Ok::<(), quicall_rpc::RouteError>(())
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Before the handler: the context back, or the status that refuses
    /// the call.
    fn before(&self, ctx: Context) -> InterceptFuture;

    /// After the call: its outcome. Nothing by default.
    fn after(&self, outcome: &Outcome<'_>) {
        let _ = outcome;
    }
}

impl<F, Fut> Interceptor for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Context, Status>> + Send + 'static,
{
    fn before(&self, ctx: Context) -> InterceptFuture {
        Box::pin(self(ctx))
    }
}

/// How a call ended, as interceptors see it.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The method called.
    pub method: &'static str,
    /// The caller's verified identity.
    pub peer: Option<&'a PeerIdentity>,
    /// The status answered (OK on success).
    pub code: Code,
    /// From the header's arrival to the answer.
    pub elapsed: Duration,
}

/// Runs `interceptors` in order; a panic in one refuses the call with
/// INTERNAL.
pub(crate) async fn before(
    interceptors: &[Arc<dyn Interceptor>],
    mut ctx: Context,
) -> Result<Context, Status> {
    for interceptor in interceptors {
        // `before` itself may panic, before it makes its future.
        let entered = catch_unwind(AssertUnwindSafe(|| interceptor.before(ctx)));
        let outcome = match entered {
            Ok(future) => CatchUnwind(future).await,
            Err(panic) => Err(panic),
        };
        ctx = match outcome {
            Ok(result) => result?,
            Err(panic) => {
                tracing::error!("interceptor panicked: {}", panic_message(&*panic));
                return Err(Status::internal("interceptor panicked"));
            }
        };
    }
    Ok(ctx)
}

/// Tells `interceptors` of an outcome.
pub(crate) fn after(interceptors: &[Arc<dyn Interceptor>], outcome: &Outcome<'_>) {
    for interceptor in interceptors {
        // An observer's panic changes nothing of the call's answer.
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| interceptor.after(outcome))) {
            tracing::error!(
                method = outcome.method,
                "interceptor panicked after the call: {}",
                panic_message(&*panic)
            );
        }
    }
}
