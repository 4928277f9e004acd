//! `spike-server`'s secondary indexes, kept in memory and driven by the official Aerospike
//! Rust client: queries by index read the records the index names (`sindex-stat` counts
//! the lookups) and agree with a model of the records after concurrent writers updated
//! and deleted them; the definitions survive a restart and the index is rebuilt; a
//! truncate empties it. The writers' seed comes from `SPIKE_SEED` or is drawn, and printed.

#[path = "common/server.rs"]
#[allow(dead_code)]
mod server;

use aerospike::query::{CollectionIndexType, Filter, IndexType, Statement};
use aerospike::{
    as_bin, as_key, as_list, as_val, AdminPolicy, Bins, Client, ClientPolicy, QueryPolicy, Task, Value,
    WritePolicy,
};
use futures::StreamExt;
use server::ServerProcess;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORDS: i64 = 400;
const WRITERS: i64 = 4;

async fn connect(server: &ServerProcess) -> Client {
    Client::new(&ClientPolicy::default(), &server.host()).await.expect("connect to spike-server")
}

async fn info(client: &Client, command: &str) -> String {
    let answer = client.info(&AdminPolicy::default(), &[command]).await.unwrap();
    answer.get(command).cloned().unwrap_or_default()
}

/// A `sindex-stat` figure of index `name`.
async fn stat(client: &Client, name: &str, figure: &str) -> u64 {
    let reply = info(client, &format!("sindex-stat:namespace=test;indexname={name}")).await;
    let value = reply
        .split(';')
        .find_map(|kv| kv.strip_prefix(&format!("{figure}=")))
        .unwrap_or_else(|| panic!("{reply}"));
    value.parse().unwrap()
}

/// The `id` bins of the records of set `m` a query by `filter` returns, sorted.
async fn ids(client: &Client, filter: Filter) -> Vec<i64> {
    let mut statement = Statement::new("test", "m", Bins::All);
    statement.set_filter(filter);
    let stream = client
        .query(&QueryPolicy::default(), aerospike::query::PartitionFilter::all(), statement)
        .await
        .unwrap();
    let records: Vec<_> = stream.into_stream().collect().await;
    let mut found: Vec<i64> = records
        .into_iter()
        .map(|r| match r.unwrap().bins.get("id") {
            Some(Value::Int(id)) => *id,
            other => panic!("{other:?}"),
        })
        .collect();
    found.sort();
    found
}

fn bins(id: i64, n: i64) -> Vec<aerospike::Bin> {
    vec![
        as_bin!("id", id),
        as_bin!("n", n),
        as_bin!("l", as_list!(n, 100 + n)),
        as_bin!("s", format!("k{}", id % 5)),
    ]
}

/// The records a model says a query of `n` in [low, high] returns.
fn expected(model: &BTreeMap<i64, Option<i64>>, keep: impl Fn(i64, i64) -> bool) -> Vec<i64> {
    model.iter().filter_map(|(&id, n)| n.filter(|&n| keep(id, n)).map(|_| id)).collect()
}

async fn check_queries(client: &Client, model: &BTreeMap<i64, Option<i64>>, seed: u64) {
    for (low, high) in [(0, 39), (5, 9), (17, 17), (30, 45), (-5, -1)] {
        let found = ids(client, Filter::range("n", low, high)).await;
        assert_eq!(found, expected(model, |_, n| low <= n && n <= high), "n in [{low}, {high}], seed {seed}");
    }
    let found = ids(client, Filter::contains("l", 105, CollectionIndexType::List)).await;
    assert_eq!(found, expected(model, |_, n| n == 5), "l contains 105, seed {seed}");
    let found = ids(client, Filter::equal("s", "k3")).await;
    assert_eq!(found, expected(model, |id, _| id % 5 == 3), "s = k3, seed {seed}");
}

/// One writer's changes to the records it owns (id % WRITERS == writer), as the model sees them.
async fn write_randomly(client: Arc<Client>, writer: i64, seed: u64) -> BTreeMap<i64, Option<i64>> {
    let mut state = seed ^ (writer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut model = BTreeMap::new();
    for _ in 0..150 {
        let id = (next() % (RECORDS as u64 / WRITERS as u64)) as i64 * WRITERS + writer;
        let key = as_key!("test", "m", id);
        if next() % 4 == 0 {
            let _ = client.delete(&WritePolicy::default(), &key).await.unwrap();
            model.insert(id, None);
        } else {
            let n = (next() % 50) as i64 - 5;
            client.put(&WritePolicy::default(), &key, &bins(id, n)).await.unwrap();
            model.insert(id, Some(n));
        }
    }
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_queries_read_what_the_index_names_and_agree_with_a_model_across_writes_and_restarts() {
    let seed = std::env::var("SPIKE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("SPIKE_SEED={seed}");
    let udf_dir = tempfile::tempdir().unwrap();
    let top = format!("udf_dir = \"{}\"", udf_dir.path().display());
    let mut server = ServerProcess::start_with("buffered", &top, "");
    let client = Arc::new(connect(&server).await);
    let mut model = BTreeMap::new();
    for id in 0..RECORDS {
        client.put(&WritePolicy::default(), &as_key!("test", "m", id), &bins(id, id % 40)).await.unwrap();
        model.insert(id, Some(id % 40));
    }
    client.put(&WritePolicy::default(), &as_key!("test", "other", 1), &bins(1000, 5)).await.unwrap();

    let ap = AdminPolicy::default();
    let indexes = [
        ("n", "m_n", IndexType::Numeric, CollectionIndexType::Default),
        ("l", "m_l", IndexType::Numeric, CollectionIndexType::List),
        ("s", "m_s", IndexType::String, CollectionIndexType::Default),
    ];
    for (bin, name, kind, collection) in indexes {
        let task =
            client.create_index_on_bin(&ap, "test", "m", bin, name, kind, collection, None).await.unwrap();
        task.wait_till_complete(None).await.unwrap();
    }
    assert_eq!(stat(&client, "m_n", "entries").await, RECORDS as u64, "the build indexed set m only");
    assert_eq!(stat(&client, "m_l", "keys").await, 2 * RECORDS as u64);
    check_queries(&client, &model, seed).await;
    assert!(stat(&client, "m_n", "query_lookups").await >= 4096, "the queries used the index");

    let writers: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(write_randomly(client.clone(), w, seed))).collect();
    for writer in writers {
        model.extend(writer.await.unwrap());
    }
    check_queries(&client, &model, seed).await;
    let live = model.values().filter(|n| n.is_some()).count() as u64;
    assert_eq!(stat(&client, "m_n", "entries").await, live, "deleted records left the index, seed {seed}");

    // The definitions come back after a restart and the index is built again.
    assert_eq!(server.stop(), Some(0));
    server.launch();
    let client = connect(&server).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in ["m_n", "m_l", "m_s"] {
        while stat(&client, name, "load_pct").await < 100 {
            assert!(Instant::now() < deadline, "index {name} was not rebuilt");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(stat(&client, "m_n", "entries").await, live);
    check_queries(&client, &model, seed).await;
    assert!(stat(&client, "m_n", "query_lookups").await >= 4096);

    // A truncate empties the index.
    client.truncate(&ap, "test", "m", 0).await.unwrap();
    assert_eq!(stat(&client, "m_n", "entries").await, 0);
    assert!(ids(&client, Filter::range("n", -10, 100)).await.is_empty());
    client.close().await.unwrap();
}
