#[quicall_macros::service]
trait Store {
    #[quicall(hedge = Hedge::Percentile(0.95))]
    async fn get(&self, key: String) -> Vec<u8>;
}

fn main() {}
