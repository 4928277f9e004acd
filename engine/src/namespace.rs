//! Formatting devices and opening them as one namespace, safely.
//!
//! Opening never formats. Format refuses a device that holds anything (another file
//! system, a Spike device, any non-zero byte in its first 64 KiB) unless forced. Open
//! refuses a blank or foreign device, a Spike device of another namespace, format version
//! or write-block size, a device smaller than its header says, and an incomplete set of
//! devices, each with an error naming the device and the reason.
//!
//! The header has two copies; an update writes the older slot with the next sequence
//! number and syncs, so a torn header write leaves the previous copy in force.

use crate::change_bitmap::ChangeBitmap;
use crate::config::Config;
use crate::device::{AlignedBuf, Device};
use crate::error::{Error, Result};
use crate::format::bitmap_len_bytes;
use crate::format::{
    pick_header, DeviceHeader, HeaderProblem, SnapshotRef, BITMAP_OFFSET, DEVICE_HEADER_SIZE,
    DIGEST_SECRET_SIZE, FORMAT_VERSION,
};
use std::sync::Arc;

/// Bytes inspected to tell a blank device from one holding data.
const PROBE_BYTES: usize = 64 * 1024;
pub use crate::limits::WBLOCKS_MIN;

/// What the start of a device holds.
#[derive(Debug)]
pub enum DeviceContent {
    Blank,
    Spike(Box<DeviceHeader>),
    /// A Spike header this build cannot use (version, damage).
    BadSpike(String),
    Foreign(String),
}

pub fn probe(device: &dyn Device) -> Result<DeviceContent> {
    let len = PROBE_BYTES.min(device.size_bytes() as usize);
    if len < 2 * DEVICE_HEADER_SIZE {
        return Ok(DeviceContent::Foreign(format!("device is only {} bytes", device.size_bytes())));
    }
    let mut buf = AlignedBuf::zeroed(len);
    device.read_at(&mut buf, 0)?;
    match pick_header(&buf[..DEVICE_HEADER_SIZE], &buf[DEVICE_HEADER_SIZE..2 * DEVICE_HEADER_SIZE]) {
        Ok(header) => Ok(DeviceContent::Spike(Box::new(header))),
        Err(HeaderProblem::Version(v)) => Ok(DeviceContent::BadSpike(format!(
            "Spike format version {v}, this build reads version {FORMAT_VERSION}"
        ))),
        Err(HeaderProblem::Damaged(reason)) => {
            Ok(DeviceContent::BadSpike(format!("both Spike header copies are damaged ({reason})")))
        }
        Err(HeaderProblem::NoMagic) if buf.iter().all(|&b| b == 0) => Ok(DeviceContent::Blank),
        Err(HeaderProblem::NoMagic) => Ok(DeviceContent::Foreign(foreign_signature(&buf))),
    }
}

fn foreign_signature(buf: &[u8]) -> String {
    let at = |offset: usize, magic: &[u8]| buf.get(offset..offset + magic.len()) == Some(magic);
    let what = if at(1080, &[0x53, 0xEF]) {
        "an ext2/3/4 file system"
    } else if at(0, b"XFSB") {
        "an XFS file system"
    } else if at(0, b"LUKS\xba\xbe") {
        "a LUKS volume"
    } else if at(512, b"EFI PART") {
        "a GPT partition table"
    } else if at(4086, b"SWAPSPACE2") {
        "a swap area"
    } else if at(510, &[0x55, 0xAA]) {
        "an MBR partition table"
    } else {
        "data that is not Spike's"
    };
    format!("device holds {what} (non-zero bytes and no Spike header)")
}

/// Fills `buf` with random bytes from the kernel.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled rest of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(Error::Config(format!("getrandom: {err}")));
            }
            continue;
        }
        done += n as usize;
    }
    Ok(())
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The first write sequence of a new format of a device holding `content`: above every
/// sequence the old format used when its header says so (records of the old format left
/// in a block then never match the block's new sequence). Otherwise (a blank or foreign
/// device, or an old header that is damaged or predates the field) a random start above
/// 2^32: the low 32 bits a record carries then match a stale block's only by a chance of
/// about (old blocks used) / 2^32.
fn first_write_seq(content: &DeviceContent) -> Result<u64> {
    if let DeviceContent::Spike(header) = content {
        if header.write_seq_reserved > 0 {
            return Ok(header.write_seq_reserved);
        }
    }
    let mut random = [0u8; 4];
    random_bytes(&mut random)?;
    Ok((1 << 32) + u32::from_le_bytes(random) as u64)
}

/// Formats `devices` as one namespace. Without `force`, only blank devices are accepted.
pub fn format(config: &Config, devices: &[Arc<dyn Device>], force: bool) -> Result<()> {
    config.validate()?;
    if devices.is_empty() || devices.len() > crate::index::DEVICES_MAX {
        return Err(Error::Config(format!("a namespace has 1 to {} devices", crate::index::DEVICES_MAX)));
    }
    let wbs = config.write_block_size as u64;
    let mut headers = Vec::with_capacity(devices.len());
    let mut namespace_uuid = [0u8; 16];
    let mut secret = [0u8; DIGEST_SECRET_SIZE];
    random_bytes(&mut namespace_uuid)?;
    random_bytes(&mut secret)?;
    for (i, device) in devices.iter().enumerate() {
        let content = probe(device.as_ref())?;
        let write_seq_first = first_write_seq(&content)?;
        if !force {
            match content {
                DeviceContent::Blank => {}
                DeviceContent::Spike(h) => {
                    return Err(Error::refused(
                        device.name(),
                        format!(
                            "already a Spike device of namespace {:?}; formatting it needs force",
                            h.namespace_name
                        ),
                    ))
                }
                DeviceContent::BadSpike(reason) | DeviceContent::Foreign(reason) => {
                    return Err(Error::refused(device.name(), format!("{reason}; formatting it needs force")))
                }
            }
        }
        let size = device.size_bytes().min(crate::index::DEVICE_BYTES_MAX);
        let rough_count = size / wbs;
        let bitmap_len = bitmap_len_bytes(rough_count);
        let first_wblock_offset = (BITMAP_OFFSET + bitmap_len).div_ceil(wbs) * wbs;
        let wblock_count = size.saturating_sub(first_wblock_offset) / wbs;
        if wblock_count < WBLOCKS_MIN {
            return Err(Error::refused(
                device.name(),
                format!("device of {size} bytes holds {wblock_count} write blocks of {wbs} bytes; at least {WBLOCKS_MIN} are needed"),
            ));
        }
        let mut device_uuid = [0u8; 16];
        random_bytes(&mut device_uuid)?;
        headers.push(DeviceHeader {
            format_version: FORMAT_VERSION,
            sequence: 1,
            device_uuid,
            namespace_uuid,
            namespace_name: config.namespace.clone(),
            device_index: i as u32,
            device_count: devices.len() as u32,
            write_block_size: config.write_block_size,
            flags: 0,
            first_wblock_offset,
            wblock_count,
            open_count: 0,
            snapshot: SnapshotRef::default(),
            bitmap_len_bytes: bitmap_len,
            bitmap_generation: 0,
            bitmap_reset_image_uuid: [0; 16],
            created_unix_s: unix_now_s(),
            write_seq_reserved: write_seq_first,
            digest_secret: secret,
        });
    }
    for (device, header) in devices.iter().zip(&headers) {
        // Clear both header slots and the bitmap, then write the first header copy.
        let reserved = header.first_wblock_offset as usize;
        device.write_at(&AlignedBuf::zeroed(reserved), 0)?;
        ChangeBitmap::new(0, header.wblock_count).write_all(device.as_ref())?;
        let mut page = AlignedBuf::zeroed(DEVICE_HEADER_SIZE);
        page.copy_from_slice(&header.encode());
        // Copy `sequence % 2` holds sequence `sequence`, so updates alternate slots.
        device.write_at(&page, (header.sequence % 2) * DEVICE_HEADER_SIZE as u64)?;
        device.sync()?;
    }
    Ok(())
}

/// Reads and checks every device's header against the configuration; returns the
/// headers in device-index order (devices reordered to match).
pub fn open_headers(config: &Config, devices: &mut Vec<Arc<dyn Device>>) -> Result<Vec<DeviceHeader>> {
    config.validate()?;
    if devices.is_empty() {
        return Err(Error::Config("no devices configured".into()));
    }
    let mut found: Vec<(DeviceHeader, Arc<dyn Device>)> = Vec::with_capacity(devices.len());
    for device in devices.drain(..) {
        let header = match probe(device.as_ref())? {
            DeviceContent::Spike(header) => *header,
            DeviceContent::Blank => {
                return Err(Error::refused(
                    device.name(),
                    "blank device: not formatted for Spike (format it first)",
                ))
            }
            DeviceContent::BadSpike(reason) | DeviceContent::Foreign(reason) => {
                return Err(Error::refused(device.name(), reason))
            }
        };
        check_header(config, device.as_ref(), &header)?;
        if let Some((first, _)) = found.first() {
            if first.namespace_uuid != header.namespace_uuid {
                return Err(Error::refused(
                    device.name(),
                    "belongs to another instance of this namespace (UUID differs)",
                ));
            }
        }
        if let Some((_, other)) = found.iter().find(|(h, _)| h.device_index == header.device_index) {
            return Err(Error::refused(
                device.name(),
                format!("is device {} of the namespace, like {}", header.device_index, other.name()),
            ));
        }
        found.push((header, device));
    }
    let count = found[0].0.device_count as usize;
    if found.len() != count {
        let missing: Vec<String> = (0..count as u32)
            .filter(|i| !found.iter().any(|(h, _)| h.device_index == *i))
            .map(|i| i.to_string())
            .collect();
        return Err(Error::Config(format!(
            "namespace {:?} has {count} devices, {} given; missing device index {}",
            config.namespace,
            found.len(),
            missing.join(", ")
        )));
    }
    found.sort_by_key(|(h, _)| h.device_index);
    let (headers, ordered): (Vec<_>, Vec<_>) = found.into_iter().unzip();
    *devices = ordered;
    Ok(headers)
}

fn check_header(config: &Config, device: &dyn Device, header: &DeviceHeader) -> Result<()> {
    if header.namespace_name != config.namespace {
        return Err(Error::refused(
            device.name(),
            format!("belongs to namespace {:?}, not {:?}", header.namespace_name, config.namespace),
        ));
    }
    if header.write_block_size != config.write_block_size {
        return Err(Error::refused(
            device.name(),
            format!(
                "formatted with {}-byte write blocks, configured {}",
                header.write_block_size, config.write_block_size
            ),
        ));
    }
    if header.device_span_bytes() > device.size_bytes() {
        return Err(Error::refused(
            device.name(),
            format!(
                "device is {} bytes but its header describes {}",
                device.size_bytes(),
                header.device_span_bytes()
            ),
        ));
    }
    Ok(())
}

/// Writes the next copy of `header` (bumping its sequence) into the older slot and syncs.
pub fn write_header(device: &dyn Device, header: &mut DeviceHeader) -> Result<()> {
    header.sequence += 1;
    let slot = header.sequence % 2;
    let mut page = AlignedBuf::zeroed(DEVICE_HEADER_SIZE);
    page.copy_from_slice(&header.encode());
    device.write_at(&page, slot * DEVICE_HEADER_SIZE as u64)?;
    device.sync()
}

/// A device opened offline (by `spike-inspect` or `spike-backup`): held under the
/// engine's exclusive lock, with its header in force.
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub struct OfflineDevice {
    pub device: Arc<dyn Device>,
    pub header: DeviceHeader,
}

/// The one offline open of the workspace. `DeviceInUse` when an engine or another tool
/// holds the device; `Refused` naming why for a blank, foreign or unusable one.
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub fn open_offline(path: &std::path::Path) -> Result<OfflineDevice> {
    // The device opens read-write because that is the only way it opens; the tools that
    // only read never write through it.
    let device = crate::device::open(path, crate::device::IoBackend::Auto)?;
    let header = match probe(device.as_ref())? {
        DeviceContent::Spike(header) => *header,
        DeviceContent::Blank => {
            return Err(Error::refused(
                path,
                "not a Spike device: blank (all zeroes at the start), never formatted",
            ))
        }
        DeviceContent::Foreign(reason) => {
            return Err(Error::refused(path, format!("not a Spike device: {reason}")))
        }
        DeviceContent::BadSpike(reason) => {
            return Err(Error::refused(path, format!("unusable Spike device: {reason}")))
        }
    };
    Ok(OfflineDevice { device, header })
}

#[cfg_attr(not(feature = "offline"), allow(dead_code))]
impl OfflineDevice {
    /// The block area must lie on the device before anything reads blocks (a header can
    /// still be shown without it).
    pub fn check_span(&self) -> Result<()> {
        let span = self.header.device_span_bytes();
        if span > self.device.size_bytes() {
            let reason = format!(
                "the device is {} bytes but its header describes {span} bytes (truncated?)",
                self.device.size_bytes()
            );
            return Err(Error::refused(self.device.name(), reason));
        }
        Ok(())
    }
}

/// Starts a new bitmap generation on an offline device (the backup tool's step once its
/// image is safely written): every page rewritten with zeroed bits and `generation`, synced,
/// then the header records the generation and the image that started it. A crash between
/// the two leaves pages and header of different generations: untrusted, so the next backup
/// is full, never one that misses a change.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // used by spike-backup
pub fn start_generation(
    device: &dyn Device,
    header: &mut DeviceHeader,
    generation: u64,
    image_uuid: [u8; 16],
) -> Result<()> {
    ChangeBitmap::new(generation, header.wblock_count).write_all(device)?;
    device.sync()?;
    header.bitmap_generation = generation;
    header.bitmap_reset_image_uuid = image_uuid;
    write_header(device, header)
}
