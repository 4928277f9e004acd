//! The io_uring backend: one ring per calling thread, shared by every device that thread
//! uses (the ring does not care which file an SQE names).
//!
//! A thread pushes its SQEs, submits and waits for their completions in one
//! `io_uring_enter`, and reaps them itself: no lock, no helper thread, no wake-up hop. A
//! batch (`read_many`) is one submission of many SQEs, so a cold-start scan or a batch get
//! keeps many I/Os in flight from one thread. An idle thread costs nothing: it is not in
//! the kernel unless it waits for its own I/O.
//!
//! Cost per I/O: one `io_uring_enter` (submit and wait), no allocation for a single read
//! or write. SQEs in flight per ring are bounded by [`QUEUE_DEPTH`].
//!
//! A short completion or `-EAGAIN` resubmits the remainder from the last aligned offset.
//! A thread whose ring cannot be set up (locked-memory limit) falls back to `pread`/`pwrite`
//! for that call.

use super::file::{advance_aligned, stalled_error, FileDevice, STALLED_ATTEMPTS_MAX};
use super::{assert_aligned, read_stream_one_by_one, Device, ReadRequest, StreamRead};
use crate::error::{Error, Result};
use io_uring::{opcode, squeue, types, IoUring};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;

/// Pause between two attempts to wait out in-flight SQEs on a ring that returned an error.
const DRAIN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(1);

/// SQ entries per ring, and the bound on I/Os in flight per call.
pub const QUEUE_DEPTH: u32 = 128;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

pub struct UringDevice {
    file: FileDevice,
}

enum Op {
    Read(*mut u8),
    Write(*const u8),
}

struct Transfer {
    op: Op,
    len: usize,
    offset: u64,
    done_bytes: usize,
}

/// Runs `f` with this thread's ring, creating it on first use; `None` if it cannot be set up.
fn with_ring<R>(f: impl FnOnce(&mut IoUring) -> R) -> Option<R> {
    RING.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.is_none() {
            *slot = Some(IoUring::new(QUEUE_DEPTH).ok()?);
        }
        slot.as_mut().map(f)
    })
}

impl UringDevice {
    /// Checks that io_uring works here (setting up this thread's ring); on failure hands
    /// the file back so the caller can fall back to `pread`/`pwrite`.
    pub fn new(file: FileDevice) -> std::result::Result<Self, (FileDevice, Error)> {
        let probe = RING.with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) if slot.is_none() => IoUring::new(QUEUE_DEPTH).map(|ring| *slot = Some(ring)),
            _ => Ok(()),
        });
        match probe {
            Ok(()) => Ok(UringDevice { file }),
            Err(err) => {
                let err = Error::Open { path: file.name().into(), reason: format!("io_uring setup: {err}") };
                Err((file, err))
            }
        }
    }

    /// Runs every transfer to completion on this thread's ring, resubmitting short or
    /// `EAGAIN` completions. Works in chunks of at most `QUEUE_DEPTH` on the stack: no
    /// allocation per call.
    fn run(&self, transfers: &mut [Transfer]) -> Result<()> {
        let mut chunk = [0usize; QUEUE_DEPTH as usize];
        let mut results = [0i32; QUEUE_DEPTH as usize];
        // Rounds in a row in which no transfer moved by a whole unit.
        let mut stalled = 0u32;
        loop {
            if stalled >= STALLED_ATTEMPTS_MAX {
                let t = transfers.iter().find(|t| t.done_bytes < t.len).unwrap_or(&transfers[0]);
                return Err(self.file.io_error(t.offset + t.done_bytes as u64, stalled_error()));
            }
            let progress_before: usize = transfers.iter().map(|t| t.done_bytes).sum();
            let mut len = 0;
            for (i, t) in transfers.iter().enumerate() {
                if t.done_bytes < t.len && len < chunk.len() {
                    chunk[len] = i;
                    len += 1;
                }
            }
            if len == 0 {
                return Ok(());
            }
            let chunk = &chunk[..len];
            match with_ring(|ring| self.submit_and_reap(ring, transfers, chunk, &mut results)) {
                Some(Ok(())) => {}
                Some(Err(err)) => return Err(self.file.io_error(transfers[chunk[0]].offset, err)),
                None => return self.run_blocking(transfers),
            }
            for (slot, &i) in chunk.iter().enumerate() {
                let transfer = &mut transfers[i];
                let at = transfer.offset + transfer.done_bytes as u64;
                match results[slot] {
                    n if n > 0 => transfer.done_bytes = advance_aligned(transfer.done_bytes, n as usize),
                    0 => {
                        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "zero-length transfer");
                        return Err(self.file.io_error(at, eof));
                    }
                    e if -e == libc::EAGAIN || -e == libc::EINTR => {}
                    e => return Err(self.file.io_error(at, io::Error::from_raw_os_error(-e))),
                }
            }
            let progress_after: usize = transfers.iter().map(|t| t.done_bytes).sum();
            stalled = if progress_after == progress_before { stalled + 1 } else { 0 };
        }
    }

    /// Pushes one SQE per transfer of `chunk`, submits, and waits until all complete.
    /// On return no SQE of this call is in flight, so the buffers may be released.
    fn submit_and_reap(
        &self,
        ring: &mut IoUring,
        transfers: &[Transfer],
        chunk: &[usize],
        results: &mut [i32],
    ) -> io::Result<()> {
        let fd = types::Fd(self.file.fd());
        {
            let mut sq = ring.submission();
            for (slot, &i) in chunk.iter().enumerate() {
                let t = &transfers[i];
                let rest = (t.len - t.done_bytes) as u32;
                let at = t.offset + t.done_bytes as u64;
                let entry: squeue::Entry = match t.op {
                    // SAFETY (pointer arithmetic): done_bytes < len, inside the caller's buffer.
                    Op::Read(ptr) => {
                        opcode::Read::new(fd, unsafe { ptr.add(t.done_bytes) }, rest).offset(at).build()
                    }
                    Op::Write(ptr) => {
                        opcode::Write::new(fd, unsafe { ptr.add(t.done_bytes) }, rest).offset(at).build()
                    }
                };
                // SAFETY: the buffers outlive the I/O: this function returns only after every
                // SQE pushed here has completed. The chunk is at most QUEUE_DEPTH and the ring
                // is empty on entry, so there is room.
                if unsafe { sq.push(&entry.user_data(slot as u64)) }.is_err() {
                    return Err(io::Error::other("io_uring submission queue full"));
                }
            }
        }
        let mut outstanding = chunk.len();
        let mut submitted = false;
        while outstanding > 0 {
            let wait = if submitted {
                ring.submitter().submit_and_wait(1)
            } else {
                ring.submit_and_wait(outstanding)
            };
            match wait {
                Ok(_) => submitted = true,
                Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(err) => {
                    // The SQEs may be in flight: wait them out before giving the buffers back.
                    if submitted {
                        Self::drain(ring, &mut outstanding, results);
                    }
                    return Err(err);
                }
            }
            Self::reap(ring, &mut outstanding, results);
        }
        Ok(())
    }

    fn reap(ring: &mut IoUring, outstanding: &mut usize, results: &mut [i32]) {
        for cqe in ring.completion() {
            if let Some(result) = results.get_mut(cqe.user_data() as usize) {
                *result = cqe.result();
                *outstanding -= 1;
            }
        }
    }

    /// Waits out SQEs in flight after a hard error: their buffers cannot be given back
    /// before the kernel is done with them, so this cannot give up; it backs off instead
    /// of spinning while the ring keeps refusing.
    fn drain(ring: &mut IoUring, outstanding: &mut usize, results: &mut [i32]) {
        while *outstanding > 0 {
            if ring.submitter().submit_and_wait(1).is_err() {
                std::thread::sleep(DRAIN_BACKOFF);
            }
            Self::reap(ring, outstanding, results);
        }
    }

    /// The same transfers through `pread`/`pwrite`, for a thread without a ring.
    fn run_blocking(&self, transfers: &mut [Transfer]) -> Result<()> {
        for t in transfers.iter_mut().filter(|t| t.done_bytes < t.len) {
            let (rest, at) = (t.len - t.done_bytes, t.offset + t.done_bytes as u64);
            match t.op {
                // SAFETY: the caller's buffer spans `len` bytes from the pointer.
                Op::Read(ptr) => self
                    .file
                    .read_at(unsafe { std::slice::from_raw_parts_mut(ptr.add(t.done_bytes), rest) }, at)?,
                // SAFETY: as above.
                Op::Write(ptr) => self
                    .file
                    .write_at(unsafe { std::slice::from_raw_parts(ptr.add(t.done_bytes), rest) }, at)?,
            }
            t.done_bytes = t.len;
        }
        Ok(())
    }
}

impl Device for UringDevice {
    fn name(&self) -> &str {
        self.file.name()
    }

    fn size_bytes(&self) -> u64 {
        self.file.size_bytes()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        assert_aligned(buf.as_ptr() as usize, buf.len(), offset);
        self.file.check_range(buf.len(), offset)?;
        self.run(&mut [Transfer { op: Op::Read(buf.as_mut_ptr()), len: buf.len(), offset, done_bytes: 0 }])
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        assert_aligned(buf.as_ptr() as usize, buf.len(), offset);
        self.file.check_range(buf.len(), offset)?;
        self.run(&mut [Transfer { op: Op::Write(buf.as_ptr()), len: buf.len(), offset, done_bytes: 0 }])
    }

    fn read_many(&self, requests: &mut [ReadRequest<'_>]) -> Result<()> {
        let mut transfers = Vec::with_capacity(requests.len());
        for request in requests.iter_mut() {
            assert_aligned(request.buf.as_ptr() as usize, request.buf.len(), request.offset);
            self.file.check_range(request.buf.len(), request.offset)?;
            transfers.push(Transfer {
                op: Op::Read(request.buf.as_mut_ptr()),
                len: request.buf.len(),
                offset: request.offset,
                done_bytes: 0,
            });
        }
        self.run(&mut transfers)
    }

    fn sync(&self) -> Result<()> {
        self.file.sync()
    }

    fn read_stream(
        &self,
        depth: usize,
        next: &mut dyn FnMut() -> Result<Option<StreamRead>>,
        done: &mut dyn FnMut(StreamRead) -> Result<()>,
    ) -> Result<()> {
        let depth = depth.clamp(1, QUEUE_DEPTH as usize);
        // A ring of its own: the stream calls back into the caller, which may do I/O on
        // this thread's ring meanwhile.
        match IoUring::new(depth as u32) {
            Ok(mut ring) => self.stream(&mut ring, depth, next, done),
            Err(_) => read_stream_one_by_one(self, next, done),
        }
    }

    fn backend(&self) -> &'static str {
        "io_uring"
    }
}

/// A read of a stream between `next` and `done`.
struct StreamSlot {
    read: StreamRead,
    done_bytes: usize,
    /// The kernel is done with the buffer (read complete, or abandoned after an error).
    finished: bool,
}

impl UringDevice {
    /// [`Device::read_stream`] on `ring`. The window holds the reads in the order `next`
    /// gave them; a CQE's user data is its read's sequence number, `first_seq` that of the
    /// window's head. Reads finish in any order; `done` gets them from the head only.
    fn stream(
        &self,
        ring: &mut IoUring,
        depth: usize,
        next: &mut dyn FnMut() -> Result<Option<StreamRead>>,
        done: &mut dyn FnMut(StreamRead) -> Result<()>,
    ) -> Result<()> {
        let mut window: VecDeque<StreamSlot> = VecDeque::with_capacity(depth);
        let mut first_seq = 0u64;
        let mut in_flight = 0usize;
        let mut failure: Option<Error> = None;
        let mut exhausted = false;
        let mut reaped: Vec<(u64, i32)> = Vec::with_capacity(depth);
        loop {
            while window.front().is_some_and(|slot| slot.finished) {
                let Some(slot) = window.pop_front() else { break };
                first_seq += 1;
                if failure.is_none() {
                    failure = done(slot.read).err();
                }
            }
            while failure.is_none() && !exhausted && window.len() < depth {
                match next() {
                    Ok(Some(read)) => {
                        if let Err(err) = self.check_stream_read(&read) {
                            failure = Some(err);
                            break;
                        }
                        let seq = first_seq + window.len() as u64;
                        let empty = read.len == 0;
                        window.push_back(StreamSlot { read, done_bytes: 0, finished: empty });
                        if let Some(slot) = window.back_mut().filter(|_| !empty) {
                            match self.push_stream_read(ring, slot, seq) {
                                Ok(()) => in_flight += 1,
                                Err(err) => {
                                    slot.finished = true;
                                    failure = Some(err);
                                }
                            }
                        }
                    }
                    Ok(None) => exhausted = true,
                    Err(err) => failure = Some(err),
                }
            }
            if in_flight == 0 {
                if failure.is_some() || window.is_empty() {
                    break;
                }
                continue; // finished reads wait at the head: deliver them
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(err) => {
                    // Reads may be in flight: keep waiting for them before the buffers go.
                    let offset = window.front().map_or(0, |slot| slot.read.offset);
                    failure.get_or_insert(self.file.io_error(offset, err));
                    // Not a spin: see `drain`.
                    std::thread::sleep(DRAIN_BACKOFF);
                }
            }
            reaped.clear();
            reaped.extend(ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
            for &(seq, result) in &reaped {
                let Some(slot) = seq.checked_sub(first_seq).and_then(|i| window.get_mut(i as usize)) else {
                    continue;
                };
                let at = slot.read.offset + slot.done_bytes as u64;
                let retry = match result {
                    n if n > 0 => {
                        slot.done_bytes = advance_aligned(slot.done_bytes, n as usize);
                        slot.done_bytes < slot.read.len
                    }
                    e if -e == libc::EAGAIN || -e == libc::EINTR => true,
                    0 => {
                        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "zero-length transfer");
                        failure.get_or_insert(self.file.io_error(at, eof));
                        false
                    }
                    e => {
                        failure.get_or_insert(self.file.io_error(at, io::Error::from_raw_os_error(-e)));
                        false
                    }
                };
                if retry && failure.is_none() {
                    match self.push_stream_read(ring, slot, seq) {
                        Ok(()) => continue,
                        Err(err) => failure = Some(err),
                    }
                }
                slot.finished = true;
                in_flight -= 1;
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn check_stream_read(&self, read: &StreamRead) -> Result<()> {
        assert!(
            read.len <= read.buf.len(),
            "stream read of {} bytes into a buffer of {}",
            read.len,
            read.buf.len()
        );
        assert_aligned(read.buf.as_ptr() as usize, read.len, read.offset);
        self.file.check_range(read.len, read.offset)
    }

    /// Queues the rest of `slot`'s read. There is room: the ring has `depth` entries and
    /// at most `depth` reads are in flight, each with at most one SQE queued.
    fn push_stream_read(&self, ring: &mut IoUring, slot: &mut StreamSlot, seq: u64) -> Result<()> {
        let rest = (slot.read.len - slot.done_bytes) as u32;
        // SAFETY (pointer arithmetic): done_bytes < len <= buffer length.
        let ptr = unsafe { slot.read.buf.as_mut_ptr().add(slot.done_bytes) };
        let entry = opcode::Read::new(types::Fd(self.file.fd()), ptr, rest)
            .offset(slot.read.offset + slot.done_bytes as u64)
            .build()
            .user_data(seq);
        // SAFETY: the buffer stays in the window, unmoved (AlignedBuf is a heap allocation
        // owned by the slot; moving the slot does not move the bytes), until its CQE is
        // reaped: `stream` returns only when no read is in flight.
        unsafe { ring.submission().push(&entry) }.map_err(|_| {
            self.file.io_error(slot.read.offset, io::Error::other("io_uring submission queue full"))
        })
    }
}
