//! What clients register besides records: UDF modules and secondary-index definitions.
//!
//! Partial, and said so: both are kept in memory only (a restart forgets them, where
//! Aerospike keeps them in its system metadata); record UDFs run (`udf`), and an index
//! definition is listed and reports itself loaded, but a query that uses it is answered
//! 16 (unsupported feature). This lets applications and tools that register modules and indexes at start-up
//! (the Aerospike clients' own test suites do) run their record operations.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Catalog {
    /// Module file name → (base64 content, content hash).
    udfs: Mutex<BTreeMap<String, (String, String)>>,
    /// (namespace, index name) → the `sindex-create` arguments.
    indexes: Mutex<BTreeMap<(String, String), BTreeMap<String, String>>>,
}

/// `k=v;k=v` arguments of an info command.
pub fn args(text: &str) -> BTreeMap<String, String> {
    text.split(';').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Catalog {
    pub fn udf_put(&self, args: &BTreeMap<String, String>) -> String {
        let (Some(name), Some(content)) = (args.get("filename"), args.get("content")) else {
            return "error=invalid_filename_or_content".into();
        };
        if args.get("udf-type").is_some_and(|t| t != "LUA") {
            return "error=invalid_udf_type".into();
        }
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(content.as_bytes()));
        self.udfs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), (content.clone(), hash));
        "ok".into()
    }

    /// The Lua text of module `name` (registered as `name.lua`).
    pub fn udf_source(&self, name: &[u8]) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let file = format!("{}.lua", String::from_utf8_lossy(name));
        let udfs = self.udfs.lock().unwrap_or_else(|e| e.into_inner());
        let (content, _) = udfs.get(&file)?;
        base64::engine::general_purpose::STANDARD.decode(content).ok()
    }

    pub fn udf_list(&self) -> String {
        let udfs = self.udfs.lock().unwrap_or_else(|e| e.into_inner());
        udfs.iter().map(|(name, (_, hash))| format!("filename={name},hash={hash},type=LUA;")).collect()
    }

    pub fn udf_get(&self, args: &BTreeMap<String, String>) -> String {
        let udfs = self.udfs.lock().unwrap_or_else(|e| e.into_inner());
        match args.get("filename").and_then(|name| udfs.get(name)) {
            Some((content, _)) => format!("type=LUA;content={content}"),
            None => "error=not_found".into(),
        }
    }

    pub fn udf_remove(&self, args: &BTreeMap<String, String>) -> String {
        let removed = args
            .get("filename")
            .and_then(|name| self.udfs.lock().unwrap_or_else(|e| e.into_inner()).remove(name));
        if removed.is_some() {
            "ok".into()
        } else {
            "error=file_not_found".into()
        }
    }

    fn index_key(args: &BTreeMap<String, String>) -> Option<(String, String)> {
        let namespace = args.get("namespace").or_else(|| args.get("ns"))?;
        Some((namespace.clone(), args.get("indexname")?.clone()))
    }

    pub fn index_create(&self, args: &BTreeMap<String, String>, namespace_known: bool) -> String {
        let Some(key) = Self::index_key(args).filter(|_| namespace_known) else {
            return "ERROR:4:invalid namespace or index name".into();
        };
        let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        match indexes.get(&key) {
            // Creating the same index again is not an error; another one of that name is.
            Some(held) if held == args => "ok".into(),
            Some(_) => "ERROR:200:an index of that name already exists".into(),
            None => {
                indexes.insert(key, args.clone());
                "ok".into()
            }
        }
    }

    pub fn index_delete(&self, args: &BTreeMap<String, String>) -> String {
        let removed = Self::index_key(args)
            .and_then(|key| self.indexes.lock().unwrap_or_else(|e| e.into_inner()).remove(&key));
        if removed.is_some() {
            "ok".into()
        } else {
            "ERROR:201:no index".into()
        }
    }

    /// `sindex-stat` / `sindex/<ns>/<name>`: a definition holds no entries to load.
    pub fn index_stat(&self, namespace: &str, name: &str) -> String {
        let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        if indexes.contains_key(&(namespace.to_string(), name.to_string())) {
            "load_pct=100".into()
        } else {
            "ERROR:201:no index".into()
        }
    }

    pub fn index_list(&self, namespace: Option<&str>) -> String {
        let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for ((ns, name), args) in indexes.iter().filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns)) {
            let get = |k: &str| args.get(k).map_or("", String::as_str).to_string();
            out.push_str(&format!(
                "ns={ns}:indexname={name}:set={}:bin={}:type={}:indextype={}:context=NULL:state=RW;",
                get("set"),
                get("bin"),
                get("type"),
                get("indextype")
            ));
        }
        out
    }
}
