//! `spike-server`'s bit operations on blob bins, expression operations (read and write
//! ops that evaluate an expression), and the expression language itself (calls of list,
//! map, bit and HLL ops, let/var, cond, integer bit operators, the stored key), and queries
//! by secondary index, driven by the official Aerospike Rust client.

#[path = "common/server.rs"]
mod server;

use aerospike::operations::bitwise::{
    self, BitPolicy, BitwiseOverflowActions, BitwiseResizeFlags, BitwiseWriteFlags,
};
use aerospike::operations::Operation;
use aerospike::{
    as_bin, as_key, Bins, Client, ClientPolicy, Key, ReadPolicy, ResultCode, Value, WritePolicy,
};
use server::ServerProcess;

async fn connect(server: &ServerProcess) -> Client {
    Client::new(&ClientPolicy::default(), &server.host()).await.expect("connect to spike-server")
}

/// The record an operate of one op answers.
async fn one_op(client: &Client, key: &Key, op: Operation) -> aerospike::Record {
    client.operate(&WritePolicy::default(), key, &[op]).await.unwrap()
}

/// The result code of an operate the server refuses.
async fn refused(client: &Client, key: &Key, op: Operation) -> Option<ResultCode> {
    client.operate(&WritePolicy::default(), key, &[op]).await.unwrap_err().server_result_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_operations_change_and_read_blobs_and_refuse_as_the_real_server_does() {
    let mut server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let (wp, bp) = (WritePolicy::default(), BitPolicy::default());
    let key = as_key!("test", "bits", 1);
    let start = Value::Blob(vec![0b0000_0001, 0b0100_0010, 0b0000_0011, 0b0000_0100, 0b0000_0101]);
    let ops = [
        bitwise::insert("b", 0, start, &bp),
        bitwise::set("b", 13, 3, Value::Blob(vec![0b1110_0000]), &bp),
        bitwise::add("b", 24, 16, 128, false, BitwiseOverflowActions::Fail, &bp),
        bitwise::get("b", 0, 40),
        bitwise::count("b", 20, 4),
        bitwise::lscan("b", 24, 8, true),
        bitwise::get_int("b", 8, 16, false),
    ];
    let results = client.operate(&wp, &key, &ops).await.unwrap().results.expect("one result per op");
    let changed = vec![0b0000_0001, 0b0100_0111, 0b0000_0011, 0b0000_0100, 0b1000_0101];
    assert_eq!(results[3], Value::Blob(changed.clone()));
    assert_eq!(results[4..], [Value::from(2), Value::from(5), Value::from(0b0100_0111_0000_0011)]);
    let stored = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(stored.bins.get("b"), Some(&Value::Blob(changed.clone())));

    // A read-only operate is a read command; a missing bin reads as nothing.
    let record = client.operate(&wp, &key, &[bitwise::rscan("b", 32, 8, true)]).await.unwrap();
    assert_eq!(record.bins.get("b"), Some(&Value::from(7)));
    let resize = bitwise::resize("fresh", 2, BitwiseResizeFlags::DEFAULT, &bp);
    let record = client.operate(&wp, &key, &[resize, bitwise::get("fresh", 0, 16)]).await.unwrap();
    assert_eq!(record.results.unwrap()[1], Value::Blob(vec![0, 0]));

    // Refusals: the codes Aerospike gives, and nothing written.
    let generation = client.get(&ReadPolicy::default(), &key, Bins::None).await.unwrap().generation;
    assert_eq!(
        refused(&client, &key, bitwise::not("b", 36, 8, &bp)).await,
        Some(ResultCode::OpNotApplicable)
    );
    assert_eq!(refused(&client, &key, bitwise::get("b", 0, 41)).await, Some(ResultCode::OpNotApplicable));
    let create_only = BitPolicy::new(BitwiseWriteFlags::CREATE_ONLY);
    let resize_again = bitwise::resize("b", 9, BitwiseResizeFlags::DEFAULT, &create_only);
    assert_eq!(refused(&client, &key, resize_again).await, Some(ResultCode::BinExistsError));
    assert_eq!(
        refused(&client, &key, bitwise::not("missing", 0, 8, &bp)).await,
        Some(ResultCode::BinNotFound)
    );
    let overflow = bitwise::add("b", 0, 8, 255, false, BitwiseOverflowActions::Fail, &bp);
    assert_eq!(refused(&client, &key, overflow).await, Some(ResultCode::OpNotApplicable));
    client.put(&wp, &key, &[as_bin!("n", 1)]).await.unwrap();
    assert_eq!(refused(&client, &key, bitwise::count("n", 0, 8)).await, Some(ResultCode::BinTypeError));
    let after = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(after.bins.get("b"), Some(&Value::Blob(changed)), "refused ops changed nothing");
    assert_eq!(after.generation, generation + 1, "only the plain put wrote");

    // NO_FAIL turns a refusal into a no-op; PARTIAL cuts a window at the end.
    let lenient = BitPolicy::new(BitwiseWriteFlags::NO_FAIL | BitwiseWriteFlags::PARTIAL);
    client.operate(&wp, &key, &[bitwise::not("b", 36, 8, &lenient)]).await.unwrap();
    let last = client.operate(&wp, &key, &[bitwise::get("b", 32, 8)]).await.unwrap();
    assert_eq!(last.bins.get("b"), Some(&Value::Blob(vec![0b1000_1010])));
    client.close().await.unwrap();

    // The changed blob is what a restart finds.
    assert_eq!(server.stop(), Some(0));
    server.launch();
    let client = connect(&server).await;
    let record = client.operate(&wp, &key, &[bitwise::get_int("b", 32, 8, true)]).await.unwrap();
    assert_eq!(record.bins.get("b"), Some(&Value::from(0b1000_1010u8 as i8 as i64)));
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_expressions_call_bit_list_map_and_hll_ops_without_changing_the_record() {
    use aerospike::expressions::bitwise as exp_bits;
    use aerospike::expressions::hll as exp_hll;
    use aerospike::expressions::lists as exp_lists;
    use aerospike::expressions::maps as exp_maps;
    use aerospike::expressions::{and, blob_bin, eq, gt, hll_bin, int_val, list_bin, map_bin, string_val};
    use aerospike::operations::hll::{self, HllPolicy};
    use aerospike::operations::maps::MapReturnType;
    use aerospike::{as_list, as_map, as_val};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let key = as_key!("test", "calls", 1);
    let bins = [
        as_bin!("b", Value::Blob(vec![0b1110_0000, 0])),
        as_bin!("l", as_list!(1, 2, 3)),
        as_bin!("m", as_map!("a" => 1, "b" => 2)),
    ];
    client.put(&wp, &key, &bins).await.unwrap();
    let adds: Vec<Value> = (0..100).map(Value::from).collect();
    client.operate(&wp, &key, &[hll::add_with_index(&HllPolicy::default(), "h", adds, 8)]).await.unwrap();
    let before = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();

    let bit_count = exp_bits::count(int_val(0), int_val(16), blob_bin("b"));
    let grown =
        exp_bits::resize(&BitPolicy::default(), int_val(4), BitwiseResizeFlags::DEFAULT, blob_bin("b"));
    let grown_count = exp_bits::count(int_val(0), int_val(32), grown);
    let list_size = exp_lists::size(list_bin("l"), &[]);
    let map_value = exp_maps::get_by_key(
        MapReturnType::VALUE,
        aerospike::expressions::ExpType::Int,
        string_val("b"),
        map_bin("m"),
        &[],
    );
    let hll_count = exp_hll::get_count(hll_bin("h"));
    let passing = and(vec![
        eq(bit_count, int_val(3)),
        eq(grown_count, int_val(3)),
        eq(list_size, int_val(3)),
        eq(map_value, int_val(2)),
        gt(hll_count, int_val(90)),
    ]);
    let mut rp = ReadPolicy::default();
    rp.base_policy.filter_expression = Some(passing);
    assert!(client.get(&rp, &key, Bins::All).await.is_ok(), "every call gave what the record holds");
    let too_many = eq(exp_bits::count(int_val(0), int_val(16), blob_bin("b")), int_val(4));
    rp.base_policy.filter_expression = Some(too_many);
    let err = client.get(&rp, &key, Bins::All).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::FilteredOut));

    let after = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!((after.bins, after.generation), (before.bins, before.generation), "a call never stores");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expression_operations_read_and_write_bins_with_the_real_servers_flags() {
    use aerospike::expressions::{
        cond, def, eq, exp_let, ge, in_list, int_bin, int_count, int_lscan, int_val, key, list_val, max, nil,
        num_add, string_val, var, ExpType,
    };
    use aerospike::operations::exp::{read_exp, write_exp, ExpReadFlags, ExpWriteFlags};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let wp = WritePolicy { send_key: true, ..WritePolicy::default() };
    let key_ = as_key!("test", "expops", 7);
    client.put(&wp, &key_, &[as_bin!("a", 25), as_bin!("b", 0b1011)]).await.unwrap();

    // A read op answers under its own name; a write op stores its value, which a later
    // op of the same operate sees.
    let sum = num_add(vec![int_bin("a"), int_val(4)]);
    let ops = [
        read_exp("total", sum.clone(), ExpReadFlags::DEFAULT),
        write_exp("c", sum, ExpWriteFlags::DEFAULT),
        read_exp("c_again", int_bin("c"), ExpReadFlags::DEFAULT),
    ];
    let record = client.operate(&wp, &key_, &ops).await.unwrap();
    assert_eq!(record.bins.get("total"), Some(&Value::from(29)));
    assert_eq!(record.bins.get("c_again"), Some(&Value::from(29)));

    // let/var, cond, the integer bit operators, in_list, max and the stored key.
    let scoped = exp_let(vec![
        def("x", int_bin("b")),
        def("ones", int_count(var("x"))),
        cond(vec![ge(var("ones"), int_val(3)), num_add(vec![var("ones"), int_val(100)]), int_val(-1)]),
    ]);
    let ops = [
        read_exp("scoped", scoped, ExpReadFlags::DEFAULT),
        read_exp(
            "first_one",
            int_lscan(int_bin("b"), aerospike::expressions::bool_val(true)),
            ExpReadFlags::DEFAULT,
        ),
        read_exp(
            "member",
            in_list(int_bin("a"), list_val(vec![Value::from(1), Value::from(25)])),
            ExpReadFlags::DEFAULT,
        ),
        read_exp("largest", max(vec![int_bin("a"), int_bin("b"), int_val(3)]), ExpReadFlags::DEFAULT),
        read_exp("stored_key", key(ExpType::Int), ExpReadFlags::DEFAULT),
    ];
    let record = client.operate(&wp, &key_, &ops).await.unwrap();
    assert_eq!(record.bins.get("scoped"), Some(&Value::from(103)));
    assert_eq!(record.bins.get("first_one"), Some(&Value::from(60)));
    assert_eq!(record.bins.get("member"), Some(&Value::from(true)));
    assert_eq!(record.bins.get("largest"), Some(&Value::from(25)));
    assert_eq!(record.bins.get("stored_key"), Some(&Value::from(7)));

    // The flags: create-only, update-only, a nil that deletes only when allowed, an unknown
    // value (a missing bin) unless EVAL_NO_FAIL.
    let create_only = write_exp("c", int_val(1), ExpWriteFlags::CREATE_ONLY);
    assert_eq!(refused(&client, &key_, create_only).await, Some(ResultCode::BinExistsError));
    let update_missing = write_exp("none", int_val(1), ExpWriteFlags::UPDATE_ONLY);
    assert_eq!(refused(&client, &key_, update_missing).await, Some(ResultCode::BinNotFound));
    assert_eq!(
        refused(&client, &key_, write_exp("c", nil(), ExpWriteFlags::DEFAULT)).await,
        Some(ResultCode::OpNotApplicable)
    );
    let unknown = read_exp("x", int_bin("none"), ExpReadFlags::DEFAULT);
    assert_eq!(refused(&client, &key_, unknown).await, Some(ResultCode::OpNotApplicable));
    let lenient = read_exp("x", int_bin("none"), ExpReadFlags::EVAL_NO_FAIL);
    client.operate(&wp, &key_, &[lenient]).await.unwrap();
    client.operate(&wp, &key_, &[write_exp("c", nil(), ExpWriteFlags::ALLOW_DELETE)]).await.unwrap();
    let record = client.get(&ReadPolicy::default(), &key_, Bins::All).await.unwrap();
    assert_eq!(record.bins.get("c"), None, "ALLOW_DELETE with a nil value deletes the bin");
    assert_eq!(record.bins.get("a"), Some(&Value::from(25)));

    // An increment by a string on a missing bin creates a string bin, as on the real server.
    client.add(&wp, &key_, &[as_bin!("s", "Text\nmore")]).await.unwrap();
    let mut rp = ReadPolicy::default();
    rp.base_policy.filter_expression =
        Some(eq(aerospike::expressions::string_bin("s"), string_val("Text\nmore")));
    assert!(client.get(&rp, &key_, Bins::All).await.is_ok());

    // Regular expressions: POSIX extended, case folded with ICASE, '.' across newlines
    // unless NEWLINE.
    use aerospike::expressions::{regex_compare, string_bin};
    use aerospike::RegexFlags;
    let matches = |pattern: &str, flags: RegexFlags| {
        let mut rp = ReadPolicy::default();
        rp.base_policy.filter_expression = Some(regex_compare(pattern.to_string(), flags, string_bin("s")));
        let (client, key) = (&client, &key_);
        async move { client.get(&rp, key, Bins::All).await.is_ok() }
    };
    assert!(matches("^Te[x]t", RegexFlags::EXTENDED).await);
    assert!(!matches("^text", RegexFlags::EXTENDED).await);
    assert!(matches("^text", RegexFlags::EXTENDED | RegexFlags::ICASE).await);
    assert!(matches("t.more$", RegexFlags::EXTENDED).await);
    assert!(!matches("t.more$", RegexFlags::EXTENDED | RegexFlags::NEWLINE).await);
    assert!(matches("^more$", RegexFlags::EXTENDED | RegexFlags::NEWLINE).await);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_queries_return_exactly_the_records_in_range_as_they_are_now() {
    use aerospike::query::{CollectionIndexType, Filter, IndexType, PartitionFilter};
    use aerospike::{as_list, as_val, AdminPolicy, QueryPolicy, Statement, Task};
    use futures::StreamExt;
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let (wp, ap) = (WritePolicy::default(), AdminPolicy::default());
    for i in 0..50i64 {
        let bins =
            [as_bin!("n", i), as_bin!("s", format!("k{}", i % 5)), as_bin!("l", as_list!(i, 1000 + i))];
        client.put(&wp, &as_key!("test", "q", i), &bins).await.unwrap();
    }
    client.put(&wp, &as_key!("test", "other", 1), &[as_bin!("n", 10)]).await.unwrap();
    let query = |filter: Filter| {
        let client = &client;
        async move {
            let mut statement = Statement::new("test", "q", Bins::All);
            statement.set_filter(filter);
            let stream = client.query(&QueryPolicy::default(), PartitionFilter::all(), statement).await?;
            let records: Vec<_> = stream.into_stream().collect().await;
            let mut found = Vec::new();
            for record in records {
                match record?.bins.get("n") {
                    Some(Value::Int(n)) => found.push(*n),
                    other => panic!("{other:?}"),
                }
            }
            found.sort();
            Ok::<_, aerospike::Error>(found)
        }
    };
    // No index yet: INDEX_NOT_FOUND, as on the real server.
    let err = query(Filter::range("n", 10, 12)).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::IndexNotFound), "{err:?}");

    let indexes = [
        ("n", "q_n", IndexType::Numeric, CollectionIndexType::Default),
        ("s", "q_s", IndexType::String, CollectionIndexType::Default),
        ("l", "q_l", IndexType::Numeric, CollectionIndexType::List),
    ];
    for (bin, name, kind, collection) in indexes {
        let task =
            client.create_index_on_bin(&ap, "test", "q", bin, name, kind, collection, None).await.unwrap();
        task.wait_till_complete(None).await.unwrap();
    }
    assert_eq!(query(Filter::range("n", 10, 12)).await.unwrap(), vec![10, 11, 12]);
    assert_eq!(
        query(Filter::equal("s", "k3")).await.unwrap(),
        (0..50).filter(|i| i % 5 == 3).collect::<Vec<_>>()
    );
    let in_list = Filter::contains("l", 1047, CollectionIndexType::List);
    assert_eq!(query(in_list).await.unwrap(), vec![47]);

    // Updates and deletes are seen by the next query.
    client.put(&wp, &as_key!("test", "q", 11), &[as_bin!("n", 500)]).await.unwrap();
    client.delete(&wp, &as_key!("test", "q", 12)).await.unwrap();
    assert_eq!(query(Filter::range("n", 10, 12)).await.unwrap(), vec![10]);

    // A background query: add 100 to the records the index filter keeps, and only those.
    let mut statement = Statement::new("test", "q", Bins::All);
    statement.set_filter(Filter::range("n", 20, 24));
    statement.set_operations([aerospike::operations::add(&as_bin!("n", 100))]);
    let task = client.query_operate(&wp, statement).await.unwrap();
    task.wait_till_complete(None).await.unwrap();
    assert_eq!(query(Filter::range("n", 120, 124)).await.unwrap(), vec![120, 121, 122, 123, 124]);
    assert_eq!(query(Filter::range("n", 20, 25)).await.unwrap(), vec![25]);
    let other = client.get(&ReadPolicy::default(), &as_key!("test", "other", 1), Bins::All).await.unwrap();
    assert_eq!(other.bins.get("n"), Some(&Value::from(10)), "another set is left alone");

    // Dropping a missing index is "ok"; a dropped index is gone.
    client.drop_index(&ap, "test", "q", "q_n").await.unwrap().wait_till_complete(None).await.unwrap();
    client.drop_index(&ap, "test", "q", "q_n").await.unwrap().wait_till_complete(None).await.unwrap();
    let err = query(Filter::range("n", 10, 12)).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::IndexNotFound));
    client.close().await.unwrap();
}

/// Path expressions (8.1): `select_by_path` and `modify_by_path` ops, whose filters read
/// each child through loop variables and may read the record's other bins, and the same
/// walks as expression calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_operations_select_and_modify_what_their_filters_reach() {
    use aerospike::expressions::maps as exp_maps;
    use aerospike::expressions::{
        exp_float_loop_var, exp_map_loop_var, exp_select_by_path, exp_string_loop_var, float_bin, float_val,
        ge, le, map_bin, num_mul, string_val, ExpType, LoopVarPart,
    };
    use aerospike::operations::cdt_context::{ctx_all_children, ctx_all_children_with_filter, ctx_map_key};
    use aerospike::operations::maps::MapReturnType;
    use aerospike::operations::path::{self, ModifyFlag, SelectFlag};
    use aerospike::{as_list, as_map, as_val};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let key = as_key!("test", "paths", 1);
    let books = as_list!(
        as_map!("title" => "Sayings", "price" => 8.95_f64),
        as_map!("title" => "Sword", "price" => 12.99_f64),
        as_map!("title" => "Moby Dick", "price" => 8.99_f64)
    );
    let bins = [as_bin!("store", as_map!("book" => books)), as_bin!("limit", 10.0_f64)];
    client.put(&wp, &key, &bins).await.unwrap();

    // Books whose price is at most the record's own "limit" bin, then their titles.
    let price = || {
        exp_maps::get_by_key(
            MapReturnType::VALUE,
            ExpType::Float,
            string_val("price"),
            exp_map_loop_var(LoopVarPart::VALUE),
            &[],
        )
    };
    let cheap = ctx_all_children_with_filter(le(price(), float_bin("limit".to_string())));
    let title = ctx_all_children_with_filter(aerospike::expressions::eq(
        exp_string_loop_var(LoopVarPart::MAP_KEY),
        string_val("title"),
    ));
    let book = ctx_map_key(Value::from("book"));
    let path = [book.clone(), cheap.clone(), title.clone()];
    let record =
        client.operate(&wp, &key, &[path::select_by_path("store", SelectFlag::VALUE, &path)]).await.unwrap();
    assert_eq!(
        record.bins.get("store"),
        Some(&Value::List(vec![Value::from("Sayings"), Value::from("Moby Dick")]))
    );

    // The same selection as an expression: a filter that passes only while a cheap book exists.
    let selected = exp_select_by_path(ExpType::List, SelectFlag::VALUE, map_bin("store".to_string()), &path);
    let mut rp = ReadPolicy::default();
    rp.base_policy.filter_expression =
        Some(ge(aerospike::expressions::lists::size(selected, &[]), aerospike::expressions::int_val(1)));
    assert!(client.get(&rp, &key, Bins::All).await.is_ok());

    // Raise every price by 10%: nothing is under the limit any more.
    let prices = [book.clone(), ctx_all_children(), ctx_map_key(Value::from("price"))];
    let raise = num_mul(vec![exp_float_loop_var(LoopVarPart::VALUE), float_val(1.5)]);
    client
        .operate(&wp, &key, &[path::modify_by_path("store", ModifyFlag::DEFAULT, raise, &prices)])
        .await
        .unwrap();
    let record =
        client.operate(&wp, &key, &[path::select_by_path("store", SelectFlag::VALUE, &path)]).await.unwrap();
    assert_eq!(record.bins.get("store"), Some(&Value::List(vec![])));
    let err = client.get(&rp, &key, Bins::All).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::FilteredOut));

    // Remove the books above 15 (Sword, now 19.49): two remain.
    let dear = ctx_all_children_with_filter(ge(price(), float_val(15.0)));
    client.operate(&wp, &key, &[path::remove("store", &[book.clone(), dear])]).await.unwrap();
    let record = client
        .operate(&wp, &key, &[path::select_values("store", &[book.clone(), ctx_all_children(), title])])
        .await
        .unwrap();
    assert_eq!(
        record.bins.get("store"),
        Some(&Value::List(vec![Value::from("Sayings"), Value::from("Moby Dick")]))
    );

    // Refusals, with nothing written: map keys of list elements (12), and a modify whose
    // expression cannot take a leaf (a string multiplied: 1).
    let generation = client.get(&ReadPolicy::default(), &key, Bins::None).await.unwrap().generation;
    let keys_of_list =
        path::select_by_path("store", SelectFlag::MAP_KEY, &[book.clone(), ctx_all_children()]);
    assert_eq!(refused(&client, &key, keys_of_list).await, Some(ResultCode::BinTypeError));
    let titles = [book, ctx_all_children(), ctx_map_key(Value::from("title"))];
    let double = num_mul(vec![exp_float_loop_var(LoopVarPart::VALUE), float_val(2.0)]);
    let bad_modify = path::modify_by_path("store", ModifyFlag::DEFAULT, double, &titles);
    assert!(client.operate(&wp, &key, &[bad_modify]).await.unwrap_err().server_result_code().is_some());
    let after = client.get(&ReadPolicy::default(), &key, Bins::None).await.unwrap().generation;
    assert_eq!(after, generation, "a refused path op writes nothing");
    client.close().await.unwrap();
}

/// String operations (8.2) through the official Rust client: reads, modifies with their
/// write flags, a string inside a map, list join, to_string, and string expressions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_operations_read_modify_and_refuse_as_the_clients_document() {
    use aerospike::expressions::string as str_exp;
    use aerospike::expressions::{eq, int_val, string_bin, string_val};
    use aerospike::operations::cdt_context::ctx_map_key;
    use aerospike::operations::exp::{read_exp, ExpReadFlags};
    use aerospike::operations::string::{self as str_op, StringPolicy, StringWriteFlags};
    use aerospike::operations::{lists, string::to_string};
    use aerospike::{as_list, as_map, as_val};
    let server = ServerProcess::start("buffered", "");
    let client = connect(&server).await;
    let wp = WritePolicy::default();
    let key = as_key!("test", "strings", 1);
    let bins = [as_bin!("s", "héllo wörld"), as_bin!("m", as_map!("greet" => "hi there")), as_bin!("n", 42)];
    client.put(&wp, &key, &bins).await.unwrap();
    assert_eq!(one_op(&client, &key, str_op::strlen("s")).await.bins.get("s"), Some(&Value::from(11)));
    assert_eq!(
        one_op(&client, &key, str_op::substr("s", 1, 4)).await.bins.get("s"),
        Some(&Value::from("éll"))
    );
    assert_eq!(one_op(&client, &key, str_op::find("s", "wö")).await.bins.get("s"), Some(&Value::from(6)));
    assert_eq!(one_op(&client, &key, to_string("n")).await.bins.get("n"), Some(&Value::from("42")));

    let policy = StringPolicy::default();
    let ops = [
        str_op::upper(&policy, "s"),
        str_op::pad_end(&policy, "s", 13, "!"),
        aerospike::operations::get_bin("s"),
    ];
    let record = client.operate(&wp, &key, &ops).await.unwrap();
    // Each op on the bin answers: the modifies nothing, the read the string.
    let answers = vec![Value::Nil, Value::Nil, Value::from("HÉLLO WÖRLD!!")];
    assert_eq!(record.bins.get("s"), Some(&Value::MultiResult(answers)));
    let in_map =
        str_op::replace(&policy, "m", "there", "you").context(vec![ctx_map_key(Value::from("greet"))]);
    client.operate(&wp, &key, &[in_map]).await.unwrap();
    let stored = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(stored.bins.get("m"), Some(&as_map!("greet" => "hi you")));

    // Write flags: CREATE_ONLY on a live bin is BIN_EXISTS (nothing written); NO_FAIL
    // leaves the bin as it was; UPDATE_ONLY does not create.
    let generation = stored.generation;
    let create_only = StringPolicy::new(StringWriteFlags::CREATE_ONLY);
    assert_eq!(
        refused(&client, &key, str_op::append(&create_only, "s", "x")).await,
        Some(ResultCode::BinExistsError)
    );
    let after_refusal = client.get(&ReadPolicy::default(), &key, Bins::None).await.unwrap().generation;
    assert_eq!(after_refusal, generation, "a refused op writes nothing");
    let no_fail = StringPolicy::new(StringWriteFlags::NO_FAIL);
    client.operate(&wp, &key, &[str_op::repeat(&no_fail, "s", -1)]).await.unwrap();
    let update_only = StringPolicy::new(StringWriteFlags::UPDATE_ONLY);
    client.operate(&wp, &key, &[str_op::append(&update_only, "absent", "x")]).await.unwrap();
    let stored = client.get(&ReadPolicy::default(), &key, Bins::All).await.unwrap();
    assert_eq!(stored.bins.get("s"), Some(&Value::from("HÉLLO WÖRLD!!")));
    assert_eq!(stored.bins.get("absent"), None);
    assert_eq!(refused(&client, &key, str_op::to_integer("s")).await, Some(ResultCode::ParameterError));
    assert_eq!(refused(&client, &key, str_op::strlen("n")).await, Some(ResultCode::BinTypeError));

    // List join, and string expressions in a read and a filter.
    client.put(&wp, &key, &[as_bin!("l", as_list!("a", "b", "c"))]).await.unwrap();
    let joined = one_op(&client, &key, lists::join_by_separator("l", "-")).await;
    assert_eq!(joined.bins.get("l"), Some(&Value::from("a-b-c")));
    let shout =
        read_exp("shout", str_exp::lower(&policy, string_bin("s".to_string())), ExpReadFlags::DEFAULT);
    assert_eq!(one_op(&client, &key, shout).await.bins.get("shout"), Some(&Value::from("héllo wörld!!")));
    let mut rp = ReadPolicy::default();
    rp.base_policy.filter_expression = Some(eq(str_exp::strlen(string_bin("s".to_string())), int_val(13)));
    assert!(client.get(&rp, &key, Bins::All).await.is_ok());
    rp.base_policy.filter_expression =
        Some(eq(str_exp::substr(string_bin("s".to_string()), int_val(-2)), string_val("?")));
    let err = client.get(&rp, &key, Bins::All).await.unwrap_err();
    assert_eq!(err.server_result_code(), Some(ResultCode::FilteredOut));
    client.close().await.unwrap();
}
