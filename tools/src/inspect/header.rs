//! `spike-inspect header`: the device header in force, every field, and the state of both
//! header slots. Reads the two header slots and nothing else (no scan).

use super::Opened;
use crate::text::{hex, human_bytes, utc_time};
use anyhow::{Context, Result};
use spike::device::AlignedBuf;
use spike::offline::format::{DeviceHeader, HeaderProblem, DEVICE_HEADER_SIZE};
use std::io::Write;
use std::path::Path;

/// Opens the device at `path` and prints its header.
pub fn print(path: &Path, out: &mut dyn Write) -> Result<()> {
    let opened = super::open(path)?;
    print_header(&opened, out)
}

fn slot_status(slot: &[u8], in_force: &DeviceHeader) -> String {
    match DeviceHeader::decode(slot) {
        Ok(h) if h == *in_force => format!("valid, sequence {} (in force)", h.sequence),
        Ok(h) => format!("valid, sequence {}", h.sequence),
        Err(HeaderProblem::NoMagic) if slot.iter().all(|&b| b == 0) => "blank".into(),
        Err(HeaderProblem::NoMagic) => "no Spike magic".into(),
        Err(HeaderProblem::Damaged(reason)) => format!("damaged: {reason}"),
        Err(HeaderProblem::Version(v)) => format!("format version {v}, unreadable by this build"),
    }
}

/// What each of the two header slots holds, relative to the header in force (shared with
/// `check`, which prints the same two lines).
pub(super) fn slot_statuses(opened: &Opened) -> Result<[String; 2]> {
    let mut slots = AlignedBuf::zeroed(2 * DEVICE_HEADER_SIZE);
    opened
        .device
        .read_at(&mut slots, 0)
        .with_context(|| format!("reading the header slots of {}", opened.device.name()))?;
    Ok([
        slot_status(&slots[..DEVICE_HEADER_SIZE], &opened.header),
        slot_status(&slots[DEVICE_HEADER_SIZE..], &opened.header),
    ])
}

fn print_header(opened: &Opened, out: &mut dyn Write) -> Result<()> {
    let h = &opened.header;
    let [slot0, slot1] = slot_statuses(opened)?;
    let wbs = h.write_block_size as u64;
    writeln!(out, "device                {}", opened.device.name())?;
    writeln!(
        out,
        "device size           {} bytes ({})",
        opened.device.size_bytes(),
        human_bytes(opened.device.size_bytes())
    )?;
    writeln!(out, "header slot 0         {slot0}")?;
    writeln!(out, "header slot 1         {slot1}")?;
    writeln!(out, "format version        {}", h.format_version)?;
    writeln!(out, "header sequence       {}", h.sequence)?;
    writeln!(out, "device uuid           {}", hex(&h.device_uuid))?;
    writeln!(out, "namespace             {:?}", h.namespace_name)?;
    writeln!(out, "namespace uuid        {}", hex(&h.namespace_uuid))?;
    writeln!(out, "device index          {} of {}", h.device_index, h.device_count)?;
    writeln!(out, "write-block size      {wbs} bytes ({})", human_bytes(wbs))?;
    writeln!(
        out,
        "clean shutdown        {} (flags {:#x})",
        if h.is_clean() { "yes" } else { "no: open, or it crashed" },
        h.flags
    )?;
    writeln!(
        out,
        "write blocks          {} ({} of block area)",
        h.wblock_count,
        human_bytes(h.wblock_count * wbs)
    )?;
    writeln!(out, "first wblock offset   {} ({:#x})", h.first_wblock_offset, h.first_wblock_offset)?;
    writeln!(out, "span described        {} bytes", h.device_span_bytes())?;
    if h.device_span_bytes() > opened.device.size_bytes() {
        writeln!(out, "WARNING               the header describes more bytes than the device holds")?;
    }
    writeln!(out, "open count            {}", h.open_count)?;
    writeln!(
        out,
        "write seqs reserved   below {} (blocks open at lower sequences only)",
        h.write_seq_reserved
    )?;
    let s = &h.snapshot;
    if s.len_bytes == 0 {
        writeln!(out, "snapshot              none")?;
    } else {
        let fresh = if s.open_count == h.open_count {
            "written by the last run"
        } else {
            "stale: from an earlier run"
        };
        writeln!(
            out,
            "snapshot              offset {} ({:#x}), {} bytes, checksum {:016x}, open count {} ({fresh})",
            s.offset, s.offset, s.len_bytes, s.checksum, s.open_count
        )?;
    }
    writeln!(out, "bitmap offset         {}", spike::offline::format::BITMAP_OFFSET)?;
    writeln!(out, "bitmap length         {} bytes", h.bitmap_len_bytes)?;
    writeln!(out, "bitmap generation     {}", h.bitmap_generation)?;
    writeln!(out, "bitmap reset by image {}", hex(&h.bitmap_reset_image_uuid))?;
    writeln!(out, "created               {} ({})", utc_time(h.created_unix_s), h.created_unix_s)?;
    writeln!(out, "digest secret         {} bytes (not shown)", h.digest_secret.len())?;
    Ok(())
}
