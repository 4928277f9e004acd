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

/// The Prometheus text of the metrics endpoint.
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    text
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
    query_ids(client, "m", filter, None).await
}

/// The `id` bins of the records of `set` a query by `filter` (and `expression`) returns, sorted.
async fn query_ids(
    client: &Client,
    set: &str,
    filter: Filter,
    expression: Option<aerospike::expressions::Expression>,
) -> Vec<i64> {
    let mut statement = Statement::new("test", set, Bins::All);
    statement.set_filter(filter);
    let mut policy = QueryPolicy::default();
    policy.base_policy.filter_expression = expression;
    let stream = client.query(&policy, aerospike::query::PartitionFilter::all(), statement).await.unwrap();
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
    let metrics_port = server::free_port();
    let top = format!("udf_dir = \"{}\"\nmetrics = \"127.0.0.1:{metrics_port}\"", udf_dir.path().display());
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
    assert!(info(&client, "namespace/test").await.contains(";sindexes=3;sindex_keys=1600"));
    let metrics = metrics_text(metrics_port);
    assert!(
        metrics.contains(&format!("spike_sindex_records{{namespace=\"test\",index=\"m_n\"}} {RECORDS}")),
        "{metrics}"
    );
    assert!(metrics.contains("spike_sindex_load_pct{namespace=\"test\",index=\"m_s\"} 100"), "{metrics}");
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

    // A truncate empties the index (swept behind the reply).
    client.truncate(&ap, "test", "m", 0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&client, "m_n", "entries").await > 0 {
        assert!(Instant::now() < deadline, "the truncate's sweep did not empty the index");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ids(&client, Filter::range("n", -10, 100)).await.is_empty());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_queries_find_points_within_regions_and_regions_containing_points() {
    use aerospike::as_geo;
    use aerospike::expressions::{geo_bin, geo_compare, geo_val};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let (wp, ap) = (WritePolicy::default(), AdminPolicy::default());
    let points =
        [(1, -122.0, 37.5), (2, -121.5, 37.5), (3, -120.0, 37.5), (4, -73.9, 40.7), (5, -122.1, 37.5)];
    for (id, lng, lat) in points {
        let point = format!(r#"{{"type": "Point", "coordinates": [{lng}, {lat}]}}"#);
        let bins = [as_bin!("id", id), as_bin!("p", as_geo!(point))];
        client.put(&wp, &as_key!("test", "g", id), &bins).await.unwrap();
    }
    let square = |x0: f64, y0: f64, x1: f64, y1: f64| {
        format!(
            r#"{{"type": "Polygon", "coordinates": [[[{x0}, {y0}], [{x1}, {y0}], [{x1}, {y1}], [{x0}, {y1}], [{x0}, {y0}]]]}}"#
        )
    };
    let regions = [(10, square(-123.0, 37.0, -121.0, 38.0)), (11, square(-74.0, 40.0, -73.0, 41.0))];
    for (id, region) in &regions {
        let bins = [as_bin!("id", *id), as_bin!("r", as_geo!(region.clone()))];
        client.put(&wp, &as_key!("test", "g", *id), &bins).await.unwrap();
    }
    // Without an index: 201, as on the real server.
    let err = client
        .query(&QueryPolicy::default(), aerospike::query::PartitionFilter::all(), {
            let mut s = Statement::new("test", "g", Bins::All);
            s.set_filter(Filter::geo_within_region("p", &square(-122.5, 37.0, -121.0, 38.08)));
            s
        })
        .await;
    let refused = match err {
        Err(err) => err.server_result_code(),
        Ok(stream) => stream
            .into_stream()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .find_map(|r| r.err())
            .and_then(|e| e.server_result_code()),
    };
    assert_eq!(refused, Some(aerospike::ResultCode::IndexNotFound));
    for (bin, name) in [("p", "g_p"), ("r", "g_r")] {
        let task = client
            .create_index_on_bin(
                &ap,
                "test",
                "g",
                bin,
                name,
                IndexType::Geo2DSphere,
                CollectionIndexType::Default,
                None,
            )
            .await
            .unwrap();
        task.wait_till_complete(None).await.unwrap();
    }
    let within = Filter::geo_within_region("p", &square(-122.5, 37.0, -121.0, 38.08));
    assert_eq!(query_ids(&client, "g", within, None).await, vec![1, 2, 5]);
    // Point 2 is 44 km east (half a degree of longitude at latitude 37.5), point 5 is 8.8 km west.
    let radius = Filter::geo_within_radius("p", -122.0, 37.5, 40_000.0);
    assert_eq!(query_ids(&client, "g", radius, None).await, vec![1, 5]);
    let radius = Filter::geo_within_radius("p", -122.0, 37.5, 50_000.0);
    assert_eq!(query_ids(&client, "g", radius, None).await, vec![1, 2, 5]);
    let far = Filter::geo_within_radius("p", -122.0, 37.5, 5_000.0);
    assert_eq!(query_ids(&client, "g", far, None).await, vec![1]);
    let contains = Filter::geo_contains("r", r#"{"type": "Point", "coordinates": [-122.0, 37.5]}"#);
    assert_eq!(query_ids(&client, "g", contains, None).await, vec![10]);
    // A filter expression compares a bin with a region.
    let everywhere = Filter::geo_within_region("p", &square(-180.0, -90.0, 180.0, 90.0));
    let east = geo_compare(geo_bin("p".to_string()), geo_val(square(-100.0, 0.0, 0.0, 60.0)));
    assert_eq!(query_ids(&client, "g", everywhere, Some(east)).await, vec![4]);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_expired_records_leave_the_index_at_the_sweep_interval() {
    let server = ServerProcess::start_with("buffered", "index_sweep_s = 1", "");
    let client = connect(&server).await;
    let task = client
        .create_index_on_bin(
            &AdminPolicy::default(),
            "test",
            "t",
            "n",
            "t_n",
            IndexType::Numeric,
            CollectionIndexType::Default,
            None,
        )
        .await
        .unwrap();
    task.wait_till_complete(None).await.unwrap();
    let short = WritePolicy { expiration: aerospike::Expiration::Seconds(2), ..WritePolicy::default() };
    for id in 0..30 {
        let policy = if id < 20 { &short } else { &WritePolicy::default() };
        client.put(policy, &as_key!("test", "t", id), &[as_bin!("id", id), as_bin!("n", id)]).await.unwrap();
    }
    assert_eq!(stat(&client, "t_n", "entries").await, 30, "the writes indexed every record");
    let deadline = Instant::now() + Duration::from_secs(15);
    while stat(&client, "t_n", "entries").await > 10 {
        assert!(Instant::now() < deadline, "expired records stayed in the index");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stat(&client, "t_n", "entries").await, 10);
    assert_eq!(query_ids(&client, "t", Filter::range("n", 0, 100), None).await, (20..30).collect::<Vec<_>>());
    client.close().await.unwrap();
}
