//! `spike-backup`: block-level full and incremental images of Spike devices, offline.
//!
//! - [`image`]: the image file format and its checked reader; [`writer`]: the atomic writer.
//! - [`chain`]: a full image and its incrementals checked as one chain; `merge`.
//! - [`source`]: the device side: opening a device under the engine's exclusive lock,
//!   telling blocks in use from free ones, reading many blocks at once.
//! - [`capture`]: `full` and `incr`: device to image, then a new bitmap generation.
//! - [`restore`]: `restore` and `verify`: image chain to device, and checks.
//! - [`progress`]: progress line and `--max-rate`.
//!
//! What "in use" means (the same rule as the engine's cold start and `spike-inspect`): a
//! write block whose header decodes as a data or snapshot block of this device (its UUID)
//! at its own index. Anything else is free: never copied, recorded as free, and restored as
//! a free header page so that nothing stale on the target can come back.

pub mod capture;
pub mod chain;
pub mod image;
pub mod progress;
pub mod restore;
pub mod source;
pub mod writer;

pub(crate) fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD hh:mm:ss UTC` for Unix seconds (days to civil date: Howard Hinnant's algorithm).
pub fn utc_time(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
