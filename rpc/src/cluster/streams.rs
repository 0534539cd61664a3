//! Streaming calls through a cluster: each pinned to one server once it is
//! under way. A server stream is sent again elsewhere only when it failed
//! before its first response message and repeating it is safe; a call
//! whose requests are a stream only when it failed before it reached a
//! server (its requests are not kept).

use std::sync::Arc;

use bytes::Bytes;
use quicall_transport::Connection;

use super::Cluster;
use super::attempt::{Call, Exchange, may_throttle};
use crate::client::{
    Ending, Timing, begin_call, begin_stream, bidi_halves, check_shape, client_stream_on,
    first_part, open_on, response_stream,
};
use crate::meter::Flow;
use crate::{
    CallOptions, Chunks, ClientStream, Code, Encode, Message, Method, RequestSink, ResponseStream,
    Shape, Status,
};

/// A server stream's attempt: open, send the request, read up to the
/// first message (or the end).
struct FirstPart {
    method: &'static str,
    max_message: u32,
    timing: Timing,
}

impl Exchange for FirstPart {
    type Output = crate::client::Responses;

    fn exchange<'a>(
        &'a self,
        conn: &'a Connection,
        head: Bytes,
        tail: Chunks,
    ) -> impl std::future::Future<Output = Result<Self::Output, Status>> + Send + 'a {
        first_part(
            conn,
            (head, tail),
            self.method,
            self.max_message,
            self.timing,
        )
    }
}

/// A request stream's attempt: open and send the header.
struct Opening;

impl Exchange for Opening {
    type Output = crate::client::CallStream;

    fn exchange<'a>(
        &'a self,
        conn: &'a Connection,
        head: Bytes,
        tail: Chunks,
    ) -> impl std::future::Future<Output = Result<Self::Output, Status>> + Send + 'a {
        open_on(conn, head, tail, false)
    }
}

impl Cluster {
    /// Calls the server-streaming `method` on one of the servers. The call
    /// is pinned to the first server that sends a response message (or
    /// ends the stream); before that, a failure is retried on another
    /// server as a unary call would be (if the method is idempotent or the
    /// server did not process it). The deadline covers the whole stream.
    ///
    /// ```no_run
    /// # use quicall_rpc::{CallOptions, Method, Status, cluster::Cluster};
    /// # async fn run(cluster: Cluster) -> Result<(), Status> {
    /// const LIST: Method<[u8], [u8]> = Method::new("kv.Store/List").server_streaming().idempotent();
    /// let mut keys = cluster.server_stream(&LIST, "user/", CallOptions::default()).await?;
    /// while let Some(key) = keys.message().await? {
    ///     println!("{}", String::from_utf8_lossy(&key));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn server_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
    ) -> Result<ResponseStream<Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        check_shape(method, Shape::ServerStreaming)?;
        let inner = &*self.inner;
        let timing = Timing::new(options.deadline.or(inner.options.client.default_deadline));
        let throttled = may_throttle(&options);
        let (span, framed) = begin_call(
            method,
            request,
            timing.budget(),
            options.metadata,
            &inner.options.client.interceptors,
            false,
        );
        let exchange = FirstPart {
            method: method.name(),
            max_message: inner.options.client.max_response_size,
            timing,
        };
        let opened = self
            .open_stream(
                method,
                framed,
                exchange,
                timing,
                (method.is_idempotent(), throttled),
            )
            .await;
        let ending = Ending::new(span, &inner.options.client.interceptors, method.name());
        let (responses, ending) = opened_with(opened, ending, timing)?;
        let responses = responses.with_flow(self.flow(method)).with_ending(ending);
        Ok(response_stream(responses, method))
    }

    /// The counters of `method`'s messages.
    fn flow<Req, Resp>(&self, method: &Method<Req, Resp>) -> Arc<Flow>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        let entry = self.inner.method_entry(method.id(), method.name());
        entry.meter.flow().clone()
    }

    /// Calls the client-streaming `method` on one of the servers, pinned to
    /// it from the start (retried elsewhere only if no server could be
    /// reached). See [`Client::client_stream`](crate::Client::client_stream).
    pub async fn client_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> Result<ClientStream<Req, Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        check_shape(method, Shape::ClientStreaming)?;
        let (call, timing, ending) = self.open_requests(method, options).await?;
        let max = self.inner.options.client.max_response_size;
        let flow = Some(self.flow(method));
        Ok(client_stream_on(call, method, (timing, ending), max, flow))
    }

    /// Calls the bidirectional `method` on one of the servers, pinned to it
    /// from the start (retried elsewhere only if no server could be
    /// reached). See [`Client::bidi_stream`](crate::Client::bidi_stream).
    pub async fn bidi_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> Result<(RequestSink<Req>, ResponseStream<Resp>), Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        check_shape(method, Shape::Bidirectional)?;
        let (call, timing, ending) = self.open_requests(method, options).await?;
        let max = self.inner.options.client.max_response_size;
        let flow = Some(self.flow(method));
        Ok(bidi_halves(call, method, (timing, ending), max, flow))
    }

    async fn open_requests<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> Result<(crate::client::CallStream, Timing, Ending), Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        let inner = &*self.inner;
        let timing = Timing::new(options.deadline.or(inner.options.client.default_deadline));
        let throttled = may_throttle(&options);
        let (span, head) = begin_stream(
            method,
            timing.budget(),
            options.metadata,
            &inner.options.client.interceptors,
        );
        let framed = head.map(|head| (head, Chunks::new()));
        // Requests are not kept: only a call that never reached a server
        // (not processed) is tried elsewhere.
        let opened = self
            .open_stream(method, framed, Opening, timing, (false, throttled))
            .await;
        let ending = Ending::new(span, &inner.options.client.interceptors, method.name());
        let (call, ending) = opened_with(opened, ending, timing)?;
        Ok((call, timing, ending))
    }

    /// Sends the call's first bytes to a server picked as for a unary call,
    /// retrying what the rules allow, all within the deadline.
    async fn open_stream<Req, Resp, X: Exchange>(
        &self,
        method: &Method<Req, Resp>,
        framed: Result<crate::client::Framed, Status>,
        exchange: X,
        timing: Timing,
        (idempotent, throttled): (bool, bool),
    ) -> Result<X::Output, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        let inner = &*self.inner;
        let (head, tail) = framed?;
        let entry = inner.method_entry(method.id(), method.name());
        entry.stats.begin();
        let meter = entry.meter.begin(timing.start.into_std());
        let call = Call {
            exchange,
            inner,
            stats: &entry.stats,
            idempotent,
            hedge: None,
            throttled,
            head,
            tail,
            deadline: timing.deadline(),
        };
        let result =
            crate::client::within(timing.start, timing.budget(), method.name(), call.run()).await;
        // A stream is counted as a call from its start to its first
        // response (or, for a request stream, to its opening).
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        entry.stats.end();
        meter.finish(code);
        entry.stats.record(timing.start.elapsed(), code);
        inner.total.record(timing.start.elapsed(), code);
        result
    }
}

/// What was opened, with the call's ending; or the failure, its end told.
fn opened_with<T>(
    opened: Result<T, Status>,
    mut ending: Ending,
    timing: Timing,
) -> Result<(T, Ending), Status> {
    match opened {
        Ok(opened) => Ok((opened, ending)),
        Err(status) => {
            ending.end(status.code(), timing.start);
            Err(status)
        }
    }
}
