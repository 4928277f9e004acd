//! Queries by secondary index (a scan message with INDEX_RANGE, `../shared/aerospike-wire.md`
//! §6): the records of the asked partitions whose indexed value (the bin's, an element of
//! a list bin, a key or value of a map bin, or an index expression's) lies in the range,
//! resumable per partition by digest as a scan is. The records come from the in-memory
//! index (`sindex`) when one serves the filter, else from a scan of the asked partitions
//! (an expression index, or an index still being built); either way each is checked here.
//! As on the real server the index must have been created (`catalog`), else
//! INDEX_NOT_FOUND (201).
//!
//! Served: integer ranges, string or blob equality and geo filters (points within a
//! region, regions containing a point: `geo`), on a bin, list elements, map keys or map
//! values, an element a CDT context names in the bin, or an expression.
//!
//! Pure but for the catalog lookup; cost per record: a decode of the indexed bin.

use super::bins::StoredRecord;
use super::bins::{PARTICLE_BLOB, PARTICLE_GEOJSON, PARTICLE_INTEGER, PARTICLE_STRING};
use super::catalog::Catalog;
use super::filter::{self, Subject};
use super::geo::{self, Shape};
use super::msgpack::{self, Value};
use super::record::code::{INDEX_NOT_FOUND, PARAMETER, UNSUPPORTED_FEATURE};
use super::wire::*;

/// Which values of a bin the index holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    Scalar,
    ListElements,
    MapKeys,
    MapValues,
}

/// The values a query asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Range {
    Integers(i64, i64),
    /// A string (particle 3) or blob (4) equal to these bytes.
    Equal(u8, Vec<u8>),
    /// GeoJSON (particle 23): a region finds the points within it, a point the regions
    /// that contain it (`geo`).
    Geo(Shape),
}

#[derive(Debug)]
pub struct IndexFilter {
    pub bin: Vec<u8>,
    pub collection: Collection,
    pub range: Range,
    pub expression: Option<Value>,
    /// A CDT context (flat `[type, value, …]` pairs) naming the element of the bin that
    /// is indexed.
    pub context: Option<Vec<Value>>,
}

/// The query's index filter, or None for a plain scan. Err: the result code to answer.
pub fn parse(message: &Message<'_>, catalog: &Catalog, namespace: &str) -> Result<Option<IndexFilter>, u8> {
    let Some(field) = message.field(FIELD_INDEX_RANGE) else {
        return match message.field(FIELD_INDEX_NAME) {
            Some(_) => Err(PARAMETER),
            None => Ok(None),
        };
    };
    let context = match message.field(FIELD_INDEX_CONTEXT).map(msgpack::decode) {
        None => None,
        Some(Ok(Value::List(pairs))) if !pairs.is_empty() && pairs.len() % 2 == 0 => Some(pairs),
        Some(_) => return Err(PARAMETER),
    };
    let collection = match message.field(FIELD_INDEX_TYPE) {
        None | Some([0]) => Collection::Scalar,
        Some([1]) => Collection::ListElements,
        Some([2]) => Collection::MapKeys,
        Some([3]) => Collection::MapValues,
        Some(_) => return Err(PARAMETER),
    };
    let (bin, range) = parse_range(field)?;
    let expression = match message.field(FIELD_INDEX_EXPRESSION) {
        Some(bytes) => Some(msgpack::decode(bytes).map_err(|_| PARAMETER)?),
        None => None,
    };
    let name = message.field(FIELD_INDEX_NAME).map(|n| String::from_utf8_lossy(n).into_owned());
    let kind = match range {
        Range::Integers(..) => "NUMERIC",
        Range::Equal(PARTICLE_STRING, _) => "STRING",
        Range::Equal(..) => "BLOB",
        Range::Geo(_) => "GEO2DSPHERE",
    };
    let bin = catalog
        .index_bin(namespace, name.as_deref(), &bin, kind, collection_name(collection))
        .ok_or(INDEX_NOT_FOUND)?;
    Ok(Some(IndexFilter { bin, collection, range, expression, context }))
}

fn collection_name(collection: Collection) -> &'static str {
    match collection {
        Collection::Scalar => "DEFAULT",
        Collection::ListElements => "LIST",
        Collection::MapKeys => "MAPKEYS",
        Collection::MapValues => "MAPVALUES",
    }
}

/// INDEX_RANGE: a count (1), the bin name (u8 length), the particle type, then begin and
/// end, each a u32 big-endian length and the value's bytes.
fn parse_range(field: &[u8]) -> Result<(Vec<u8>, Range), u8> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], u8> {
        let bytes = field.get(at..at + n).ok_or(PARAMETER)?;
        at += n;
        Ok(bytes)
    };
    if take(1)? != [1] {
        return Err(PARAMETER);
    }
    let name_len = take(1)?[0] as usize;
    let bin = take(name_len)?.to_vec();
    let particle = take(1)?[0];
    let mut value = || -> Result<Vec<u8>, u8> {
        let len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| PARAMETER)?) as usize;
        Ok(take(len)?.to_vec())
    };
    let (begin, end) = (value()?, value()?);
    let integer = |bytes: &[u8]| bytes.try_into().map(i64::from_be_bytes).map_err(|_| PARAMETER);
    let range = match particle {
        PARTICLE_INTEGER => Range::Integers(integer(&begin)?, integer(&end)?),
        PARTICLE_STRING | PARTICLE_BLOB if begin == end => Range::Equal(particle, begin),
        PARTICLE_STRING | PARTICLE_BLOB => return Err(PARAMETER),
        PARTICLE_GEOJSON => Range::Geo(geo::parse(&begin).ok_or(PARAMETER)?),
        _ => return Err(UNSUPPORTED_FEATURE),
    };
    Ok((bin, range))
}

impl IndexFilter {
    /// Whether the record holds a value the query asks for.
    pub fn matches(&self, stored: &StoredRecord, subject: &Subject<'_>) -> bool {
        let mut value = match &self.expression {
            Some(expression) => match filter::evaluate(expression, subject) {
                Ok(Some(value)) => value,
                _ => return false,
            },
            None => match stored.bin(&self.bin).and_then(|b| Value::from_particle(b.particle, &b.value).ok())
            {
                Some(value) => value,
                None => return false,
            },
        };
        if let Some(context) = &self.context {
            match super::cdt_context::select(&mut value, context) {
                Some(element) => value = std::mem::replace(element, Value::Nil),
                None => return false,
            }
        }
        match (self.collection, &value) {
            (Collection::Scalar, _) => self.in_range(&value),
            (Collection::ListElements, Value::List(items)) => items.iter().any(|v| self.in_range(v)),
            (Collection::MapKeys, Value::Map { entries, .. }) => {
                entries.iter().any(|(k, _)| self.in_range(k))
            }
            (Collection::MapValues, Value::Map { entries, .. }) => {
                entries.iter().any(|(_, v)| self.in_range(v))
            }
            _ => false,
        }
    }

    fn in_range(&self, value: &Value) -> bool {
        match (&self.range, value) {
            (Range::Integers(begin, end), Value::Int(i)) => begin <= i && i <= end,
            (Range::Equal(particle, wanted), Value::Bytes { payload, .. }) => {
                payload.first() == Some(particle) && payload[1..] == wanted[..]
            }
            (Range::Geo(query), Value::Bytes { payload, .. })
                if payload.first() == Some(&PARTICLE_GEOJSON) =>
            {
                geo::shape_of(&payload[1..]).is_some_and(|stored| geo::query_matches(query, &stored))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_field(bin: &[u8], particle: u8, begin: &[u8], end: &[u8]) -> Vec<u8> {
        let mut out = vec![1, bin.len() as u8];
        out.extend_from_slice(bin);
        out.push(particle);
        for value in [begin, end] {
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    fn subject(stored: &StoredRecord) -> Subject<'_> {
        filter::subject(stored, None, &[0; 20])
    }

    #[test]
    fn ranges_parse_and_match_bins_list_elements_and_map_keys() {
        let (bin, range) =
            parse_range(&range_field(b"n", 1, &5i64.to_be_bytes(), &9i64.to_be_bytes())).unwrap();
        assert_eq!((bin.as_slice(), &range), (&b"n"[..], &Range::Integers(5, 9)));
        assert_eq!(parse_range(&range_field(b"s", 3, b"a", b"b")), Err(PARAMETER), "no string ranges");
        assert_eq!(parse_range(&range_field(b"g", 23, b"{}", b"{}")), Err(PARAMETER), "not GeoJSON");
        assert_eq!(parse_range(&range_field(b"g", 25, b"{}", b"{}")), Err(UNSUPPORTED_FEATURE));
        let field = range_field(b"n", 1, &5i64.to_be_bytes(), &9i64.to_be_bytes());
        for len in 0..field.len() {
            assert!(parse_range(&field[..len]).is_err(), "cut at {len}");
        }

        let mut stored = StoredRecord::default();
        stored.set_bin(b"n", 1, &7i64.to_be_bytes());
        stored.set_bin(b"s", 3, b"abc");
        stored.set_bin(b"l", 20, &msgpack::encode(&Value::List(vec![Value::Int(1), Value::Int(42)])));
        let filter = |bin: &[u8], collection, range| IndexFilter {
            bin: bin.to_vec(),
            collection,
            range,
            expression: None,
            context: None,
        };
        let s = subject(&stored);
        assert!(filter(b"n", Collection::Scalar, Range::Integers(5, 9)).matches(&stored, &s));
        assert!(!filter(b"n", Collection::Scalar, Range::Integers(8, 9)).matches(&stored, &s));
        assert!(filter(b"s", Collection::Scalar, Range::Equal(3, b"abc".to_vec())).matches(&stored, &s));
        assert!(!filter(b"s", Collection::Scalar, Range::Equal(4, b"abc".to_vec())).matches(&stored, &s));
        assert!(filter(b"l", Collection::ListElements, Range::Integers(40, 50)).matches(&stored, &s));
        assert!(!filter(b"l", Collection::MapKeys, Range::Integers(40, 50)).matches(&stored, &s));
        assert!(!filter(b"missing", Collection::Scalar, Range::Integers(0, 9)).matches(&stored, &s));

        // A context names an element of the bin: list index 1, then index 5 (none).
        let mut in_context = filter(b"l", Collection::Scalar, Range::Integers(40, 50));
        in_context.context = Some(vec![Value::Int(0x10), Value::Int(1)]);
        assert!(in_context.matches(&stored, &s));
        in_context.context = Some(vec![Value::Int(0x10), Value::Int(0)]);
        assert!(!in_context.matches(&stored, &s), "element 0 is 1");
        in_context.context = Some(vec![Value::Int(0x10), Value::Int(5)]);
        assert!(!in_context.matches(&stored, &s));
        in_context.context = Some(vec![Value::Int(0x20), Value::Int(0)]);
        assert!(!in_context.matches(&stored, &s), "a map context on a list");
    }
}
