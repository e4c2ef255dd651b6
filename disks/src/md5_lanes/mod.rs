//! MD5 of many streams at once: the request bodies a core receives side by side are hashed
//! together, one SIMD lane each.
//!
//! One MD5 cannot go faster than its chain of 64 dependent steps per 64-byte block (about
//! 600 MiB/s on one core of this project's machines, whichever library computes it), and an S3
//! PUT must have the MD5 of its body before it is answered (its ETag). But a core receiving
//! many bodies at once can hash eight of them with AVX2 in little more than the time one takes
//! (4.4 GiB/s in all: see `kernels`).
//!
//! So a body's bytes are not hashed as they arrive: an [`Md5Stream`] queues them (the `Bytes`
//! the connection already holds, no copy) in a pool of its thread, and hashes when its queue
//! passes [`STREAM_QUEUED_MAX`] or it finishes: then every other stream of the thread with
//! bytes queued goes through the same vector kernel beside it. A stream alone, or a CPU
//! without AVX2, is hashed by `md-5` as before. Nothing waits: the hashing runs inside
//! `update` and `finish`, on the thread that calls them, like the one-at-a-time MD5 it
//! replaces; only when it happens changes.

#[cfg(target_arch = "x86_64")]
mod kernels;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// A stream's queued bytes that start a round of hashing.
pub const STREAM_QUEUED_MAX: usize = 1 << 20;
/// What a stream may keep queued after a round that ran out of other streams to go beside it:
/// the rest waits for the next round (another stream's, most often: bodies received side by
/// side arrive at about the same pace) rather than be hashed alone at once; past this it is.
/// (Measured: with 8 parts of 8 MiB in flight on 2 cores, draining at 1 MiB hashed 40% of the
/// bytes alone.)
pub const STREAM_HELD_MAX: usize = 4 << 20;
/// All streams' queued bytes on one thread that start a round (the bodies held for hashing
/// are bounded however many are received at once).
pub const THREAD_QUEUED_MAX: usize = 16 << 20;

/// MD5's initial state (RFC 1321 §3.3).
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// What every thread of the process hashed (for the node's metrics): see [`Hashed`].
static LANES_BYTES: AtomicU64 = AtomicU64::new(0);
static SINGLE_BYTES: AtomicU64 = AtomicU64::new(0);
static PASS_BYTES: AtomicU64 = AtomicU64::new(0);

/// What the process hashed since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    /// Bytes hashed in vector lanes, beside other streams.
    pub lanes: u64,
    /// Bytes hashed one stream at a time.
    pub single: u64,
    /// Bytes of each lane of the vector passes: `lanes / passes` is how many streams a pass
    /// hashed on average (of eight).
    pub passes: u64,
}

pub fn hashed() -> Hashed {
    Hashed {
        lanes: LANES_BYTES.load(Ordering::Relaxed),
        single: SINGLE_BYTES.load(Ordering::Relaxed),
        passes: PASS_BYTES.load(Ordering::Relaxed),
    }
}

/// How the CPU hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kernel {
    /// `md-5`, one stream at a time.
    Single,
    /// AVX2, eight streams at once.
    X8,
}

/// Lanes of the vector kernel.
const LANES: usize = 8;

impl Kernel {
    /// The kernel this CPU has.
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::X8;
        }
        Kernel::Single
    }
}

/// Hashes this thread's streams with at most `kernel` (never more than the CPU has): for
/// the tests, which try each kernel the machine has.
#[cfg(test)]
fn limit_kernel(kernel: Kernel) {
    POOL.with_borrow_mut(|p| p.kernel = kernel.min(Kernel::detect()));
}

/// One stream's MD5 in its thread's pool.
#[derive(Debug)]
struct Slot {
    state: [u32; 4],
    /// Bytes given so far.
    len: u64,
    /// The bytes after the last whole block given, up to 63.
    tail: [u8; 64],
    tail_len: usize,
    /// Whole blocks given and not yet hashed, in order.
    queue: VecDeque<Bytes>,
    queued: usize,
}

impl Slot {
    fn new() -> Slot {
        Slot { state: INIT, len: 0, tail: [0; 64], tail_len: 0, queue: VecDeque::new(), queued: 0 }
    }

    /// Hashes `n` bytes of the queue's front (whole blocks, at most the front's length) with
    /// the vector kernel's result `state`, and drops them.
    fn advance(&mut self, state: [u32; 4], n: usize) {
        self.state = state;
        let front = self.queue.front_mut().expect("a lane had bytes");
        if front.len() == n {
            self.queue.pop_front();
        } else {
            let _ = front.split_to(n);
        }
        self.queued -= n;
    }

    /// Hashes everything queued, one block after another.
    fn drain_single(&mut self) {
        for b in self.queue.drain(..) {
            let (blocks, rest) = b.as_chunks::<64>();
            debug_assert!(rest.is_empty());
            md5::block_api::compress(&mut self.state, blocks);
        }
        SINGLE_BYTES.fetch_add(self.queued as u64, Ordering::Relaxed);
        self.queued = 0;
    }

    /// The MD5 of what was given, once everything queued is hashed (`Pool::hash` with
    /// `drain`).
    fn digest(&mut self) -> [u8; 16] {
        debug_assert!(self.queue.is_empty(), "hashed before its digest");
        let mut last = [[0u8; 64]; 2];
        let n = self.tail_len;
        let flat = last.as_flattened_mut();
        flat[..n].copy_from_slice(&self.tail[..n]);
        flat[n] = 0x80;
        let blocks = if n < 56 { 1 } else { 2 };
        flat[blocks * 64 - 8..blocks * 64].copy_from_slice(&(self.len.wrapping_mul(8)).to_le_bytes());
        md5::block_api::compress(&mut self.state, &last[..blocks]);
        let mut out = [0u8; 16];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// The streams of one thread.
#[derive(Debug)]
struct Pool {
    kernel: Kernel,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    queued: usize,
}

thread_local! {
    static POOL: RefCell<Pool> =
        RefCell::new(Pool { kernel: Kernel::detect(), slots: Vec::new(), free: Vec::new(), queued: 0 });
}

impl Pool {
    fn slot(&mut self, id: usize) -> &mut Slot {
        self.slots[id].as_mut().expect("a stream's slot is live while the stream is")
    }

    /// Hashes `id`'s queue beside every other stream with bytes queued, as long as `id` has
    /// bytes and another does too; then, if `drain`, the rest of `id`'s queue alone.
    fn hash(&mut self, id: usize, drain: bool) {
        let mut with: Vec<(usize, usize)> = Vec::new();
        while self.kernel != Kernel::Single && self.slot(id).queued > 0 {
            with.clear();
            with.extend(
                self.slots.iter().enumerate().filter_map(|(i, s)| {
                    s.as_ref().filter(|s| s.queued > 0 && i != id).map(|s| (s.queued, i))
                }),
            );
            if with.is_empty() {
                break;
            }
            // The streams with most queued go beside this one.
            with.sort_unstable_by(|a, b| b.cmp(a));
            with.truncate(LANES - 1);
            with.push((0, id));
            let hashed = self.round(&with);
            PASS_BYTES.fetch_add(hashed as u64, Ordering::Relaxed);
            self.queued -= hashed * with.len();
            LANES_BYTES.fetch_add((hashed * with.len()) as u64, Ordering::Relaxed);
        }
        if drain || self.slot(id).queued >= STREAM_HELD_MAX {
            let s = self.slot(id);
            let n = s.queued;
            s.drain_single();
            self.queued -= n;
        }
    }

    /// One vector pass over the streams `with` (their queues' fronts, as far as the shortest
    /// goes); returns the bytes it hashed of each.
    fn round(&mut self, with: &[(usize, usize)]) -> usize {
        let n =
            with.iter().map(|&(_, i)| self.slot(i).queue.front().map_or(0, Bytes::len)).min().unwrap_or(0);
        debug_assert!(n > 0 && n % 64 == 0);
        let mut states = [INIT; LANES];
        let mut inputs = [std::ptr::null::<u8>(); LANES];
        for (l, &(_, i)) in with.iter().enumerate() {
            let s = self.slot(i);
            states[l] = s.state;
            inputs[l] = s.queue.front().expect("a lane had bytes").as_ptr();
        }
        // Lanes without a stream hash the first one's bytes again; their results are dropped.
        for l in with.len()..LANES {
            inputs[l] = inputs[0];
        }
        compress(&mut states, &inputs, n / 64);
        for (l, &(_, i)) in with.iter().enumerate() {
            self.slot(i).advance(states[l], n);
        }
        n
    }
}

/// Runs the vector kernel.
#[cfg(target_arch = "x86_64")]
fn compress(states: &mut [[u32; 4]; LANES], inputs: &[*const u8; LANES], blocks: usize) {
    // SAFETY: the pool uses the kernel only on a CPU with AVX2 (Kernel::detect); every input
    // is the front of a queued `Bytes` its slot holds (or a copy of the first input), at
    // least `blocks * 64` long (the round's shortest front).
    unsafe { kernels::compress_x8(states, inputs, blocks) };
}

#[cfg(not(target_arch = "x86_64"))]
fn compress(_: &mut [[u32; 4]; LANES], _: &[*const u8; LANES], _: usize) {
    unreachable!("the vector kernel is chosen only on x86-64");
}

/// The MD5 of one body, hashed beside the other bodies its thread receives (see the module's
/// text). Stays on the thread that made it.
#[derive(Debug)]
pub struct Md5Stream {
    id: usize,
    _thread: PhantomData<*const ()>,
}

impl Default for Md5Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5Stream {
    pub fn new() -> Md5Stream {
        let id = POOL.with_borrow_mut(|p| match p.free.pop() {
            Some(id) => {
                p.slots[id] = Some(Slot::new());
                id
            }
            None => {
                p.slots.push(Some(Slot::new()));
                p.slots.len() - 1
            }
        });
        Md5Stream { id, _thread: PhantomData }
    }

    /// Appends `data` (kept, not copied, until it is hashed).
    pub fn update(&mut self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        POOL.with_borrow_mut(|p| {
            let s = p.slot(self.id);
            s.len += data.len() as u64;
            let mut data = data.clone();
            let mut added = 0;
            if s.tail_len > 0 {
                let take = (64 - s.tail_len).min(data.len());
                s.tail[s.tail_len..s.tail_len + take].copy_from_slice(&data.split_to(take));
                s.tail_len += take;
                if s.tail_len < 64 {
                    return;
                }
                s.queue.push_back(Bytes::copy_from_slice(&s.tail));
                s.tail_len = 0;
                added += 64;
            }
            let whole = data.len() / 64 * 64;
            let rest = data.split_off(whole);
            s.tail[..rest.len()].copy_from_slice(&rest);
            s.tail_len = rest.len();
            if whole > 0 {
                s.queue.push_back(data);
                added += whole;
            }
            s.queued += added;
            let mine = s.queued;
            p.queued += added;
            if mine >= STREAM_QUEUED_MAX {
                p.hash(self.id, false);
            } else if p.queued >= THREAD_QUEUED_MAX {
                // The stream with most queued is hashed whole (with whoever can go beside it).
                let most = (0..p.slots.len()).max_by_key(|&i| p.slots[i].as_ref().map_or(0, |s| s.queued));
                p.hash(most.unwrap_or(self.id), true);
            }
        });
    }

    /// The MD5 of everything given.
    pub fn finish(self) -> [u8; 16] {
        POOL.with_borrow_mut(|p| {
            p.hash(self.id, true);
            p.slot(self.id).digest()
        })
    }
}

impl Drop for Md5Stream {
    fn drop(&mut self) {
        // A thread's pool is gone only when the thread ends, after its streams.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if let Some(s) = p.slots[self.id].take() {
                p.queued -= s.queued;
            }
            p.free.push(self.id);
        });
    }
}

#[cfg(test)]
mod tests;
