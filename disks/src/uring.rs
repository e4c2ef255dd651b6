//! The per-core io_uring driver: the production `Io`.
//!
//! One [`Uring`] per core, used only from that core's thread. Operations are pushed to the
//! submission queue as they are asked for and submitted in one `io_uring_enter` per turn of the
//! core's event loop (the [`UringDriver`] task does it), so a burst of requests costs one
//! syscall. Completions are signalled through an eventfd registered with the ring and watched by
//! the tokio runtime of the same thread, so one thread drives both network and disk.
//!
//! Ownership: an operation's resources (its buffer, the file it uses, the path strings) are
//! moved into a slot of the driver when the SQE is pushed and stay there until the CQE for it
//! has been reaped. If the future that asked is dropped first, the slot is marked orphaned and
//! its resources are dropped only when the completion arrives; dropping the driver itself waits
//! for every in-flight completion. The kernel therefore never touches freed memory.
//!
//! Buffers from the core's [`BufPool`] are registered with the ring when the memlock limit allows
//! (`io_uring_register(2)`, IORING_REGISTER_BUFFERS) and then moved with `READ_FIXED` /
//! `WRITE_FIXED`; other buffers use plain `READ`/`WRITE`.

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, squeue, types, IoUring};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::fd::{cstring, fstat_size, list_regular_files, open_flags, FdFile, FILE_MODE};
use crate::{is_aligned, AlignedBuf, BufPool, CacheMode, Error, Io, Op, OpenMode, Result};

/// Size of a pooled buffer: a 1 MiB write buffer, or a 1 MiB chunk read with the blocks
/// around it, or a whole record of a 1 MiB object (header, key, data, footer) in one read.
/// Reads that fit a pool buffer need no fresh memory and, registered, no page pinning.
pub const POOL_BUF_BYTES: usize = (1 << 20) + (64 << 10);

/// Settings of one core's ring.
#[derive(Debug, Clone)]
pub struct UringConfig {
    /// Submission queue entries (a power of two); the completion queue gets twice as many.
    pub sq_entries: u32,
    /// Most operations in flight at once (at most the completion queue size).
    pub ops_in_flight_max: usize,
    /// Size of each pooled buffer in bytes.
    pub pool_buf_size_bytes: usize,
    /// Number of pooled buffers.
    pub pool_buf_count: usize,
    /// O_DIRECT or (development only) buffered.
    pub cache: CacheMode,
    /// While fewer operations than this are in the kernel, a new one is submitted at once, so
    /// a burst of completions never leaves the device idle while the burst is processed;
    /// beyond it, operations wait for the driver's one batched submission per event-loop turn.
    pub eager_submit_below: u64,
    /// A batch is submitted as soon as it holds this many operations, without waiting for the
    /// end of the turn, so the device never waits for a long burst of completions to be
    /// processed.
    pub submit_batch_max: u64,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            sq_entries: 256,
            ops_in_flight_max: 256,
            pool_buf_size_bytes: POOL_BUF_BYTES,
            pool_buf_count: 32,
            cache: CacheMode::Direct,
            eager_submit_below: 8,
            submit_batch_max: 4,
        }
    }
}

/// What an operation keeps alive until its completion (held, never read, by the slot).
#[allow(dead_code)]
enum Keep {
    File(FdFile),
    Buf(AlignedBuf, FdFile),
    Path(CString),
    Paths(CString, CString),
    /// Bytes a zero-copy send reads from, until the kernel's notification.
    Data(Box<dyn AsRef<[u8]>>),
    /// Handed back already (a zero-copy send keeps its data in the slot until notified).
    Nothing,
}

/// `IORING_SEND_ZC_REPORT_USAGE`: the notification says whether the kernel had to copy.
const SEND_ZC_REPORT_USAGE: u16 = 8;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, in a notification's result.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

enum SlotState {
    Waiting(Option<Waker>),
    Done(i32),
    /// A zero-copy send completed; its data stays referenced until the notification.
    DoneNotifPending(i32),
    /// The asking future is gone; drop the resources when the completion arrives.
    Orphaned,
}

struct Slot {
    state: SlotState,
    keep: Keep,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    in_flight: usize,
}

impl Slots {
    fn insert(&mut self, slot: Slot) -> usize {
        self.in_flight += 1;
        if let Some(i) = self.free.pop() {
            self.slots[i] = Some(slot);
            i
        } else {
            self.slots.push(Some(slot));
            self.slots.len() - 1
        }
    }

    fn remove(&mut self, i: usize) -> Slot {
        let slot = self.slots[i].take().expect("slot in use");
        self.free.push(i);
        self.in_flight -= 1;
        slot
    }
}

struct Driver {
    // Field order matters: the ring (and its buffer registration) is dropped before the pool.
    ring: RefCell<IoUring>,
    slots: RefCell<Slots>,
    eventfd: AsyncFd<OwnedFd>,
    kick: Notify,
    slot_freed: Notify,
    pending_submit: Cell<bool>,
    /// Operations submitted to the kernel and not yet reaped.
    in_kernel: Cell<u64>,
    /// Operations queued since the last submission.
    pending_count: Cell<u64>,
    cfg: UringConfig,
    pool: BufPool,
    stats: Cell<UringStats>,
}

/// Counters of one ring, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringStats {
    /// `io_uring_enter` calls that submitted something.
    pub submit_calls: u64,
    /// SQEs submitted.
    pub ops_submitted: u64,
    /// CQEs reaped.
    pub completions: u64,
    /// Times the driver looked for completions.
    pub wakeups: u64,
    /// Zero-copy sends whose notification arrived ...
    pub zc_notified: u64,
    /// ... of which the kernel copied the data anyway (loopback, veth, no NIC support).
    pub zc_copied: u64,
}

/// The per-core io_uring `Io`. Cheap to clone (a shared handle to the core's driver).
#[derive(Clone)]
pub struct Uring {
    d: Rc<Driver>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("cfg", &self.d.cfg)
            .field("buffers_registered", &self.d.pool.is_registered())
            .finish()
    }
}

/// The task that submits batched SQEs and reaps completions; spawn it on the core's `LocalSet`.
#[derive(Debug)]
pub struct UringDriver {
    io: Uring,
}

impl Uring {
    /// Creates the ring, registers the eventfd and (if memlock allows) the buffer pool.
    /// Must be called inside a tokio runtime (the eventfd is registered with it).
    pub fn new(cfg: UringConfig) -> Result<(Uring, UringDriver)> {
        assert!(cfg.sq_entries.is_power_of_two());
        assert!(cfg.ops_in_flight_max as u32 <= cfg.sq_entries * 2);
        let ring = IoUring::builder()
            .setup_cqsize(cfg.sq_entries * 2)
            .build(cfg.sq_entries)
            .map_err(|e| Error::UringUnavailable(e.to_string()))?;
        // SAFETY: plain syscall; the flags make the fd non-blocking and close-on-exec.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::UringUnavailable(format!("eventfd: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: efd was just created and is owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter()
            .register_eventfd(efd.as_raw_fd())
            .map_err(|e| Error::UringUnavailable(format!("register eventfd: {e}")))?;
        // SAFETY: the AsyncFd owns the eventfd, which nothing else closes or hands out, so the
        // descriptor stays valid and unique while it is registered with the runtime.
        let eventfd = unsafe { AsyncFd::register(efd) }
            .map_err(|e| Error::UringUnavailable(format!("watch eventfd (no tokio runtime?): {e}")))?;
        let pool = BufPool::new(cfg.pool_buf_size_bytes, cfg.pool_buf_count);
        let iovecs = pool.iovecs();
        // SAFETY: the iovecs describe the pool's single allocation, which lives as long as the
        // driver (the pool is a field dropped after the ring, and buffers keep it alive), so the
        // registration never outlives the memory.
        match unsafe { ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => pool.set_registered(true),
            Err(e) => tracing::info!(
                "io_uring: buffer pool of {} bytes not registered ({e}); using unregistered buffers \
                 (raise LimitMEMLOCK or grant CAP_IPC_LOCK to register)",
                cfg.pool_buf_size_bytes * cfg.pool_buf_count
            ),
        }
        let d = Rc::new(Driver {
            ring: RefCell::new(ring),
            slots: RefCell::new(Slots::default()),
            eventfd,
            kick: Notify::new(),
            slot_freed: Notify::new(),
            pending_submit: Cell::new(false),
            in_kernel: Cell::new(0),
            pending_count: Cell::new(0),
            cfg,
            pool,
            stats: Cell::new(UringStats::default()),
        });
        let io = Uring { d };
        Ok((io.clone(), UringDriver { io }))
    }

    /// The core's buffer pool (registered with this ring when possible).
    pub fn pool(&self) -> &BufPool {
        &self.d.pool
    }

    /// Counters of this ring.
    pub fn stats(&self) -> UringStats {
        self.d.stats.get()
    }

    /// Operations pushed or in flight whose completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.d.slots.borrow().in_flight
    }

    /// Pushes one SQE whose resources are `keep` and waits for its completion.
    async fn submit(&self, entry: squeue::Entry, keep: Keep) -> (i32, Keep) {
        loop {
            let freed = self.d.slot_freed.notified();
            if self.d.slots.borrow().in_flight < self.d.cfg.ops_in_flight_max {
                break;
            }
            freed.await;
        }
        let idx = self.d.slots.borrow_mut().insert(Slot { state: SlotState::Waiting(None), keep });
        let entry = entry.user_data(idx as u64);
        {
            let mut ring = self.d.ring.borrow_mut();
            loop {
                // SAFETY: every pointer in `entry` refers to memory held in slot `idx` (buffer,
                // path strings, file descriptor), which stays alive until its CQE is reaped.
                let pushed = unsafe { ring.submission().push(&entry) };
                if pushed.is_ok() {
                    break;
                }
                // Submission queue full: hand what is queued to the kernel now.
                match ring.submit() {
                    Ok(n) => self.d.in_kernel.set(self.d.in_kernel.get() + n as u64),
                    Err(e) => tracing::warn!("io_uring submit: {e}"),
                }
            }
        }
        self.d.pending_submit.set(true);
        self.d.pending_count.set(self.d.pending_count.get() + 1);
        if self.d.in_kernel.get() < self.d.cfg.eager_submit_below
            || self.d.pending_count.get() >= self.d.cfg.submit_batch_max
        {
            // The device is nearly idle: hand the operation over now (see eager_submit_below).
            self.d.submit_pending();
        } else {
            self.d.kick.notify_one();
        }
        OpFuture { d: self.d.clone(), idx, done: false }.await
    }

    async fn rw(&self, op: Op, file: &FdFile, offset: u64, mut buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        let want = match op {
            Op::Read => buf.len(),
            _ => buf.len(),
        };
        assert!(is_aligned(offset) && is_aligned(want as u64), "unaligned {op} {offset}+{want}");
        let mut done = 0usize;
        while done < want {
            let ptr = buf.as_mut_ptr();
            // SAFETY: done < want <= capacity, so the pointer stays inside the buffer.
            let at = unsafe { ptr.add(done) };
            let len = (want - done) as u32;
            let pos = offset + done as u64;
            let fd = types::Fd(file.raw());
            let entry = match (op, buf.registered_index()) {
                (Op::Read, Some(i)) => opcode::ReadFixed::new(fd, at, len, i).offset(pos).build(),
                (Op::Read, None) => opcode::Read::new(fd, at, len).offset(pos).build(),
                (_, Some(i)) => opcode::WriteFixed::new(fd, at, len, i).offset(pos).build(),
                (_, None) => opcode::Write::new(fd, at, len).offset(pos).build(),
            };
            let (res, keep) = self.submit(entry, Keep::Buf(buf, file.clone())).await;
            buf = match keep {
                Keep::Buf(b, _) => b,
                _ => unreachable!("a read/write slot keeps its buffer"),
            };
            if res < 0 {
                if op == Op::Read {
                    buf.set_len(0);
                }
                return (Err(Error::io(op, file.path(), pos, std::io::Error::from_raw_os_error(-res))), buf);
            }
            if res == 0 {
                if op == Op::Read {
                    break; // end of file
                }
                return (Err(Error::Short { op, path: file.path().into(), offset, done, wanted: want }), buf);
            }
            done += res as usize;
            if op == Op::Read && !is_aligned(done as u64) {
                break; // a short, unaligned read only happens at end of file
            }
        }
        if op == Op::Read {
            buf.set_len(done);
        }
        (Ok(()), buf)
    }

    /// Sends `data[offset..]` on the connected socket `fd` with `IORING_OP_SEND_ZC`: the
    /// kernel reads the bytes in place, and `data` is kept alive in the ring until the
    /// kernel's notification says it is done with them (possibly after this returns).
    /// Returns the bytes sent, which may be fewer than offered.
    pub async fn send_zc<T: AsRef<[u8]> + 'static>(
        &self,
        fd: &impl AsRawFd,
        data: T,
        offset: usize,
    ) -> std::io::Result<usize> {
        let data: Box<dyn AsRef<[u8]>> = Box::new(data);
        let bytes = (*data).as_ref();
        assert!(offset <= bytes.len());
        let len = (bytes.len() - offset).min(u32::MAX as usize) as u32;
        // The boxed value does not move, so this points into memory the slot keeps.
        let ptr = bytes[offset..].as_ptr();
        let entry = opcode::SendZc::new(types::Fd(fd.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .zc_flags(SEND_ZC_REPORT_USAGE)
            .build();
        let (res, _) = self.submit(entry, Keep::Data(data)).await;
        if res < 0 {
            return Err(std::io::Error::from_raw_os_error(-res));
        }
        Ok(res as usize)
    }

    async fn simple(&self, op: Op, path: &Path, entry: squeue::Entry, keep: Keep) -> Result<i32> {
        let (res, _keep) = self.submit(entry, keep).await;
        if res < 0 {
            return Err(Error::io(op, path, 0, std::io::Error::from_raw_os_error(-res)));
        }
        Ok(res)
    }
}

struct OpFuture {
    d: Rc<Driver>,
    idx: usize,
    done: bool,
}

impl Future for OpFuture {
    type Output = (i32, Keep);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(i32, Keep)> {
        let mut slots = self.d.slots.borrow_mut();
        let slot = slots.slots[self.idx].as_mut().expect("own slot");
        match &mut slot.state {
            SlotState::Done(res) => {
                let res = *res;
                let slot = slots.remove(self.idx);
                drop(slots);
                self.done = true;
                self.d.slot_freed.notify_one();
                Poll::Ready((res, slot.keep))
            }
            SlotState::DoneNotifPending(res) => {
                // The result is ready; the data stays in the slot until the notification.
                let res = *res;
                slot.state = SlotState::Orphaned;
                drop(slots);
                self.done = true;
                Poll::Ready((res, Keep::Nothing))
            }
            SlotState::Waiting(w) => {
                *w = Some(cx.waker().clone());
                Poll::Pending
            }
            SlotState::Orphaned => unreachable!("a live future's slot is never orphaned"),
        }
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut slots = self.d.slots.borrow_mut();
        let finished = matches!(slots.slots[self.idx].as_ref().map(|s| &s.state), Some(SlotState::Done(_)));
        if finished {
            slots.remove(self.idx);
            drop(slots);
            self.d.slot_freed.notify_one();
        } else if let Some(slot) = slots.slots[self.idx].as_mut() {
            // The kernel still owns the resources: keep them in the slot until the CQE.
            slot.state = SlotState::Orphaned;
        }
    }
}

impl Driver {
    fn submit_pending(&self) {
        if !self.pending_submit.replace(false) {
            return;
        }
        let ring = self.ring.borrow();
        match ring.submit() {
            Ok(n) => {
                self.in_kernel.set(self.in_kernel.get() + n as u64);
                self.pending_count.set(0);
                let mut s = self.stats.get();
                s.submit_calls += 1;
                s.ops_submitted += n as u64;
                self.stats.set(s);
            }
            Err(e) => {
                // EBUSY/EAGAIN: the completion queue is backed up; retry after reaping.
                tracing::debug!("io_uring submit: {e}");
                self.pending_submit.set(true);
            }
        }
    }

    /// Reaps every available completion; returns how many.
    fn reap(&self) -> u64 {
        let mut ring = self.ring.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        let mut n = 0u64;
        let mut freed = false;
        let mut stats = self.stats.get();
        for cqe in ring.completion() {
            n += 1;
            let idx = cqe.user_data() as usize;
            let flags = cqe.flags();
            let slot = slots.slots[idx].as_mut().expect("completion for a live slot");
            if io_uring::cqueue::notif(flags) {
                // The second completion of a zero-copy send: the kernel is done with the data.
                stats.zc_notified += 1;
                if cqe.result() as u32 & NOTIF_USAGE_ZC_COPIED != 0 {
                    stats.zc_copied += 1;
                }
                match std::mem::replace(&mut slot.state, SlotState::Orphaned) {
                    SlotState::Orphaned => {
                        slots.remove(idx);
                        freed = true;
                    }
                    // Notified before the asking future looked: it finishes normally.
                    SlotState::DoneNotifPending(res) => slot.state = SlotState::Done(res),
                    _ => unreachable!("a notification follows a completion"),
                }
                continue;
            }
            self.in_kernel.set(self.in_kernel.get().saturating_sub(1));
            let done = if io_uring::cqueue::more(flags) {
                SlotState::DoneNotifPending(cqe.result())
            } else {
                SlotState::Done(cqe.result())
            };
            match std::mem::replace(&mut slot.state, done) {
                SlotState::Waiting(Some(w)) => w.wake(),
                SlotState::Waiting(None) => {}
                SlotState::Orphaned => {
                    if matches!(slot.state, SlotState::DoneNotifPending(_)) {
                        slot.state = SlotState::Orphaned; // still waiting for the notification
                    } else {
                        slots.remove(idx); // drops the resources now that the kernel is done
                        freed = true;
                    }
                }
                SlotState::Done(_) | SlotState::DoneNotifPending(_) => {
                    unreachable!("one completion per operation")
                }
            }
        }
        self.stats.set(stats);
        drop(slots);
        drop(ring);
        if freed {
            self.slot_freed.notify_one();
        }
        let mut s = self.stats.get();
        s.completions += n;
        s.wakeups += 1;
        self.stats.set(s);
        n
    }

    fn drain_eventfd(&self) {
        let mut v = 0u64;
        // SAFETY: reading 8 bytes into a u64 from our own non-blocking eventfd.
        let _ = unsafe { libc::read(self.eventfd.get_ref().as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The kernel may still own buffers of in-flight operations: wait for every completion
        // before the ring and the memory go away.
        loop {
            let _ = self.reap();
            if self.slots.borrow().in_flight == 0 {
                break;
            }
            let _ = self.ring.borrow().submit_and_wait(1);
        }
    }
}

impl UringDriver {
    /// Runs until the runtime stops: submits queued SQEs once per turn, reaps completions when
    /// the eventfd fires.
    pub async fn run(self) {
        let d = &self.io.d;
        loop {
            d.submit_pending();
            if d.reap() > 0 {
                // Let the tasks just woken run and queue their next operations, then submit
                // them in one call before sleeping: completions and submissions stay in step.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                guard = d.eventfd.readable() => {
                    if let Ok(mut g) = guard {
                        g.clear_ready();
                    }
                    d.drain_eventfd();
                }
                _ = d.kick.notified() => {}
            }
        }
    }
}

impl Io for Uring {
    type File = FdFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> Result<FdFile> {
        let c = cstring(Op::Open, path)?;
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr())
            .flags(open_flags(mode, self.d.cfg.cache))
            .mode(FILE_MODE)
            .build();
        let fd = self.simple(Op::Open, path, entry, Keep::Path(c)).await?;
        Ok(FdFile::from_raw(fd, path))
    }

    async fn allocate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        let entry = opcode::Fallocate::new(types::Fd(file.raw()), len_bytes).offset(0).mode(0).build();
        self.simple(Op::Allocate, file.path(), entry, Keep::File(file.clone())).await.map(|_| ())
    }

    async fn read_at(&self, file: &FdFile, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        self.rw(Op::Read, file, offset, buf).await
    }

    async fn write_at(&self, file: &FdFile, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        self.rw(Op::Write, file, offset, buf).await
    }

    async fn sync_data(&self, file: &FdFile) -> Result<()> {
        let entry = opcode::Fsync::new(types::Fd(file.raw())).flags(types::FsyncFlags::DATASYNC).build();
        self.simple(Op::Sync, file.path(), entry, Keep::File(file.clone())).await.map(|_| ())
    }

    async fn truncate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        let entry = opcode::Ftruncate::new(types::Fd(file.raw()), len_bytes).build();
        self.simple(Op::Truncate, file.path(), entry, Keep::File(file.clone())).await.map(|_| ())
    }

    async fn file_size(&self, file: &FdFile) -> Result<u64> {
        fstat_size(file)
    }

    async fn remove(&self, path: &Path) -> Result<()> {
        let c = cstring(Op::Remove, path)?;
        let entry = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr()).build();
        self.simple(Op::Remove, path, entry, Keep::Path(c)).await.map(|_| ())
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let a = cstring(Op::Rename, from)?;
        let b = cstring(Op::Rename, to)?;
        let entry = opcode::RenameAt::new(
            types::Fd(libc::AT_FDCWD),
            a.as_ptr(),
            types::Fd(libc::AT_FDCWD),
            b.as_ptr(),
        )
        .build();
        self.simple(Op::Rename, from, entry, Keep::Paths(a, b)).await.map(|_| ())
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        let c = cstring(Op::SyncDir, dir)?;
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr())
            .flags(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .build();
        let fd = self.simple(Op::SyncDir, dir, entry, Keep::Path(c)).await?;
        let f = FdFile::from_raw(fd, dir);
        let entry = opcode::Fsync::new(types::Fd(f.raw())).build();
        self.simple(Op::SyncDir, dir, entry, Keep::File(f)).await.map(|_| ())
    }

    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        list_regular_files(dir)
    }

    async fn alloc_buf(&self, capacity_bytes: usize) -> AlignedBuf {
        crate::any::take_buf(self.pool(), capacity_bytes).await
    }
}
