//! What clients register besides records: UDF modules and secondary-index definitions.
//!
//! Both are kept across restarts when the server has a `udf_dir`, else in memory only.
//! UDF modules: one file per module, its Lua text, written to a temporary name and renamed
//! into place; record UDFs run (`udf`). Index definitions: one line each, the arguments of
//! its `sindex-create`, in the hidden file `.indexes` of the same directory (rewritten
//! whole, the same way, on every create and drop); the indexes themselves are kept in
//! memory (`sindex`) and rebuilt from the records at start.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Default)]
pub struct Catalog {
    /// Module file name → (base64 content, content hash).
    udfs: Mutex<BTreeMap<String, (String, String)>>,
    /// Where modules are kept across restarts, if anywhere.
    udf_dir: Option<PathBuf>,
    /// (namespace, index name) → the `sindex-create` arguments.
    indexes: Mutex<IndexDefinitions>,
}

type IndexDefinitions = BTreeMap<(String, String), BTreeMap<String, String>>;

/// The file of index definitions in `udf_dir` (hidden, so never loaded as a module).
const INDEXES_FILE: &str = ".indexes";

/// Reads the index definitions saved in `path` (none if it does not exist). A line
/// without a namespace and an index name is refused, naming the file and line.
fn load_indexes(path: &std::path::Path) -> Result<IndexDefinitions, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let mut indexes = BTreeMap::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parsed = args(line);
        let key = Catalog::index_key(&parsed)
            .ok_or_else(|| format!("{} line {}: no namespace or index name", path.display(), number + 1))?;
        indexes.insert(key, parsed);
    }
    Ok(indexes)
}

/// `k=v;k=v` arguments of an info command.
pub fn args(text: &str) -> BTreeMap<String, String> {
    text.split(';').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A module name a client may register: a plain file name (no directory, not hidden), so
/// that it cannot name a file outside the module directory.
fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn content_hash(content: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(content.as_bytes()))
}

impl Catalog {
    /// A catalog whose modules live in `udf_dir` (created if missing; the modules found
    /// there are loaded), or in memory only.
    pub fn open(udf_dir: Option<PathBuf>) -> Result<Catalog, String> {
        let mut udfs = BTreeMap::new();
        if let Some(dir) = &udf_dir {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let entries =
                std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            for entry in entries {
                let path = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|n| valid_module_name(n))
                else {
                    continue;
                };
                let text =
                    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let content = base64::engine::general_purpose::STANDARD.encode(text);
                let hash = content_hash(&content);
                udfs.insert(name.to_string(), (content, hash));
            }
        }
        let indexes = match &udf_dir {
            Some(dir) => load_indexes(&dir.join(INDEXES_FILE))?,
            None => BTreeMap::new(),
        };
        Ok(Catalog { udfs: Mutex::new(udfs), udf_dir, indexes: Mutex::new(indexes) })
    }

    /// Writes the index definitions to `udf_dir`, if there is one.
    fn save_indexes(&self, indexes: &IndexDefinitions) {
        let Some(dir) = &self.udf_dir else { return };
        let mut text = String::new();
        for args in indexes.values() {
            let line: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&line.join(";"));
            text.push('\n');
        }
        let path = dir.join(INDEXES_FILE);
        if let Err(err) = write_atomically(&path, text.as_bytes()) {
            log::error!(
                "cannot save the index definitions to {}: {err}; they will be lost at restart",
                path.display()
            );
        }
    }

    /// Every index definition: (namespace, its `sindex-create` arguments).
    pub fn index_definitions(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        indexes.iter().map(|((ns, _), args)| (ns.clone(), args.clone())).collect()
    }

    pub fn udf_put(&self, args: &BTreeMap<String, String>) -> String {
        let (Some(name), Some(content)) = (args.get("filename"), args.get("content")) else {
            return "error=invalid_filename_or_content".into();
        };
        if !valid_module_name(name) {
            return "error=invalid_filename".into();
        }
        if args.get("udf-type").is_some_and(|t| t != "LUA") {
            return "error=invalid_udf_type".into();
        }
        let Ok(text) = base64::engine::general_purpose::STANDARD.decode(content) else {
            return "error=invalid_content".into();
        };
        // The file is written under the lock, so that two clients registering one module
        // at once neither race on its staging file nor leave memory and disk apart.
        let mut udfs = self.udfs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = &self.udf_dir {
            if let Err(err) = write_atomically(&dir.join(name), &text) {
                log::error!("cannot keep UDF module {name}: {err}");
                return "error=cannot_store".into();
            }
        }
        udfs.insert(name.clone(), (content.clone(), content_hash(content)));
        "ok".into()
    }

    /// The Lua text of module `name` (registered as `name.lua`).
    pub fn udf_source(&self, name: &[u8]) -> Option<Vec<u8>> {
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
        let Some(name) = args.get("filename").filter(|n| valid_module_name(n)) else {
            return "error=file_not_found".into();
        };
        let mut udfs = self.udfs.lock().unwrap_or_else(|e| e.into_inner());
        let removed = udfs.remove(name);
        if let (Some(_), Some(dir)) = (&removed, &self.udf_dir) {
            if let Err(err) = std::fs::remove_file(dir.join(name)) {
                log::error!("cannot remove UDF module {name}: {err}");
            }
        }
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
                self.save_indexes(&indexes);
                "ok".into()
            }
        }
    }

    /// Drops an index; dropping one that does not exist is "ok", as on the real server
    /// (the clients drop an index before creating it).
    pub fn index_delete(&self, args: &BTreeMap<String, String>) -> String {
        let Some(key) = Self::index_key(args) else {
            return "ERROR:4:invalid namespace or index name".into();
        };
        let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        if indexes.remove(&key).is_some() {
            self.save_indexes(&indexes);
        }
        "ok".into()
    }

    /// `sindex-exists` (what a client's drop-index task polls for "false").
    pub fn index_exists(&self, namespace: &str, name: &str) -> bool {
        self.indexes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(namespace.to_string(), name.to_string()))
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

    /// The bin a query's index filter reads, if `namespace` has the index the filter needs:
    /// the one named `name`, else one on `bin` of that `kind` (NUMERIC, STRING, BLOB) and
    /// `collection` (DEFAULT, LIST, MAPKEYS, MAPVALUES). Both argument forms of
    /// `sindex-create` are read: `bin=…;type=…` and the older `indexdata=bin,type`.
    pub fn index_bin(
        &self,
        namespace: &str,
        name: Option<&str>,
        bin: &[u8],
        kind: &str,
        collection: &str,
    ) -> Option<Vec<u8>> {
        let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        indexes.iter().filter(|((ns, _), _)| ns == namespace).find_map(|((_, index_name), args)| {
            let data = args.get("indexdata").map(|d| d.split(',').collect::<Vec<_>>()).unwrap_or_default();
            let index_bin = args.get("bin").map(String::as_str).or(data.first().copied()).unwrap_or("");
            let index_kind = args.get("type").map(String::as_str).or(data.get(1).copied()).unwrap_or("");
            let index_collection = args.get("indextype").map_or("DEFAULT", String::as_str);
            let fits =
                index_kind.eq_ignore_ascii_case(kind) && index_collection.eq_ignore_ascii_case(collection);
            let chosen = match name {
                Some(name) => index_name == name,
                None => index_bin.as_bytes() == bin,
            };
            (fits && chosen).then(|| {
                if index_bin.is_empty() {
                    bin.to_vec()
                } else {
                    index_bin.as_bytes().to_vec()
                }
            })
        })
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

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, whole.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // A hidden name, which `open` never loads.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = path.with_file_name(format!(".{name}.partial"));
    let mut file = std::fs::File::create(&staging)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_survive_a_reopen_and_a_bad_line_is_refused_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(Some(dir.path().to_path_buf())).unwrap();
        let create = args("ns=test;set=s;indexname=i;bin=n;type=NUMERIC");
        assert_eq!(catalog.index_create(&create, true), "ok");
        assert_eq!(catalog.index_create(&args("ns=test;indexname=j;bin=s;type=STRING"), true), "ok");
        assert_eq!(catalog.index_delete(&args("ns=test;indexname=j")), "ok");
        let reopened = Catalog::open(Some(dir.path().to_path_buf())).unwrap();
        assert_eq!(reopened.index_definitions(), vec![("test".to_string(), create)]);
        assert!(reopened.udf_list().is_empty(), "the definitions file is no module");

        std::fs::write(dir.path().join(INDEXES_FILE), "ns=test;indexname=i;bin=n\nbin=n;type=NUMERIC\n")
            .unwrap();
        let err = Catalog::open(Some(dir.path().to_path_buf())).err().unwrap();
        assert!(err.contains(".indexes line 2") && err.contains("no namespace or index name"), "{err}");
    }
}
