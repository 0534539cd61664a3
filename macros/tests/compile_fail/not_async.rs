#[quicall_macros::service]
trait Store {
    fn get(&self, key: String) -> Vec<u8>;
}

fn main() {}
