//! `quicall call`: one call to a server, its answer printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use quicall::demo::{ADD, AddRequest, ECHO, WHOAMI};
use quicall::{CallOptions, Client, ClientOptions, ClientTls};
use zerocopy::little_endian::I64;

/// Arguments of `quicall call`.
#[derive(clap::Args)]
pub struct Args {
    /// The server (host:port).
    #[arg(long, default_value = "127.0.0.1:4433")]
    server: String,
    /// Name the server's certificate must carry (default: the host of --server).
    #[arg(long)]
    server_name: Option<String>,
    /// CA certificate(s) the server's certificate must chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// This client's certificate chain (PEM), for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Deadline of the call in milliseconds.
    #[arg(long, default_value_t = 5000)]
    deadline_ms: u64,
    #[command(subcommand)]
    method: MethodArgs,
}

#[derive(clap::Subcommand)]
enum MethodArgs {
    /// calc.Calc/Add: print A + B.
    Add {
        /// First addend.
        #[arg(allow_negative_numbers = true)]
        a: i64,
        /// Second addend.
        #[arg(allow_negative_numbers = true)]
        b: i64,
    },
    /// demo.Echo/Echo: print TEXT as the server returns it.
    Echo {
        /// Text to send.
        text: String,
    },
    /// demo.Echo/WhoAmI: print this client's name as the server verified it.
    Whoami,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let addr = super::resolve(&args.server).await?;
    let server_name = args
        .server_name
        .clone()
        .unwrap_or_else(|| super::host_of(&args.server).to_owned());
    let mut tls = ClientTls::new(quicall::certs::read_certs(&args.ca)?);
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let (chain, key) = super::identity(cert, key)?;
        tls = tls.with_identity(chain, key);
    }
    let client = Client::connect(addr, &server_name, tls, ClientOptions::default())
        .await
        .with_context(|| format!("connecting to {addr} as {server_name}"))?;
    let options = CallOptions::deadline(Duration::from_millis(args.deadline_ms));
    let result = match args.method {
        MethodArgs::Add { a, b } => {
            let request = AddRequest {
                a: I64::new(a),
                b: I64::new(b),
            };
            client
                .call_with(&ADD, &request, options)
                .await
                .map(|r| r.sum.get().to_string())
        }
        MethodArgs::Echo { text } => client
            .call_with(&ECHO, text, options)
            .await
            .map(|r| String::from_utf8_lossy(&r).into_owned()),
        MethodArgs::Whoami => client
            .call_with(&WHOAMI, "", options)
            .await
            .map(|r| String::from_utf8_lossy(&r).into_owned()),
    };
    client.close();
    println!("{}", result?);
    Ok(())
}
