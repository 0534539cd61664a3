//! One message at a time from an untyped source (a request stream on the
//! server, a response stream on the client), either awaited in place (no
//! allocation) or polled as a [`Stream`](futures_core::Stream) (one boxed
//! read per message, since the read borrows the source).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::Status;

/// Where the bodies come from.
pub(crate) trait Source: Send + 'static {
    /// The next body, `None` at the end, or the status that ended the
    /// stream.
    fn next(&mut self) -> impl Future<Output = Result<Option<Bytes>, Status>> + Send;
}

type Read<S> = Pin<Box<dyn Future<Output = (Box<S>, Result<Option<Bytes>, Status>)> + Send>>;

/// A source, and the read a poll began.
pub(crate) struct Pulled<S: Source> {
    source: Option<Box<S>>,
    read: Option<Read<S>>,
}

impl<S: Source> Pulled<S> {
    pub(crate) fn new(source: S) -> Self {
        Self {
            source: Some(Box::new(source)),
            read: None,
        }
    }

    /// The source, unless a poll's read holds it.
    pub(crate) fn source(&mut self) -> Option<&mut S> {
        self.source.as_deref_mut()
    }

    /// The source, unless a poll's read holds it.
    pub(crate) fn get(&self) -> Option<&S> {
        self.source.as_deref()
    }

    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if let Some(read) = self.read.take() {
            let (source, body) = read.await;
            self.source = Some(source);
            return body;
        }
        match self.source.as_mut() {
            Some(source) => source.next().await,
            None => Ok(None),
        }
    }

    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Status>> {
        if self.read.is_none() {
            let Some(mut source) = self.source.take() else {
                return Poll::Ready(Ok(None));
            };
            self.read = Some(Box::pin(async move {
                let body = source.next().await;
                (source, body)
            }));
        }
        let Some(read) = self.read.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        let Poll::Ready((source, body)) = read.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        self.read = None;
        self.source = Some(source);
        Poll::Ready(body)
    }
}
