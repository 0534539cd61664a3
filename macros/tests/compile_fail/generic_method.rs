#[quicall_macros::service]
trait Store {
    async fn get<K: AsRef<str>>(&self, key: K) -> Vec<u8>;
}

fn main() {}
