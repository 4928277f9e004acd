//! spike-server's request path, socket aside: the first byte picks the frame type
//! (info, admin, message, compressed), the rest is the frame body, answered by
//! `net::respond` against a namespace on a simulated device. Nothing may panic, and every
//! reply must be whole frames of version 2. The same bytes also go through the bin
//! decoder, which reads what the server stored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike::device::sim::SimDevice;
use spike::device::Device;
use spike::{Config, Durability, Engine};
use spike_tools::server::{bins::StoredRecord, net, Limits, Namespace, Server};
use std::sync::{Arc, LazyLock};

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    let config = Config {
        namespace: "test".into(),
        write_block_size: 128 * 1024,
        durability: Durability::Buffered,
        ..Config::default()
    };
    let device: Arc<dyn Device> = Arc::new(SimDevice::new("fuzz", 16 << 20, 1));
    Engine::format_devices(&config, std::slice::from_ref(&device), false).expect("format");
    let engine = Engine::open_devices(config, vec![device]).expect("open");
    let namespace = Namespace::new("test".into(), engine, 0, true);
    let limits = Limits { frame_bytes_max: 1 << 20, ..Limits::default() };
    Server::new(vec![namespace], "FUZZ".into(), None, limits)
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let _ = StoredRecord::decode(body);
    let kind = [1, 2, 3, 4, 3][selector as usize % 5];
    let mut send = |frame: &[u8]| {
        let mut at = 0;
        while at < frame.len() {
            assert!(frame.len() - at >= 8 && frame[at] == 2, "a reply that is not whole frames");
            let size = u64::from_be_bytes([0, 0, frame[at + 2], frame[at + 3], frame[at + 4], frame[at + 5], frame[at + 6], frame[at + 7]]);
            at += 8 + size as usize;
        }
        assert_eq!(at, frame.len(), "a reply frame's size runs past its bytes");
        Ok(())
    };
    net::respond(&SERVER, kind, body, "127.0.0.1:3000", &mut send);
});
