//! One trait for "something that makes calls", so that code can be generic
//! over a [`Client`] and a [`Cluster`].

use std::future::Future;

use crate::cluster::Cluster;
use crate::{CallOptions, Client, Encode, Message, Method, Msg, Status};

/// Something that makes calls: a [`Client`] (one server) or a [`Cluster`]
/// (many). Code written against `Caller` (a typed stub, a helper) works with
/// both.
///
/// ```no_run
/// use quicall_rpc::{Caller, Method, Status};
/// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo").idempotent();
///
/// async fn shout(caller: &impl Caller, text: &str) -> Result<String, Status> {
///     let reply = caller.call(&ECHO, text.to_uppercase()).await?;
///     Ok(String::from_utf8_lossy(&reply).into_owned())
/// }
/// # async fn run(client: quicall_rpc::Client, cluster: quicall_rpc::cluster::Cluster) -> Result<(), Status> {
/// shout(&client, "one server").await?;
/// shout(&cluster, "many servers").await?;
/// # Ok(()) }
/// ```
pub trait Caller: Send + Sync {
    /// Calls `method` with `request` and per-call options.
    fn call_with<Req, Resp, E>(
        &self,
        method: &Method<Req, Resp>,
        request: E,
        options: CallOptions,
    ) -> impl Future<Output = Result<Msg<Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        E: Encode<Req> + Send;

    /// Calls `method` with `request` and the default options.
    fn call<Req, Resp, E>(
        &self,
        method: &Method<Req, Resp>,
        request: E,
    ) -> impl Future<Output = Result<Msg<Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        E: Encode<Req> + Send,
    {
        self.call_with(method, request, CallOptions::default())
    }
}

impl Caller for Client {
    fn call_with<Req, Resp, E>(
        &self,
        method: &Method<Req, Resp>,
        request: E,
        options: CallOptions,
    ) -> impl Future<Output = Result<Msg<Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        E: Encode<Req> + Send,
    {
        Client::call_with(self, method, request, options)
    }
}

impl Caller for Cluster {
    fn call_with<Req, Resp, E>(
        &self,
        method: &Method<Req, Resp>,
        request: E,
        options: CallOptions,
    ) -> impl Future<Output = Result<Msg<Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        E: Encode<Req> + Send,
    {
        Cluster::call_with(self, method, request, options)
    }
}
