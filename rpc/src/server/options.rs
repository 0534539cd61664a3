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
    /// Bytes of request bodies held in memory at once across all calls; a call
    /// whose body would go over is answered RESOURCE_EXHAUSTED (not
    /// processed). Default 256 MiB.
    pub max_buffered_request_bytes: usize,
    /// Deadline of a call whose caller set none. Default 30 s.
    pub default_deadline: Duration,
    /// Longest deadline granted, whatever the caller asks. Default 300 s.
    pub max_deadline: Duration,
    /// Time allowed for a request header to arrive once its stream is open;
    /// a silent stream is then reset. Default 10 s.
    pub header_timeout: Duration,
    /// Time allowed to hand a response to a slow reader. Default 10 s.
    pub response_timeout: Duration,
    /// On graceful shutdown, time given to the last responses (written, but
    /// perhaps not yet acknowledged) to reach their callers before the
    /// connections close. Default 200 ms: many round trips on any LAN.
    pub shutdown_linger: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            transport: Limits::default(),
            max_request_size: 4 << 20,
            max_response_size: 16 << 20,
            max_calls_in_flight: 1024,
            max_buffered_request_bytes: 256 << 20,
            default_deadline: Duration::from_secs(30),
            max_deadline: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            shutdown_linger: Duration::from_millis(200),
        }
    }
}
