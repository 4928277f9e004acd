//! `spike-inspect stats`: space use of one device after a scan: blocks in use and free,
//! live bytes, a histogram of how full the blocks in use are, and record counts.

use super::scan::Scan;
use super::Opened;
use crate::text::{human_bytes, percent};
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// Buckets of the fill histogram (10% each).
const FILL_BUCKETS: usize = 10;
/// Width in characters of the histogram's longest bar.
const HISTOGRAM_BAR_MAX: u64 = 50;

/// Opens and scans the device at `path` and prints its space use. Refuses (an error) if a
/// block is unreadable; other inconsistencies are skipped with a warning on stderr.
pub fn print(path: &Path, out: &mut dyn Write) -> Result<()> {
    let opened = super::open(path)?;
    let scan = Scan::run(&opened)?;
    scan.warn_or_refuse(&opened)?;
    print_stats(&opened, &scan, out)
}

fn print_stats(opened: &Opened, scan: &Scan, out: &mut dyn Write) -> Result<()> {
    let h = &opened.header;
    let wbs = h.write_block_size as u64;
    let live = scan.live_bytes();
    let total = scan.blocks.len() as u64;
    let in_use = live.iter().filter(|&&l| l > 0).count() as u64;
    let data_empty = scan.data_blocks_empty(&live);
    let live_total: u64 = live.iter().sum();
    let area = total * wbs;
    writeln!(out, "device            {}", opened.device.name())?;
    writeln!(
        out,
        "namespace         {:?}, device {} of {}",
        h.namespace_name, h.device_index, h.device_count
    )?;
    writeln!(out, "write blocks      {total} of {} ({} in all)", human_bytes(wbs), human_bytes(area))?;
    writeln!(out, "  in use          {in_use} (holding newest copies: live records or tombstones)")?;
    writeln!(out, "  free            {}", total - in_use)?;
    if data_empty > 0 {
        writeln!(
            out,
            "                  ({data_empty} of them still hold data the engine frees at its next open)"
        )?;
    }
    writeln!(
        out,
        "live bytes        {live_total} ({}, {:.1}% of the block area)",
        human_bytes(live_total),
        percent(live_total, area)
    )?;
    if let Some(average) = live_total.checked_div(in_use) {
        writeln!(out, "  per block in use {} on average", human_bytes(average))?;
    }
    let mut buckets = [0u64; FILL_BUCKETS];
    for &bytes in live.iter().filter(|&&l| l > 0) {
        buckets[((bytes * FILL_BUCKETS as u64 / wbs) as usize).min(FILL_BUCKETS - 1)] += 1;
    }
    writeln!(out, "fill of blocks in use (live bytes / block size)")?;
    let widest = buckets.iter().copied().max().unwrap_or(0).max(1);
    for (i, &n) in buckets.iter().enumerate() {
        let label = format!("{}-{}%", i * 10, (i + 1) * 10);
        let bar = "#".repeat((n * HISTOGRAM_BAR_MAX).div_ceil(widest) as usize);
        writeln!(out, "{}", format!("  {label:>7} {n:>8} {bar}").trim_end())?;
    }
    let (records, tombstones, expired) = scan.record_kinds();
    writeln!(out, "records           {records} live")?;
    writeln!(out, "tombstones        {tombstones}")?;
    writeln!(out, "expired           {expired} (kept as tombstones until rewritten)")?;
    let c = &scan.counts;
    writeln!(
        out,
        "copies on device  {} valid, {} superseded, {} stale, {} damaged region(s)",
        c.records_found,
        c.records_found - scan.winners.len() as u64,
        c.stale_records,
        scan.damage_total
    )?;
    Ok(())
}
