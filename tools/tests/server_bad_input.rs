//! Bad input to `spike-server`: oversized, truncated and malformed frames, an unknown
//! namespace, a bin name over 15 bytes, a digest of the wrong length, garbage info
//! commands, many connections at once and a client that sends nothing. Each gets the
//! answer `../shared/aerospike-wire.md` gives, the server keeps serving others and
//! nothing is written. Also replays the fuzz seeds and found inputs through the request
//! path with no socket.

#[path = "common/server.rs"]
mod server;

use aerospike::{Bins, Client, ClientPolicy, QueryPolicy, ReadPolicy, Statement};
use futures::StreamExt;
use server::ServerProcess;
use spike::device::sim::SimDevice;
use spike::device::Device;
use spike::{Config, Durability, Engine};
use spike_tools::server::wire::*;
use spike_tools::server::{net, Limits, Namespace, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ProtoHeader::encode(kind, body.len()).to_vec();
    out.extend_from_slice(body);
    out
}

/// A write message: namespace, set, digest and one WRITE op, as a client would send it.
fn write_message(namespace: &[u8], digest: &[u8], bin: &[u8]) -> Vec<u8> {
    let mut reply = Reply::default();
    reply.message(&MsgHeader { info2: INFO2_WRITE, n_fields: 3, n_ops: 1, ..MsgHeader::default() });
    reply.field(FIELD_NAMESPACE, namespace);
    reply.field(FIELD_SET, b"bad");
    reply.field(FIELD_DIGEST, digest);
    reply.op(OP_WRITE, 1, bin, &7i64.to_be_bytes());
    reply.finish()
}

fn connect(server: &ServerProcess) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Reads one reply frame: (type, body).
fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    let proto = ProtoHeader::decode(&header);
    let mut body = vec![0u8; proto.body_bytes as usize];
    stream.read_exact(&mut body)?;
    Ok((proto.kind, body))
}

fn result_code_of(body: &[u8]) -> u8 {
    MsgHeader::decode(body).unwrap().result_code
}

/// Whether the connection was closed by the server (EOF, not a timeout).
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
        || matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

async fn records_in_namespace(server: &ServerProcess) -> usize {
    let client = Client::new(&ClientPolicy::default(), &server.host()).await.unwrap();
    let rs = client
        .query(
            &QueryPolicy::default(),
            aerospike::query::PartitionFilter::all(),
            Statement::new("test", "", Bins::All),
        )
        .await
        .unwrap();
    let count = rs.into_stream().count().await;
    client.close().await.unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_the_protocols_answers_and_write_nothing() {
    let server = ServerProcess::start("buffered", "");
    // An oversized frame: PARAMETER, then the connection closes.
    let mut stream = connect(&server);
    stream.write_all(&ProtoHeader::encode(TYPE_MSG, 1 << 30)).unwrap();
    let (kind, body) = read_frame(&mut stream).unwrap();
    assert_eq!((kind, result_code_of(&body)), (TYPE_MSG, 4));
    assert!(closed(&mut stream));
    // A wrong protocol version: the same.
    let mut stream = connect(&server);
    let mut bad_version = frame(TYPE_MSG, &[0; 22]);
    bad_version[0] = 9;
    stream.write_all(&bad_version).unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 4);
    assert!(closed(&mut stream));
    // A truncated frame then a hang-up: nothing is answered or written.
    let mut stream = connect(&server);
    let whole = write_message(b"test", &[1; 20], b"bin");
    stream.write_all(&whole[..whole.len() - 5]).unwrap();
    drop(stream);
    // A message whose header size is wrong, and one with trailing bytes: PARAMETER.
    let mut stream = connect(&server);
    let mut bad_header = whole.clone();
    bad_header[8] = 30;
    stream.write_all(&bad_header).unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 4);
    let mut trailing = whole[8..].to_vec();
    trailing.extend_from_slice(b"junk");
    stream.write_all(&frame(TYPE_MSG, &trailing)).unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 4);
    // Unknown namespace 20, a 16-byte bin name 21, a 19-byte digest 4: on one connection.
    stream.write_all(&write_message(b"nope", &[2; 20], b"bin")).unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 20);
    stream.write_all(&write_message(b"test", &[3; 20], b"sixteen-bytes-xx")).unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 21);
    stream.write_all(&write_message(b"test", &[4; 19], b"bin")).unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 4);
    // Garbage info commands: one error line each, echoed; the connection stays usable.
    stream.write_all(&frame(TYPE_INFO, b"no-such-command\n\x01\x02\xff\nnode\n")).unwrap();
    let (kind, body) = read_frame(&mut stream).unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(kind, TYPE_INFO);
    assert!(text.starts_with("no-such-command\tERROR:4:unrecognized command\n"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    // A well-formed write on the same connection still works, then nothing else was written.
    stream.write_all(&write_message(b"test", &[5; 20], b"bin")).unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 0);
    assert_eq!(records_in_namespace(&server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_and_silent_ones_do_not_stop_the_server() {
    let server = ServerProcess::start("buffered", "");
    // A client that connects and sends nothing, and one that sends half a header.
    let silent = connect(&server);
    let mut half = connect(&server);
    half.write_all(&[2, 3, 0]).unwrap();
    let mut streams: Vec<TcpStream> = (0..300).map(|_| connect(&server)).collect();
    for stream in &mut streams {
        stream.write_all(&frame(TYPE_INFO, b"node\n")).unwrap();
    }
    for stream in &mut streams {
        let (kind, body) = read_frame(stream).unwrap();
        assert_eq!(kind, TYPE_INFO);
        assert!(body.starts_with(b"node\t"));
    }
    let client = Client::new(&ClientPolicy::default(), &server.host()).await.unwrap();
    let key = aerospike::as_key!("test", "s", 1);
    assert!(client.get(&ReadPolicy::default(), &key, Bins::All).await.is_err());
    let stats = client.info(&aerospike::AdminPolicy::default(), &["statistics"]).await.unwrap();
    assert!(stats["statistics"].contains("client_connections="), "{stats:?}");
    client.close().await.unwrap();
    drop((silent, half));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_reaped_after_the_configured_time() {
    let mut server = ServerProcess::start("buffered", "");
    // Rewrite the config with a one-second idle timeout and restart.
    let text = std::fs::read_to_string(&server.config_path)
        .unwrap()
        .replace("threads = 4", "threads = 4\nidle_timeout_s = 1");
    std::fs::write(&server.config_path, text).unwrap();
    assert_eq!(server.stop(), Some(0));
    server.launch();
    let mut silent = connect(&server);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(closed(&mut silent), "an idle connection was not closed");
}

#[test]
fn the_metrics_endpoint_serves_the_engines_stats_as_prometheus_text() {
    let metrics_port = server::free_port();
    let server =
        ServerProcess::start_with("buffered", &format!("metrics = \"127.0.0.1:{metrics_port}\""), "");
    let mut stream = connect(&server);
    // Twice: the second update reads the record it merges into, from the open block.
    for _ in 0..2 {
        stream.write_all(&write_message(b"test", &[9; 20], b"bin")).unwrap();
        assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 0);
    }
    let mut http = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("spike_objects{namespace=\"test\"} 1"), "{text}");
    assert!(text.contains("spike_updates_total{namespace=\"test\"} 2"), "{text}");
    assert!(text.contains("spike_reads_from_memory_total{namespace=\"test\"} 1"), "{text}");
    assert!(text.contains("spike_reads_from_device_total{namespace=\"test\"} 0"), "{text}");
    // The test server's device was formatted at this start: neither fast nor cold.
    assert!(text.contains("spike_restart_fast{namespace=\"test\"} 0"), "{text}");
    assert!(text.contains("spike_restart_cold{namespace=\"test\"} 0"), "{text}");
    // A read of a missing record is counted by operation and kind.
    stream
        .write_all(&frame(TYPE_MSG, &{
            let mut reply = Reply::default();
            reply.message(&MsgHeader {
                info1: INFO1_READ | INFO1_GET_ALL,
                n_fields: 2,
                ..MsgHeader::default()
            });
            reply.field(FIELD_NAMESPACE, b"test");
            reply.field(FIELD_DIGEST, &[8; 20]);
            reply.finish()[8..].to_vec()
        }))
        .unwrap();
    assert_eq!(result_code_of(&read_frame(&mut stream).unwrap().1), 2);
    let mut http = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    let series = "spike_errors_by_op_total{namespace=\"test\",op=\"get\",kind=\"not_found\"} 1";
    assert!(text.contains(series), "{text}");
    assert!(text.contains("spike_get_latency_us_bucket{namespace=\"test\",le=\"+Inf\"}"), "{text}");
}

fn sim_server() -> Server {
    let config = Config {
        namespace: "test".into(),
        write_block_size: 128 * 1024,
        durability: Durability::Buffered,
        ..Config::default()
    };
    let device: Arc<dyn Device> = Arc::new(SimDevice::new("replay", 16 << 20, 1));
    Engine::format_devices(&config, std::slice::from_ref(&device), false).unwrap();
    let engine = Engine::open_devices(config, vec![device]).unwrap();
    let namespace = Namespace::new("test".into(), engine, 0, true);
    Server::new(
        vec![namespace],
        "REPLAY".into(),
        None,
        Limits { frame_bytes_max: 1 << 20, ..Limits::default() },
    )
}

/// The fuzz target's check, on every seed (frames the official client sent) and every
/// saved finding, each also cut short at every length.
#[test]
fn fuzz_seeds_and_findings_replay_without_panic_and_answer_whole_frames() {
    let server = sim_server();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for dir in ["seeds/server_request", "regressions/server_request"] {
        // No findings yet is an absent directory (git keeps no empty ones).
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            inputs.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
    }
    assert!(inputs.len() >= 10, "the seeds are missing");
    let mut answered = 0;
    for input in &inputs {
        for len in 1..=input.len() {
            let (selector, body) = input[..len].split_first().unwrap();
            let kind = [1, 2, 3, 4, 3][*selector as usize % 5];
            let mut send = |reply: &[u8]| {
                let mut at = 0;
                while at < reply.len() {
                    let header: [u8; 8] = reply[at..at + 8].try_into().unwrap();
                    let proto = ProtoHeader::decode(&header);
                    assert_eq!(proto.version, 2);
                    at += 8 + proto.body_bytes as usize;
                }
                assert_eq!(at, reply.len());
                answered += 1;
                Ok(())
            };
            net::respond(&server, kind, body, "127.0.0.1:3000", &mut send);
        }
    }
    assert!(answered > inputs.len());
}

/// The `cdt_ops` fuzz target's check on its seeds and saved findings, each also cut short
/// at every length: list and map ops (path ops included), HLL and bit ops and filter expressions on client bytes never
/// panic, what a list or map op stores decodes, a sketch an HLL op stores counts, and a
/// blob a bit op stores reads.
#[test]
fn cdt_fuzz_seeds_and_findings_replay_without_panic() {
    use spike_tools::server::bins::StoredRecord;
    use spike_tools::server::{bits, cdt, exp_op, filter, hll, msgpack, string_ops};
    let mut record = StoredRecord::default();
    record.set_bin(b"n", 1, &7i64.to_be_bytes());
    record.set_bin(b"b", bits::PARTICLE_BLOB, &[0xf0, 0x0f, 0x55]);
    let subject = filter::Subject {
        record: &record,
        generation: 3,
        void_time: 0,
        last_update_ms: 1,
        digest: &[7; 20],
        size_bytes: 64,
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for dir in ["seeds/cdt_ops", "regressions/cdt_ops"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            inputs.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
    }
    assert!(inputs.len() >= 8, "the seeds are missing");
    let (mut stored, mut sketches, mut blobs, mut passed, mut paths, mut strings) = (0, 0, 0, 0, 0, 0);
    for input in &inputs {
        for len in 0..=input.len() {
            let data = &input[..len];
            if let Ok(value) = msgpack::decode(data) {
                let encoded = msgpack::encode(&value);
                assert_eq!(msgpack::encode(&msgpack::decode(&encoded).unwrap()), encoded);
            }
            passed += (filter::passes(data, &subject) == Ok(true)) as usize;
            let _ = (exp_op::read(data, &subject), exp_op::modify(data, b"n", &subject));
            let Some((&selector, rest)) = data.split_first() else { continue };
            let Some((bin_len, rest)) = rest.split_first_chunk::<2>() else { continue };
            let (bin, op) = rest.split_at((u16::from_be_bytes(*bin_len) as usize).min(rest.len()));
            let particle = if selector & 1 != 0 { cdt::PARTICLE_MAP } else { cdt::PARTICLE_LIST };
            for held in [Some((particle, bin)), None] {
                if let Ok(applied) = filter::apply_cdt(held, op, selector & 2 != 0, &subject) {
                    paths += (held.is_some() && op.get(1..3) == Some(&[0xcc, 0xfe][..])) as usize;
                    if let Some((_, bytes)) = applied.new_bin {
                        assert!(msgpack::decode(&bytes).is_ok());
                        stored += 1;
                    }
                }
            }
            for held in [Some((3, bin)), Some((particle, bin)), None] {
                if let Ok(string_ops::Applied { new_bin: Some((stored, bytes)), .. }) =
                    string_ops::apply(held, op, selector & 2 != 0)
                {
                    assert!(if stored == 3 {
                        std::str::from_utf8(&bytes).is_ok()
                    } else {
                        msgpack::decode(&bytes).is_ok()
                    });
                    strings += 1;
                }
            }
            let empty_sketch = [&[0u8, 4, 0][..], &[0; 20]].concat();
            for held in [Some(bin), Some(&empty_sketch[..]), None] {
                let held = held.map(|b| (hll::PARTICLE_HLL, b));
                if let Ok(hll::Applied { new_bin: Some(bytes), .. }) = hll::apply(held, op, selector & 2 != 0)
                {
                    assert!(hll::apply(Some((hll::PARTICLE_HLL, &bytes)), &[0x91, 0x32], false).is_ok());
                    sketches += 1;
                }
            }
            for held in [Some(bin), None] {
                let held = held.map(|b| (bits::PARTICLE_BLOB, b));
                let modify = selector & 2 != 0;
                if let Ok(bits::Applied { new_bin: Some(bytes), .. }) =
                    bits::apply(held, bits::PARTICLE_BLOB, op, modify)
                {
                    let first_bit = [0x93, 0x33, 0x00, 0x01];
                    let count = bits::apply(
                        Some((bits::PARTICLE_BLOB, &bytes)),
                        bits::PARTICLE_BLOB,
                        &first_bit,
                        false,
                    );
                    assert!(bytes.is_empty() || count.is_ok());
                    blobs += 1;
                }
            }
        }
    }
    assert!(blobs >= 2, "the seeds no longer reach the bit ops");
    assert!(paths >= 4, "the seeds no longer reach the path ops");
    assert!(strings >= 3, "the seeds no longer reach the string ops");
    assert!(passed >= 1, "no seed's filter (a bit count call among them) passes");
    assert!(stored >= 5, "the seeds no longer reach the ops ({stored} stored)");
    assert!(sketches >= 1, "the seeds no longer reach the HLL ops");
}

/// Impossible options and a missing config file are refused with a message naming them,
/// exit code 2, before anything is opened or formatted.
#[test]
fn impossible_options_and_a_missing_config_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_spike-server"))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that accepted the option would run: give it 5 s, then stop it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(&["--data-dir", data_dir, "--threads", "0"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--threads"), "{stderr}");
    let (code, stderr) = run(&["--data-dir", data_dir, "--threads", "257"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = run(&["--config", "/nonexistent/spike.toml"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/spike.toml"), "{stderr}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was created");

    // A damaged file of index definitions stops the start, naming the file and the line,
    // before any device is opened.
    let udf_dir = dir.path().join("udf");
    std::fs::create_dir(&udf_dir).unwrap();
    std::fs::write(udf_dir.join(".indexes"), "ns=test;indexname=i;bin=n;type=NUMERIC\ngarbage\n").unwrap();
    let (code, stderr) = run(&["--data-dir", data_dir]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(".indexes line 2: no namespace or index name"), "{stderr}");
    assert!(!dir.path().join("test.dat").exists(), "the device was not created");
}
