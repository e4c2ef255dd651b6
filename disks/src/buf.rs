//! 4096-aligned I/O buffers and the per-core pool of registered ones.
//!
//! Every O_DIRECT transfer uses an [`AlignedBuf`]: its address and capacity are multiples of
//! [`ALIGN`]. A buffer either comes from the heap (any size) or from a [`BufPool`], whose buffers
//! are carved from one allocation so the io_uring driver can register them once with the ring
//! and use `READ_FIXED`/`WRITE_FIXED`. A pool buffer goes back to its pool when dropped.
//!
//! Buffers are moved into an I/O operation and handed back by it: while the kernel may touch a
//! buffer, nothing else holds it (see `uring.rs`).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

use tokio::sync::Notify;

/// Alignment of every O_DIRECT buffer, offset and length, in bytes.
pub const ALIGN: usize = 4096;

/// Rounds `n` up to a multiple of [`ALIGN`].
pub const fn align_up(n: u64) -> u64 {
    (n + ALIGN as u64 - 1) & !(ALIGN as u64 - 1)
}

/// Whether `n` is a multiple of [`ALIGN`].
pub const fn is_aligned(n: u64) -> bool {
    n.is_multiple_of(ALIGN as u64)
}

enum Origin {
    Heap,
    Pool { pool: Rc<PoolShared>, index: u16 },
}

/// An owned, 4096-aligned byte buffer with a capacity and a filled length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
    origin: Origin,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .field("registered", &self.registered_index())
            .finish()
    }
}

impl AlignedBuf {
    /// A heap buffer of at least `capacity_bytes` (rounded up to [`ALIGN`], at least one
    /// block; large ones to a multiple of [`HEAP_CLASS_BYTES`]), with length 0. Its bytes are
    /// initialised: zeroed when freshly allocated, earlier contents when it is a reused spare
    /// (like a pool buffer).
    pub fn new(capacity_bytes: usize) -> AlignedBuf {
        let mut capacity = (align_up(capacity_bytes.max(1) as u64)) as usize;
        if capacity >= HEAP_CLASS_BYTES {
            capacity = capacity.div_ceil(HEAP_CLASS_BYTES) * HEAP_CLASS_BYTES;
            let spare =
                SPARES.with(|s| s.borrow_mut().take(capacity)).or_else(|| shared_spares().take(capacity));
            if let Some(ptr) = spare {
                return AlignedBuf { ptr, capacity, len: 0, origin: Origin::Heap };
            }
        }
        let layout = Layout::from_size_align(capacity, ALIGN).expect("aligned layout is valid");
        // SAFETY: the layout has a non-zero size (capacity >= ALIGN).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, capacity, len: 0, origin: Origin::Heap }
    }

    /// Capacity in bytes (a multiple of [`ALIGN`]).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Filled length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the filled length. Bytes up to `capacity` are always initialised (zeroed at
    /// allocation, earlier contents when reused), so any length up to the capacity is valid.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "set_len {len} beyond capacity {}", self.capacity);
        self.len = len;
    }

    /// Empties the buffer (length 0) without touching its bytes.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn extend_from(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity - self.len);
        let start = self.len;
        self.spare_all()[start..start + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Zeroes from the current length up to the next multiple of [`ALIGN`] and extends the
    /// length to it, so the buffer can be written with O_DIRECT.
    pub fn pad_to_alignment(&mut self) {
        let end = align_up(self.len as u64) as usize;
        assert!(end <= self.capacity);
        let start = self.len;
        self.spare_all()[start..end].fill(0);
        self.len = end;
    }

    /// The whole capacity as a mutable slice (filled or not).
    pub fn spare_all(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to `capacity` initialised bytes that this buffer owns exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// The filled bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to `capacity >= len` initialised bytes owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The filled bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer for the kernel. The buffer must stay owned by the in-flight operation.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The index of this buffer in its pool's registration, if it is a pool buffer.
    pub fn registered_index(&self) -> Option<u16> {
        match &self.origin {
            Origin::Pool { pool, index } if pool.registered.get() => Some(*index),
            _ => None,
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match &self.origin {
            Origin::Heap => release_heap(self.ptr, self.capacity),
            Origin::Pool { pool, index } => {
                pool.free.borrow_mut().push(*index);
                pool.available.notify_one();
            }
        }
    }
}

/// Gives a heap buffer back: a large one is kept for the next buffer of its size class on
/// this thread (never touched by the kernel again: every operation that used it has ended),
/// a small one is freed.
fn release_heap(ptr: NonNull<u8>, capacity: usize) {
    if capacity >= HEAP_CLASS_BYTES {
        if SPARES.try_with(|s| s.borrow_mut().keep(ptr, capacity)).is_err() {
            free_heap(ptr, capacity); // the thread is ending
        }
    } else {
        free_heap(ptr, capacity);
    }
}

impl AlignedBuf {
    /// This buffer as one that may move to another thread (a response body another core's
    /// connection sends, say), if it is a heap buffer; a pool buffer (which belongs to its
    /// core's ring) comes back as it was.
    pub fn into_send(self) -> Result<SendBuf, AlignedBuf> {
        match self.origin {
            Origin::Heap => {
                let b = SendBuf { ptr: self.ptr, capacity: self.capacity, len: self.len };
                std::mem::forget(self); // its memory now belongs to the SendBuf
                Ok(b)
            }
            Origin::Pool { .. } => Err(self),
        }
    }
}

/// The filled bytes of a heap [`AlignedBuf`], free to move to another thread and to be
/// dropped there. Nothing can write to them any more.
pub struct SendBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

// SAFETY: a SendBuf owns its heap allocation exclusively: it was made from an AlignedBuf taken
// by value (so no I/O operation holds the memory: operations hand their buffer back when they
// end), it refers to no pool and no thread-local state, and it gives out only shared reads.
// Dropping it on another thread frees the memory with the global allocator or keeps it among
// that thread's spares.
unsafe impl Send for SendBuf {}

impl AsRef<[u8]> for SendBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr points to `capacity >= len` initialised bytes this SendBuf owns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBuf").field("len", &self.len).finish()
    }
}

impl Drop for SendBuf {
    fn drop(&mut self) {
        // Usually on another thread than the one that read into it (a core sends it to the
        // connection of another core): kept where every thread finds it, so the reading core
        // gets its buffers back instead of faulting in fresh ones.
        if self.capacity >= HEAP_CLASS_BYTES {
            shared_spares().keep(self.ptr, self.capacity);
        } else {
            free_heap(self.ptr, self.capacity);
        }
    }
}

fn free_heap(ptr: NonNull<u8>, capacity: usize) {
    let layout = Layout::from_size_align(capacity, ALIGN).expect("layout was valid");
    // SAFETY: ptr was allocated in `AlignedBuf::new` with exactly this layout and is freed once.
    unsafe { dealloc(ptr.as_ptr(), layout) };
}

/// Heap buffers of at least this size are sized in multiples of it and reused.
///
/// Large reads (a whole record up to `single_read_max_bytes`, a 1 MiB chunk with the block
/// before it) don't fit a pool buffer. Allocating each afresh costs a page fault and a zeroed
/// page per 4 KiB (the allocator maps and unmaps buffers this large), more than the read
/// itself; a few spares per thread avoid it.
pub const HEAP_CLASS_BYTES: usize = 256 << 10;

/// Most bytes of spare heap buffers one thread keeps.
pub const HEAP_SPARE_BYTES_MAX: usize = 48 << 20;

/// One thread's spare heap buffers, most recently freed last.
struct Spares {
    bufs: Vec<(usize, NonNull<u8>)>,
    bytes: usize,
}

impl Spares {
    fn take(&mut self, capacity: usize) -> Option<NonNull<u8>> {
        let i = self.bufs.iter().rposition(|(c, _)| *c == capacity)?;
        let (c, ptr) = self.bufs.remove(i);
        self.bytes -= c;
        Some(ptr)
    }

    fn keep(&mut self, ptr: NonNull<u8>, capacity: usize) {
        if capacity > HEAP_SPARE_BYTES_MAX {
            return free_heap(ptr, capacity);
        }
        // The oldest spares make room (sizes that stopped being asked for age out).
        while self.bytes + capacity > HEAP_SPARE_BYTES_MAX {
            let (c, p) = self.bufs.remove(0);
            self.bytes -= c;
            free_heap(p, c);
        }
        self.bufs.push((capacity, ptr));
        self.bytes += capacity;
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        for (c, p) in self.bufs.drain(..) {
            free_heap(p, c);
        }
    }
}

thread_local! {
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares { bufs: Vec::new(), bytes: 0 }) };
}

// SAFETY: a Spares owns its buffers exclusively (each was taken from an AlignedBuf or SendBuf
// being dropped, with no operation in flight) and hands each out once: moving it between
// threads (behind the shared pool's mutex) moves plain heap memory.
unsafe impl Send for Spares {}

/// Spare heap buffers freed on a thread other than the one that read into them (see
/// [`SendBuf`]), for any thread to take.
static SHARED_SPARES: std::sync::Mutex<Spares> = std::sync::Mutex::new(Spares { bufs: Vec::new(), bytes: 0 });

fn shared_spares() -> std::sync::MutexGuard<'static, Spares> {
    SHARED_SPARES.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

struct PoolShared {
    base: NonNull<u8>,
    layout: Layout,
    buf_size: usize,
    count: usize,
    free: RefCell<Vec<u16>>,
    available: Notify,
    registered: std::cell::Cell<bool>,
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // SAFETY: base was allocated in BufPool::new with this layout; every buffer carved from it
        // holds an Rc to this struct, so none is alive now.
        unsafe { dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// A bounded pool of equally sized aligned buffers carved from one allocation (one core's).
///
/// `acquire` waits while all `count` buffers are out: that wait is the back-pressure that keeps
/// a core's I/O memory bounded.
#[derive(Clone)]
pub struct BufPool {
    shared: Rc<PoolShared>,
}

impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufPool")
            .field("buf_size", &self.shared.buf_size)
            .field("count", &self.shared.count)
            .field("free", &self.shared.free.borrow().len())
            .finish()
    }
}

/// Most buffers one pool may hold: registered buffer indexes are u16.
pub const POOL_BUFFERS_MAX: usize = 4096;

impl BufPool {
    /// A pool of `count` buffers of `buf_size` bytes (a multiple of [`ALIGN`]).
    pub fn new(buf_size: usize, count: usize) -> BufPool {
        assert!(buf_size > 0 && buf_size.is_multiple_of(ALIGN), "pool buffer size {buf_size} not aligned");
        assert!(count > 0 && count <= POOL_BUFFERS_MAX, "pool count {count} out of range");
        let layout = Layout::from_size_align(buf_size * count, ALIGN).expect("pool layout is valid");
        // SAFETY: the layout size is non-zero (both factors are positive).
        let raw = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let free = (0..count as u16).rev().collect();
        BufPool {
            shared: Rc::new(PoolShared {
                base,
                layout,
                buf_size,
                count,
                free: RefCell::new(free),
                available: Notify::new(),
                registered: std::cell::Cell::new(false),
            }),
        }
    }

    /// Size of each buffer in bytes.
    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.shared.count
    }

    /// Buffers not currently out.
    pub fn free_count(&self) -> usize {
        self.shared.free.borrow().len()
    }

    /// A buffer now, if one is free.
    pub fn try_acquire(&self) -> Option<AlignedBuf> {
        let index = self.shared.free.borrow_mut().pop()?;
        let offset = index as usize * self.shared.buf_size;
        // SAFETY: offset < buf_size * count, inside the pool allocation.
        let ptr = unsafe { NonNull::new_unchecked(self.shared.base.as_ptr().add(offset)) };
        Some(AlignedBuf {
            ptr,
            capacity: self.shared.buf_size,
            len: 0,
            origin: Origin::Pool { pool: self.shared.clone(), index },
        })
    }

    /// A buffer, waiting until one is returned if all are out.
    pub async fn acquire(&self) -> AlignedBuf {
        loop {
            let notified = self.shared.available.notified();
            if let Some(b) = self.try_acquire() {
                return b;
            }
            notified.await;
        }
    }

    /// The iovecs describing every buffer, for registration with a ring.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.shared.count)
            .map(|i| libc::iovec {
                // SAFETY: i * buf_size is inside the pool allocation.
                iov_base: unsafe { self.shared.base.as_ptr().add(i * self.shared.buf_size) }.cast(),
                iov_len: self.shared.buf_size,
            })
            .collect()
    }

    pub(crate) fn set_registered(&self, registered: bool) {
        self.shared.registered.set(registered);
    }

    /// Whether the pool's buffers are registered with a ring.
    pub fn is_registered(&self) -> bool {
        self.shared.registered.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap buffer's bytes move to another thread and are dropped there; a pool buffer,
    /// which belongs to its core's ring, stays an AlignedBuf.
    #[test]
    fn heap_buffers_can_be_sent_and_pool_buffers_cannot() {
        let mut a = AlignedBuf::new(1 << 20);
        a.set_len(5);
        a.as_mut_slice().copy_from_slice(b"hello");
        let sent = a.into_send().expect("a heap buffer");
        let got = std::thread::spawn(move || sent.as_ref().to_vec()).join().expect("the thread");
        assert_eq!(got, b"hello");
        let pool = BufPool::new(ALIGN, 1);
        let p = pool.try_acquire().expect("a pool buffer");
        assert!(p.into_send().is_err(), "a pool buffer must not leave its thread");
        // A large buffer dropped on another thread comes back to the thread that reads next.
        // Its size class is one no other test of this crate asks for: the shared spares are
        // the process's, and a test running beside this one would otherwise take the buffer.
        let mut big = AlignedBuf::new(91 * HEAP_CLASS_BYTES);
        let at = big.as_mut_ptr();
        big.set_len(1);
        let sent = big.into_send().expect("a heap buffer");
        std::thread::spawn(move || drop(sent)).join().expect("the thread");
        let mut again = AlignedBuf::new(91 * HEAP_CLASS_BYTES);
        assert_eq!(again.as_mut_ptr(), at, "the buffer freed elsewhere is reused here");
    }

    #[test]
    fn large_heap_buffers_are_reused_by_size_class() {
        let mut a = AlignedBuf::new((1 << 20) + 4096);
        assert_eq!(a.capacity(), (1 << 20) + HEAP_CLASS_BYTES);
        let p = a.as_mut_ptr();
        a.set_len(10);
        a.as_mut_slice().copy_from_slice(b"0123456789");
        drop(a);
        // Another size of the same class gets the spare, with its earlier bytes.
        let mut b = AlignedBuf::new((1 << 20) + 8192);
        assert_eq!(b.as_mut_ptr(), p);
        b.set_len(10);
        assert_eq!(&b[..], b"0123456789");
        // A different class does not.
        let mut c = AlignedBuf::new(3 << 20);
        assert_ne!(c.as_mut_ptr(), p);
        assert_eq!(c.capacity(), 3 << 20);
        drop((b, c));
        // The spares stay bounded however many sizes come and go.
        let many: Vec<AlignedBuf> = (1..40).map(|i| AlignedBuf::new(i * HEAP_CLASS_BYTES * 2)).collect();
        drop(many);
        SPARES.with(|s| assert!(s.borrow().bytes <= HEAP_SPARE_BYTES_MAX));
    }

    #[test]
    fn heap_buffers_are_aligned_and_padded() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.capacity(), 8192);
        assert_eq!(b.as_mut_ptr() as usize % ALIGN, 0);
        assert_eq!(b.extend_from(&[7u8; 100]), 100);
        b.pad_to_alignment();
        assert_eq!(b.len(), 4096);
        assert!(b[100..].iter().all(|&x| x == 0));
    }

    #[test]
    fn pool_buffers_return_on_drop() {
        let pool = BufPool::new(8192, 2);
        let a = pool.try_acquire().expect("free");
        let _b = pool.try_acquire().expect("free");
        assert!(pool.try_acquire().is_none());
        drop(a);
        assert_eq!(pool.free_count(), 1);
        let c = pool.try_acquire().expect("returned");
        assert_eq!(c.capacity(), 8192);
    }
}
