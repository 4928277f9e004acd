//! The README's Rust client example: run `spike-server`, then
//! `cargo run -p spike-tools --example rust_client` (or pass HOST:PORT).
use aerospike::{as_bin, as_key, operations, Bins, Client, ClientPolicy, ReadPolicy, WritePolicy};

#[tokio::main]
async fn main() -> aerospike::Result<()> {
    let host = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".into());
    let client = Client::new(&ClientPolicy::default(), &host).await?;
    let key = as_key!("test", "users", "ada");
    client.put(&WritePolicy::default(), &key, &[as_bin!("name", "Ada"), as_bin!("visits", 1)]).await?;
    client.operate(&WritePolicy::default(), &key, &[operations::add(&as_bin!("visits", 1))]).await?;
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await?;
    println!("{:?} (generation {})", record.bins, record.generation);
    client.close().await
}
