//! `spike-backup`: block-level full and incremental images of Spike devices, offline.
//!
//! A thin command line over `spike_tools::backup` (see its module comment for what each
//! command guarantees). Exit codes: 0 success, 1 failure (the message says why; `verify`
//! also exits 1 when the device differs from the images), 2 bad usage.

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use spike_tools::backup::capture::{capture, CaptureOptions, CaptureReport, COMPRESS_LEVEL_DEFAULT};
use spike_tools::backup::chain::{merge, uuid_string, OpenImage};
use spike_tools::backup::image::{ImageMeta, FLAG_SYNTHETIC};
use spike_tools::backup::restore::{restore, verify};
use spike_tools::backup::{human_bytes, utc_time};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "spike-backup",
    version,
    about = "Block-level full and incremental images of Spike devices (offline: refuses a device an \
             engine holds)",
    after_help = "Exit codes: 0 success, 1 failure, 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Speed {
    /// Compress stored blocks with zstd (a block that does not shrink is stored raw).
    #[arg(long)]
    compress: bool,
    /// zstd level for --compress.
    #[arg(long, default_value_t = COMPRESS_LEVEL_DEFAULT, value_parser = clap::value_parser!(i32).range(1..=19))]
    compress_level: i32,
    /// Limit device reads to this many MB/s (10^6 bytes).
    #[arg(long, value_name = "MB/s")]
    max_rate: Option<f64>,
}

#[derive(Subcommand)]
enum Command {
    /// Image every write block in use (free ones are recorded, not copied), then start a
    /// new change-bitmap generation on the device.
    Full {
        #[arg(long)]
        device: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        speed: Speed,
    },
    /// Image the write blocks changed since BASE (the last image taken of this device).
    Incr {
        #[arg(long)]
        device: PathBuf,
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Take a full image (and say so) when an incremental is refused.
        #[arg(long)]
        auto_full: bool,
        #[command(flatten)]
        speed: Speed,
    },
    /// Restore a full image and its incrementals, in order, onto a device or file.
    Restore {
        #[arg(long)]
        device: PathBuf,
        /// Overwrite a target that holds data (a Spike device or anything else).
        #[arg(long)]
        force: bool,
        /// Limit writes to this many MB/s (10^6 bytes).
        #[arg(long, value_name = "MB/s")]
        max_rate: Option<f64>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Check every checksum of an image or chain; with --device, compare the chain's result
    /// with the device block by block.
    Verify {
        #[arg(long)]
        device: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Print what an image holds.
    Info { image: PathBuf },
    /// Fold a full image and its incrementals into one synthetic full image.
    Merge {
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("spike-backup: error: {}", spike_tools::text::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

fn mb_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e6
}

fn print_capture(out: &std::path::Path, r: &CaptureReport) -> Result<ExitCode> {
    let secs = r.elapsed.as_secs_f64();
    println!(
        "{} image {} written: {}",
        if r.incremental { "incremental" } else { "full" },
        uuid_string(&r.image_uuid),
        out.display()
    );
    println!(
        "  blocks: {} listed of {} ({} in use on the device), {} stored",
        r.blocks_listed, r.wblock_count, r.blocks_in_use, r.blocks_stored
    );
    println!(
        "  read {} in {secs:.2} s ({:.1} MB/s), stored {}",
        human_bytes(r.bytes_read),
        mb_s(r.bytes_read, secs),
        human_bytes(r.bytes_stored)
    );
    if !r.missed_by_bitmap.is_empty() {
        println!("  WARNING: {} block(s) found only by their write sequence", r.missed_by_bitmap.len());
    }
    if let Some(reason) = &r.fell_back {
        println!("  full instead of incremental: {reason}");
    }
    match &r.generation_error {
        None => {
            println!("  device bitmap generation {:#x} started", r.new_generation);
            Ok(ExitCode::SUCCESS)
        }
        Some(err) => bail!(
            "the image {} is complete and usable, but starting the device's new bitmap generation \
             failed ({err}); the next backup of this device must be full",
            out.display()
        ),
    }
}

fn print_info(meta: &ImageMeta) {
    let h = &meta.header;
    let kind = if h.is_incremental() {
        "incremental"
    } else if h.flags & FLAG_SYNTHETIC != 0 {
        "full (synthetic, merged from a chain)"
    } else {
        "full"
    };
    let free = meta.entries.len() - meta.stored_blocks();
    println!("image           {}", meta.path);
    println!("kind            {kind}");
    println!("image uuid      {}", uuid_string(&h.image_uuid));
    if h.is_incremental() {
        println!("parent uuid     {}", uuid_string(&h.parent_uuid));
        let digest: String = h.parent_digest.iter().map(|b| format!("{b:02x}")).collect();
        println!("parent digest   {digest}");
    }
    let digest: String = meta.content_digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("content digest  {digest}");
    println!("created         {}", utc_time(h.created_unix_s));
    println!("device uuid     {}", uuid_string(&h.device_uuid));
    println!(
        "namespace       {:?} ({}), device index {}",
        h.namespace_name,
        uuid_string(&h.namespace_uuid),
        h.device_index
    );
    println!("device size     {} bytes (restore needs at least {} bytes)", h.device_size_bytes, h.span_bytes);
    println!(
        "write blocks    {} of {} bytes, from offset {}",
        h.wblock_count, h.write_block_size, h.first_wblock_offset
    );
    println!("generations     changes since {:#x}; started {:#x}", h.base_generation, h.new_generation);
    println!(
        "blocks listed   {} ({} stored, {} recorded free)",
        meta.entries.len(),
        meta.stored_blocks(),
        free
    );
    let plain = meta.stored_blocks() as u64 * h.write_block_size as u64 + h.first_wblock_offset;
    println!(
        "compression     {} of {} blocks zstd; {} stored for {} of data",
        meta.compressed_blocks(),
        meta.stored_blocks(),
        human_bytes(meta.stored_bytes()),
        human_bytes(plain)
    );
    println!("write sequence  data up to {}, snapshot up to {}", meta.max_data_seq, meta.max_snapshot_seq);
    println!("file size       {} bytes", meta.file_len);
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Full { device, out, speed } => {
            let opts = CaptureOptions {
                device,
                out: out.clone(),
                base: None,
                auto_full: false,
                compress_level: speed.compress.then_some(speed.compress_level),
                max_rate_mb_s: speed.max_rate,
            };
            print_capture(&out, &capture(&opts)?)
        }
        Command::Incr { device, base, out, auto_full, speed } => {
            let opts = CaptureOptions {
                device,
                out: out.clone(),
                base: Some(base),
                auto_full,
                compress_level: speed.compress.then_some(speed.compress_level),
                max_rate_mb_s: speed.max_rate,
            };
            print_capture(&out, &capture(&opts)?)
        }
        Command::Restore { device, force, max_rate, images } => {
            let r = restore(&images, &device, force, max_rate)?;
            let secs = r.elapsed.as_secs_f64();
            println!(
                "restored {} image(s) onto {}: {} blocks written, {} recorded free; {} in {secs:.2} s ({:.1} MB/s)",
                r.images,
                device.display(),
                r.blocks_written,
                r.blocks_free,
                human_bytes(r.bytes_written),
                mb_s(r.bytes_written, secs)
            );
            println!("  device {} (a copy: its next backup must be full)", uuid_string(&r.device_uuid));
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { device, images } => {
            let r = verify(&images, device.as_deref())?;
            println!(
                "verified {} image(s): {} stored blocks ({}) match their checksums ({:.2} s, {:.1} MB/s)",
                r.images,
                r.blocks_checked,
                human_bytes(r.bytes_checked),
                r.images_elapsed.as_secs_f64(),
                mb_s(r.bytes_checked, r.images_elapsed.as_secs_f64())
            );
            if let Some(device) = device {
                for (block, what) in &r.mismatches {
                    println!("  block {block}: {what}");
                }
                if r.mismatch_count > 0 {
                    println!(
                        "{}: {} of {} blocks differ from the images",
                        device.display(),
                        r.mismatch_count,
                        r.device_blocks_compared
                    );
                    return Ok(ExitCode::FAILURE);
                }
                println!(
                    "{}: all {} blocks match the images ({} read in {:.2} s, {:.1} MB/s)",
                    device.display(),
                    r.device_blocks_compared,
                    human_bytes(r.device_bytes_compared),
                    r.device_elapsed.as_secs_f64(),
                    mb_s(r.device_bytes_compared, r.device_elapsed.as_secs_f64())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { image } => {
            print_info(&OpenImage::open(&image)?.meta);
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge { out, images } => {
            let r = merge(&images, &out)?;
            println!(
                "merged {} image(s) into {}: {} blocks stored ({})",
                r.images,
                out.display(),
                r.blocks,
                human_bytes(r.stored_bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
