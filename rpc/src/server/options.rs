use std::time::Duration;

use quicall_transport::Limits;

/// Server limits, with safe defaults. Every limit is checked before memory is
/// committed: a request's size from its header, before its body is read.
///
/// ```
/// use quicall_rpc::ServerOptions;
/// let options = ServerOptions {
///     max_request_size: 64 << 10,
///     ..ServerOptions::default()
/// };
/// assert_eq!(options.max_calls_in_flight, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Transport limits (streams per connection, connections, timeouts,
    /// flow-control windows).
    pub transport: Limits,
    /// Largest request body accepted; larger ones are answered
    /// RESOURCE_EXHAUSTED without being read. Default 4 MiB.
    pub max_request_size: u32,
    /// Largest response body a handler may return; a larger one is not sent
    /// and the call fails with RESOURCE_EXHAUSTED. Default 16 MiB (the
    /// client's default limit).
    pub max_response_size: u32,
    /// Calls admitted at once across all connections; more are answered
    /// RESOURCE_EXHAUSTED (not processed). Default 1024.
    pub max_calls_in_flight: usize,
    /// Adaptive admission of unary calls: the server learns how many it
    /// finishes without a queue ([`crate::admission`]) and answers the
    /// excess RESOURCE_EXHAUSTED (not processed) at once, so that under
    /// overload the calls it admits keep their latency and a cluster
    /// client sends the rest elsewhere. The fixed limits stay the outer
    /// bounds. Streaming calls (which may last for hours) are held to the
    /// fixed limits only. Default `None`: off.
    ///
    /// ```
    /// use quicall_rpc::ServerOptions;
    /// use quicall_rpc::admission::Adaptive;
    /// let options = ServerOptions {
    ///     admission: Some(Adaptive::default()),
    ///     ..ServerOptions::default()
    /// };
    /// # let _ = options;
    /// ```
    pub admission: Option<crate::admission::Adaptive>,
    /// Bytes of request bodies held in memory at once across all calls; a call
    /// whose body would go over is answered RESOURCE_EXHAUSTED (not
    /// processed). Default 256 MiB.
    pub max_buffered_request_bytes: usize,
    /// Calls one peer (a certificate name, or an address for callers
    /// without certificate) may have admitted at once, over all its
    /// connections; more are answered RESOURCE_EXHAUSTED (not processed).
    /// Default 256 (a quarter of [`ServerOptions::max_calls_in_flight`]).
    pub max_calls_per_peer: usize,
    /// Request bytes one peer's calls may hold at once. Bytes are charged as
    /// they arrive, not from the length a header announces. Default 64 MiB
    /// (a quarter of [`ServerOptions::max_buffered_request_bytes`]).
    pub max_request_bytes_per_peer: usize,
    /// Connections one peer may hold open at once; a connection beyond it is
    /// closed right after its handshake with PEER_LIMIT (6). Default 64.
    pub max_connections_per_peer: usize,
    /// Time allowed for a request body to arrive once its header has,
    /// whatever the call's deadline: this plus the body's size at
    /// [`ServerOptions::min_transfer_rate`]. A slower body is answered
    /// DEADLINE_EXCEEDED (not processed). Default 10 s.
    pub body_timeout: Duration,
    /// The slowest transfer the server waits for, in bytes per second, on
    /// top of [`ServerOptions::body_timeout`] and
    /// [`ServerOptions::response_timeout`]: a 4 MiB body at the default
    /// 256 KiB/s gets 10 s + 16 s.
    pub min_transfer_rate: u32,
    /// Largest metadata block a request may carry (the block's length is
    /// in its header: a larger one is answered RESOURCE_EXHAUSTED, not
    /// processed, before any of it is read). Default 8 KiB.
    pub max_metadata_bytes: u16,
    /// Most metadata entries a request may carry; more are answered
    /// RESOURCE_EXHAUSTED (not processed). Default 64.
    pub max_metadata_entries: usize,
    /// Send a generic "internal error" instead of the text of errors that
    /// handlers returned as other error types (`anyhow::Error`,
    /// [`Status::from_error`](crate::Status::from_error)), and log the text
    /// at the server instead: internals need not reach callers. Statuses a
    /// handler builds itself are sent as they are. Default false.
    pub hide_error_details: bool,
    /// Deadline of a call whose caller set none. Default 30 s.
    pub default_deadline: Duration,
    /// Longest deadline granted, whatever the caller asks. Default 300 s.
    pub max_deadline: Duration,
    /// Time allowed for a request header to arrive once its stream is open;
    /// a silent stream is then reset. Default 10 s.
    pub header_timeout: Duration,
    /// Time allowed to hand a response to its reader, plus its size at
    /// [`ServerOptions::min_transfer_rate`], whatever the call's deadline: a
    /// reader that does not take it by then (it reads nothing, trickles, or
    /// keeps its flow-control window shut) has its stream reset with TIMEOUT
    /// and its call slot given back. Default 10 s.
    pub response_timeout: Duration,
    /// On graceful shutdown, time given to the last responses (written, but
    /// perhaps not yet acknowledged) to reach their callers before the
    /// connections close. Default 200 ms: many round trips on any LAN.
    pub shutdown_linger: Duration,
}

impl ServerOptions {
    /// Time allowed to move `len` bytes after `base`: `base` plus `len` at
    /// [`ServerOptions::min_transfer_rate`].
    ///
    /// ```
    /// use quicall_rpc::ServerOptions;
    /// use std::time::Duration;
    /// let options = ServerOptions::default();
    /// assert_eq!(options.transfer_time(Duration::from_secs(10), 4 << 20), Duration::from_secs(26));
    /// ```
    pub fn transfer_time(&self, base: Duration, len: usize) -> Duration {
        // Integer nanoseconds: on every call's path, and float conversions
        // to a Duration are not cheap.
        let rate = u128::from(self.min_transfer_rate.max(1));
        let nanos = (len as u128 * 1_000_000_000 / rate).min(u128::from(u64::MAX));
        base + Duration::from_nanos(nanos as u64)
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            transport: Limits::default(),
            max_request_size: 4 << 20,
            max_response_size: 16 << 20,
            max_calls_in_flight: 1024,
            admission: None,
            max_buffered_request_bytes: 256 << 20,
            max_calls_per_peer: 256,
            max_request_bytes_per_peer: 64 << 20,
            max_connections_per_peer: 64,
            body_timeout: Duration::from_secs(10),
            min_transfer_rate: 256 << 10,
            max_metadata_bytes: crate::DEFAULT_MAX_METADATA_BYTES,
            max_metadata_entries: crate::DEFAULT_MAX_METADATA_ENTRIES,
            hide_error_details: false,
            default_deadline: Duration::from_secs(30),
            max_deadline: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            shutdown_linger: Duration::from_millis(200),
        }
    }
}
