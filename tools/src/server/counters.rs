//! Per-namespace counts of client commands by kind and result, under the names the real
//! server's `namespace/<ns>` statistics use (`client_read_success`, `batch_sub_write_error`,
//! ...). The engine's own counters cannot stand in for them: the server does every write
//! and delete as one engine read-modify-write, and a read that finds nothing is still an
//! engine get. Cost: one relaxed atomic add per command.

use super::record::code;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a command came from: a message of its own or a row of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Client,
    BatchRow,
}

/// What a command did, as the statistics group it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Delete,
}

const ORIGINS: [(Origin, &str); 2] = [(Origin::Client, "client"), (Origin::BatchRow, "batch_sub")];
const KINDS: [(Kind, &str); 3] = [(Kind::Read, "read"), (Kind::Write, "write"), (Kind::Delete, "delete")];
const RESULTS: [&str; 3] = ["success", "not_found", "error"];

/// The counts: origin × kind × result.
#[derive(Debug, Default)]
pub struct Counters {
    counts: [[[AtomicU64; 3]; 3]; 2],
}

impl Counters {
    /// Counts one command that answered `result_code`. A key-not-found is its own result
    /// for reads and deletes; for a write (an update-only or replace-only of a missing
    /// record) it is an error, as the real server counts it.
    pub fn count(&self, origin: Origin, kind: Kind, result_code: u8) {
        let result = match result_code {
            code::OK => 0,
            code::KEY_NOT_FOUND if kind != Kind::Write => 1,
            _ => 2,
        };
        self.counts[origin as usize][kind as usize][result].fetch_add(1, Ordering::Relaxed);
    }

    /// Commands of `kind` from either origin, whatever their result.
    pub fn total(&self, kind: Kind) -> u64 {
        self.counts
            .iter()
            .flat_map(|by_kind| &by_kind[kind as usize])
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Every count with its statistic name (`client_read_success` ...). Writes have no
    /// `not_found` statistic, as in the real server.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (origin, origin_name) in ORIGINS {
            for (kind, kind_name) in KINDS {
                for (result, result_name) in RESULTS.iter().enumerate() {
                    if kind == Kind::Write && result == 1 {
                        continue;
                    }
                    let value = self.counts[origin as usize][kind as usize][result].load(Ordering::Relaxed);
                    out.push((format!("{origin_name}_{kind_name}_{result_name}"), value));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(counters: &Counters, name: &str) -> u64 {
        counters.named().into_iter().find(|(n, _)| n == name).map(|(_, v)| v).unwrap()
    }

    #[test]
    fn each_command_lands_in_its_origin_kind_and_result() {
        let counters = Counters::default();
        counters.count(Origin::Client, Kind::Read, code::OK);
        counters.count(Origin::Client, Kind::Read, code::KEY_NOT_FOUND);
        counters.count(Origin::Client, Kind::Write, code::KEY_NOT_FOUND);
        counters.count(Origin::Client, Kind::Write, code::GENERATION);
        counters.count(Origin::BatchRow, Kind::Delete, code::OK);
        assert_eq!(get(&counters, "client_read_success"), 1);
        assert_eq!(get(&counters, "client_read_not_found"), 1);
        assert_eq!(get(&counters, "client_write_success"), 0);
        assert_eq!(get(&counters, "client_write_error"), 2);
        assert_eq!(get(&counters, "client_delete_success"), 0);
        assert_eq!(get(&counters, "batch_sub_delete_success"), 1);
        assert_eq!(counters.named().len(), 16);
        assert_eq!((counters.total(Kind::Read), counters.total(Kind::Write)), (2, 2));
        assert!(counters.named().iter().all(|(n, _)| !n.contains("write_not_found")));
    }
}
