//! The `add` client: calls `add(2, 3)` on the `add_server` example over
//! mutual TLS and prints the answer, `5`.
//!
//! ```text
//! cargo run --example add_client [127.0.0.1:4433]
//! ```

use quicall::certs::{read_certs, read_key};
use quicall::demo::{ADD, AddRequest};
use quicall::zerocopy::little_endian::I64;
use quicall::{Client, ClientOptions, ClientTls};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4433".into());
    let dir = std::env::temp_dir().join("quicall-add-example");

    // Trust our CA, and show our own certificate (the server requires one).
    let tls = ClientTls::new(read_certs(&dir.join("ca.crt"))?).with_identity(
        read_certs(&dir.join("add-client.crt"))?,
        read_key(&dir.join("add-client.key"))?,
    );
    // "localhost" must be a name in the server's certificate.
    let client = Client::connect(addr.parse()?, "localhost", tls, ClientOptions::default()).await?;

    let reply = client
        .call(
            &ADD,
            &AddRequest {
                a: I64::new(2),
                b: I64::new(3),
            },
        )
        .await?;
    println!("{}", reply.sum.get());
    Ok(())
}
