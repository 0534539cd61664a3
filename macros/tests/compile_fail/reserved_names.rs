#[quicall_macros::service]
trait Store {
    async fn new(&self, key: String);
}

fn main() {}
