//! The io_uring backend: one ring per device, shared by every calling thread.
//!
//! Callers push their SQEs under a short lock and submit; a reaper thread blocks in
//! `io_uring_enter` waiting for completions (it never spins) and wakes each caller by
//! `unpark`. A batch (`read_many`) is one submission of many SQEs, so a cold-start scan or
//! a batch get keeps several I/Os in flight from one thread.
//!
//! Cost per I/O: one lock to push, one `io_uring_enter` to submit, one wake-up; no
//! allocation for a single read or write. In-flight SQEs are bounded by [`QUEUE_DEPTH`] so
//! the completion queue (twice as large) can never overflow.
//!
//! A short completion or `-EAGAIN` resubmits the remainder from the last aligned offset.

use super::file::{advance_aligned, FileDevice};
use super::{assert_aligned, Device, ReadRequest};
use crate::error::{Error, Result};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle, Thread};

/// SQ entries per ring, and the bound on I/Os in flight per device.
pub const QUEUE_DEPTH: u32 = 128;
const SHUTDOWN_USER_DATA: u64 = 0;

pub struct UringDevice {
    file: FileDevice,
    ring: Arc<IoUring>,
    sq_lock: Mutex<()>,
    in_flight: Mutex<u32>,
    in_flight_freed: Condvar,
    reaper: Option<JoinHandle<()>>,
}

/// Where the reaper reports one completion; lives on the caller's stack (or in its batch
/// vector) until the caller has seen `done`.
struct Slot {
    result: AtomicI32,
    done: AtomicBool,
    waiter: Thread,
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

impl UringDevice {
    /// Sets up the ring; on failure hands the file back so the caller can fall back.
    pub fn new(file: FileDevice) -> std::result::Result<Self, (FileDevice, Error)> {
        let ring = match IoUring::new(QUEUE_DEPTH) {
            Ok(ring) => Arc::new(ring),
            Err(err) => {
                let err = Error::Open { path: file.name().into(), reason: format!("io_uring setup: {err}") };
                return Err((file, err));
            }
        };
        let reaper_ring = ring.clone();
        let reaper =
            thread::Builder::new().name("spike-uring-reaper".into()).spawn(move || reap(&reaper_ring));
        let reaper = match reaper {
            Ok(handle) => handle,
            Err(err) => {
                let err = Error::Open { path: file.name().into(), reason: format!("reaper thread: {err}") };
                return Err((file, err));
            }
        };
        Ok(UringDevice {
            file,
            ring,
            sq_lock: Mutex::new(()),
            in_flight: Mutex::new(0),
            in_flight_freed: Condvar::new(),
            reaper: Some(reaper),
        })
    }

    fn acquire(&self, count: u32) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while *in_flight + count > QUEUE_DEPTH {
            in_flight = self.in_flight_freed.wait(in_flight).unwrap_or_else(|e| e.into_inner());
        }
        *in_flight += count;
    }

    fn release(&self, count: u32) {
        *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) -= count;
        self.in_flight_freed.notify_all();
    }

    /// Runs every transfer to completion, resubmitting short or `EAGAIN` completions.
    /// Returns only once no SQE of ours is in flight, error or not.
    fn run(&self, transfers: &mut [Transfer], slots: &mut [Slot]) -> Result<()> {
        debug_assert_eq!(transfers.len(), slots.len());
        let mut first_error = None;
        loop {
            let pending: Vec<usize> =
                (0..transfers.len()).filter(|&i| transfers[i].done_bytes < transfers[i].len).collect();
            if pending.is_empty() || first_error.is_some() {
                return first_error.map_or(Ok(()), Err);
            }
            for chunk in pending.chunks(QUEUE_DEPTH as usize) {
                self.acquire(chunk.len() as u32);
                self.submit(transfers, slots, chunk);
                for &i in chunk {
                    let slot = &slots[i];
                    while !slot.done.load(Ordering::Acquire) {
                        thread::park();
                    }
                }
                self.release(chunk.len() as u32);
                for &i in chunk {
                    let transfer = &mut transfers[i];
                    let result = slots[i].result.load(Ordering::Relaxed);
                    let at = transfer.offset + transfer.done_bytes as u64;
                    match result {
                        n if n > 0 => transfer.done_bytes = advance_aligned(transfer.done_bytes, n as usize),
                        0 => {
                            let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "zero-length transfer");
                            first_error.get_or_insert(self.file.io_error(at, eof));
                        }
                        e if -e == libc::EAGAIN || -e == libc::EINTR => {}
                        e => {
                            first_error
                                .get_or_insert(self.file.io_error(at, io::Error::from_raw_os_error(-e)));
                        }
                    }
                }
            }
        }
    }

    fn submit(&self, transfers: &[Transfer], slots: &mut [Slot], chunk: &[usize]) {
        let fd = types::Fd(self.file.fd());
        let entries = chunk.iter().map(|&i| {
            let t = &transfers[i];
            let slot = &mut slots[i];
            slot.done.store(false, Ordering::Relaxed);
            let rest = (t.len - t.done_bytes) as u32;
            let at = t.offset + t.done_bytes as u64;
            let entry: squeue::Entry = match t.op {
                // SAFETY (pointer arithmetic): done_bytes < len, within the caller's buffer.
                Op::Read(ptr) => {
                    opcode::Read::new(fd, unsafe { ptr.add(t.done_bytes) }, rest).offset(at).build()
                }
                Op::Write(ptr) => {
                    opcode::Write::new(fd, unsafe { ptr.add(t.done_bytes) }, rest).offset(at).build()
                }
            };
            entry.user_data(slot as *const Slot as u64)
        });
        let guard = self.sq_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: sq_lock serialises all access to the submission queue.
        let mut sq = unsafe { self.ring.submission_shared() };
        for entry in entries {
            // SAFETY: buffers and slots outlive the I/O: `run` waits for every completion.
            // The in-flight bound (<= QUEUE_DEPTH) guarantees room in the SQ.
            while unsafe { sq.push(&entry) }.is_err() {
                sq.sync();
                let _ = self.ring.submitter().submit();
                sq.sync();
            }
        }
        sq.sync();
        drop(sq);
        drop(guard);
        submit_retrying(&self.ring);
    }
}

fn submit_retrying(ring: &IoUring) {
    loop {
        match ring.submitter().submit() {
            Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {
                thread::yield_now();
            }
            // Other errors surface as failed completions of the SQEs concerned.
            _ => return,
        }
    }
}

/// The reaper: blocks in the kernel until a completion arrives, then wakes its caller.
fn reap(ring: &IoUring) {
    loop {
        if let Err(err) = ring.submitter().submit_and_wait(1) {
            if !matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) {
                log::error!("io_uring wait failed: {err}");
                thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let mut shutdown = false;
        // SAFETY: the reaper is the only consumer of the completion queue.
        let cq = unsafe { ring.completion_shared() };
        for cqe in cq {
            if cqe.user_data() == SHUTDOWN_USER_DATA {
                shutdown = true;
                continue;
            }
            // SAFETY: user_data is the address of a Slot whose owner waits in `run` until
            // `done` is set; we touch it no more after setting `done`.
            let slot = unsafe { &*(cqe.user_data() as *const Slot) };
            slot.result.store(cqe.result(), Ordering::Relaxed);
            let waiter = slot.waiter.clone();
            slot.done.store(true, Ordering::Release);
            waiter.unpark();
        }
        if shutdown {
            return;
        }
    }
}

fn new_slot() -> Slot {
    Slot { result: AtomicI32::new(0), done: AtomicBool::new(false), waiter: thread::current() }
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
        let mut transfer =
            [Transfer { op: Op::Read(buf.as_mut_ptr()), len: buf.len(), offset, done_bytes: 0 }];
        self.run(&mut transfer, &mut [new_slot()])
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        assert_aligned(buf.as_ptr() as usize, buf.len(), offset);
        self.file.check_range(buf.len(), offset)?;
        let mut transfer = [Transfer { op: Op::Write(buf.as_ptr()), len: buf.len(), offset, done_bytes: 0 }];
        self.run(&mut transfer, &mut [new_slot()])
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
        let mut slots: Vec<Slot> = (0..transfers.len()).map(|_| new_slot()).collect();
        self.run(&mut transfers, &mut slots)
    }

    fn sync(&self) -> Result<()> {
        self.file.sync()
    }

    fn backend(&self) -> &'static str {
        "io_uring"
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        let nop = opcode::Nop::new().build().user_data(SHUTDOWN_USER_DATA);
        {
            let _guard = self.sq_lock.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: sq_lock held; a NOP references no memory.
            let mut sq = unsafe { self.ring.submission_shared() };
            while unsafe { sq.push(&nop) }.is_err() {
                sq.sync();
                let _ = self.ring.submitter().submit();
                sq.sync();
            }
        }
        submit_retrying(&self.ring);
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
    }
}
