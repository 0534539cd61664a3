//! The UDP socket under an endpoint, with its kernel buffers sized.

use std::net::SocketAddr;

use quinn::udp::UdpSocketState;

use crate::{Limits, TransportError};

/// Binds a UDP socket at `addr` with the kernel buffer sizes of `limits`, and
/// warns (once per socket) when the kernel caps them below what was asked:
/// then raise `net.core.rmem_max` / `net.core.wmem_max`, or expect drops
/// under bursts.
pub(crate) fn bind(
    addr: SocketAddr,
    limits: &Limits,
) -> Result<std::net::UdpSocket, TransportError> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = UdpSocketState::new((&socket).into())?;
    if limits.socket_receive_buffer > 0 {
        // Best effort: a kernel that refuses keeps its default.
        let _ = state.set_recv_buffer_size((&socket).into(), limits.socket_receive_buffer);
        if let Ok(got) = state.recv_buffer_size((&socket).into()) {
            // Linux reports twice the size set (for its bookkeeping).
            if got / 2 < limits.socket_receive_buffer && got < limits.socket_receive_buffer {
                tracing::warn!(
                    asked = limits.socket_receive_buffer,
                    got,
                    "UDP receive buffer capped by the kernel (net.core.rmem_max); bursts may be dropped"
                );
            }
        }
    }
    if limits.socket_send_buffer > 0 {
        let _ = state.set_send_buffer_size((&socket).into(), limits.socket_send_buffer);
        if let Ok(got) = state.send_buffer_size((&socket).into())
            && got / 2 < limits.socket_send_buffer
            && got < limits.socket_send_buffer
        {
            tracing::warn!(
                asked = limits.socket_send_buffer,
                got,
                "UDP send buffer capped by the kernel (net.core.wmem_max)"
            );
        }
    }
    Ok(socket)
}

/// An endpoint over a socket sized by `limits`.
pub(crate) fn endpoint(
    addr: SocketAddr,
    limits: &Limits,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, TransportError> {
    let socket = bind(addr, limits)?;
    Ok(quinn::Endpoint::new(
        limits.endpoint_config(),
        server,
        socket,
        crate::timer::runtime(limits.precise_timers),
    )?)
}
