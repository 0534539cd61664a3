//! The `add` server: serves `calc.Calc/Add` over mutual TLS.
//!
//! ```text
//! cargo run --example add_server            # listens on 127.0.0.1:4433
//! cargo run --example add_client            # in another terminal: prints 5
//! ```
//!
//! On first run it makes a CA, a server certificate and a client certificate
//! in a folder under the system temp dir (printed below); the client reads
//! them from there.

use quicall::certs::{CertificateAuthority, NodeSpec, read_certs, read_key};
use quicall::demo::{ADD, AddRequest, AddResponse};
use quicall::zerocopy::little_endian::I64;
use quicall::{ClientAuth, Context, Msg, Router, Server, ServerOptions, ServerTls, Status};

/// The handler: `req` is a view over the received bytes, read in place.
async fn add(ctx: Context, req: Msg<AddRequest>) -> Result<AddResponse, Status> {
    let caller = ctx.peer().map_or("anonymous", |p| p.name());
    println!("{caller} asks for {} + {}", req.a.get(), req.b.get());
    let sum = req
        .a
        .get()
        .checked_add(req.b.get())
        .ok_or_else(|| Status::invalid_argument("overflow"))?;
    Ok(AddResponse { sum: I64::new(sum) })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4433".into());
    let dir = std::env::temp_dir().join("quicall-add-example");

    // Certificates: one CA for the cluster, one for this server, one for the client.
    if !dir.join("ca.crt").exists() {
        let ca = CertificateAuthority::new("add example CA", quicall::certs::DEFAULT_VALIDITY)?;
        ca.issue(
            &NodeSpec::server("add-server")
                .san("localhost")
                .san("127.0.0.1"),
        )?
        .write_pem(&dir)?;
        ca.issue(&NodeSpec::client("add-client"))?.write_pem(&dir)?;
        ca.write_pem(&dir, "ca")?; // last: its presence means the rest is there
    }

    // Mutual TLS: clients must show a certificate from our CA.
    let tls = ServerTls::new(
        read_certs(&dir.join("add-server.crt"))?,
        read_key(&dir.join("add-server.key"))?,
        ClientAuth::Required(read_certs(&dir.join("ca.crt"))?),
    );
    let router = Router::new().route(&ADD, add)?;
    let server = Server::bind(addr.parse()?, tls, router, ServerOptions::default())?;
    println!(
        "listening on {} (certificates in {})",
        server.local_addr(),
        dir.display()
    );

    tokio::signal::ctrl_c().await?;
    server.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
