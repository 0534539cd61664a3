//! The key-value service's server: three replicas over one store, on
//! loopback, with mutual TLS.
//!
//! ```text
//! cargo run --example kv_server            # then, in another shell:
//! cargo run --example kv_client
//! ```
//!
//! It writes a CA, a client certificate and the replicas' addresses into
//! `target/kv-example` (`--dir DIR` to change it), where `kv_client` finds
//! them, and serves until Ctrl-C.

#[path = "kv/service.rs"]
mod service;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use quicall::certs::{CertificateAuthority, DEFAULT_VALIDITY, NodeSpec};
use quicall::rkyv::Archived;
use quicall::stream::{self, BoxStream};
use quicall::{Bytes, ClientAuth, Context, Server, ServerOptions, ServerTls, Status};
use service::{Entry, Stats, Store};

const MAX_KEY: usize = 1024;
/// Keys a List takes from the map at a time: the lock is never held while
/// the caller reads, and memory stays bounded however many keys match.
const LIST_BATCH: usize = 256;

#[derive(Default)]
struct Memory {
    map: Arc<RwLock<BTreeMap<String, Bytes>>>,
}

impl Memory {
    fn key(key: &str) -> Result<&str, Status> {
        match key.len() {
            0 => Err(Status::invalid_argument("empty key")),
            len if len > MAX_KEY => Err(Status::invalid_argument(format!(
                "key of {len} bytes (at most {MAX_KEY})"
            ))),
            _ => Ok(key),
        }
    }
}

impl Store for Memory {
    async fn put(
        &self,
        _: Context,
        key: &Archived<String>,
        value: &Archived<Vec<u8>>,
    ) -> Result<(), Status> {
        let key = Self::key(key)?.to_string();
        let value = Bytes::copy_from_slice(value);
        self.map.write().unwrap().insert(key, value);
        Ok(())
    }

    async fn get(&self, _: Context, key: &Archived<String>) -> Result<Vec<u8>, Status> {
        match self.map.read().unwrap().get(Self::key(key)?) {
            Some(value) => Ok(value.to_vec()),
            None => Err(Status::not_found(format!("no key {key}"))),
        }
    }

    async fn delete(&self, _: Context, key: &Archived<String>) -> Result<bool, Status> {
        Ok(self.map.write().unwrap().remove(Self::key(key)?).is_some())
    }

    async fn list(
        &self,
        _: Context,
        prefix: &Archived<String>,
        limit: &Archived<Option<u32>>,
    ) -> Result<BoxStream<Entry>, Status> {
        let limit = limit
            .as_ref()
            .map_or(usize::MAX, |l| l.to_native() as usize);
        let prefix = prefix.to_string();
        let map = self.map.clone();
        // A producer of its own: batch after batch, each sent as the caller
        // takes it (a slow reader slows it, one that goes away stops it).
        let (entries, stream) = stream::channel(LIST_BATCH);
        tokio::spawn(async move {
            let mut from = Bound::Included(prefix.clone());
            let mut left = limit;
            while left > 0 {
                let batch: Vec<Entry> = {
                    let map = map.read().unwrap();
                    map.range::<String, _>((from.clone(), Bound::Unbounded))
                        .take_while(|(key, _)| key.starts_with(&prefix))
                        .take(LIST_BATCH.min(left))
                        .map(|(key, value)| Entry {
                            key: key.clone(),
                            size: value.len() as u64,
                        })
                        .collect()
                };
                let Some(last) = batch.last() else { break };
                from = Bound::Excluded(last.key.clone());
                left -= batch.len();
                for entry in batch {
                    if entries.send(Ok(entry)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(stream::boxed(stream))
    }

    async fn stats(&self, _: Context) -> Result<Stats, Status> {
        let map = self.map.read().unwrap();
        Ok(Stats {
            keys: map.len() as u64,
            bytes: map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = service::example_dir();
    std::fs::create_dir_all(&dir)?;
    let ca = CertificateAuthority::new("kv example CA", DEFAULT_VALIDITY)?;
    let node = ca.issue(&NodeSpec::server("kv-node").san("localhost"))?;
    ca.write_pem(&dir, "ca")?;
    ca.issue(&NodeSpec::client("kv-client"))?.write_pem(&dir)?;

    let store = std::sync::Arc::new(Memory::default());
    let mut servers = Vec::new();
    for _ in 0..3 {
        let tls = ServerTls::new(
            node.chain(),
            node.key_der(),
            ClientAuth::Required(vec![ca.cert_der().clone()]),
        );
        let router = service::store::add_routes(quicall::Router::new(), store.clone())?;
        let server = Server::bind(
            "127.0.0.1:0".parse()?,
            tls,
            router,
            ServerOptions::default(),
        )?;
        println!("kv.Store replica on {}", server.local_addr());
        servers.push(server);
    }
    let addresses: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    std::fs::write(dir.join("addresses"), addresses.join("\n"))?;
    println!(
        "certificates and addresses in {}; Ctrl-C stops",
        dir.display()
    );
    tokio::signal::ctrl_c().await?;
    for server in servers {
        server.shutdown(std::time::Duration::from_secs(1)).await;
    }
    Ok(())
}
