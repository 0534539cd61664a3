#[quicall_macros::service]
trait Store {
    #[quicall(server_stream, idempotent, bidi_stream)]
    async fn list(&self, prefix: String) -> String;
}

fn main() {}
