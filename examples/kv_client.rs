//! The key-value service's client: a cluster of the three replicas that
//! `kv_server` started, through the typed stub (no encoding by hand).
//!
//! ```text
//! cargo run --example kv_client            # after kv_server
//! ```

#[path = "kv/service.rs"]
mod service;

use quicall::certs::{read_certs, read_key};
use quicall::{ClientTls, Cluster, ClusterOptions, Code, Discovery};

const KEYS: usize = 5_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = service::example_dir();
    let addresses = std::fs::read_to_string(dir.join("addresses"))
        .map_err(|e| format!("{}: {e} (start kv_server first)", dir.display()))?;
    let tls = ClientTls::new(read_certs(&dir.join("ca.crt"))?).with_identity(
        read_certs(&dir.join("kv-client.crt"))?,
        read_key(&dir.join("kv-client.key"))?,
    );
    let servers = addresses
        .lines()
        .map(|addr| (addr.to_string(), "localhost".to_string()))
        .collect();
    let cluster = Cluster::new(Discovery::Static(servers), tls, ClusterOptions::default()).await?;
    let kv = service::store::Client::new(cluster);

    for i in 0..KEYS {
        kv.put(format!("user/{i:05}"), vec![b'x'; i % 100]).await?;
    }
    let value = kv.get("user/00042".into()).await?;
    println!("get user/00042: {} bytes", value.len());

    // A stream of entries, read as they come: no page to ask for.
    let mut all = kv.list("user/".into(), None).await?;
    let (mut count, mut first, mut last) = (0, None, None);
    while let Some(entry) = all.message().await? {
        let seen = format!("{} ({} bytes)", entry.key, entry.size);
        first.get_or_insert(seen.clone());
        last = Some(seen);
        count += 1;
    }
    println!(
        "list user/: {count} entries, {} .. {}",
        first.unwrap_or_default(),
        last.unwrap_or_default()
    );
    let mut some = kv.list("user/01".into(), Some(10)).await?;
    let mut count = 0;
    while some.message().await?.is_some() {
        count += 1;
    }
    println!("list user/01, limit 10: {count} entries");

    println!(
        "delete user/00042: {}",
        kv.delete("user/00042".into()).await?
    );
    match kv.get("user/00042".into()).await {
        Err(status) if status.code() == Code::NotFound => println!("get user/00042: {status}"),
        other => {
            return Err(format!("expected NOT_FOUND, got {:?}", other.map(|v| v.len())).into());
        }
    }
    let stats = kv.stats().await?;
    println!("stats: {} keys, {} bytes", stats.keys, stats.bytes);
    Ok(())
}
