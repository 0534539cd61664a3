#[quicall_macros::service]
trait Store {
    #[quicall(server_stream, idempotent, hedge = Hedge::Percentile(0.95))]
    async fn list(&self, prefix: String) -> String;
}

fn main() {}
