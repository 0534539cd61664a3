//! `quicall certs`: a CA and node certificates a real cluster can use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use quicall::certs::{CertificateAuthority, NodeSpec, Role};

/// Arguments of `quicall certs`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder to write into (created if missing). An existing DIR/ca.crt and
    /// DIR/ca.key are reused, so nodes can be added to a cluster later.
    #[arg(long)]
    out: PathBuf,
    /// A server certificate: NAME[,SAN...], where each SAN is a DNS name or
    /// an IP address (for example node-1,node-1.example.internal,10.0.0.7).
    /// Repeat for each server.
    #[arg(long = "server", value_name = "NAME[,SAN...]")]
    servers: Vec<String>,
    /// A client certificate named NAME. Repeat for each client.
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// Revoke the certificate DIR/NAME.crt: writes DIR/ca.crl, a revocation
    /// list signed by the CA, for `quicall serve --crl`. Repeat for each
    /// revoked name; the list holds exactly the names of this run.
    #[arg(long = "revoke", value_name = "NAME")]
    revoke: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Common name of a new CA.
    #[arg(long, default_value = "quicall cluster CA")]
    ca_name: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.servers.is_empty() && args.clients.is_empty() && args.revoke.is_empty() {
        anyhow::bail!("nothing to do: give at least one --server, --client or --revoke");
    }
    let validity = Duration::from_secs(args.days * 86_400);
    let (ca_cert, ca_key) = (args.out.join("ca.crt"), args.out.join("ca.key"));
    let ca = if ca_cert.exists() && ca_key.exists() {
        println!("using the existing CA in {}", args.out.display());
        CertificateAuthority::read_pem(&ca_cert, &ca_key)?
    } else {
        let ca = CertificateAuthority::new(&args.ca_name, validity)?;
        ca.write_pem(&args.out, "ca")?;
        println!("wrote {} and {}", ca_cert.display(), ca_key.display());
        ca
    };
    for server in &args.servers {
        let mut parts = server.split(',').map(str::trim).filter(|s| !s.is_empty());
        let name = parts.next().context("--server needs a name")?;
        let spec = parts.fold(
            NodeSpec::new(name, Role::Server).validity(validity),
            NodeSpec::san,
        );
        write(&ca, &spec, &args.out)?;
    }
    for client in &args.clients {
        write(
            &ca,
            &NodeSpec::new(client, Role::Client).validity(validity),
            &args.out,
        )?;
    }
    if !args.revoke.is_empty() {
        let serials = args
            .revoke
            .iter()
            .map(|name| quicall::certs::read_serial(&args.out.join(format!("{name}.crt"))))
            .collect::<Result<Vec<_>, _>>()?;
        let crl = ca.revocation_list(serials.iter().map(Vec::as_slice), validity)?;
        let path = args.out.join("ca.crl");
        crl.write_pem(&path)?;
        println!(
            "wrote {} revoking {}",
            path.display(),
            args.revoke.join(", ")
        );
    }
    Ok(())
}

fn write(ca: &CertificateAuthority, spec: &NodeSpec, out: &std::path::Path) -> anyhow::Result<()> {
    let cert = ca.issue(spec)?;
    let (crt, key) = cert.write_pem(out)?;
    println!("wrote {} and {}", crt.display(), key.display());
    Ok(())
}
