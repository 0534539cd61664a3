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

/// The largest UDP payload of the loopback path in this thread's network
/// namespace: the MTU the kernel reports for a UDP socket connected to
/// 127.0.0.1 (`IP_MTU`: the `lo` interface's, 65,535 for its usual 65,536)
/// less the IPv6 and UDP headers, so that it holds for `::1` too. `None`
/// where it cannot be read (not Linux, no loopback).
pub(crate) fn loopback_payload() -> Option<u16> {
    #[cfg(target_os = "linux")]
    {
        use std::net::Ipv4Addr;
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
        socket.connect((Ipv4Addr::LOCALHOST, 9)).ok()?;
        let mtu = nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::IpMtu).ok()?;
        u16::try_from(mtu.saturating_sub(40 + 8)).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_loopback_payload_is_what_the_lo_interface_carries() {
        let mtu: usize = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // IP_MTU reports at most 65,535 (an IP packet's largest).
        let expected = mtu.min(65_535) - 48;
        assert_eq!(super::loopback_payload().map(usize::from), Some(expected));
    }
}
