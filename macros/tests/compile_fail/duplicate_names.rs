#[quicall_macros::service(package = "calc")]
trait Calc {
    async fn add(&self, a: i64, b: i64) -> i64;
    #[quicall(name = "Add")]
    async fn plus(&self, a: i64, b: i64) -> i64;
}

fn main() {}
