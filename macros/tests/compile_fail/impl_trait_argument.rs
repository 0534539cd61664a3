#[quicall_macros::service]
trait Store {
    async fn put(&self, key: String, value: impl AsRef<[u8]>);
}

fn main() {}
