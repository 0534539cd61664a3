//! One trait for "something that makes calls", so that code can be generic
//! over a [`Client`] and a [`Cluster`].

use std::future::Future;

use crate::cluster::Cluster;
use crate::{
    CallOptions, Client, ClientStream, Encode, Message, Method, Msg, RequestSink, ResponseStream,
    Status,
};

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

    /// Calls the server-streaming `method` (see [`Client::server_stream`]).
    fn server_stream<Req, Resp, E>(
        &self,
        method: &Method<Req, Resp>,
        request: E,
        options: CallOptions,
    ) -> impl Future<Output = Result<ResponseStream<Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        E: Encode<Req> + Send;

    /// Calls the client-streaming `method` (see [`Client::client_stream`]).
    fn client_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> impl Future<Output = Result<ClientStream<Req, Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized;

    /// Calls the bidirectional `method` (see [`Client::bidi_stream`]).
    fn bidi_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> impl Future<Output = Result<(RequestSink<Req>, ResponseStream<Resp>), Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized;
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

    fn server_stream<Req, Resp, E>(
        &self,
        method: &Method<Req, Resp>,
        request: E,
        options: CallOptions,
    ) -> impl Future<Output = Result<ResponseStream<Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        E: Encode<Req> + Send,
    {
        Client::server_stream(self, method, request, options)
    }

    fn client_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> impl Future<Output = Result<ClientStream<Req, Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        Client::client_stream(self, method, options)
    }

    fn bidi_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> impl Future<Output = Result<(RequestSink<Req>, ResponseStream<Resp>), Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        Client::bidi_stream(self, method, options)
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

    fn server_stream<Req, Resp, E>(
        &self,
        method: &Method<Req, Resp>,
        request: E,
        options: CallOptions,
    ) -> impl Future<Output = Result<ResponseStream<Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        E: Encode<Req> + Send,
    {
        Cluster::server_stream(self, method, request, options)
    }

    fn client_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> impl Future<Output = Result<ClientStream<Req, Resp>, Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        Cluster::client_stream(self, method, options)
    }

    fn bidi_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> impl Future<Output = Result<(RequestSink<Req>, ResponseStream<Resp>), Status>> + Send
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        Cluster::bidi_stream(self, method, options)
    }
}
