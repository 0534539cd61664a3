#[quicall_macros::service]
trait Store {
    #[quicall(idempotnet)]
    async fn get(&self, key: String) -> Vec<u8>;
}

fn main() {}
