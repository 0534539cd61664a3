//! A UDP socket that hears nothing but QUIC Retry packets: a client that
//! lets its Initial packets out (and passes address validation) but never
//! reads the server's answer, so that every handshake it starts stays half
//! open on the server. (The attack suite's `Deaf` in tests/attacks.rs is the
//! same; a binary and the tests cannot share code.)

use std::net::SocketAddr;
use std::sync::Arc;

use quicall::transport::quinn;

#[derive(Debug)]
pub struct Deaf(pub Arc<dyn quinn::AsyncUdpSocket>);

impl quinn::AsyncUdpSocket for Deaf {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = self.0.poll_recv(cx, bufs, meta);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            for (buf, meta) in bufs.iter().zip(meta.iter_mut()).take(*n) {
                // Long header, type Retry: 0b1111_xxxx.
                if meta.len == 0 || buf[0] & 0xf0 != 0xf0 {
                    meta.len = 0;
                }
            }
        }
        polled
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
