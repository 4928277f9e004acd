//! `spike-server` driven by the official Aerospike Rust client (crate `aerospike` 3.x):
//! the operations, their policies and result codes as the client reports them, TTL,
//! concurrent increments, batches, scans and their resumption, truncate across restarts,
//! fast restart after SIGTERM and no lost acknowledged write after SIGKILL.

#[path = "common/server.rs"]
mod server;

use aerospike::query::PartitionFilter;
use aerospike::{
    as_bin, as_key, operations, AdminPolicy, BatchOperation, BatchPolicy, BatchReadPolicy, Bins, Client,
    ClientPolicy, Expiration, GenerationPolicy, Key, QueryPolicy, ReadPolicy, RecordExistsAction, ResultCode,
    Statement, Value, WritePolicy,
};
use futures::StreamExt;
use server::ServerProcess;
use std::collections::HashSet;
use std::sync::Arc;

async fn connect(server: &ServerProcess) -> Client {
    Client::new(&ClientPolicy::default(), &server.host()).await.expect("connect to spike-server")
}

fn result_code(err: &aerospike::Error) -> ResultCode {
    ResultCode::from(err.result_code() as u8)
}

async fn info(client: &Client, command: &str) -> String {
    let answer = client.info(&AdminPolicy::default(), &[command]).await.unwrap();
    answer.get(command).cloned().unwrap_or_default()
}

fn policy(action: RecordExistsAction) -> WritePolicy {
    WritePolicy { record_exists_action: action, ..WritePolicy::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_exists_touch_delete() {
    let server = ServerProcess::start("commit-to-device", "");
    let client = connect(&server).await;
    let key = as_key!("test", "kv", "one");
    let bins = [as_bin!("s", "text"), as_bin!("i", 42), as_bin!("f", 2.5), as_bin!("b", vec![1u8, 2, 3])];
    client.put(&WritePolicy::default(), &key, &bins).await.unwrap();
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(record.generation, 1);
    assert_eq!(record.bins.get("s"), Some(&Value::from("text")));
    assert_eq!(record.bins.get("i"), Some(&Value::from(42)));
    assert_eq!(record.bins.get("f"), Some(&Value::from(2.5)));
    assert_eq!(record.bins.get("b"), Some(&Value::Blob(vec![1, 2, 3])));
    let some = client.get(&ReadPolicy::default(), &key, Bins::from(["i"])).await.unwrap();
    assert_eq!(some.bins.len(), 1);
    let header = client.get(&ReadPolicy::default(), &key, Bins::None).await.unwrap();
    assert!(header.bins.is_empty());
    assert_eq!(header.generation, 1);
    assert!(client.exists(&ReadPolicy::default(), &key).await.unwrap());
    let touch = WritePolicy { expiration: Expiration::Seconds(3600), ..WritePolicy::default() };
    client.touch(&touch, &key).await.unwrap();
    let touched = client.get(&ReadPolicy::default(), &key, Bins::None).await.unwrap();
    assert_eq!(touched.generation, 2);
    assert!(touched.time_to_live().is_some_and(|ttl| ttl.as_secs() > 3500), "{:?}", touched.time_to_live());
    assert!(client.delete(&WritePolicy::default(), &key).await.unwrap());
    assert!(!client.delete(&WritePolicy::default(), &key).await.unwrap());
    assert!(!client.exists(&ReadPolicy::default(), &key).await.unwrap());
    let missing = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap_err();
    assert_eq!(result_code(&missing), ResultCode::KeyNotFoundError);
    let touch_missing = client.touch(&touch, &key).await.unwrap_err();
    assert_eq!(result_code(&touch_missing), ResultCode::KeyNotFoundError);
    let stats = info(&client, "namespace/test").await;
    for counted in [
        "client_read_success=5;",
        "client_read_not_found=2;",
        "client_write_success=2;",
        "client_write_error=1;",
        "client_delete_success=1;",
        "client_delete_not_found=1;",
        "batch_sub_read_success=0;",
    ] {
        assert!(stats.contains(counted), "{counted} not in {stats}");
    }
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existence_and_generation_policies_answer_the_real_result_codes() {
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let key = as_key!("test", "policy", 7);
    let a = [as_bin!("a", 1)];
    let b = [as_bin!("b", 2)];
    let err = client.put(&policy(RecordExistsAction::UpdateOnly), &key, &a).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::KeyNotFoundError);
    let err = client.put(&policy(RecordExistsAction::ReplaceOnly), &key, &a).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::KeyNotFoundError);
    client.put(&policy(RecordExistsAction::CreateOnly), &key, &a).await.unwrap();
    let err = client.put(&policy(RecordExistsAction::CreateOnly), &key, &a).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::KeyExistsError);
    // Update merges bins; replace drops the ones not written.
    client.put(&policy(RecordExistsAction::UpdateOnly), &key, &b).await.unwrap();
    let merged = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(merged.bins.len(), 2);
    client.put(&policy(RecordExistsAction::Replace), &key, &a).await.unwrap();
    let replaced = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!((replaced.bins.len(), replaced.generation), (1, 3));
    let equal = |generation| WritePolicy {
        generation_policy: GenerationPolicy::ExpectGenEqual,
        generation,
        ..WritePolicy::default()
    };
    let err = client.put(&equal(2), &key, &b).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::GenerationError);
    client.put(&equal(3), &key, &b).await.unwrap();
    let greater = |generation| WritePolicy {
        generation_policy: GenerationPolicy::ExpectGenGreater,
        generation,
        ..WritePolicy::default()
    };
    let err = client.put(&greater(4), &key, &b).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::GenerationError);
    client.put(&greater(9), &key, &b).await.unwrap();
    let err = client.delete(&equal(1), &key).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::GenerationError);
    // Type errors and unknown namespaces.
    let err = client.operate(&WritePolicy::default(), &key, &[operations::append(&as_bin!("a", "x"))]).await;
    assert_eq!(result_code(&err.unwrap_err()), ResultCode::BinTypeError);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_expires_as_the_client_sees_it_and_never_or_unchanged_are_kept() {
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let key = as_key!("test", "ttl", "short");
    let short = WritePolicy { expiration: Expiration::Seconds(1), ..WritePolicy::default() };
    client.put(&short, &key, &[as_bin!("v", 1)]).await.unwrap();
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert!(record.time_to_live().is_some_and(|ttl| ttl.as_secs() <= 1));
    let never = as_key!("test", "ttl", "never");
    let keep = WritePolicy { expiration: Expiration::Never, ..WritePolicy::default() };
    client.put(&keep, &never, &[as_bin!("v", 1)]).await.unwrap();
    let unchanged = WritePolicy { expiration: Expiration::DontUpdate, ..WritePolicy::default() };
    let long = WritePolicy { expiration: Expiration::Seconds(5000), ..WritePolicy::default() };
    let kept = as_key!("test", "ttl", "kept");
    client.put(&long, &kept, &[as_bin!("v", 1)]).await.unwrap();
    client.put(&unchanged, &kept, &[as_bin!("v", 2)]).await.unwrap();
    let kept_record = client.get(&ReadPolicy::default(), &kept, Bins::All).await.unwrap();
    assert!(kept_record.time_to_live().is_some_and(|ttl| ttl.as_secs() > 4900));
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let err = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::KeyNotFoundError);
    let record = client.get(&ReadPolicy::default(), &never, Bins::All).await.unwrap();
    assert_eq!(record.time_to_live(), None);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_end_at_tasks_times_increments() {
    const TASKS: i64 = 16;
    const INCREMENTS: i64 = 100;
    let server = ServerProcess::start("commit-to-device", "");
    let client = Arc::new(connect(&server).await);
    let key = as_key!("test", "counters", "hits");
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (client, key) = (client.clone(), key.clone());
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    client
                        .operate(&WritePolicy::default(), &key, &[operations::add(&as_bin!("n", 1))])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(record.bins.get("n"), Some(&Value::from(TASKS * INCREMENTS)));
    assert_eq!(record.generation as i64, TASKS * INCREMENTS);
    // One operate: increment, append and read in one transaction, one reply op per op.
    let ops = [
        operations::add(&as_bin!("n", 5)),
        operations::append(&as_bin!("s", "ab")),
        operations::prepend(&as_bin!("s", ">")),
        operations::get_bin("n"),
        operations::get_bin("s"),
    ];
    let record = client.operate(&WritePolicy::default(), &key, &ops).await.unwrap();
    // With a write among the ops the client asks for one result per op, grouped by bin.
    let s_results = Value::MultiResult(vec![Value::Nil, Value::Nil, Value::from(">ab")]);
    assert_eq!(record.bins.get("s"), Some(&s_results), "{:?}", record.bins);
    let float_key = as_key!("test", "counters", "float");
    client
        .operate(&WritePolicy::default(), &float_key, &[operations::add(&as_bin!("x", 1.25))])
        .await
        .unwrap();
    let record = client
        .operate(
            &WritePolicy::default(),
            &float_key,
            &[operations::add(&as_bin!("x", 1.5)), operations::get()],
        )
        .await
        .unwrap();
    assert_eq!(record.bins.get("x"), Some(&Value::from(2.75)));
    client.operate(&WritePolicy::default(), &float_key, &[operations::delete()]).await.unwrap();
    assert!(!client.exists(&ReadPolicy::default(), &float_key).await.unwrap());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_answer_every_row_and_missing_keys() {
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    for i in (0..40).step_by(2) {
        client.put(&WritePolicy::default(), &as_key!("test", "batch", i), &[as_bin!("i", i)]).await.unwrap();
    }
    let mut ops: Vec<BatchOperation> = (0..40)
        .map(|i| BatchOperation::read(&BatchReadPolicy::default(), as_key!("test", "batch", i), Bins::All))
        .collect();
    client.batch(&BatchPolicy::default(), &mut ops).await.unwrap();
    for (i, op) in ops.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(op.result_code(), Some(ResultCode::Ok), "row {i}");
            assert_eq!(op.record().unwrap().bins.get("i"), Some(&Value::from(i as i64)));
        } else {
            assert_eq!(op.result_code(), Some(ResultCode::KeyNotFoundError), "row {i}");
        }
    }
    let stats = info(&client, "namespace/test").await;
    for counted in ["batch_sub_read_success=20;", "batch_sub_read_not_found=20;", "client_read_success=0;"] {
        assert!(stats.contains(counted), "{counted} not in {stats}");
    }
    client.close().await.unwrap();
}

async fn scan_digests(
    client: &Client,
    set: &str,
    policy: &QueryPolicy,
    mut filter: PartitionFilter,
) -> (Vec<[u8; 20]>, PartitionFilter) {
    let rs = client.query(policy, filter, Statement::new("test", set, Bins::All)).await.unwrap();
    let mut stream = rs.clone().into_stream();
    let mut seen = Vec::new();
    while let Some(record) = stream.next().await {
        seen.push(record.unwrap().key.unwrap().digest());
    }
    filter = rs.partition_filter().unwrap();
    (seen, filter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_all_partitions_returns_exactly_the_records_and_resumes_without_loss() {
    const RECORDS: i64 = 3000;
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let mut written = HashSet::new();
    for i in 0..RECORDS {
        let key = as_key!("test", "scan", i);
        written.insert(key.digest());
        client.put(&WritePolicy::default(), &key, &[as_bin!("i", i)]).await.unwrap();
    }
    client.put(&WritePolicy::default(), &as_key!("test", "other", 1), &[as_bin!("i", 1)]).await.unwrap();
    let (all, _) = scan_digests(&client, "scan", &QueryPolicy::default(), PartitionFilter::all()).await;
    assert_eq!(all.len() as i64, RECORDS);
    assert_eq!(all.iter().copied().collect::<HashSet<_>>(), written);
    // Pages of at most 700 records, each resumed from the digests of the one before.
    let paged = QueryPolicy { max_records: 700, ..QueryPolicy::default() };
    let mut filter = PartitionFilter::all();
    let mut seen = Vec::new();
    let mut pages = 0;
    while !filter.done() {
        let (page, next) = scan_digests(&client, "scan", &paged, filter).await;
        assert!(page.len() <= 700, "page of {}", page.len());
        seen.extend(page);
        filter = next;
        pages += 1;
        assert!(pages < 50, "the scan does not finish");
    }
    assert_eq!(seen.len() as i64, RECORDS, "a resumed scan lost or repeated records");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), written);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_stays_truncated_after_clean_and_crash_restarts() {
    let mut server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    for i in 0..200 {
        client.put(&WritePolicy::default(), &as_key!("test", "gone", i), &[as_bin!("i", i)]).await.unwrap();
        client.put(&WritePolicy::default(), &as_key!("test", "kept", i), &[as_bin!("i", i)]).await.unwrap();
    }
    client.truncate(&AdminPolicy::default(), "test", "gone", 0).await.unwrap();
    let (gone, _) = scan_digests(&client, "gone", &QueryPolicy::default(), PartitionFilter::all()).await;
    assert!(gone.is_empty());
    client.close().await.unwrap();
    // A crash right after the truncate answered: the tombstones are durable.
    server.kill();
    server.launch();
    let client = connect(&server).await;
    assert!(info(&client, "namespace/test").await.contains("restart_kind=cold"));
    let (gone, _) = scan_digests(&client, "gone", &QueryPolicy::default(), PartitionFilter::all()).await;
    let (kept, _) = scan_digests(&client, "kept", &QueryPolicy::default(), PartitionFilter::all()).await;
    assert_eq!((gone.len(), kept.len()), (0, 200));
    client.truncate(&AdminPolicy::default(), "test", "", 0).await.unwrap();
    client.close().await.unwrap();
    assert_eq!(server.stop(), Some(0));
    server.launch();
    let client = connect(&server).await;
    assert!(info(&client, "namespace/test").await.contains("restart_kind=fast"));
    let (kept, _) = scan_digests(&client, "kept", &QueryPolicy::default(), PartitionFilter::all()).await;
    assert!(kept.is_empty());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_commit_to_device_mode_loses_no_acknowledged_write() {
    let mut server = ServerProcess::start("commit-to-device", "");
    let client = Arc::new(connect(&server).await);
    // Writers run while the server is killed; each keeps its own log of acknowledged writes.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..100_000i64 {
                    let key = as_key!("test", "acked", w * 1_000_000 + i);
                    match client.put(&WritePolicy::default(), &key, &[as_bin!("v", i)]).await {
                        Ok(()) => acknowledged.push((key, i)),
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.kill();
    let mut acknowledged: Vec<(Key, i64)> = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(acknowledged.len() > 100, "only {} writes before the kill", acknowledged.len());
    server.launch();
    let client = connect(&server).await;
    for (key, value) in &acknowledged {
        let record = client.get(&ReadPolicy::default(), key, Bins::All).await.unwrap_or_else(|e| {
            panic!("acknowledged write {key:?} lost after kill -9: {e}");
        });
        assert_eq!(record.bins.get("v"), Some(&Value::from(*value)));
    }
    println!("{} acknowledged writes all found after kill -9", acknowledged.len());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udf_modules_run_on_records_and_index_definitions_register() {
    use aerospike::{CollectionIndexType, IndexType, Task, UdfLang};
    let udf_dir = tempfile::tempdir().unwrap();
    let top = format!("udf_dir = \"{}\"", udf_dir.path().display());
    let mut server = ServerProcess::start_with("buffered", &top, "");
    let mut client = connect(&server).await;
    let body = br#"
function echo(rec, val)
  return val
end
function add_to(rec, name, n)
  local held = rec[name] or 0
  rec[name] = held + n
  if aerospike:exists(rec) then aerospike:update(rec) else aerospike:create(rec) end
  return rec[name]
end
function drop(rec)
  aerospike:remove(rec)
end
function fails(rec)
  error("boom")
end
function blob_of(rec, name)
  rec['touched'] = 1
  aerospike:update(rec)
  return rec[name]
end
function hoards(rec)
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end
end
function spins(rec)
  rec['x'] = 1
  aerospike:update(rec)
  while true do end
end
"#;
    let task = client.register_udf(&AdminPolicy::default(), body, "echo.lua", UdfLang::Lua).await.unwrap();
    task.wait_till_complete(None).await.unwrap();
    assert!(info(&client, "udf-list").await.contains("filename=echo.lua"));
    let index = client
        .create_index_on_bin(
            &AdminPolicy::default(),
            "test",
            "idx",
            "n",
            "test_idx_n",
            IndexType::Numeric,
            CollectionIndexType::Default,
            None,
        )
        .await
        .unwrap();
    index.wait_till_complete(None).await.unwrap();
    // Again, identically: not an error (as in Aerospike).
    client
        .create_index_on_bin(
            &AdminPolicy::default(),
            "test",
            "idx",
            "n",
            "test_idx_n",
            IndexType::Numeric,
            CollectionIndexType::Default,
            None,
        )
        .await
        .unwrap();
    assert!(info(&client, "sindex-list:ns=test").await.contains("indexname=test_idx_n"));
    // The module runs on records: its writes are atomic updates, its return value the
    // call's answer.
    let wp = WritePolicy::default();
    let key = as_key!("test", "udf", 1);
    let echoed = client.execute_udf(&wp, &key, "echo", "echo", &[Value::from("hi")]).await.unwrap();
    assert_eq!(echoed, Some(Value::from("hi")));
    assert!(!client.exists(&ReadPolicy::default(), &key).await.unwrap(), "echo writes nothing");
    for expected in [5, 12] {
        let args = [Value::from("n"), Value::from(expected - if expected == 5 { 0 } else { 5 })];
        let sum = client.execute_udf(&wp, &key, "echo", "add_to", &args).await.unwrap();
        assert_eq!(sum, Some(Value::from(expected)));
    }
    client.put(&wp, &key, &[as_bin!("other", "kept")]).await.unwrap();
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!((record.bins.get("n"), record.generation), (Some(&Value::from(12)), 3));
    // Failures are result 100 and change nothing; a runaway call is stopped (result 9).
    let mut patient = WritePolicy::default();
    (patient.base_policy.total_timeout, patient.base_policy.socket_timeout) = (10_000, 10_000);
    for (function, code) in [("fails", 100), ("no_such_function", 100), ("hoards", 100), ("spins", 9)] {
        let err = client.execute_udf(&patient, &key, "echo", function, &[]).await.unwrap_err();
        // A server timeout reaches the caller as the client's timeout, caused by result 9.
        let seen = err.server_result_code().unwrap_or_else(|| result_code(&err));
        assert_eq!(seen, ResultCode::from(code), "{function}: {err}");
    }
    let err = client.execute_udf(&wp, &key, "no_such_module", "echo", &[]).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::UdfBadResponse, "{err}");
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!((record.bins.len(), record.generation), (2, 3), "{:?}", record.bins);
    client.execute_udf(&wp, &key, "echo", "drop", &[]).await.unwrap();
    assert!(!client.exists(&ReadPolicy::default(), &key).await.unwrap());

    // A blob that is not UTF-8 comes back as a blob; one that is UTF-8 and untouched by
    // the function stays a blob in the record.
    let bkey = as_key!("test", "udf", "blobs");
    let bins =
        [as_bin!("raw", Value::Blob(vec![0xff, 0x00, 0x9c])), as_bin!("text", Value::Blob(b"abc".to_vec()))];
    client.put(&wp, &bkey, &bins).await.unwrap();
    let returned = client.execute_udf(&wp, &bkey, "echo", "blob_of", &[Value::from("raw")]).await.unwrap();
    assert_eq!(returned, Some(Value::Blob(vec![0xff, 0x00, 0x9c])));
    let record = client.get(&ReadPolicy::default(), &bkey, Bins::All).await.unwrap();
    assert_eq!(record.bins.get("text"), Some(&Value::Blob(b"abc".to_vec())));
    assert_eq!(record.bins.get("touched"), Some(&Value::from(1)));

    // Clients registering one module at once all succeed.
    let admin = AdminPolicy::default();
    let registrations: Vec<_> =
        (0..8).map(|_| client.register_udf(&admin, body, "same.lua", UdfLang::Lua)).collect();
    for registered in futures::future::join_all(registrations).await {
        registered.unwrap().wait_till_complete(None).await.unwrap();
    }

    // A module name is a plain file name: nothing outside the module directory.
    let err = client.register_udf(&AdminPolicy::default(), body, "../escape.lua", UdfLang::Lua).await;
    assert!(err.is_err(), "{:?}", err.map(|_| ()));
    assert!(!udf_dir.path().join("../escape.lua").exists());

    // Modules are kept across a restart.
    client.close().await.unwrap();
    assert_eq!(server.stop(), Some(0));
    server.launch();
    client = connect(&server).await;
    assert!(info(&client, "udf-list").await.contains("filename=echo.lua"));
    let echoed = client.execute_udf(&wp, &key, "echo", "echo", &[Value::from(3)]).await.unwrap();
    assert_eq!(echoed, Some(Value::from(3)));
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_map_operations_answer_as_the_client_expects() {
    use aerospike::operations::{lists, maps, MapOrder};
    use aerospike::{
        as_list, as_val, as_values, ListReturnType, ListSortFlags, MapPolicy, MapReturnType, MapWriteFlags,
    };
    let server = ServerProcess::start("commit-to-device", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let key = as_key!("test", "cdt", 1);
    client.put(&wp, &key, &[as_bin!("count", 1), as_bin!("l", as_list!(1, 2))]).await.unwrap();

    // One atomic operate: each op has its own result slot, a plain add included.
    let lp = lists::ListPolicy::default();
    let ops =
        [lists::append(&lp, "l", Value::from(3)), operations::add(&as_bin!("count", 1)), lists::size("l")];
    let record = client.operate(&wp, &key, &ops).await.unwrap();
    let results = record.results.expect("one result per op");
    assert_eq!(results, vec![Value::from(3), Value::Nil, Value::from(3)]);

    // Reads of a list, alone and in a batch row.
    let ops = [lists::size("l"), lists::get_by_index("l", -1, ListReturnType::VALUES)];
    let record = client.operate(&wp, &key, &ops).await.unwrap();
    assert_eq!(record.bins.get("l"), Some(&Value::MultiResult(as_values!(3, 3))));
    let mut batch = vec![BatchOperation::read_ops(&BatchReadPolicy::default(), key.clone(), ops.to_vec())];
    client.batch(&BatchPolicy::default(), &mut batch).await.unwrap();
    let row = batch[0].batch_record();
    assert_eq!(row.result_code(), Some(ResultCode::Ok));
    assert_eq!(row.record.as_ref().unwrap().bins.get("l"), Some(&Value::MultiResult(as_values!(3, 3))));

    // The server sorts mixed types in the client's own order.
    let mixed = vec![
        Value::from("zz"),
        Value::from(3),
        Value::Nil,
        Value::from(2.5),
        Value::Blob(vec![9]),
        as_list!(1),
        Value::Bool(true),
    ];
    client.put(&wp, &key, &[as_bin!("mixed", Value::List(mixed.clone()))]).await.unwrap();
    client.operate(&wp, &key, &[lists::sort("mixed", ListSortFlags::DEFAULT)]).await.unwrap();
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    let mut sorted = mixed;
    sorted.sort();
    assert_eq!(record.bins.get("mixed"), Some(&Value::List(sorted)));

    // A list op on an integer bin is a bin type error, and changes nothing.
    let err = client.operate(&wp, &key, &[lists::append(&lp, "count", as_val!(1))]).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::BinTypeError);

    // Maps keep their keys in order, whatever order they were put in; a key-ordered map
    // comes back as one.
    for (label, order) in [("unordered", MapOrder::Unordered), ("key-ordered", MapOrder::KeyOrdered)] {
        let policy = MapPolicy::new(order, MapWriteFlags::DEFAULT);
        let key = as_key!("test", "cdt", label);
        for k in ["z", "m", "a"] {
            client.operate(&wp, &key, &[maps::put(&policy, "m", as_val!(k), as_val!(1))]).await.unwrap();
        }
        let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
        let keys: Vec<String> = match (order, record.bins.get("m")) {
            (MapOrder::Unordered, Some(Value::OrderedMap(m))) => m.keys().map(ToString::to_string).collect(),
            (MapOrder::KeyOrdered, Some(Value::SortedMap(m))) => m.keys().map(ToString::to_string).collect(),
            (_, other) => panic!("{label}: {other:?}"),
        };
        assert_eq!(keys, ["a", "m", "z"], "{label}");
        let ops = [maps::get_by_key("m", as_val!("m"), MapReturnType::VALUE), maps::size("m")];
        let record = client.operate(&wp, &key, &ops).await.unwrap();
        assert_eq!(record.results.unwrap(), vec![Value::from(1), Value::from(3)], "{label}");
        let create_only = MapPolicy::new(order, MapWriteFlags::CREATE_ONLY);
        let err = client
            .operate(&wp, &key, &[maps::put(&create_only, "m", as_val!("a"), as_val!(2))])
            .await
            .unwrap_err();
        assert_eq!(err.result_code(), 24, "{label}: an existing key under create-only");
    }

    // Selections by value and rank: a leaderboard in a map, a list filtered by value.
    let board = as_key!("test", "cdt", "board");
    let scores = maps::put_items(
        &MapPolicy::default(),
        "m",
        [("ann", 30), ("bob", 10), ("cy", 50), ("dee", 20)]
            .map(|(k, v)| (as_val!(k), as_val!(v)))
            .into_iter()
            .collect::<std::collections::HashMap<Value, Value>>(),
    );
    client.operate(&wp, &board, &[scores]).await.unwrap();
    let top_two = maps::get_by_rank_range("m", -2, 2, MapReturnType::KEY);
    let record = client.operate(&wp, &board, &[top_two]).await.unwrap();
    assert_eq!(record.bins.get("m"), Some(&as_list!("ann", "cy")), "keys in key order");
    let ops =
        [maps::remove_by_value_range("m", as_val!(15), as_val!(35), MapReturnType::COUNT), maps::size("m")];
    let record = client.operate(&wp, &board, &ops).await.unwrap();
    assert_eq!(record.results.unwrap(), vec![Value::from(2), Value::from(2)]);
    let rest = maps::get_by_value("m", as_val!(50), MapReturnType::KEY.inverted());
    let record = client.operate(&wp, &board, &[rest]).await.unwrap();
    assert_eq!(record.bins.get("m"), Some(&as_list!("bob")));
    let key = as_key!("test", "cdt", "values");
    client.put(&wp, &key, &[as_bin!("l", as_list!(7, 3, 9, 3, 1))]).await.unwrap();
    let ops = [
        lists::get_by_value("l", as_val!(3), ListReturnType::INDEX),
        lists::get_by_rank("l", 0, ListReturnType::VALUES),
        lists::remove_by_value_range("l", ListReturnType::VALUES, as_val!(3), as_val!(8)),
    ];
    let record = client.operate(&wp, &key, &ops).await.unwrap();
    assert_eq!(record.results.unwrap(), vec![as_list!(1, 3), Value::from(1), as_list!(7, 3, 3)]);
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(record.bins.get("l"), Some(&as_list!(9, 1)));

    // Nested contexts: a map created at a key of a map, then read through the context.
    use aerospike::operations::cdt_context::{ctx_map_key, ctx_map_key_create};
    let nested = as_key!("test", "cdt", "nested");
    let ctx = vec![ctx_map_key_create(as_val!("inner"), MapOrder::KeyOrdered)];
    let put = maps::put(&MapPolicy::default(), "m", as_val!("a"), as_val!(10)).context(ctx);
    client.operate(&wp, &nested, &[put]).await.unwrap();
    let get = maps::get_by_key("m", as_val!("a"), MapReturnType::VALUE)
        .context(vec![ctx_map_key(as_val!("inner"))]);
    let record = client.operate(&wp, &nested, &[get]).await.unwrap();
    assert_eq!(record.bins.get("m"), Some(&Value::from(10)));
    let missing = maps::size("m").context(vec![ctx_map_key(as_val!("absent"))]);
    let err = client.operate(&wp, &nested, &[missing]).await.unwrap_err();
    assert_eq!(err.result_code(), 26, "a context naming nothing");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_expressions_decide_reads_writes_batches_and_scans() {
    use aerospike::expressions::{and, eq, ge, int_bin, int_val, set_name, string_val};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    for i in 0..10 {
        client.put(&wp, &as_key!("test", "flt", i), &[as_bin!("n", i)]).await.unwrap();
    }
    let key = as_key!("test", "flt", 7);
    let mut rp = ReadPolicy::default();
    rp.base_policy.filter_expression = Some(eq(int_bin("n"), int_val(99)));
    let err = client.get(&rp, &key, Bins::All).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::FilteredOut));
    rp.base_policy.filter_expression =
        Some(and(vec![ge(int_bin("n"), int_val(7)), eq(set_name(), string_val("flt"))]));
    assert_eq!(client.get(&rp, &key, Bins::All).await.unwrap().bins.get("n"), Some(&Value::from(7)));

    // A write whose record does not pass changes nothing.
    let mut guarded = WritePolicy::default();
    guarded.base_policy.filter_expression = Some(eq(int_bin("n"), int_val(0)));
    let err = client.put(&guarded, &key, &[as_bin!("n", 100)]).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::FilteredOut));
    assert_eq!(
        client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap().bins.get("n"),
        Some(&Value::from(7))
    );

    // A batch and a scan keep only the records that pass.
    let mut bp = BatchPolicy::default();
    bp.base_policy.filter_expression = Some(ge(int_bin("n"), int_val(5)));
    let mut batch: Vec<BatchOperation> = (0..10)
        .map(|i| BatchOperation::read(&BatchReadPolicy::default(), as_key!("test", "flt", i), Bins::All))
        .collect();
    client.batch(&bp, &mut batch).await.unwrap();
    let passed = batch.iter().filter(|row| row.result_code() == Some(ResultCode::Ok)).count();
    let filtered = batch.iter().filter(|row| row.result_code() == Some(ResultCode::FilteredOut)).count();
    assert_eq!((passed, filtered), (5, 5));
    let mut qp = QueryPolicy::default();
    qp.base_policy.filter_expression = Some(ge(int_bin("n"), int_val(8)));
    let stream =
        client.query(&qp, PartitionFilter::all(), Statement::new("test", "flt", Bins::All)).await.unwrap();
    let mut seen: Vec<Value> = stream.into_stream().map(|r| r.unwrap().bins["n"].clone()).collect().await;
    seen.sort();
    assert_eq!(seen, vec![Value::from(8), Value::from(9)]);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperloglog_operations_count_merge_and_refuse_as_the_real_server_does() {
    use aerospike::operations::hll::{self, HllPolicy, HllWriteFlags};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let hp = HllPolicy::default();
    let (a, b) = (as_key!("test", "hll", "a"), as_key!("test", "hll", "b"));
    let adds = |from: i64, to: i64| (from..to).map(Value::from).collect::<Vec<_>>();
    let record = client
        .operate(&wp, &a, &[hll::add_with_index(&hp, "h", adds(0, 5000), 12), hll::get_count("h")])
        .await;
    let results = record.unwrap().results.expect("one result per op");
    let Value::Int(count) = results[1] else { panic!("{results:?}") };
    assert!((4750..=5250).contains(&count), "count {count} of 5000");
    client.operate(&wp, &b, &[hll::add_with_index(&hp, "h", adds(2500, 7500), 12)]).await.unwrap();
    let record = client.get(&ReadPolicy::default(), &b, Bins::All).await.unwrap();
    let Some(Value::Hll(sketch)) = record.bins.get("h").cloned() else { panic!("{:?}", record.bins) };
    let ops = [
        hll::get_union_count("h", vec![Value::Hll(sketch.clone())]),
        hll::get_intersect_count("h", vec![Value::Hll(sketch.clone())]),
        hll::describe("h"),
    ];
    let results = client.operate(&wp, &a, &ops).await.unwrap().results.unwrap();
    let (Value::Int(union), Value::Int(common)) = (&results[0], &results[1]) else { panic!("{results:?}") };
    assert!((7000..=8000).contains(union), "union {union} of 7500");
    assert!((1500..=3500).contains(common), "intersection {common} of 2500");
    assert_eq!(results[2], Value::List(vec![Value::from(12), Value::from(0)]));

    // Refusals: the codes Aerospike gives, and nothing written.
    let create_only = HllPolicy::new(HllWriteFlags::CREATE_ONLY);
    let err = client.operate(&wp, &a, &[hll::init(&create_only, "h", 10)]).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::BinExistsError));
    let err = client.operate(&wp, &a, &[hll::refresh_count("missing")]).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::BinNotFound));
    client.put(&wp, &a, &[as_bin!("n", 1)]).await.unwrap();
    let err = client.operate(&wp, &a, &[hll::get_count("n")]).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::BinTypeError));
    let err = client.operate(&wp, &a, &[hll::init(&hp, "h", 3)]).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::ParameterError));
    let after = client.operate(&wp, &a, &[hll::get_count("h")]).await.unwrap();
    assert_eq!(after.bins.get("h"), Some(&Value::from(count)), "the refused ops left the sketch alone");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_udf_call_holds_up_no_other_client_of_its_event_loop() {
    use aerospike::{Task, UdfLang};
    let mut server = ServerProcess::start("buffered", "");
    // One event loop: without the workers, every client would wait behind the call.
    let text = std::fs::read_to_string(&server.config_path).unwrap().replace("threads = 4", "threads = 1");
    std::fs::write(&server.config_path, text).unwrap();
    assert_eq!(server.stop(), Some(0));
    server.launch();
    let (spinner, other) = (connect(&server).await, connect(&server).await);
    let body = b"function spins(rec)\n  while true do end\nend\n";
    let task = spinner.register_udf(&AdminPolicy::default(), body, "spin.lua", UdfLang::Lua).await.unwrap();
    task.wait_till_complete(None).await.unwrap();
    let key = as_key!("test", "spin", 1);
    other.put(&WritePolicy::default(), &key, &[as_bin!("n", 0)]).await.unwrap();
    let call = tokio::spawn(async move {
        let mut patient = WritePolicy::default();
        (patient.base_policy.total_timeout, patient.base_policy.socket_timeout) = (10_000, 10_000);
        let err = spinner.execute_udf(&patient, &key, "spin", "spins", &[]).await.unwrap_err();
        (err.server_result_code().unwrap_or_else(|| result_code(&err)), std::time::Instant::now())
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for i in 1..=50 {
        // Another record: the call holds its own record's lock while it runs.
        let key = as_key!("test", "spin", 2);
        other.put(&WritePolicy::default(), &key, &[as_bin!("n", i)]).await.unwrap();
        let record = other.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
        assert_eq!(record.bins.get("n"), Some(&Value::from(i)));
    }
    let others_done = std::time::Instant::now();
    let (code, call_done) = call.await.unwrap();
    assert_eq!(code, ResultCode::from(9), "the runaway call is stopped at its limit");
    assert!(others_done < call_done, "the other client waited for the spinning call");
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udfs_read_and_write_list_and_map_bins_and_return_lists_and_maps() {
    use aerospike::{as_list, as_map, as_val, Task, UdfLang};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let body = br#"
function summarize(rec)
  local m = map()
  m['count'] = list.size(rec['l'])
  local total = 0
  for v in list.iterator(rec['l']) do total = total + v end
  m['total'] = total
  m['a'] = rec['m']['a']
  m['keys'] = map.size(rec['m'])
  return m
end
function grow(rec, v)
  local l = rec['l']
  list.append(l, v)
  rec['l'] = l
  local m = rec['m']
  m['added'] = list{v, v}
  rec['m'] = m
  aerospike:update(rec)
  return l
end
function plain(rec)
  return {1, 2}
end
"#;
    let task = client.register_udf(&AdminPolicy::default(), body, "coll.lua", UdfLang::Lua).await.unwrap();
    task.wait_till_complete(None).await.unwrap();
    let (wp, key) = (WritePolicy::default(), as_key!("test", "coll", 1));
    let bins = [as_bin!("l", as_list!(1, 2, 3)), as_bin!("m", as_map!("a" => 1, "b" => 2))];
    client.put(&wp, &key, &bins).await.unwrap();

    let summary = client.execute_udf(&wp, &key, "coll", "summarize", &[]).await.unwrap();
    let Some(Value::OrderedMap(summary)) = summary else { panic!("{summary:?}") };
    assert_eq!(summary.get(&as_val!("count")), Some(&as_val!(3)));
    assert_eq!(summary.get(&as_val!("total")), Some(&as_val!(6)));
    assert_eq!(summary.get(&as_val!("a")), Some(&as_val!(1)));
    assert_eq!(summary.get(&as_val!("keys")), Some(&as_val!(2)));

    let grown = client.execute_udf(&wp, &key, "coll", "grow", &[as_val!(4)]).await.unwrap();
    assert_eq!(grown, Some(as_list!(1, 2, 3, 4)));
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(record.bins.get("l"), Some(&as_list!(1, 2, 3, 4)));
    let Some(Value::OrderedMap(m)) = record.bins.get("m") else { panic!("{:?}", record.bins) };
    assert_eq!(m.get(&as_val!("added")), Some(&as_list!(4, 4)));
    assert_eq!((m.get(&as_val!("a")), m.len()), (Some(&as_val!(1)), 3));

    // A plain Lua table is no list or map: the call fails, as on the real server.
    let err = client.execute_udf(&wp, &key, "coll", "plain", &[]).await.unwrap_err();
    assert_eq!(result_code(&err), ResultCode::UdfBadResponse, "{err:?}");
    client.close().await.unwrap();
}
