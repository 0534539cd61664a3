#[quicall_macros::service]
trait Store {
    async fn get(&self, key: String) -> Result<Vec<u8>, String>;
}

fn main() {}
