//! The key-value service of the kv example, declared once for the server
//! and the client: its messages and its methods.

use quicall::rkyv::{Archive, Serialize};

/// A key and the size of its value.
#[derive(Archive, Serialize)]
#[rkyv(crate = quicall::rkyv)]
pub struct Entry {
    pub key: String,
    pub size: u64,
}

/// What the store holds.
#[derive(Archive, Serialize)]
#[rkyv(crate = quicall::rkyv)]
pub struct Stats {
    pub keys: u64,
    pub bytes: u64,
}

/// A key-value store.
#[quicall::service(package = "kv")]
pub trait Store {
    /// Sets `key` to `value`.
    #[quicall(idempotent)]
    async fn put(&self, key: String, value: Vec<u8>);
    /// The value of `key`, or NOT_FOUND.
    #[quicall(idempotent)]
    async fn get(&self, key: String) -> Vec<u8>;
    /// Removes `key`; whether it was there.
    async fn delete(&self, key: String) -> bool;
    /// The keys starting with `prefix`, in order, at most `limit` of them:
    /// a stream, as long as the store has keys (no page, no cursor).
    #[quicall(server_stream, idempotent)]
    async fn list(&self, prefix: String, limit: Option<u32>) -> Entry;
    /// How many keys and bytes the store holds.
    #[quicall(idempotent)]
    async fn stats(&self) -> Stats;
}

/// Where the server writes, and the client reads, the certificates and
/// the servers' addresses.
pub fn example_dir() -> std::path::PathBuf {
    std::env::args()
        .skip_while(|arg| arg != "--dir")
        .nth(1)
        .unwrap_or_else(|| "target/kv-example".into())
        .into()
}
