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
    /// Also write DIR/NAME.secret.yaml for every certificate of this run: a
    /// Kubernetes Secret `quicall-NAME` of type kubernetes.io/tls holding
    /// the certificate (tls.crt), its key (tls.key) and the CA certificate
    /// (ca.crt), for `kubectl apply -f` (deploy/ mounts them).
    #[arg(long)]
    k8s_secret: bool,
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
        write(&ca, &spec, &args.out, args.k8s_secret)?;
    }
    for client in &args.clients {
        let spec = NodeSpec::new(client, Role::Client).validity(validity);
        write(&ca, &spec, &args.out, args.k8s_secret)?;
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

fn write(
    ca: &CertificateAuthority,
    spec: &NodeSpec,
    out: &std::path::Path,
    k8s_secret: bool,
) -> anyhow::Result<()> {
    let cert = ca.issue(spec)?;
    let (crt, key) = cert.write_pem(out)?;
    println!("wrote {} and {}", crt.display(), key.display());
    if k8s_secret {
        let name = crt
            .file_stem()
            .and_then(|n| n.to_str())
            .context("certificate file name")?;
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let yaml = secret_yaml(
            name,
            &read(&crt)?,
            &read(&key)?,
            &read(&out.join("ca.crt"))?,
        )?;
        let path = out.join(format!("{name}.secret.yaml"));
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} (Secret quicall-{name})", path.display());
    }
    Ok(())
}

/// A Kubernetes Secret `quicall-NAME` (type kubernetes.io/tls) holding a
/// node's certificate, key and CA certificate, as YAML with the PEM text in
/// `stringData` (Kubernetes encodes it).
fn secret_yaml(name: &str, crt: &str, key: &str, ca: &str) -> anyhow::Result<String> {
    let valid = !name.is_empty()
        && name.len() <= 245
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        anyhow::bail!(
            "{name:?} cannot name a Kubernetes Secret: use lowercase letters, digits and '-'"
        );
    }
    let block = |pem: &str| {
        pem.lines()
            .map(|line| format!("    {line}\n"))
            .collect::<String>()
    };
    Ok(format!(
        "# Written by `quicall certs --k8s-secret`: the certificate of {name}, its\n\
         # private key and the cluster CA's certificate. It holds a private key:\n\
         # apply it (kubectl apply -f), keep it out of version control.\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  \
           name: quicall-{name}\n  \
           labels:\n    \
             app.kubernetes.io/name: quicall\n\
         type: kubernetes.io/tls\n\
         stringData:\n  \
           tls.crt: |\n{}  \
           tls.key: |\n{}  \
           ca.crt: |\n{}",
        block(crt),
        block(key),
        block(ca),
    ))
}

#[cfg(test)]
mod tests {
    use super::secret_yaml;

    #[test]
    fn a_secret_holds_each_pem_as_an_indented_block() {
        let yaml = secret_yaml("node-1", "C1\nC2\n", "K1\n", "A1\n").unwrap();
        assert!(yaml.contains("kind: Secret\n"));
        assert!(yaml.contains("  name: quicall-node-1\n"));
        assert!(yaml.contains("type: kubernetes.io/tls\n"));
        assert!(yaml.contains("  tls.crt: |\n    C1\n    C2\n  tls.key: |\n    K1\n"));
        assert!(yaml.ends_with("  ca.crt: |\n    A1\n"));
        for bad in ["Node", "node_1", "-node", ""] {
            assert!(secret_yaml(bad, "", "", "").is_err(), "{bad:?}");
        }
    }
}
