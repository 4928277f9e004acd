//! `--server`: the bench's operations sent to a server speaking Aerospike's protocol,
//! through the official Rust client (`aerospike` 3.x), one blocking call per bench thread
//! so that `--threads` is the number of requests in flight, as in-process.
//!
//! Each record is the key as a string in set `bench` with one blob bin `v`. Batches of
//! reads (`--batch`) go as one batch request.

use aerospike::{
    as_key, AdminPolicy, BatchOperation, BatchPolicy, BatchReadPolicy, Bin, Bins, Client, ClientPolicy, Key,
    ReadPolicy, ResultCode, Value, WritePolicy,
};
use anyhow::{anyhow, Result};

pub const SET: &str = "bench";
const BIN: &str = "v";

pub struct Remote {
    pub namespace: String,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

/// How a remote operation ended: not found is its own outcome, errors carry the client's text.
pub enum RemoteError {
    NotFound,
    Failed(String),
}

fn outcome<T>(result: aerospike::Result<T>) -> Result<T, RemoteError> {
    result.map_err(|err| match ResultCode::from(err.result_code() as u8) {
        ResultCode::KeyNotFoundError => RemoteError::NotFound,
        _ => RemoteError::Failed(err.to_string()),
    })
}

impl Remote {
    pub fn connect(address: &str, namespace: &str) -> Result<Remote> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| anyhow!("cannot start the client's runtime: {e}"))?;
        let client = runtime
            .block_on(Client::new(&ClientPolicy::default(), &address.to_string()))
            .map_err(|e| anyhow!("cannot connect to {address}: {e}"))?;
        Ok(Remote { namespace: namespace.to_string(), client, runtime })
    }

    fn key(&self, key: &[u8]) -> Key {
        as_key!(self.namespace.as_str(), SET, String::from_utf8_lossy(key).into_owned())
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), RemoteError> {
        let bins = [Bin::new(BIN.to_string(), Value::Blob(value.to_vec()))];
        outcome(self.runtime.block_on(self.client.put(&WritePolicy::default(), &self.key(key), &bins)))
    }

    pub fn get(&self, key: &[u8]) -> Result<(), RemoteError> {
        outcome(self.runtime.block_on(self.client.get(&ReadPolicy::default(), &self.key(key), Bins::All)))
            .map(|_| ())
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), RemoteError> {
        match outcome(self.runtime.block_on(self.client.delete(&WritePolicy::default(), &self.key(key)))) {
            Ok(true) => Ok(()),
            Ok(false) => Err(RemoteError::NotFound),
            Err(err) => Err(err),
        }
    }

    /// Reads many keys in one batch request; one result per key, in order.
    pub fn get_many(&self, keys: &[&[u8]]) -> Vec<Result<(), RemoteError>> {
        let policy = BatchReadPolicy::default();
        let mut ops: Vec<BatchOperation> =
            keys.iter().map(|k| BatchOperation::read(&policy, self.key(k), Bins::All)).collect();
        if let Err(err) = self.runtime.block_on(self.client.batch(&BatchPolicy::default(), &mut ops)) {
            let text = err.to_string();
            return keys.iter().map(|_| Err(RemoteError::Failed(text.clone()))).collect();
        }
        ops.iter()
            .map(|op| match op.result_code() {
                Some(ResultCode::Ok) => Ok(()),
                Some(ResultCode::KeyNotFoundError) => Err(RemoteError::NotFound),
                other => Err(RemoteError::Failed(format!("batch row: {other:?}"))),
            })
            .collect()
    }

    /// Records the server's `namespace/<ns>` info says it holds (`objects=`).
    pub fn objects(&self) -> Result<u64> {
        let command = format!("namespace/{}", self.namespace);
        let info = self
            .runtime
            .block_on(self.client.info(&AdminPolicy::default(), &[command.as_str()]))
            .map_err(|e| anyhow!("info {command}: {e}"))?;
        let text = info.get(&command).cloned().unwrap_or_default();
        text.split(';')
            .find_map(|kv| kv.strip_prefix("objects=")?.parse().ok())
            .ok_or_else(|| anyhow!("{command} answered no objects= ({text:?})"))
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.client.close());
    }
}
