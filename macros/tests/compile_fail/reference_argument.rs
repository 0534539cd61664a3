#[quicall_macros::service]
trait Store {
    async fn get(&self, key: &str) -> Vec<u8>;
}

fn main() {}
