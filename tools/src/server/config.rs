//! The server's configuration: a TOML file (`--config`) whose every namespace maps to a
//! `spike::Config`, or, with no file, one namespace `test` on a file device in a data
//! directory, so that a newcomer can point a client at it in one command.

use serde::Deserialize;
use spike::{Config, Durability};
use std::path::{Path, PathBuf};

/// The example printed by `spike-server --help`; a test parses it.
pub const EXAMPLE: &str = r#"# spike-server configuration (TOML)
listen = "127.0.0.1:3000"      # address:port the clients connect to
# threads = 2                  # event loops serving connections (default: one per core)
# workers = 8                  # threads for UDF calls, batches, scans and truncates (default 8)
connections_max = 10000        # more connections are closed at once
frame_bytes_max = 16777216     # larger requests get PARAMETER and the connection closes
idle_timeout_s = 0             # close connections idle this long; 0 = never
index_sweep_s = 600            # drop secondary-index entries of expired records this often; 0 = never
# metrics = "127.0.0.1:9145"  # Prometheus text endpoint
# udf_dir = "/var/lib/spike/udf" # registered UDF modules are kept here across restarts (else in memory only)
# cluster_name = "spike"

[[namespace]]
name = "test"
devices = ["/var/lib/spike/test.dat"]   # block devices or files
device_size = "4G"             # files are created (sparse) at this size when missing
format = false                 # format blank (all-zero) devices; never a used one
durability = "commit-to-device" # or "buffered" (acknowledged once in the write buffer)
write_block_size = 1048576     # power of two, 128 KiB to 8 MiB
default_ttl_s = 0              # TTL of writes asking for the default; 0 = never expire
store_keys = true              # keep user keys the clients send (scans return them)
stop_writes_free_pct = 5       # client writes stop under this free space
defrag_lwm_pct = 50            # blocks under this fill are defragmented
flush_max_ms = 1000            # buffered writes reach the device within this
tombstone_scan_mib_s = 128     # most a tombstone-reclaim scan reads per second (0: no limit)
# post_write_cache = "256M"    # RAM per device for the blocks written last, so that reads of
                               # recent records (updates merge into them) skip the device;
                               # default: 8 write blocks; 0 = none
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    #[serde(default = "default_frame_bytes_max")]
    pub frame_bytes_max: usize,
    #[serde(default)]
    pub idle_timeout_s: u64,
    #[serde(default = "default_index_sweep_s")]
    pub index_sweep_s: u64,
    pub metrics: Option<String>,
    pub cluster_name: Option<String>,
    /// Where registered UDF modules are kept across restarts; None: in memory only.
    pub udf_dir: Option<PathBuf>,
    #[serde(rename = "namespace")]
    pub namespaces: Vec<NamespaceConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub name: String,
    pub devices: Vec<PathBuf>,
    pub device_size: Option<String>,
    #[serde(default)]
    pub format: bool,
    #[serde(default = "default_durability")]
    pub durability: String,
    pub write_block_size: Option<u32>,
    #[serde(default)]
    pub default_ttl_s: u32,
    #[serde(default = "yes")]
    pub store_keys: bool,
    pub stop_writes_free_pct: Option<u32>,
    pub defrag_lwm_pct: Option<u32>,
    pub flush_max_ms: Option<u64>,
    pub tombstone_scan_mib_s: Option<u32>,
    pub post_write_cache: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:3000".into()
}
/// One event loop per core: fewer loops gather more commands per round (at 32 clients on
/// 2 cores: 12.8 µs of server CPU per read with 2 loops, 15.8 with 4, 22.8 with 8). The
/// commands that may take long (UDF calls, batches, scans, truncates) run on `workers`
/// threads instead, so that a loop never waits behind one.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
/// Workers for the long commands: enough that a few UDF calls spinning to their 1 s limit
/// leave room for scans and batches.
pub fn default_workers() -> usize {
    8
}
fn default_connections_max() -> usize {
    10_000
}
fn default_frame_bytes_max() -> usize {
    16 << 20
}

/// How often expired records' entries leave the secondary indexes (`sindex::sweep`).
pub fn default_index_sweep_s() -> u64 {
    600
}

fn default_durability() -> String {
    "commit-to-device".into()
}
fn yes() -> bool {
    true
}

impl ServerConfig {
    pub fn parse(text: &str, origin: &Path) -> Result<ServerConfig, String> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| format!("{}: {e}", origin.display()))?;
        config.check().map_err(|e| format!("{}: {e}", origin.display()))?;
        Ok(config)
    }

    /// One namespace `test` on `data_dir/test.dat` (4 GiB, sparse), formatted if blank.
    pub fn quick_start(data_dir: &Path) -> ServerConfig {
        ServerConfig {
            listen: default_listen(),
            threads: default_threads(),
            workers: default_workers(),
            connections_max: default_connections_max(),
            frame_bytes_max: default_frame_bytes_max(),
            idle_timeout_s: 0,
            index_sweep_s: default_index_sweep_s(),
            metrics: None,
            cluster_name: None,
            udf_dir: Some(data_dir.join("udf")),
            namespaces: vec![NamespaceConfig {
                name: "test".into(),
                devices: vec![data_dir.join("test.dat")],
                device_size: Some("4G".into()),
                format: true,
                durability: default_durability(),
                write_block_size: None,
                default_ttl_s: 0,
                store_keys: true,
                stop_writes_free_pct: None,
                defrag_lwm_pct: None,
                flush_max_ms: None,
                tombstone_scan_mib_s: None,
                post_write_cache: None,
            }],
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.namespaces.is_empty() {
            return Err("no [[namespace]] configured".into());
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(format!("threads = {} must be 1 to 256", self.threads));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err(format!("workers = {} must be 1 to 256", self.workers));
        }
        if self.frame_bytes_max < 4096 || self.frame_bytes_max > 128 << 20 {
            return Err(format!("frame_bytes_max = {} must be 4096 to 128 MiB", self.frame_bytes_max));
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if self.namespaces[..i].iter().any(|other| other.name == ns.name) {
                return Err(format!("namespace {:?} is configured twice", ns.name));
            }
            ns.engine_config()?;
            ns.device_size_bytes()?;
        }
        Ok(())
    }
}

impl NamespaceConfig {
    pub fn engine_config(&self) -> Result<Config, String> {
        let durability = match self.durability.as_str() {
            "commit-to-device" => Durability::CommitToDevice,
            "buffered" => Durability::Buffered,
            other => {
                return Err(format!("durability {other:?}: expected \"commit-to-device\" or \"buffered\""))
            }
        };
        let defaults = Config::default();
        let config = Config {
            namespace: self.name.clone(),
            devices: self.devices.clone(),
            durability,
            write_block_size: self.write_block_size.unwrap_or(defaults.write_block_size),
            stop_writes_free_pct: self.stop_writes_free_pct.unwrap_or(defaults.stop_writes_free_pct),
            defrag_lwm_pct: self.defrag_lwm_pct.unwrap_or(defaults.defrag_lwm_pct),
            flush_max_ms: self.flush_max_ms.unwrap_or(defaults.flush_max_ms),
            tombstone_scan_mib_s: self.tombstone_scan_mib_s.unwrap_or(defaults.tombstone_scan_mib_s),
            ..defaults
        };
        let config = match self.post_write_cache_bytes()? {
            Some(bytes) => {
                Config { post_write_cache_blocks: config.post_write_cache_blocks_for(bytes), ..config }
            }
            None => config,
        };
        config.validate().map_err(|e| format!("namespace {:?}: {e}", self.name))?;
        Ok(config)
    }

    /// `post_write_cache` in bytes of RAM a device (None: the engine's default). A large
    /// cache serves most reads of a data set that fits it from RAM (see the README's
    /// figures), so it is the operator's choice.
    fn post_write_cache_bytes(&self) -> Result<Option<u64>, String> {
        let Some(text) = self.post_write_cache.as_deref() else { return Ok(None) };
        let bytes = match text.trim() {
            "0" => 0,
            text => {
                parse_size(text).map_err(|e| format!("namespace {:?}: post_write_cache: {e}", self.name))?
            }
        };
        let max = spike::limits::POST_WRITE_CACHE_BYTES_MAX;
        if bytes > max {
            return Err(format!(
                "namespace {:?}: post_write_cache {text:?} is above the {} GiB a device may cache",
                self.name,
                max >> 30
            ));
        }
        Ok(Some(bytes))
    }

    pub fn device_size_bytes(&self) -> Result<Option<u64>, String> {
        self.device_size
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| format!("namespace {:?}: {e}", self.name))
    }
}

/// `4G`, `512M`, `1048576`: a size in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        Some((i, 'T' | 't')) => (&text[..i], 40),
        _ => (text, 0),
    };
    let n: u64 =
        digits.trim().parse().map_err(|_| format!("size {text:?} is not a number with K, M, G or T"))?;
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(|| format!("size {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_example_parses_and_maps_to_an_engine_config() {
        let config = ServerConfig::parse(EXAMPLE, Path::new("example")).unwrap();
        let ns = &config.namespaces[0];
        let engine = ns.engine_config().unwrap();
        assert_eq!((engine.namespace.as_str(), engine.durability), ("test", Durability::CommitToDevice));
        assert_eq!(ns.device_size_bytes().unwrap(), Some(4 << 30));
    }

    #[test]
    fn wrong_options_are_named() {
        let bad = EXAMPLE.replace("durability = \"commit-to-device\"", "durability = \"sometimes\"");
        assert!(ServerConfig::parse(&bad, Path::new("x")).unwrap_err().contains("sometimes"));
        let unknown = format!("{EXAMPLE}\nbogus = 1\n");
        assert!(ServerConfig::parse(&unknown, Path::new("x")).unwrap_err().contains("bogus"));
        assert!(parse_size("12Q").is_err());
        let wbs = EXAMPLE.replace("1048576", "1000");
        assert!(ServerConfig::parse(&wbs, Path::new("x")).unwrap_err().contains("write"));
        let huge = EXAMPLE.replace("# post_write_cache = \"256M\"", "post_write_cache = \"1T\"");
        let err = ServerConfig::parse(&huge, Path::new("x")).unwrap_err();
        assert!(err.contains("post_write_cache \"1T\" is above the 16 GiB"), "{err}");
        let nonsense = EXAMPLE.replace("# post_write_cache = \"256M\"", "post_write_cache = \"lots\"");
        assert!(ServerConfig::parse(&nonsense, Path::new("x"))
            .unwrap_err()
            .contains("post_write_cache: size \"lots\""));
    }

    #[test]
    fn the_post_write_cache_is_a_size_in_ram_turned_into_write_blocks() {
        let blocks = |text: &str| {
            let toml = EXAMPLE.replace("# post_write_cache = \"256M\"", text);
            ServerConfig::parse(&toml, Path::new("x")).unwrap().namespaces[0]
                .engine_config()
                .unwrap()
                .post_write_cache_blocks
        };
        assert_eq!(blocks("post_write_cache = \"256M\""), 256);
        assert_eq!(blocks(""), Config::default().post_write_cache_blocks, "the engine's default");
        assert_eq!(blocks("post_write_cache = \"0\""), 0);
        assert_eq!(blocks("post_write_cache = \"1500K\""), 2, "rounded up to whole blocks");
    }
}
