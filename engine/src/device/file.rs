//! Opening real devices and the blocking `pread`/`pwrite` backend.
//!
//! A regular file is locked with `flock`; a block device is opened `O_EXCL` (the kernel
//! then refuses mounts and other exclusive opens) and also `flock`ed, so that a second
//! engine or `spike-backup` is refused either way.

use super::{assert_aligned, Device, IO_ALIGN};
use crate::error::{Error, Result};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};

/// `BLKGETSIZE64` and `BLKSSZGET` from `<linux/fs.h>`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;

/// An open, locked file descriptor with `O_DIRECT`, doing blocking I/O.
pub struct FileDevice {
    fd: RawFd,
    name: String,
    size_bytes: u64,
    logical_block_size: u32,
}

/// How long an open waits for a device lock that no live process holds: after `kill -9`
/// of a process with io_uring requests in flight, the kernel drops the dead ring's file
/// references (and with them the lock) asynchronously, up to about half a second later.
pub use crate::limits::DEVICE_LOCK_WAIT_MS_MAX;

impl FileDevice {
    /// Opens and locks `path`. A lock held by a live process is refused at once
    /// (`DeviceInUse`); one left by a process that is gone, or a block device's `EBUSY`
    /// (whose holder cannot be named), is waited for up to `DEVICE_LOCK_WAIT_MS_MAX`.
    pub fn open(path: &Path) -> Result<Self> {
        let start = std::time::Instant::now();
        let mut said = false;
        loop {
            match Self::open_once(path) {
                Err(Error::DeviceInUse { .. })
                    if start.elapsed().as_millis() < DEVICE_LOCK_WAIT_MS_MAX as u128
                        && !held_by_live_process(path) =>
                {
                    if !said {
                        log::warn!(
                            "{}: locked, but by no live process (one that just died?); waiting up to {} ms",
                            path.display(),
                            DEVICE_LOCK_WAIT_MS_MAX
                        );
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                result => return result,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Self> {
        let open_err = |reason: String| Error::Open { path: path.to_path_buf(), reason };
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| open_err("path contains a NUL byte".into()))?;
        let metadata = std::fs::metadata(path).map_err(|e| open_err(e.to_string()))?;
        use std::os::unix::fs::FileTypeExt;
        let is_block = metadata.file_type().is_block_device();
        if !is_block && !metadata.is_file() {
            return Err(open_err("neither a block device nor a regular file".into()));
        }
        let mut flags = libc::O_RDWR | libc::O_DIRECT | libc::O_CLOEXEC;
        if is_block {
            flags |= libc::O_EXCL;
        }
        // SAFETY: c_path is a valid NUL-terminated string.
        let fd = unsafe { libc::open(c_path.as_ptr(), flags) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EINVAL) => open_err(
                    "the file system does not support O_DIRECT; Spike refuses to run through \
                     the page cache (use a block device or a file on ext4/xfs)"
                        .into(),
                ),
                Some(libc::EBUSY) => Error::DeviceInUse { path: path.to_path_buf() },
                _ => open_err(err.to_string()),
            });
        }
        let mut device = FileDevice {
            fd,
            name: path.display().to_string(),
            size_bytes: 0,
            logical_block_size: IO_ALIGN as u32,
        };
        // SAFETY: fd is open; flock has no memory effects.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Error::DeviceInUse { path: path.to_path_buf() }
            } else {
                open_err(format!("flock: {err}"))
            });
        }
        if is_block {
            let mut size: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
            if unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64) } != 0 {
                return Err(open_err(format!("BLKGETSIZE64: {}", io::Error::last_os_error())));
            }
            let mut sector: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the pointer.
            if unsafe { libc::ioctl(fd, BLKSSZGET, &mut sector as *mut libc::c_int) } != 0 {
                return Err(open_err(format!("BLKSSZGET: {}", io::Error::last_os_error())));
            }
            if sector <= 0 || IO_ALIGN % sector as usize != 0 {
                return Err(open_err(format!(
                    "logical block size {sector} does not divide Spike's I/O unit {IO_ALIGN}"
                )));
            }
            device.logical_block_size = sector as u32;
            device.size_bytes = size;
        } else {
            device.size_bytes = metadata.len();
        }
        device.size_bytes -= device.size_bytes % IO_ALIGN as u64;
        Ok(device)
    }

    pub fn logical_block_size(&self) -> u32 {
        self.logical_block_size
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    pub(crate) fn io_error(&self, offset: u64, err: io::Error) -> Error {
        Error::io(&self.name, offset, err)
    }

    pub(crate) fn check_range(&self, len: usize, offset: u64) -> Result<()> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.size_bytes) {
            return Err(self.io_error(
                offset,
                io::Error::new(io::ErrorKind::UnexpectedEof, "access beyond the end of the device"),
            ));
        }
        Ok(())
    }
}

/// Whether a live process holds a `flock` on `path`'s inode, from `/proc/locks`. For a
/// block device refused with `EBUSY` (a mount or another exclusive open, no flock entry)
/// this is false, so that case is waited for too.
fn held_by_live_process(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(inode) = std::fs::metadata(path).map(|m| m.ino()) else { return false };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else { return true };
    let suffix = format!(":{inode}");
    locks.lines().any(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 6
            && fields[1] == "FLOCK"
            && fields[5].ends_with(&suffix)
            && Path::new(&format!("/proc/{}", fields[4])).exists()
    })
}

impl Drop for FileDevice {
    fn drop(&mut self) {
        // Unlock before closing: a flock belongs to the open file description, which
        // outlives this fd while a child forked meanwhile (before its exec) or an io_uring
        // request still refers to it; the lock would then outlive `Engine::close`, and the
        // next open would be refused. Unlocking releases it now, whoever else holds the file.
        // SAFETY: fd is ours and open; it is closed exactly once, here.
        unsafe {
            libc::flock(self.fd, libc::LOCK_UN);
            libc::close(self.fd);
        }
    }
}

impl Device for FileDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        assert_aligned(buf.as_ptr() as usize, buf.len(), offset);
        self.check_range(buf.len(), offset)?;
        let (mut done, mut stalled) = (0usize, 0u32);
        while done < buf.len() {
            if stalled >= STALLED_ATTEMPTS_MAX {
                return Err(self.io_error(offset + done as u64, stalled_error()));
            }
            let before = done;
            let rest = &mut buf[done..];
            // SAFETY: rest is a valid writable region of rest.len() bytes.
            let n = unsafe {
                libc::pread(self.fd, rest.as_mut_ptr().cast(), rest.len(), (offset + done as u64) as i64)
            };
            match n {
                n if n > 0 => done = advance_aligned(done, n as usize),
                0 => {
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "short read");
                    return Err(self.io_error(offset + done as u64, eof));
                }
                _ => {
                    let err = io::Error::last_os_error();
                    if !matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
                        return Err(self.io_error(offset + done as u64, err));
                    }
                }
            }
            stalled = if done == before { stalled + 1 } else { 0 };
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        assert_aligned(buf.as_ptr() as usize, buf.len(), offset);
        self.check_range(buf.len(), offset)?;
        let (mut done, mut stalled) = (0usize, 0u32);
        while done < buf.len() {
            if stalled >= STALLED_ATTEMPTS_MAX {
                return Err(self.io_error(offset + done as u64, stalled_error()));
            }
            let before = done;
            let rest = &buf[done..];
            // SAFETY: rest is a valid readable region of rest.len() bytes.
            let n = unsafe {
                libc::pwrite(self.fd, rest.as_ptr().cast(), rest.len(), (offset + done as u64) as i64)
            };
            if n > 0 {
                done = advance_aligned(done, n as usize);
            } else {
                let err = io::Error::last_os_error();
                if n == 0 || !matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
                    return Err(self.io_error(offset + done as u64, err));
                }
            }
            stalled = if done == before { stalled + 1 } else { 0 };
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // SAFETY: fd is open.
        if unsafe { libc::fdatasync(self.fd) } != 0 {
            return Err(self.io_error(0, io::Error::last_os_error()));
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "pread/pwrite"
    }
}

/// Attempts of one transfer in a row that move it by no whole 4 KiB unit (`EINTR`,
/// `EAGAIN`, a short transfer under one unit) before it fails: a device that keeps doing
/// that ends in an error, not a spin.
pub use crate::limits::STALLED_ATTEMPTS_MAX;

pub(crate) fn stalled_error() -> io::Error {
    io::Error::other(format!(
        "no progress in {STALLED_ATTEMPTS_MAX} attempts (EINTR, EAGAIN or short transfers)"
    ))
}

/// After a short transfer, continue from the last aligned offset: direct I/O must stay
/// aligned, and redoing a partial unit is harmless.
pub(crate) fn advance_aligned(done: usize, transferred: usize) -> usize {
    let next = (done + transferred) / IO_ALIGN * IO_ALIGN;
    if next == done {
        // Less than one unit moved: retry the same unit rather than spin on a misaligned tail.
        done
    } else {
        next
    }
}

/// Creates (or extends) a regular file of `size_bytes` for development devices. Refuses
/// to shrink an existing file.
pub fn create_file(path: &Path, size_bytes: u64) -> Result<PathBuf> {
    let open_err = |reason: String| Error::Open { path: path.to_path_buf(), reason };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| open_err(e.to_string()))?;
    let current = file.metadata().map_err(|e| open_err(e.to_string()))?.len();
    if current > size_bytes {
        return Err(open_err(format!("file is already {current} bytes, larger than {size_bytes}")));
    }
    file.set_len(size_bytes).map_err(|e| open_err(e.to_string()))?;
    Ok(path.to_path_buf())
}
