use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::Extensions;

use quicall_transport::PeerIdentity;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::{Metadata, MetadataError};

/// What a handler knows about its call: who made it, by when it must be
/// answered, and whether it was abandoned.
///
/// When the caller drops the call or the deadline passes, the server drops
/// the handler's future (so an `.await` in it simply never returns) and
/// cancels [`Context::cancelled`], which work the handler spawned can watch.
///
/// ```
/// use quicall_rpc::{Context, Method, Router, Status};
/// const WHOAMI: Method<[u8], [u8]> = Method::new("demo.Who/AmI");
///
/// let router = Router::new().route(&WHOAMI, |ctx: Context, _req| async move {
///     let peer = ctx.peer().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
///     Ok::<_, Status>(format!("{} ({:?} left)", peer.name(), ctx.remaining()))
/// })?;
/// # Ok::<(), quicall_rpc::RouteError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) peer: Option<Arc<PeerIdentity>>,
    pub(crate) remote: SocketAddr,
    pub(crate) deadline: Instant,
    pub(crate) method: &'static str,
    pub(crate) cancel: CancellationToken,
    /// Metadata, response metadata and extensions: boxed, and only when a
    /// call has any of them, so that a call without keeps a small context.
    pub(crate) extras: Option<Box<Extras>>,
}

/// What a call may carry beyond its basics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    pub(crate) metadata: Metadata,
    /// The response's metadata, when the caller reads it (its request had
    /// the METADATA flag).
    pub(crate) reply_metadata: Option<Arc<Mutex<Metadata>>>,
    pub(crate) extensions: Extensions,
}

impl Context {
    /// The caller's verified certificate identity, or `None` for a client
    /// without a certificate (possible only when the server does not require one).
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_deref()
    }

    /// The caller's UDP address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The instant by which the call must be answered: the caller's budget
    /// (or the server's default), capped by the server's maximum.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left until the deadline.
    pub fn remaining(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The name of the method called.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// Whether the call was abandoned (caller gone or deadline passed).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the call is abandoned.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The metadata the caller sent with the call (empty if none).
    pub fn metadata(&self) -> &Metadata {
        static NONE: Metadata = Metadata::EMPTY;
        self.extras.as_ref().map_or(&NONE, |e| &e.metadata)
    }

    /// Sets `key` to `value` in the metadata sent back with the answer
    /// (success or failure). `Ok(false)` when the caller does not read
    /// response metadata (it did not say so in its request): nothing is
    /// sent, so that its answer stays in the format it expects.
    pub fn set_reply_metadata(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, MetadataError> {
        let Some(reply) = self.extras.as_ref().and_then(|e| e.reply_metadata.as_ref()) else {
            return Ok(false);
        };
        let mut reply = reply.lock().unwrap_or_else(|e| e.into_inner());
        reply.insert(key, value)?;
        Ok(true)
    }

    /// Sets every entry of `metadata` in the metadata sent back with the
    /// answer (shared, not copied, when none was set before). `false` when
    /// the caller does not read response metadata.
    pub fn merge_reply_metadata(&self, metadata: &Metadata) -> Result<bool, MetadataError> {
        let Some(reply) = self.extras.as_ref().and_then(|e| e.reply_metadata.as_ref()) else {
            return Ok(false);
        };
        reply
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(metadata)?;
        Ok(true)
    }

    /// The metadata sent back with the answer so far.
    pub fn reply_metadata(&self) -> Metadata {
        self.extras
            .as_ref()
            .and_then(|e| e.reply_metadata.as_ref())
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Typed values interceptors attached to the call (a tenant resolved
    /// from a token, say).
    pub fn extensions(&self) -> &Extensions {
        static NONE: std::sync::LazyLock<Extensions> = std::sync::LazyLock::new(Extensions::new);
        self.extras.as_ref().map_or(&NONE, |e| &e.extensions)
    }

    /// The typed values, to attach one (what an interceptor does).
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extras.get_or_insert_with(Default::default).extensions
    }

    /// A token that is cancelled when the call is abandoned, for spawned work.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}
