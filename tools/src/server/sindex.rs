//! Secondary indexes kept in memory: for each index a client creates on a bin (integer,
//! string or blob values; of the bin itself, its list elements, or its map keys or
//! values), the records that hold each value, per partition, so that a query by index
//! reads the records it names instead of scanning the namespace (`index_query`).
//!
//! Owns, per index and partition, the keys each record is indexed under (with the
//! generation they came from) and the ordered (key, digest) pairs a query walks. Kept in
//! step by every write of the server (`update_by_digest`, `update_each_by_digest` wrap the
//! engine's), and filled by `build` when the index is created.
//!
//! Invariant: every live record is indexed under every key its current bins give. Writes
//! of one record can finish out of order (each applies its keys after its durability
//! wait), so `apply` keeps the keys of the highest generation it has seen (generations of
//! a digest only grow, across delete and re-create). An index created while a write is in
//! flight is caught by the registration count: a write that sees it changed re-reads its
//! record and indexes it in every index. Entries may be stale (an expired or evicted
//! record, a rare late apply after a delete), never missing: a query reads every record
//! it is given and checks it against its filter, as it checks a scanned one. Expression
//! indexes are not kept (their value may depend on record metadata); their queries scan.
//!
//! Cost: about 130 bytes of memory per indexed value; a write of a namespace with indexes
//! decodes its new record once and takes one partition mutex per index; without indexes,
//! one atomic load. Lock order: an index partition's mutex is taken last (no engine lock
//! is held while it is).

use super::bins::{StoredRecord, PARTICLE_BLOB, PARTICLE_INTEGER, PARTICLE_STRING};
use super::index_query::{Collection, IndexFilter, Range};
use super::msgpack::Value;
use super::Namespace;
use spike::{Change, Record, Written};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type Digest = [u8; 20];

/// An indexed value: an integer, or a hash of a string's or blob's bytes (equal values
/// give equal keys; two values that share a hash only add a candidate the query drops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Int(i64),
    Hashed(u64),
}

fn hashed(particle: u8, bytes: &[u8]) -> Key {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&[particle]);
    hasher.update(bytes);
    Key::Hashed(hasher.digest())
}

/// What an index holds: the values of `bin` of one particle type, in records of `set`
/// (all sets when empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub set: Vec<u8>,
    pub bin: Vec<u8>,
    /// PARTICLE_INTEGER, PARTICLE_STRING or PARTICLE_BLOB.
    pub particle: u8,
    pub collection: Collection,
}

impl Definition {
    /// The definition `sindex-create` arguments give, or None for an index this module does
    /// not keep (an expression or CDT-context index, an unknown type).
    pub fn from_args(args: &std::collections::BTreeMap<String, String>) -> Option<Definition> {
        if args.contains_key("exp") || args.contains_key("context") {
            return None;
        }
        let data: Vec<&str> = args.get("indexdata").map(|d| d.split(',').collect()).unwrap_or_default();
        let bin = args.get("bin").map(String::as_str).or(data.first().copied())?;
        let kind = args.get("type").map(String::as_str).or(data.get(1).copied())?;
        let particle = match kind.to_ascii_uppercase().as_str() {
            "NUMERIC" => PARTICLE_INTEGER,
            "STRING" => PARTICLE_STRING,
            "BLOB" => PARTICLE_BLOB,
            _ => return None,
        };
        let collection = match args.get("indextype").map(|t| t.to_ascii_uppercase()).as_deref() {
            None | Some("DEFAULT") => Collection::Scalar,
            Some("LIST") => Collection::ListElements,
            Some("MAPKEYS") => Collection::MapKeys,
            Some("MAPVALUES") => Collection::MapValues,
            Some(_) => return None,
        };
        Some(Definition {
            name: args.get("indexname")?.clone(),
            set: args.get("set").map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
            bin: bin.as_bytes().to_vec(),
            particle,
            collection,
        })
    }

    /// The keys a record is indexed under, sorted and without repeats.
    pub fn keys(&self, stored: &StoredRecord) -> Vec<Key> {
        if !self.set.is_empty() && self.set != stored.set {
            return Vec::new();
        }
        let Some(bin) = stored.bin(&self.bin) else { return Vec::new() };
        let mut keys = Vec::new();
        match self.collection {
            Collection::Scalar => self.push_key(&mut keys, bin.particle, &bin.value),
            _ => {
                let Ok(value) = Value::from_particle(bin.particle, &bin.value) else { return keys };
                match (self.collection, value) {
                    (Collection::ListElements, Value::List(items)) => {
                        items.iter().for_each(|item| self.push_value(&mut keys, item))
                    }
                    (Collection::MapKeys, Value::Map { entries, .. }) => {
                        entries.iter().for_each(|(k, _)| self.push_value(&mut keys, k))
                    }
                    (Collection::MapValues, Value::Map { entries, .. }) => {
                        entries.iter().for_each(|(_, v)| self.push_value(&mut keys, v))
                    }
                    _ => {}
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn push_key(&self, keys: &mut Vec<Key>, particle: u8, bytes: &[u8]) {
        if particle != self.particle {
            return;
        }
        match particle {
            PARTICLE_INTEGER => keys.extend(bytes.try_into().ok().map(|b| Key::Int(i64::from_be_bytes(b)))),
            _ => keys.push(hashed(particle, bytes)),
        }
    }

    fn push_value(&self, keys: &mut Vec<Key>, value: &Value) {
        match value {
            Value::Int(i) if self.particle == PARTICLE_INTEGER => keys.push(Key::Int(*i)),
            Value::Bytes { payload, .. } if !payload.is_empty() => {
                self.push_key(keys, payload[0], &payload[1..])
            }
            _ => {}
        }
    }

    /// Whether this index answers `filter` for a query of `set` (None: all sets).
    fn serves(&self, filter: &IndexFilter, set: Option<&[u8]>) -> bool {
        let particle = match &filter.range {
            Range::Integers(..) => PARTICLE_INTEGER,
            Range::Equal(particle, _) => *particle,
            // Geo indexes are not kept: their queries scan.
            Range::Geo(_) => return false,
        };
        filter.expression.is_none()
            && filter.context.is_none()
            && filter.bin == self.bin
            && filter.collection == self.collection
            && particle == self.particle
            && (self.set.is_empty() || Some(&self.set[..]) == set)
    }
}

#[derive(Default)]
struct PartitionIndex {
    by_key: BTreeSet<(Key, Digest)>,
    by_digest: HashMap<Digest, (u32, Vec<Key>)>,
}

/// One index: its definition and entries.
pub struct SecondaryIndex {
    pub definition: Definition,
    partitions: Box<[Mutex<PartitionIndex>]>,
    partitions_built: AtomicU32,
    dropped: AtomicBool,
    /// Partitions that queries looked up (`sindex-stat` reports it as `query_lookups`).
    lookups: AtomicU64,
}

impl SecondaryIndex {
    fn new(definition: Definition) -> SecondaryIndex {
        let partitions = (0..spike::limits::PARTITION_COUNT).map(|_| Mutex::default()).collect();
        SecondaryIndex {
            definition,
            partitions,
            partitions_built: AtomicU32::new(0),
            dropped: AtomicBool::new(false),
            lookups: AtomicU64::new(0),
        }
    }

    fn partition(&self, digest: &Digest) -> std::sync::MutexGuard<'_, PartitionIndex> {
        let partition = &self.partitions[spike::partition_of(digest)];
        partition.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Indexes the record `digest` under `keys` as of `generation` (no keys: not indexed),
    /// unless a write of the same or a later generation was applied already.
    pub fn apply(&self, digest: &Digest, generation: u32, keys: Vec<Key>) {
        let mut partition = self.partition(digest);
        let partition = &mut *partition;
        if let Some((held, old)) = partition.by_digest.get_mut(digest) {
            if *held >= generation {
                return;
            }
            if *old == keys {
                *held = generation;
                return;
            }
        }
        if let Some((_, old)) = partition.by_digest.remove(digest) {
            for key in &old {
                partition.by_key.remove(&(*key, *digest));
            }
        }
        if !keys.is_empty() {
            for key in &keys {
                partition.by_key.insert((*key, *digest));
            }
            partition.by_digest.insert(*digest, (generation, keys));
        }
    }

    /// The records of `partition` indexed under a key in `range`, in descending digest
    /// order (a scan's order, so that resume digests carry over), each once.
    pub fn candidates(&self, partition: usize, range: &Range) -> Vec<Digest> {
        let (low, high) = match range {
            Range::Integers(begin, end) if begin <= end => (Key::Int(*begin), Key::Int(*end)),
            Range::Integers(..) => return Vec::new(),
            Range::Equal(particle, bytes) => (hashed(*particle, bytes), hashed(*particle, bytes)),
            Range::Geo(_) => return Vec::new(),
        };
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let held = self.partitions[partition].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut digests: Vec<Digest> =
            held.by_key.range((low, [0; 20])..=(high, [0xff; 20])).map(|(_, digest)| *digest).collect();
        drop(held);
        digests.sort_unstable_by(|a, b| b.cmp(a));
        digests.dedup();
        digests
    }

    /// Percent of the partitions the build has filled (100 once ready).
    pub fn load_pct(&self) -> u32 {
        self.partitions_built.load(Ordering::Acquire) * 100 / spike::limits::PARTITION_COUNT as u32
    }

    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    pub fn is_ready(&self) -> bool {
        self.partitions_built.load(Ordering::Acquire) == spike::limits::PARTITION_COUNT as u32
    }

    /// (records indexed, keys) over all partitions.
    pub fn counts(&self) -> (usize, usize) {
        self.partitions.iter().fold((0, 0), |(records, keys), p| {
            let p = p.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (records + p.by_digest.len(), keys + p.by_key.len())
        })
    }
}

/// The indexes of one namespace.
#[derive(Default)]
pub struct Indexes {
    list: RwLock<Arc<Vec<Arc<SecondaryIndex>>>>,
    /// The list's length, so that a write of a namespace without indexes touches no lock.
    count: AtomicUsize,
    /// Bumped (after the list and count change) whenever an index is added.
    added: AtomicU64,
}

impl Indexes {
    /// The count of additions so far and the indexes now (None: there are none).
    fn snapshot(&self) -> (u64, Option<Arc<Vec<Arc<SecondaryIndex>>>>) {
        let added = self.added.load(Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) == 0 {
            return (added, None);
        }
        let list = self.list.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        (added, Some(list))
    }

    /// Every index of the namespace now.
    pub fn all(&self) -> Vec<Arc<SecondaryIndex>> {
        self.snapshot().1.map_or_else(Vec::new, |list| list.to_vec())
    }

    /// Adds an empty index (every write from now on keeps it) for `build` to fill.
    pub fn add(&self, definition: Definition) -> Arc<SecondaryIndex> {
        let index = Arc::new(SecondaryIndex::new(definition));
        let mut list = self.list.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut grown: Vec<_> =
            list.iter().filter(|i| i.definition.name != index.definition.name).cloned().collect();
        grown.push(index.clone());
        self.count.store(grown.len(), Ordering::SeqCst);
        *list = Arc::new(grown);
        drop(list);
        self.added.fetch_add(1, Ordering::SeqCst);
        index
    }

    pub fn remove(&self, name: &str) {
        let mut list = self.list.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for index in list.iter().filter(|i| i.definition.name == name) {
            index.dropped.store(true, Ordering::Release);
        }
        let kept: Vec<_> = list.iter().filter(|i| i.definition.name != name).cloned().collect();
        self.count.store(kept.len(), Ordering::SeqCst);
        *list = Arc::new(kept);
    }

    pub fn find(&self, name: &str) -> Option<Arc<SecondaryIndex>> {
        self.all().into_iter().find(|i| i.definition.name == name)
    }

    /// A ready index that answers `filter` for a query of `set`.
    pub fn serving(&self, filter: &IndexFilter, set: Option<&[u8]>) -> Option<Arc<SecondaryIndex>> {
        self.all().into_iter().find(|i| i.is_ready() && i.definition.serves(filter, set))
    }
}

/// The keys a change gives each index (None: it changes nothing indexed).
type Staged = Option<Vec<(Arc<SecondaryIndex>, Vec<Key>)>>;

fn stage(indexes: Option<&Vec<Arc<SecondaryIndex>>>, change: &Change) -> Staged {
    let indexes = indexes.filter(|list| !list.is_empty())?;
    let (stored, set) = match change {
        Change::Keep => return None,
        Change::Delete => (None, None),
        Change::Put { value, .. } => (Some(value), Some(StoredRecord::peek_set(value)?)),
    };
    // A record's set never changes (it is part of its digest): indexes of other sets are
    // left alone, and a record no index holds is not decoded.
    let relevant: Vec<&Arc<SecondaryIndex>> = indexes
        .iter()
        .filter(|index| set.is_none_or(|set| index.definition.set.is_empty() || index.definition.set == set))
        .collect();
    if relevant.is_empty() {
        return None;
    }
    let stored = match stored {
        Some(value) => Some(StoredRecord::decode(value).ok()?),
        None => None,
    };
    let keys = |index: &SecondaryIndex| stored.as_ref().map_or_else(Vec::new, |s| index.definition.keys(s));
    Some(relevant.into_iter().map(|index| (index.clone(), keys(index))).collect())
}

/// Applies what a committed write staged, or, if an index was added while it ran,
/// indexes the record as it is now in every index.
fn settle(ns: &Namespace, digest: &Digest, added: u64, staged: Staged, written: &Written) {
    if ns.sindexes.added.load(Ordering::SeqCst) != added && reindex(ns, digest, written.generation) {
        return;
    }
    for (index, keys) in staged.into_iter().flatten() {
        index.apply(digest, written.generation, keys);
    }
}

/// Indexes the record as it is now in every index; false if it could not be read (then
/// nothing is removed: an entry may be stale, never missing).
fn reindex(ns: &Namespace, digest: &Digest, generation: u32) -> bool {
    let indexes = ns.sindexes.all();
    match ns.engine.get_by_digest(digest) {
        Ok(record) => {
            let stored = StoredRecord::decode(&record.value).ok();
            for index in indexes.iter() {
                let keys = stored.as_ref().map_or_else(Vec::new, |s| index.definition.keys(s));
                index.apply(digest, record.generation, keys);
            }
            true
        }
        Err(spike::Error::NotFound) => {
            indexes.iter().for_each(|index| index.apply(digest, generation, Vec::new()));
            true
        }
        Err(err) => {
            log::warn!("namespace {}: a record to index again could not be read: {err}", ns.name);
            false
        }
    }
}

/// `Engine::update_by_digest`, keeping the namespace's indexes in step.
pub fn update_by_digest<T>(
    ns: &Namespace,
    digest: &Digest,
    mut change: impl FnMut(Option<&Record>) -> spike::Result<(Change, T)>,
) -> spike::Result<(T, Written)> {
    let (added, indexes) = ns.sindexes.snapshot();
    let mut staged = None;
    let result = ns.engine.update_by_digest(digest, |record| {
        let (what, out) = change(record)?;
        staged = stage(indexes.as_deref(), &what);
        Ok((what, out))
    });
    if let Ok((_, written)) = &result {
        settle(ns, digest, added, staged, written);
    }
    result
}

/// `Engine::update_each_by_digest`, keeping the namespace's indexes in step.
pub fn update_each_by_digest<T>(
    ns: &Namespace,
    digests: &[Digest],
    mut change: impl FnMut(usize, Option<&Record>) -> spike::Result<(Change, T)>,
) -> Vec<spike::Result<(T, Written)>> {
    let (added, indexes) = ns.sindexes.snapshot();
    let mut staged: Vec<Staged> = digests.iter().map(|_| None).collect();
    let results = ns.engine.update_each_by_digest(digests, |i, record| {
        let (what, out) = change(i, record)?;
        staged[i] = stage(indexes.as_deref(), &what);
        Ok((what, out))
    });
    for ((digest, result), staged) in digests.iter().zip(&results).zip(staged) {
        if let Ok((_, written)) = result {
            settle(ns, digest, added, staged, written);
        }
    }
    results
}

/// Fills a new index from the namespace's records, a partition at a time (`load_pct`
/// tells how far); stops if the index is dropped meanwhile, or once `stopping` says the
/// server is shutting down (a queue of builds over a large namespace would otherwise hold
/// the shutdown for as long as they take).
pub fn build(ns: &Namespace, index: &SecondaryIndex, stopping: &dyn Fn() -> bool) {
    for partition in 0..spike::limits::PARTITION_COUNT {
        if index.dropped.load(Ordering::Acquire) {
            return;
        }
        if stopping() {
            log::info!(
                "namespace {}: index {} build abandoned at partition {partition}: shutting down \
                 (a kept index is built again at the next start)",
                ns.name,
                index.definition.name
            );
            return;
        }
        let mut visit = |record: spike::Result<Record>| {
            if let Ok(record) = record {
                let keys = StoredRecord::decode(&record.value)
                    .map_or_else(|_| Vec::new(), |s| index.definition.keys(&s));
                index.apply(&record.digest, record.generation, keys);
            }
            true
        };
        if let Err(err) = ns.engine.scan_partition_by_digest(partition, None, &mut visit) {
            log::warn!(
                "namespace {}: building index {} failed in partition {partition}: {err}",
                ns.name,
                index.definition.name
            );
            return;
        }
        index.partitions_built.fetch_add(1, Ordering::AcqRel);
    }
    let (records, keys) = index.counts();
    log::info!(
        "namespace {}: index {} built: {records} records, {keys} keys",
        ns.name,
        index.definition.name
    );
}

/// Drops the entries of records that no longer exist, after a truncate of `set` (None: the
/// namespace), in the indexes that can hold its records: each entry only if no write
/// indexed it again since it was looked at. Reads the engine's index only, never a device.
pub fn sweep(ns: &Namespace, set: Option<&[u8]>) {
    let indexes = ns.sindexes.all();
    let holds_set = |index: &SecondaryIndex| {
        let own = &index.definition.set;
        set.is_none_or(|set| own.is_empty() || own == set)
    };
    for index in indexes.iter().filter(|index| holds_set(index)) {
        for partition in index.partitions.iter() {
            let held: Vec<(Digest, u32)> = {
                let p = partition.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                p.by_digest.iter().map(|(digest, (generation, _))| (*digest, *generation)).collect()
            };
            for (digest, generation) in held {
                if ns.engine.may_exist_by_digest(&digest) {
                    continue;
                }
                let mut p = partition.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let p = &mut *p;
                if p.by_digest.get(&digest).is_some_and(|(g, _)| *g == generation) {
                    if let Some((_, keys)) = p.by_digest.remove(&digest) {
                        for key in &keys {
                            p.by_key.remove(&(*key, digest));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::msgpack;

    fn definition(particle: u8, collection: Collection) -> Definition {
        Definition { name: "i".into(), set: b"s".to_vec(), bin: b"b".to_vec(), particle, collection }
    }

    fn digest(n: u8) -> Digest {
        let mut d = [0; 20];
        d[19] = n;
        d
    }

    #[test]
    fn keys_come_from_the_bin_its_list_elements_or_map_keys_of_the_indexed_type_and_set() {
        let mut stored = StoredRecord { set: b"s".to_vec(), ..StoredRecord::default() };
        stored.set_bin(b"b", PARTICLE_INTEGER, &7i64.to_be_bytes());
        assert_eq!(definition(PARTICLE_INTEGER, Collection::Scalar).keys(&stored), vec![Key::Int(7)]);
        assert!(definition(PARTICLE_STRING, Collection::Scalar).keys(&stored).is_empty());
        let list = Value::List(vec![
            Value::Int(3),
            Value::Int(1),
            Value::Int(3),
            Value::from_particle(3, b"x").unwrap(),
        ]);
        stored.set_bin(b"b", 20, &msgpack::encode(&list));
        assert_eq!(
            definition(PARTICLE_INTEGER, Collection::ListElements).keys(&stored),
            vec![Key::Int(1), Key::Int(3)]
        );
        assert_eq!(
            definition(PARTICLE_STRING, Collection::ListElements).keys(&stored),
            vec![hashed(3, b"x")]
        );
        assert!(definition(PARTICLE_INTEGER, Collection::MapKeys).keys(&stored).is_empty());
        stored.set = b"other".to_vec();
        assert!(definition(PARTICLE_INTEGER, Collection::ListElements).keys(&stored).is_empty());
    }

    #[test]
    fn the_highest_generation_wins_whatever_order_writes_apply_in() {
        let index = SecondaryIndex::new(definition(PARTICLE_INTEGER, Collection::Scalar));
        let d = digest(1);
        index.apply(&d, 3, vec![Key::Int(30)]);
        index.apply(&d, 2, vec![Key::Int(20)]);
        assert_eq!(index.candidates(0, &Range::Integers(0, 100)), vec![d]);
        assert!(index.candidates(0, &Range::Integers(20, 20)).is_empty(), "a late, older write is ignored");
        index.apply(&d, 4, Vec::new());
        assert!(index.candidates(0, &Range::Integers(0, 100)).is_empty(), "deleted");
        index.apply(&d, 5, vec![Key::Int(1), Key::Int(2)]);
        index.apply(&digest(2), 1, vec![Key::Int(2)]);
        assert_eq!(index.candidates(0, &Range::Integers(1, 2)), vec![digest(2), d], "descending, each once");
        assert_eq!(index.counts(), (2, 3));
    }

    #[test]
    fn definitions_read_both_argument_forms_and_refuse_expression_indexes() {
        let args = |text: &str| crate::server::catalog::args(text);
        let def = Definition::from_args(&args("ns=test;set=s;indexname=i;bin=b;type=numeric;indextype=list"))
            .unwrap();
        assert_eq!(
            (def.particle, def.collection, &def.set[..]),
            (PARTICLE_INTEGER, Collection::ListElements, &b"s"[..])
        );
        let def = Definition::from_args(&args("ns=test;indexname=i;indexdata=b,string")).unwrap();
        assert_eq!((def.particle, def.collection, def.set.len()), (PARTICLE_STRING, Collection::Scalar, 0));
        assert!(Definition::from_args(&args("ns=test;indexname=i;type=numeric;exp=kwE=")).is_none());
        assert!(Definition::from_args(&args("ns=test;indexname=i;bin=b;type=geo2dsphere")).is_none());
    }
}
