//! Streams of messages for server-streaming handlers: from an iterator, or
//! from a task that produces them through a bounded channel.
//!
//! A server-streaming handler returns any [`Stream`] of
//! `Result<response, Status>`; these two cover the common cases without
//! another crate.
//!
//! ```
//! use quicall_rpc::{Method, Router, Status, stream};
//! const TICKS: Method<[u8], [u8]> = Method::new("demo.Clock/Ticks").server_streaming();
//!
//! let router = Router::new().route_server_stream(&TICKS, |_ctx, _req| async move {
//!     let (sender, messages) = stream::channel(16);
//!     tokio::spawn(async move {
//!         for n in 0..1000u32 {
//!             // Waits while the caller reads slowly; fails once it is gone.
//!             if sender.send(Ok(n.to_le_bytes().to_vec())).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//!     Ok::<_, Status>(messages)
//! })?;
//! # Ok::<(), quicall_rpc::RouteError>(())
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

pub use futures_core::Stream;
use tokio::sync::mpsc;

/// A boxed stream of responses (or the status that ends it): what a
/// streaming method of a [`service`](../../quicall/attr.service.html)
/// trait returns, whatever stream the implementation builds.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, crate::Status>> + Send + 'static>>;

/// `stream`, boxed as a [`BoxStream`].
///
/// ```
/// use quicall_rpc::{Status, stream};
/// let numbers: stream::BoxStream<u64> = stream::boxed(stream::iter((0..3).map(Ok::<u64, Status>)));
/// # let _ = numbers;
/// ```
pub fn boxed<T>(
    stream: impl Stream<Item = Result<T, crate::Status>> + Send + 'static,
) -> BoxStream<T> {
    Box::pin(stream)
}

/// A stream of the items of an iterator.
pub fn iter<I: Iterator>(items: I) -> Iter<I> {
    Iter(items)
}

/// The stream made by [`iter`].
#[derive(Debug)]
pub struct Iter<I>(I);

impl<I: Iterator + Unpin> Stream for Iter<I> {
    type Item = I::Item;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        Poll::Ready(self.get_mut().0.next())
    }
}

/// A bounded channel whose receiving end is a stream: a handler returns
/// the stream and a task of its own sends into the [`Sender`], waiting
/// while `capacity` items are queued (so a slow caller slows the producer).
/// Once the call has ended (the caller went away, the deadline passed),
/// sending fails.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Sender(tx), Receiver(rx))
}

/// The sending end of a [`channel`].
#[derive(Debug)]
pub struct Sender<T>(mpsc::Sender<T>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The call the stream belongs to has ended: nobody reads it any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the call has ended")]
pub struct Ended;

impl<T> Sender<T> {
    /// Sends `item`, waiting for room.
    pub async fn send(&self, item: T) -> Result<(), Ended> {
        self.0.send(item).await.map_err(|_| Ended)
    }

    /// Whether the call has ended (the receiving stream is gone).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The receiving end of a [`channel`]: a stream that ends when every
/// [`Sender`] is dropped.
#[derive(Debug)]
pub struct Receiver<T>(mpsc::Receiver<T>);

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().0.poll_recv(cx)
    }
}
