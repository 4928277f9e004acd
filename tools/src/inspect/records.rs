//! `spike-inspect records`: every live record of one device (the newest copy of each
//! digest, neither a tombstone nor expired), one line each, sorted by digest so that the
//! listings of two devices or of a device and a restored backup can be diffed.

use super::scan::{is_expired, RecordCopy, Scan};
use crate::text::hex;
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// Opens and scans the device at `path` and lists its live records. Refuses (an error) if
/// a block is unreadable; other inconsistencies are skipped with a warning on stderr.
pub fn print(path: &Path, out: &mut dyn Write) -> Result<()> {
    let opened = super::open(path)?;
    let scan = Scan::run(&opened)?;
    scan.warn_or_refuse(&opened)?;
    print_records(&scan, out)
}

fn print_records(scan: &Scan, out: &mut dyn Write) -> Result<()> {
    let mut live: Vec<&RecordCopy> =
        scan.winners.values().filter(|c| !c.tombstone && !is_expired(c.void_time, scan.now_s)).collect();
    live.sort_unstable_by_key(|copy| copy.digest);
    for copy in live {
        writeln!(
            out,
            "{} gen={} void={} len={} xxh3={:016x}",
            hex(&copy.digest),
            copy.generation,
            copy.void_time,
            copy.value_len,
            copy.value_xxh3
        )?;
    }
    Ok(())
}
