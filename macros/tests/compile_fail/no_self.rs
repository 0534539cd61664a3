#[quicall_macros::service]
trait Store {
    async fn get(key: String) -> Vec<u8>;
}

fn main() {}
