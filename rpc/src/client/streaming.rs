//! Server-streaming calls on the client: the request, then a stream of
//! responses read as the caller asks for them.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, timeout_at};

use super::stream::{CallStream, StreamPart, connection_status};
use super::{CallOptions, Client, begin_call, end_span};
use crate::{Code, Encode, Message, Metadata, Method, Msg, Status};

/// The responses of a server-streaming call, read in order with
/// [`ResponseStream::message`]. Reading slowly slows the server (QUIC flow
/// control): nothing is buffered beyond the connection's receive window.
/// Dropping it before the end cancels the call (the stream is reset, and
/// the server drops the handler's stream). The call's deadline covers the
/// whole stream.
pub struct ResponseStream<Resp: ?Sized> {
    call: CallStream,
    /// Bytes read past the last message.
    pending: Bytes,
    method: &'static str,
    exact: bool,
    max_message: u32,
    deadline: Option<(Instant, Duration)>,
    start: Instant,
    span: Option<Box<tracing::Span>>,
    metadata: Metadata,
    done: bool,
    _resp: PhantomData<fn() -> *const Resp>,
}

impl<Resp: Message + ?Sized> ResponseStream<Resp> {
    /// The next response, `None` once the stream has ended well (the
    /// server's metadata is then in [`ResponseStream::metadata`]), or the
    /// status the call ended with. After the end or a failure, `None`.
    pub async fn message(&mut self) -> Result<Option<Msg<Resp>>, Status> {
        if self.done {
            return Ok(None);
        }
        let read = self
            .call
            .read_stream_part(&mut self.pending, self.max_message);
        let part = match self.deadline {
            Some((deadline, budget)) => match timeout_at(deadline, read).await {
                Ok(part) => part,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "stream of {} not ended within {budget:?}",
                    self.method
                ))),
            },
            None => read.await,
        };
        let result = match part {
            Ok(StreamPart::Message(body)) => match Msg::receive(body, self.exact) {
                Ok(message) => return Ok(Some(message)),
                Err(e) => Err(Status::internal(format!("bad stream message: {e}"))),
            },
            Ok(StreamPart::End(metadata)) => {
                self.metadata = metadata.map(|m| *m).unwrap_or_default();
                Ok(None)
            }
            Err(status) => Err(status),
        };
        self.done = true;
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        end_span(self.span.take(), code, self.start);
        result
    }

    /// The metadata the server sent with the end of the stream (empty
    /// before the end, or if it sent none).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl<Resp: ?Sized> Drop for ResponseStream<Resp> {
    fn drop(&mut self) {
        if !self.done {
            end_span(self.span.take(), Code::Cancelled, self.start);
        }
    }
}

impl Client {
    /// Calls the server-streaming `method` with `request`: the responses
    /// come as a [`ResponseStream`] once the request is sent. The
    /// deadline (`options`, or the client's default) covers the whole
    /// stream.
    ///
    /// ```no_run
    /// # use quicall_rpc::{CallOptions, Client, Method, Status};
    /// # async fn run(client: Client) -> Result<(), Status> {
    /// const LIST: Method<[u8], [u8]> = Method::new("kv.Store/List").server_streaming();
    /// let mut keys = client.server_stream(&LIST, "prefix/", CallOptions::default()).await?;
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
        if !method.is_server_streaming() {
            return Err(Status::invalid_argument(format!(
                "{} is not a server-streaming method: call it with Client::call",
                method.name()
            ))
            .not_processed());
        }
        let budget = options.deadline.or(self.options.default_deadline);
        let start = Instant::now();
        let (span, framed) = begin_call(
            method,
            request,
            budget,
            options.metadata,
            &self.options.interceptors,
            false,
        );
        let (head, tail) = match framed {
            Ok(framed) => framed,
            Err(status) => {
                end_span(span, status.code(), start);
                return Err(status);
            }
        };
        let open = async {
            let (send, recv) = self
                .conn
                .open_bi()
                .await
                .map_err(|e| connection_status(&e).not_processed())?;
            let mut call = CallStream::new(send, recv);
            call.send_request(head, tail).await?;
            Ok::<_, Status>(call)
        };
        let deadline = budget.map(|budget| (start + budget, budget));
        let opened = match deadline {
            Some((deadline, budget)) => timeout_at(deadline, open).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "stream of {} not opened within {budget:?}",
                    method.name()
                )))
            }),
            None => open.await,
        };
        let call = match opened {
            Ok(call) => call,
            Err(status) => {
                end_span(span, status.code(), start);
                return Err(status);
            }
        };
        Ok(ResponseStream {
            call,
            pending: Bytes::new(),
            method: method.name(),
            exact: method.is_exact(),
            max_message: self.options.max_response_size,
            deadline,
            start,
            span,
            metadata: Metadata::new(),
            done: false,
            _resp: PhantomData,
        })
    }
}
