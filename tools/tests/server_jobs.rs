//! `spike-server`'s background jobs (`query_operate`, record UDFs over a query), driven by
//! the official Aerospike Rust client: the reply comes at once and the job runs behind,
//! `query-show` reports its progress and counts as the client reads them, `query-abort`
//! stops it at a chunk boundary, and a shutdown stops it with every record either done or
//! not (never half-done), so that the counts the job reports match the records; queued
//! secondary-index builds do not hold up a shutdown.

#[path = "common/server.rs"]
mod server;

use aerospike::expressions::{int_bin, int_val, lt};
use aerospike::operations;
use aerospike::query::Statement;
use aerospike::{as_bin, as_key, AdminPolicy, Bins, Client, ClientPolicy, ReadPolicy, Value, WritePolicy};
use server::ServerProcess;
use std::time::{Duration, Instant};

const RECORDS: i64 = 2000;

async fn connect(server: &ServerProcess) -> Client {
    Client::new(&ClientPolicy::default(), &server.host()).await.expect("connect to spike-server")
}

async fn info(client: &Client, command: &str) -> String {
    let answer = client.info(&AdminPolicy::default(), &[command]).await.unwrap();
    answer.get(command).cloned().unwrap_or_default()
}

/// Bin `n` of records 0..RECORDS of set `j`.
async fn values(client: &Client) -> Vec<i64> {
    let mut found = Vec::new();
    for i in 0..RECORDS {
        let record = client.get(&ReadPolicy::default(), &as_key!("test", "j", i), Bins::All).await.unwrap();
        match record.bins.get("n") {
            Some(Value::Int(n)) => found.push(*n),
            other => panic!("record {i}: {other:?}"),
        }
    }
    found
}

fn add_one(records_per_second: u32) -> (WritePolicy, Statement) {
    let policy = WritePolicy { records_per_second, ..WritePolicy::default() };
    let mut statement = Statement::new("test", "j", Bins::All);
    statement.set_operations([operations::add(&as_bin!("n", 1))]);
    (policy, statement)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_jobs_reply_at_once_report_progress_and_stop_when_aborted() {
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    for i in 0..RECORDS {
        client.put(&wp, &as_key!("test", "j", i), &[as_bin!("n", i)]).await.unwrap();
    }
    client.put(&wp, &as_key!("test", "other", 1), &[as_bin!("n", 7)]).await.unwrap();

    // At 1000 records a second the job takes about two seconds; the reply does not wait.
    let (policy, statement) = add_one(1000);
    let asked = Instant::now();
    let task = client.query_operate(&policy, statement).await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "the reply waited for the job: {:?}",
        asked.elapsed()
    );
    let early = task.progress().await.unwrap();
    assert!(!early.complete, "{early:?}");
    let shown = info(&client, &format!("query-show:id={}", task.task_id())).await;
    assert!(shown.contains("status=active(ok)") && shown.contains("job-type=background-ops"), "{shown}");
    let done =
        task.wait_for_progress(Some(Duration::from_secs(60)), Duration::from_millis(50)).await.unwrap();
    assert_eq!((done.succeeded, done.failed), (RECORDS as u64, 0), "{done:?}");
    assert!(done.throttled > 0, "the rate limit held records back: {done:?}");
    assert!(
        asked.elapsed() >= Duration::from_millis(1900),
        "the rate limit was not kept: {:?}",
        asked.elapsed()
    );
    assert_eq!(values(&client).await, (1..=RECORDS).collect::<Vec<_>>());
    let other = client.get(&ReadPolicy::default(), &as_key!("test", "other", 1), Bins::All).await.unwrap();
    assert_eq!(other.bins.get("n"), Some(&Value::from(7)), "another set is left alone");

    // A filter expression: the records it leaves out are counted as filtered.
    let (mut policy, statement) = add_one(0);
    policy.base_policy.filter_expression = Some(lt(int_bin("n"), int_val(101)));
    let task = client.query_operate(&policy, statement).await.unwrap();
    let done =
        task.wait_for_progress(Some(Duration::from_secs(60)), Duration::from_millis(20)).await.unwrap();
    assert_eq!((done.succeeded, done.filtered_bins, done.failed), (100, RECORDS as u64 - 100, 0), "{done:?}");

    // An aborted job stops at a chunk boundary: the records it reports are exactly those
    // it changed.
    let before = values(&client).await;
    let (policy, statement) = add_one(200);
    let task = client.query_operate(&policy, statement).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(info(&client, &format!("query-abort:id={}", task.task_id())).await, "OK");
    let stopped =
        task.wait_for_progress(Some(Duration::from_secs(30)), Duration::from_millis(20)).await.unwrap();
    let shown = info(&client, &format!("query-show:id={}", task.task_id())).await;
    assert!(shown.contains("status=done(user-aborted)"), "{shown}");
    assert!(stopped.succeeded > 0 && stopped.succeeded < RECORDS as u64, "{stopped:?}");
    let after = values(&client).await;
    let changed = before.iter().zip(&after).filter(|(b, a)| *a - *b == 1).count() as u64;
    assert!(before.iter().zip(&after).all(|(b, a)| a - b <= 1));
    assert_eq!(changed, stopped.succeeded, "the job's count and the records agree");
    assert_eq!(info(&client, &format!("query-abort:id={}", task.task_id())).await, "ERROR:2:job not found");
    assert_eq!(info(&client, "query-show:id=12345").await, "ERROR:2:job not found");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_a_background_job_with_each_record_done_or_not() {
    let mut server = ServerProcess::start("commit-to-device", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    for i in 0..RECORDS {
        client.put(&wp, &as_key!("test", "j", i), &[as_bin!("n", 0)]).await.unwrap();
    }
    let (policy, statement) = add_one(300);
    client.query_operate(&policy, statement).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.close().await.unwrap();
    let asked = Instant::now();
    assert_eq!(server.stop(), Some(0), "a clean exit");
    assert!(asked.elapsed() < Duration::from_secs(5), "the job held up the shutdown: {:?}", asked.elapsed());

    server.launch();
    let client = connect(&server).await;
    let after = values(&client).await;
    let changed = after.iter().filter(|&&n| n == 1).count();
    assert!(after.iter().all(|&n| n == 0 || n == 1), "{after:?}");
    assert!(changed > 0 && changed < RECORDS as usize, "the job had started and not finished: {changed}");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_job_stops_within_a_partition_that_holds_many_chunks() {
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    // 40 records of one partition: at 4 records a second, ten chunks with a wait of about
    // a second before each, all inside that partition.
    let mut keys = Vec::new();
    let mut i = 0i64;
    while keys.len() < 40 {
        let key = as_key!("test", "p", i);
        if key.partition_id() == 7 {
            keys.push(key);
        }
        i += 1;
    }
    for key in &keys {
        client.put(&WritePolicy::default(), key, &[as_bin!("n", 0)]).await.unwrap();
    }
    let policy = WritePolicy { records_per_second: 4, ..WritePolicy::default() };
    let mut statement = Statement::new("test", "p", Bins::All);
    statement.set_operations([operations::add(&as_bin!("n", 1))]);
    let task = client.query_operate(&policy, statement).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(info(&client, &format!("query-abort:id={}", task.task_id())).await, "OK");
    let asked = Instant::now();
    let stopped =
        task.wait_for_progress(Some(Duration::from_secs(30)), Duration::from_millis(20)).await.unwrap();
    // Stopping at the next chunk takes a chunk's wait (about 1 s); running the partition
    // out would take the other eight or so.
    assert!(asked.elapsed() < Duration::from_secs(4), "the abort waited {:?}: {stopped:?}", asked.elapsed());
    assert!(stopped.succeeded < 40, "{stopped:?}");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_abandons_queued_index_builds_instead_of_waiting_for_them() {
    // Each build scans all 4096 partitions; forty queued ones take seconds. A SIGTERM used
    // to wait for every one of them (about 15 s with the client suite's 39 indexes).
    // The index definitions are kept with the UDF modules.
    let udf_dir = tempfile::tempdir().unwrap();
    let top = format!("udf_dir = \"{}\"", udf_dir.path().display());
    let mut server = ServerProcess::start_logged("buffered", &top, "");
    let client = connect(&server).await;
    for i in 0..5_000i64 {
        client.put(&WritePolicy::default(), &as_key!("test", "b", i), &[as_bin!("n", i)]).await.unwrap();
    }
    const INDEXES: usize = 40;
    for i in 0..INDEXES {
        let name = format!("b_n_{i}");
        let (kind, collection) = (aerospike::IndexType::Numeric, aerospike::CollectionIndexType::Default);
        client
            .create_index_on_bin(&AdminPolicy::default(), "test", "b", "n", &name, kind, collection, None)
            .await
            .unwrap();
    }
    client.close().await.unwrap();
    assert_eq!(server.stop(), Some(0), "a clean exit");
    let log = server.log();
    let built = log.matches(" built: ").count();
    assert!(log.contains("stopping: no new connections"), "{log}");
    assert!(log.contains("build abandoned"), "no build was abandoned ({built} of {INDEXES} built):\n{log}");
    assert!(built < INDEXES, "every build ran to its end before the exit");
    // The definitions stay: the next start lists them all and builds them again.
    server.launch();
    let client = connect(&server).await;
    let listed = info(&client, "sindex-list:ns=test").await;
    assert_eq!(
        (0..INDEXES).filter(|i| listed.contains(&format!("indexname=b_n_{i}:"))).count(),
        INDEXES,
        "{listed}"
    );
    client.close().await.unwrap();
}
