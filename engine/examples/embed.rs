//! The README's embedding example, on a simulated device so that it runs anywhere (and
//! `cargo test` builds it): the key-addressed API, then the digest-addressed one a server
//! uses, as a server's own tests would drive the engine.
use spike::device::{sim::SimDevice, Device};
use spike::{Change, Config, Durability, Engine, WriteOptions};
use std::sync::Arc;

fn main() -> spike::Result<()> {
    let config = Config {
        namespace: "users".into(),
        durability: Durability::CommitToDevice,
        write_block_size: 128 * 1024,
        ..Config::default()
    };
    // A real deployment names block devices in `config.devices` and calls
    // `Engine::format(&config, false)` once, then `Engine::open(config)`.
    let device: Arc<dyn Device> = Arc::new(SimDevice::new("sim0", 16 << 20, 7));
    Engine::format_devices(&config, std::slice::from_ref(&device), false)?;
    let engine = Engine::open_devices(config, vec![device])?;

    let generation = engine.put(b"user:42", b"{...}", &WriteOptions::default())?;
    let record = engine.get(b"user:42")?; // checksum-verified
    assert_eq!((record.value.as_slice(), record.generation), (&b"{...}"[..], generation));
    engine.delete(b"user:42")?; // a tombstone: stays deleted after any restart

    // A server addresses records by its clients' 20-byte digests.
    let digest = [0x5A; spike::limits::DIGEST_SIZE];
    engine.put_by_digest(&digest, b"1", &WriteOptions::default())?;
    let (_, written) = engine.update_by_digest(&digest, |held| {
        let n: u64 = held.map_or(0, |r| String::from_utf8_lossy(&r.value).parse().unwrap_or(0));
        Ok((Change::Put { value: (n + 1).to_string().into_bytes(), ttl_s: None }, ()))
    })?;
    println!("counter at generation {}", written.generation);
    engine.flush()?; // everything acknowledged so far is durable
    engine.close() // flushes, marks the devices clean: the next open is a fast restart
}
