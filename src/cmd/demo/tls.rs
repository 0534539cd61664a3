//! Part one of the demo: a client with a certificate from the cluster CA is
//! answered by every server; strangers are refused.

use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use quicall::certs::{read_certs, read_key};
use quicall::demo::{ADD, AddRequest, COUNT, ECHO, WHOAMI};
use quicall::{CallOptions, Client, ClientOptions, ClientTls, Code};
use zerocopy::little_endian::{I64, U64};

use super::{CLIENT, DemoServer};

pub async fn answers_and_refusals(dir: &Path, servers: &[DemoServer]) -> anyhow::Result<()> {
    let file = |name: &str| dir.join(name);
    let cluster_ca = read_certs(&file("ca.crt"))?;
    let identity = || -> anyhow::Result<_> {
        Ok((
            read_certs(&file(&format!("{CLIENT}.crt")))?,
            read_key(&file(&format!("{CLIENT}.key")))?,
        ))
    };

    println!("\nclient \"{CLIENT}\" (certificate from the cluster CA):");
    for server in servers {
        let (chain, key) = identity()?;
        let tls = ClientTls::new(cluster_ca.clone()).with_identity(chain, key);
        let client = Client::connect(server.addr, "localhost", tls, ClientOptions::default())
            .await
            .with_context(|| format!("connecting to {}", server.name))?;
        let sum = client.call(&ADD, &add_request(2, 3)).await?;
        let text = format!("hello {}", server.name);
        let echo = client.call(&ECHO, text.as_str()).await?;
        let who = client.call(&WHOAMI, "").await?;
        let server_name = client
            .connection()
            .peer()
            .map_or("?", |p| p.name())
            .to_owned();
        println!(
            "  {server_name} at {}: add(2, 3) = {}, echo({text:?}) = {:?}, whoami = {:?}",
            server.addr,
            sum.sum.get(),
            String::from_utf8_lossy(&echo),
            String::from_utf8_lossy(&who),
        );
        ensure!(sum.sum.get() == 5, "add(2, 3) answered {}", sum.sum.get());
        ensure!(&*echo == text.as_bytes(), "echo answered something else");
        ensure!(
            &*who == CLIENT.as_bytes(),
            "the server saw another client name"
        );
        // A server stream: five messages on one QUIC stream, then OK.
        let mut numbers = client
            .server_stream(&COUNT, &U64::new(5), CallOptions::default())
            .await?;
        let mut counted = Vec::new();
        while let Some(n) = numbers.message().await? {
            counted.push(n.get());
        }
        println!("  {server_name}: count(5) streamed {counted:?}");
        ensure!(counted == [0, 1, 2, 3, 4], "count(5) streamed {counted:?}");
        client.close();
    }

    println!("\nclients that must be refused:");
    let rogue = (
        read_certs(&file("rogue-client.crt"))?,
        read_key(&file("rogue-client.key"))?,
    );
    let rogue_ca = read_certs(&file("rogue-ca.crt"))?;
    for server in servers {
        let (chain, key) = identity()?;
        let attempts: [(&str, ClientTls); 3] = [
            ("no client certificate", ClientTls::new(cluster_ca.clone())),
            (
                "certificate from another CA",
                ClientTls::new(cluster_ca.clone())
                    .with_identity(rogue.0.clone(), rogue.1.clone_key()),
            ),
            (
                "does not trust the cluster CA",
                ClientTls::new(rogue_ca.clone()).with_identity(chain, key),
            ),
        ];
        for (what, tls) in attempts {
            let outcome = async {
                let client =
                    Client::connect(server.addr, "localhost", tls, ClientOptions::default())
                        .await?;
                client.call(&ADD, &add_request(2, 3)).await
            }
            .await;
            match outcome {
                Err(status) if status.code() == Code::Unauthenticated => {
                    println!("  {} / {what}: refused ({status})", server.name);
                }
                Err(status) => {
                    bail!("{what}: refused, but with {status} instead of UNAUTHENTICATED")
                }
                Ok(_) => bail!("{what}: the call was answered; it must be refused"),
            }
        }
    }
    Ok(())
}

pub fn add_request(a: i64, b: i64) -> AddRequest {
    AddRequest {
        a: I64::new(a),
        b: I64::new(b),
    }
}
