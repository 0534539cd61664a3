use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use quicall_transport::PeerIdentity;

/// Who may call: a policy over the caller's verified certificate identity,
/// checked after the method is found and before anything else is done for
/// the call. A caller that is not allowed gets PERMISSION_DENIED and the
/// handler never runs.
///
/// ```
/// use quicall_rpc::{Access, Method, Router, Status};
/// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo");
/// const ADMIN: Method<[u8], [u8]> = Method::new("demo.Admin/Reset");
///
/// let router = Router::new()
///     .route(&ECHO, |_ctx, msg| async move { Ok::<_, Status>(msg) })?
///     .route(&ADMIN, |_ctx, _msg| async move { Ok::<_, Status>("done") })?
///     // Every method: callers named in the list...
///     .access(Access::names(["alice", "bob", "ops"]))
///     // ...and ADMIN only for "ops".
///     .method_access(&ADMIN, Access::names(["ops"]))?;
/// # Ok::<(), quicall_rpc::RouteError>(())
/// ```
#[derive(Clone, Default)]
pub enum Access {
    /// Any caller the TLS layer let in (the default).
    #[default]
    Any,
    /// Callers with a certificate whose common name or one of whose DNS
    /// names is in the list.
    Names(Arc<[String]>),
    /// Callers for whom the predicate holds. It receives the verified
    /// identity (`None` for a caller without a certificate, possible only when
    /// the server does not require one) and the method name. A predicate
    /// that panics denies the call (and the panic is logged).
    Custom(Arc<AccessFn>),
}

/// A predicate over a caller's verified identity and the method name.
pub type AccessFn = dyn Fn(Option<&PeerIdentity>, &str) -> bool + Send + Sync;

impl Access {
    /// Callers whose certificate carries one of `names`.
    pub fn names<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Access::Names(names.into_iter().map(Into::into).collect())
    }

    /// Callers for whom `allow(identity, method)` holds.
    pub fn custom(
        allow: impl Fn(Option<&PeerIdentity>, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Access::Custom(Arc::new(allow))
    }

    /// Whether `peer` may call `method`.
    pub fn allows(&self, peer: Option<&PeerIdentity>, method: &str) -> bool {
        match self {
            Access::Any => true,
            Access::Names(names) => peer.is_some_and(|p| {
                names.iter().any(|n| {
                    p.common_name() == Some(n.as_str()) || p.dns_names().iter().any(|d| d == n)
                })
            }),
            // A predicate that panics denies: a policy's bug shuts its
            // door, and only this call's.
            Access::Custom(allow) => catch_unwind(AssertUnwindSafe(|| allow(peer, method)))
                .unwrap_or_else(|panic| {
                    tracing::error!(
                        method,
                        "access predicate panicked (the call is denied): {}",
                        super::unwind::panic_message(&*panic)
                    );
                    false
                }),
        }
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Any => f.write_str("Any"),
            Access::Names(names) => f.debug_tuple("Names").field(names).finish(),
            Access::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}
