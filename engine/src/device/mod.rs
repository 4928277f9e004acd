//! Device I/O: the one seam between the engine and storage.
//!
//! Owns: opening a path (`O_DIRECT`, exclusive lock, size and logical block probe),
//! the io_uring and `pread`/`pwrite` backends, the simulated device for tests, and
//! 4096-aligned buffers. Engine code never calls `libc` or `io_uring` outside this module.
//!
//! Invariants: every offset, length and buffer address handed to a backend is a multiple
//! of [`IO_ALIGN`] (checked by `assert_aligned`, on every call: a misaligned `O_DIRECT`
//! request fails with `EINVAL` far from its cause). A call returns only once the kernel is
//! done with the buffer, which is why the trait borrows buffers instead of taking them:
//! the borrow outlives the I/O.
//!
//! What a completed write promises: the bytes are in the device (not the page cache), but
//! possibly in its volatile cache; only `sync` makes them durable.

mod aligned;
mod file;
pub mod sim;
mod uring;

pub use aligned::AlignedBuf;
pub use file::{create_file, FileDevice, DEVICE_LOCK_WAIT_MS_MAX};
pub use uring::UringDevice;

use crate::error::Result;
use std::path::Path;
use std::sync::Arc;

/// Alignment of every direct I/O: offsets, lengths and buffer addresses.
pub use crate::limits::IO_ALIGN;
/// Torn-write granularity we assume of the media (and inject in the simulator).
pub const SECTOR_SIZE: usize = 512;
const _: () = assert!(IO_ALIGN % SECTOR_SIZE == 0);

/// One read of a batch: fill `buf` from `offset`.
pub struct ReadRequest<'a> {
    pub offset: u64,
    pub buf: &'a mut [u8],
}

/// One read of a stream ([`Device::read_stream`]): fill the first `len` bytes of `buf` from
/// `offset`. The stream owns the buffer while the read is in flight and hands it back
/// filled.
pub struct StreamRead {
    pub offset: u64,
    pub buf: AlignedBuf,
    pub len: usize,
}

/// A block device, a file, or a simulation of one.
pub trait Device: Send + Sync {
    /// Path or label, for error messages.
    fn name(&self) -> &str;
    /// Usable size in bytes, a multiple of [`IO_ALIGN`].
    fn size_bytes(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes every completed write durable.
    fn sync(&self) -> Result<()>;
    /// Reads a batch; backends that can keep several reads in flight override this.
    fn read_many(&self, requests: &mut [ReadRequest<'_>]) -> Result<()> {
        for request in requests.iter_mut() {
            self.read_at(request.buf, request.offset)?;
        }
        Ok(())
    }
    /// Reads what `next` asks for until it returns `None`, keeping up to `depth` reads in
    /// flight, and hands each back filled to `done`, in the order `next` produced them.
    /// `next` is called only when a slot is free, so it may block (waiting for a buffer to
    /// come back) as long as some buffer it handed to `done` earlier will come back without
    /// this thread's help. The first error (of `next`, a read or `done`) ends the stream and
    /// is returned once no read is in flight. Unlike [`Device::read_many`], the device never
    /// waits for a batch's slowest read: a finished read's slot is reused at once, which is
    /// what a whole-device scan needs to run at the device's sequential speed.
    fn read_stream(
        &self,
        depth: usize,
        next: &mut dyn FnMut() -> Result<Option<StreamRead>>,
        done: &mut dyn FnMut(StreamRead) -> Result<()>,
    ) -> Result<()> {
        let _ = depth;
        read_stream_one_by_one(self, next, done)
    }
    /// Which backend serves this device ("io_uring", "pread/pwrite", "simulated").
    fn backend(&self) -> &'static str;
}

/// Which I/O backend to use for real devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring where the kernel allows it, else `pread`/`pwrite` (logged once).
    #[default]
    Auto,
    Uring,
    Blocking,
}

/// Opens a block device or a regular file for direct I/O, locked exclusively.
pub fn open(path: &Path, backend: IoBackend) -> Result<Arc<dyn Device>> {
    let file = FileDevice::open(path)?;
    match backend {
        IoBackend::Blocking => Ok(Arc::new(file)),
        IoBackend::Uring => Ok(Arc::new(UringDevice::new(file).map_err(|(_, e)| e)?)),
        IoBackend::Auto => match UringDevice::new(file) {
            Ok(device) => Ok(Arc::new(device)),
            Err((file, err)) => {
                log_uring_fallback_once(&err);
                Ok(Arc::new(file))
            }
        },
    }
}

fn log_uring_fallback_once(err: &crate::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| log::warn!("io_uring unavailable ({err}); using pread/pwrite"));
}

/// [`Device::read_stream`] for backends without asynchronous reads: one read at a time.
pub(crate) fn read_stream_one_by_one<D: Device + ?Sized>(
    device: &D,
    next: &mut dyn FnMut() -> Result<Option<StreamRead>>,
    done: &mut dyn FnMut(StreamRead) -> Result<()>,
) -> Result<()> {
    while let Some(mut read) = next()? {
        let len = read.len;
        device.read_at(&mut read.buf[..len], read.offset)?;
        done(read)?;
    }
    Ok(())
}

#[track_caller]
pub(crate) fn assert_aligned(buf_addr: usize, len: usize, offset: u64) {
    assert!(
        buf_addr % IO_ALIGN == 0 && len % IO_ALIGN == 0 && offset % IO_ALIGN as u64 == 0,
        "unaligned direct I/O: buffer {buf_addr:#x}, length {len}, offset {offset}"
    );
}
