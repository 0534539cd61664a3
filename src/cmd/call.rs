//! `quicall call`: calls to one server, a list of servers, or every server
//! behind a DNS name, with the answer printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use quicall::demo::{ADD, AddRequest, ECHO, WHOAMI};
use quicall::{CallOptions, ClientTls, Cluster, ClusterOptions, Discovery, Metadata, Policy};
use zerocopy::little_endian::I64;

/// Arguments of `quicall call`.
#[derive(clap::Args)]
pub struct Args {
    /// A server (host:port). Repeat for a static list of replicas.
    #[arg(
        long = "server",
        default_value = "127.0.0.1:4433",
        conflicts_with = "dns"
    )]
    servers: Vec<String>,
    /// Every server behind this DNS name (host:port), re-resolved
    /// periodically: for example a Kubernetes headless service.
    #[arg(long)]
    dns: Option<String>,
    /// Name the servers' certificates must carry (default: each host name).
    #[arg(long)]
    server_name: Option<String>,
    /// CA certificate(s) the servers' certificates must chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// This client's certificate chain (PEM), for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Deadline of each call in milliseconds.
    #[arg(long, default_value_t = 5000)]
    deadline_ms: u64,
    /// Number of calls; above 1, prints how they spread over the servers.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Selection policy: p2c-peak-ewma, round-robin, random, least-outstanding.
    #[arg(long, default_value = "p2c-peak-ewma")]
    policy: Policy,
    /// Metadata sent with the call, as key:value (repeat for more).
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE")]
    headers: Vec<String>,
    /// Prints the metadata sent (`> key: value`) and received
    /// (`< key: value`) on standard error.
    #[arg(short, long)]
    verbose: bool,
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
    /// Any method, by name: send a raw body and print the raw response.
    Raw(RawArgs),
    /// Any server-streaming method, by name: send a raw body and print
    /// each response message on a line of its own as it arrives (for
    /// example `stream demo.Count/Up --hex 0500000000000000 --hex-output`).
    Stream(RawArgs),
}

/// A call of any method by name, with its body given as it goes on the
/// wire (docs/wire.md says how a method's body is laid out).
#[derive(clap::Args)]
struct RawArgs {
    /// The method's full name, as `package.Service/Method` (its identifier
    /// is the FNV-1a hash of this name).
    name: String,
    /// The body as hexadecimal digits (spaces allowed).
    #[arg(long, group = "body")]
    hex: Option<String>,
    /// The body as UTF-8 text.
    #[arg(long, group = "body")]
    text: Option<String>,
    /// The body from a file, or `-` for standard input.
    #[arg(long, group = "body")]
    file: Option<PathBuf>,
    /// Print the response as hexadecimal digits instead of text.
    #[arg(long)]
    hex_output: bool,
    /// The method is safe to repeat: retry it elsewhere after a failure.
    #[arg(long)]
    idempotent: bool,
}

impl RawArgs {
    /// The method named (its name leaked: it lives as long as the command).
    fn method(&self) -> quicall::Method<[u8], [u8]> {
        let name: &'static str = Box::leak(self.name.clone().into_boxed_str());
        let method = quicall::Method::new(name);
        if self.idempotent {
            method.idempotent()
        } else {
            method
        }
    }

    /// The answer's bytes as printed: hexadecimal or text.
    fn show(&self, bytes: &[u8]) -> String {
        if self.hex_output {
            to_hex(bytes)
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    }

    fn body(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(hex) = &self.hex {
            return from_hex(hex);
        }
        if let Some(text) = &self.text {
            return Ok(text.as_bytes().to_vec());
        }
        match self.file.as_deref() {
            Some(path) if path == std::path::Path::new("-") => {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                    .context("reading the body from standard input")?;
                Ok(body)
            }
            Some(path) => std::fs::read(path)
                .with_context(|| format!("reading the body from {}", path.display())),
            None => Ok(Vec::new()),
        }
    }
}

/// Bytes from hexadecimal digits, ignoring whitespace.
fn from_hex(hex: &str) -> anyhow::Result<Vec<u8>> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    anyhow::ensure!(
        digits.len().is_multiple_of(2),
        "an odd number of hex digits"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair)?;
            u8::from_str_radix(pair, 16).with_context(|| format!("{pair:?} is not a hex byte"))
        })
        .collect()
}

/// Hexadecimal digits of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let discovery = match &args.dns {
        Some(target) => match &args.server_name {
            Some(name) => Discovery::dns_with(
                target,
                name,
                std::sync::Arc::new(quicall::rpc::cluster::SystemResolver),
            ),
            None => Discovery::dns(target),
        },
        None => Discovery::fixed(args.servers.iter().map(|s| {
            let name = args
                .server_name
                .clone()
                .unwrap_or_else(|| quicall::rpc::cluster::host_of(s).to_owned());
            (s.clone(), name)
        })),
    };
    let mut tls = ClientTls::new(quicall::certs::read_certs(&args.ca)?);
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let (chain, key) = super::identity(cert, key)?;
        tls = tls.with_identity(chain, key);
    }
    let options = ClusterOptions {
        policy: args.policy,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::new(discovery, tls, options)
        .await
        .context("finding the servers")?;
    let metadata = parse_headers(&args.headers)?;
    if args.verbose {
        print_metadata('>', &metadata);
    }
    let options =
        CallOptions::deadline(Duration::from_millis(args.deadline_ms)).with_metadata(metadata);
    if let MethodArgs::Stream(raw) = &args.method {
        anyhow::ensure!(
            args.count <= 1,
            "--count applies to unary calls, not streams"
        );
        let printed = print_stream(&cluster, raw, options, args.verbose).await;
        cluster.close();
        return printed;
    }
    let call = Call::from_args(&args.method)?;
    let mut last = None;
    for _ in 0..args.count.max(1) {
        last = Some(call.once(&cluster, options.clone()).await);
    }
    if args.count > 1 {
        print_spread(&cluster);
    }
    cluster.close();
    match last.expect("at least one call") {
        Ok((answer, metadata)) => {
            if args.verbose {
                print_metadata('<', &metadata);
            }
            println!("{answer}");
            Ok(())
        }
        Err(status) => {
            if let Some(metadata) = status.metadata().filter(|_| args.verbose) {
                print_metadata('<', metadata);
            }
            Err(status.into())
        }
    }
}

/// Calls a server-streaming method and prints each message as it arrives,
/// then the end: nothing more when it ended well, the status otherwise
/// (after the messages that came before it).
async fn print_stream(
    cluster: &Cluster,
    raw: &RawArgs,
    options: CallOptions,
    verbose: bool,
) -> anyhow::Result<()> {
    let method = raw.method().server_streaming();
    let body = raw.body()?;
    let failed = |status: quicall::Status| {
        if let Some(metadata) = status.metadata().filter(|_| verbose) {
            print_metadata('<', metadata);
        }
        anyhow::Error::from(status)
    };
    let mut responses = cluster
        .server_stream(&method, &body[..], options)
        .await
        .map_err(failed)?;
    while let Some(message) = responses.message().await.map_err(failed)? {
        println!("{}", raw.show(&message));
    }
    if verbose {
        print_metadata('<', responses.metadata());
    }
    Ok(())
}

/// `key:value` arguments as metadata.
fn parse_headers(headers: &[String]) -> anyhow::Result<Metadata> {
    let mut metadata = Metadata::new();
    for header in headers {
        let (key, value) = header
            .split_once(':')
            .with_context(|| format!("metadata {header:?} is not key:value"))?;
        metadata
            .insert(key.trim(), value.trim_start())
            .with_context(|| format!("metadata {header:?}"))?;
    }
    Ok(metadata)
}

/// Metadata as curl prints headers: `> key: value` sent, `< key: value`
/// received; values that are not UTF-8 in hex.
fn print_metadata(direction: char, metadata: &Metadata) {
    for (key, value) in metadata.iter() {
        match std::str::from_utf8(value) {
            Ok(text) => eprintln!("{direction} {key}: {text}"),
            Err(_) => eprintln!("{direction} {key}: 0x{}", to_hex(value)),
        }
    }
}

/// A call, ready to be made once or many times.
enum Call {
    Add(AddRequest),
    Echo(String),
    Whoami,
    Raw {
        /// Its name leaked: it lives as long as the command.
        method: quicall::Method<[u8], [u8]>,
        body: Vec<u8>,
        hex_output: bool,
    },
}

impl Call {
    fn from_args(args: &MethodArgs) -> anyhow::Result<Self> {
        Ok(match args {
            MethodArgs::Add { a, b } => Call::Add(AddRequest {
                a: I64::new(*a),
                b: I64::new(*b),
            }),
            MethodArgs::Echo { text } => Call::Echo(text.clone()),
            MethodArgs::Whoami => Call::Whoami,
            MethodArgs::Raw(raw) => Call::Raw {
                method: raw.method(),
                body: raw.body()?,
                hex_output: raw.hex_output,
            },
            MethodArgs::Stream(_) => anyhow::bail!("a stream is not a unary call"),
        })
    }

    /// Makes the call; the answer as it is printed, and the metadata the
    /// server sent back.
    async fn once(
        &self,
        cluster: &Cluster,
        options: CallOptions,
    ) -> Result<(String, Metadata), quicall::Status> {
        let text = |r: quicall::Response<[u8]>| {
            (String::from_utf8_lossy(&r.message).into_owned(), r.metadata)
        };
        match self {
            Call::Add(request) => cluster
                .call_full(&ADD, request, options)
                .await
                .map(|r| (r.message.sum.get().to_string(), r.metadata)),
            Call::Echo(message) => cluster
                .call_full(&ECHO, message.as_str(), options)
                .await
                .map(text),
            Call::Whoami => cluster.call_full(&WHOAMI, "", options).await.map(text),
            Call::Raw {
                method,
                body,
                hex_output,
            } => {
                let reply = cluster.call_full(method, &body[..], options).await?;
                Ok(if *hex_output {
                    (to_hex(&reply.message), reply.metadata)
                } else {
                    text(reply)
                })
            }
        }
    }
}

fn print_spread(cluster: &Cluster) {
    let snapshot = cluster.snapshot();
    let total = snapshot.total;
    eprintln!(
        "{} calls: p50 {:?}  p99 {:?}  errors {}  retries {}  hedges {}",
        total.calls,
        total.p50().unwrap_or_default(),
        total.p99().unwrap_or_default(),
        total.errors(),
        total.retries,
        total.hedges
    );
    for server in snapshot.servers {
        eprintln!(
            "  {} ({}): {} attempts, p50 {:?}, errors {}",
            server.addr,
            server.name,
            server.stats.calls,
            server.stats.p50().unwrap_or_default(),
            server.stats.errors()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_in_and_out() {
        assert_eq!(from_hex("02 00\n0a ff").unwrap(), vec![2, 0, 10, 255]);
        assert_eq!(to_hex(&[2, 0, 10, 255]), "02000aff");
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn headers_become_metadata() {
        let metadata =
            parse_headers(&["authorization: Bearer x".into(), "tenant:acme".into()]).unwrap();
        assert_eq!(metadata.get_str("authorization"), Some("Bearer x"));
        assert_eq!(metadata.get_str("tenant"), Some("acme"));
        assert!(parse_headers(&["no-colon".into()]).is_err());
        assert!(parse_headers(&["Upper:x".into()]).is_err());
    }
}
