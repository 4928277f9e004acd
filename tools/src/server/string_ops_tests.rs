//! Tests of `string_ops` against the behaviour the official clients document for each op.

use super::*;
use crate::server::msgpack::encode;

fn s(text: &str) -> Value {
    Value::string(text.as_bytes())
}

fn op(sub_op: i64, args: Vec<Value>) -> Vec<u8> {
    let mut items = vec![Value::Int(sub_op)];
    items.extend(args);
    encode(&Value::List(items))
}

fn read_of(text: &str, sub_op: i64, args: Vec<Value>) -> Result<Value> {
    let applied = apply(Some((PARTICLE_STRING, text.as_bytes())), &op(sub_op, args), false)?;
    Ok(applied.result.expect("a read of a string bin has a result"))
}

/// The bin after a modify (`None` for an absent bin), or the refusal.
fn modified(text: Option<&str>, sub_op: i64, args: Vec<Value>) -> Result<Option<String>> {
    let bin = text.map(|t| (PARTICLE_STRING, t.as_bytes()));
    let applied = apply(bin, &op(sub_op, args), true)?;
    let new = applied.new_bin.map(|(particle, bytes)| {
        assert_eq!(particle, PARTICLE_STRING);
        String::from_utf8(bytes).unwrap()
    });
    Ok(new.or(text.map(str::to_string)))
}

#[test]
fn reads_count_code_points_and_clamp_indexes() {
    let text = "héllo wörld";
    assert_eq!(read_of(text, 0, vec![]), Ok(Value::Int(11)));
    assert_eq!(read_of(text, 9, vec![]), Ok(Value::Int(13)));
    assert_eq!(read_of(text, 1, vec![Value::Int(-5)]), Ok(s("wörld")));
    assert_eq!(read_of(text, 1, vec![Value::Int(1), Value::Int(4)]), Ok(s("éll")));
    assert_eq!(read_of(text, 1, vec![Value::Int(4), Value::Int(1)]), Ok(s("")));
    assert_eq!(read_of(text, 1, vec![Value::Int(-100), Value::Int(2)]), Ok(s("hé")));
    assert_eq!(read_of(text, 2, vec![Value::Int(1)]), Ok(s("é")));
    assert_eq!(read_of(text, 2, vec![Value::Int(99)]), Ok(s("d")));
    assert_eq!(read_of(text, 3, vec![s("o")]), Ok(Value::Int(4)));
    assert_eq!(read_of(text, 3, vec![s("o"), Value::Int(-1)]), Ok(Value::Int(4)));
    assert_eq!(read_of("a-b-c", 3, vec![s("-"), Value::Int(2)]), Ok(Value::Int(3)));
    assert_eq!(read_of("a-b-c", 3, vec![s("-"), Value::Int(-1)]), Ok(Value::Int(3)));
    assert_eq!(read_of("a-b-c", 3, vec![s("-"), Value::Int(3)]), Ok(Value::Int(-1)));
    assert_eq!(read_of(text, 4, vec![s("wö")]), Ok(Value::Bool(true)));
    assert_eq!(read_of(text, 5, vec![s("hé")]), Ok(Value::Bool(true)));
    assert_eq!(read_of(text, 6, vec![s("x")]), Ok(Value::Bool(false)));
    assert_eq!(read_of("a,b,,c", 14, vec![s(",")]), Ok(Value::List(vec![s("a"), s("b"), s(""), s("c")])));
    assert_eq!(read_of("hé", 14, vec![]), Ok(Value::List(vec![s("h"), s("é")])));
    assert_eq!(read_of("x", 14, vec![s("")]), Err(StringError::Parameter));
}

#[test]
fn conversions_and_tests_parse_as_the_clients_document() {
    assert_eq!(read_of("-42", 7, vec![]), Ok(Value::Int(-42)));
    assert_eq!(read_of("4x", 7, vec![]), Err(StringError::Parameter));
    assert_eq!(read_of("2.5", 8, vec![]), Ok(Value::F64(2.5)));
    assert_eq!(read_of("nope", 8, vec![]), Err(StringError::Parameter));
    // Float needs a '.' and a digit after it: "5" and "5." are not floats, "1e5" is neither.
    for (text, any, int, float) in [
        ("5", true, true, false),
        ("5.", false, false, false),
        ("5.0", true, false, true),
        ("1e5", false, false, false),
    ] {
        assert_eq!(read_of(text, 10, vec![]), Ok(Value::Bool(any)), "{text}");
        assert_eq!(read_of(text, 10, vec![Value::Int(1)]), Ok(Value::Bool(int)), "{text}");
        assert_eq!(read_of(text, 10, vec![Value::Int(2)]), Ok(Value::Bool(float)), "{text}");
    }
    assert_eq!(read_of("ABC 1", 11, vec![]), Ok(Value::Bool(true)));
    assert_eq!(read_of("AbC", 11, vec![]), Ok(Value::Bool(false)));
    assert_eq!(read_of("abc 1", 12, vec![]), Ok(Value::Bool(true)));
    assert_eq!(read_of("hi", 13, vec![]), Ok(blob(b"hi")));
    assert_eq!(read_of("aGk=", 15, vec![]), Ok(blob(b"hi")));
    assert_eq!(read_of("not base64!", 15, vec![]), Err(StringError::Parameter));
    assert_eq!(read_of("Hello", 16, vec![s("^h.l+o$")]), Ok(Value::Bool(false)));
    assert_eq!(read_of("Hello", 16, vec![s("^h.l+o$"), Value::Int(1)]), Ok(Value::Bool(true)));
    assert_eq!(read_of("x", 16, vec![s("(")]), Err(StringError::Parameter));
}

#[test]
fn modifies_splice_replace_pad_and_repeat() {
    let flags = || Value::Int(0);
    let m = |text: &str, sub_op, args| modified(Some(text), sub_op, args).unwrap().unwrap();
    assert_eq!(m("héllo", 50, vec![Value::Int(1), s("XY"), flags()]), "hXYéllo");
    assert_eq!(m("héllo", 50, vec![Value::Int(-1), s("!"), flags()]), "héll!o");
    assert_eq!(m("héllo", 51, vec![Value::Int(3), s("p me"), flags()]), "hélp me");
    assert_eq!(m("ab", 52, vec![Value::List(vec![s("c"), s("d")]), flags()]), "abcd");
    assert_eq!(m("hello world", 53, vec![Value::Int(5)]), "hello");
    assert_eq!(m("hello world", 53, vec![Value::Int(0), Value::Int(6), flags()]), "world");
    assert_eq!(m("a.a.a", 54, vec![Value::List(vec![s("a"), s("b")]), flags()]), "b.a.a");
    assert_eq!(m("a.a.a", 55, vec![Value::List(vec![s("a"), s("b")]), flags()]), "b.b.b");
    assert_eq!(m("Grüße", 56, vec![flags()]), "GRÜSSE");
    assert_eq!(m("ÀB", 57, vec![flags()]), "àb");
    assert_eq!(m("  x  ", 60, vec![flags()]), "x  ");
    assert_eq!(m("  x  ", 61, vec![flags()]), "  x");
    assert_eq!(m("  x  ", 62, vec![flags()]), "x");
    assert_eq!(m("7", 63, vec![Value::Int(4), s("ab"), flags()]), "aba7");
    assert_eq!(m("7", 64, vec![Value::Int(3), s("0"), flags()]), "700");
    assert_eq!(m("long", 63, vec![Value::Int(2), s("0"), flags()]), "long");
    assert_eq!(m("ab", 65, vec![Value::Int(3), flags()]), "ababab");
    let regex = |pattern: &str, replacement: &str| Value::List(vec![s(pattern), s(replacement)]);
    assert_eq!(m("a1b22", 66, vec![regex("[0-9]+", "#"), Value::Int(0), flags()]), "a#b22");
    assert_eq!(m("a1b22", 66, vec![regex("[0-9]+", "#"), Value::Int(16), flags()]), "a#b#");
    assert_eq!(m("mid", 67, vec![s(">"), flags()]), "mid>");
    assert_eq!(m("mid", 68, vec![s("<"), flags()]), "<mid");
}

#[test]
fn write_flags_decide_creation_existence_and_failures() {
    let append = |text: Option<&str>, flags: i64| modified(text, 67, vec![s("x"), Value::Int(flags)]);
    // An absent bin: created by a create-capable op, unless UPDATE_ONLY.
    assert_eq!(append(None, 0), Ok(Some("x".into())));
    assert_eq!(append(None, UPDATE_ONLY), Ok(None));
    assert_eq!(append(None, CREATE_ONLY), Ok(Some("x".into())));
    assert_eq!(modified(None, 56, vec![Value::Int(0)]), Ok(None), "upper does not create");
    // CREATE_ONLY on a live bin, with and without NO_FAIL.
    assert_eq!(append(Some("a"), CREATE_ONLY), Err(StringError::BinExists));
    assert_eq!(append(Some("a"), CREATE_ONLY | NO_FAIL), Ok(Some("a".into())));
    // Validations NO_FAIL does not cover: CREATE_ONLY with UPDATE_ONLY, or on an op that
    // cannot create; a malformed argument; a bin of another type.
    assert_eq!(append(Some("a"), CREATE_ONLY | UPDATE_ONLY | NO_FAIL), Err(StringError::Parameter));
    assert_eq!(modified(Some("a"), 56, vec![Value::Int(CREATE_ONLY | NO_FAIL)]), Err(StringError::Parameter));
    assert_eq!(
        modified(Some("a"), 67, vec![Value::Int(1), Value::Int(NO_FAIL)]),
        Err(StringError::Parameter)
    );
    let integer = apply(Some((1, &[0; 8])), &op(67, vec![s("x"), Value::Int(0)]), true);
    assert_eq!(integer, Err(StringError::BinType));
    // A failing op: PARAMETER, or the bin unchanged under NO_FAIL.
    assert_eq!(modified(Some("ab"), 65, vec![Value::Int(-1), Value::Int(0)]), Err(StringError::Parameter));
    assert_eq!(modified(Some("ab"), 65, vec![Value::Int(-1), Value::Int(NO_FAIL)]), Ok(Some("ab".into())));
    let huge = modified(Some("ab"), 65, vec![Value::Int(1 << 40), Value::Int(0)]);
    assert_eq!(huge, Err(StringError::Parameter), "a result past the record size is refused, not built");
    // A modify as a read op, forms not served, and a read of an absent bin.
    assert_eq!(apply(Some((3, b"a")), &op(56, vec![Value::Int(0)]), false), Err(StringError::Parameter));
    let in_context = encode(&Value::List(vec![Value::Int(0xff), Value::List(vec![]), Value::List(vec![])]));
    assert_eq!(apply(Some((3, b"a")), &in_context, false), Err(StringError::BinType));
    assert_eq!(apply(None, &op(0, vec![]), false), Ok(Applied { result: None, new_bin: None }));
}
