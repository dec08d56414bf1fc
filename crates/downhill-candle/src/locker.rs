//! Holding the write locks of many candle variables, and the read locks of their gradients,
//! at once.
//!
//! candle lends a variable's storage mutably only inside its in-place op hook
//! ([`Tensor::inplace_op1`]), for the duration of the call. To hold many variables' locks
//! together, the hooks nest: the hook of one variable calls the hook of the next, and the
//! innermost one has them all. That recursion needs stack in proportion to the number of
//! variables, so it runs on threads of the optimizer's own ([`Lockers`]), with stacks sized
//! for it, started once and kept (a fresh thread per step would fault its stack in again
//! every time).
//!
//! Beyond the fused pass, a step costs per variable: a gradient lookup and checks, a lock and
//! an unlock each for gradient and variable. The lockers (one per core, up to
//! [`MAX_LOCKERS`]) share that work; each has a home range it takes chunks from first (the
//! same variables every step, while their cache lines are still its own), then takes what is
//! left of the others', so that none waits for a thread the OS is slow to wake:
//!
//! 1. the lockers take chunks of gradients to look up, check and read-lock (each keeps the
//!    read locks it took);
//! 2. once every chunk is done, if one failed (or a gradient shares storage with a
//!    variable), they let go and the step is refused;
//! 3. otherwise they take chunks of variables to write-lock, nesting each chunk inside the
//!    last, until none is left. The caller, asleep meanwhile (the cores are the lockers'),
//!    runs the step once every chunk is locked, on its own thread (in its own rayon pool),
//!    then lets the lockers unwind.
//!
//! Every gradient is read-locked before any variable is write-locked, so a gradient that
//! shares storage with a variable is found (by address) before it could deadlock.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor, TensorId, Var};

use crate::error::{Error, Result};

/// The stack a level of the recursion may take, generously (an optimized build takes about
/// 400 bytes, an unoptimized one a few KiB). Stacks are reserved, not committed: only the
/// pages a step touches are ever backed.
const STACK_PER_VARIABLE: usize = if cfg!(debug_assertions) {
    16 * 1024
} else {
    4096
};
/// Stack beyond the recursion.
const STACK_BASE: usize = 1 << 20;
/// The most stack a locker reserves; more variables than fit take more lockers.
const STACK_MAX: usize = 1 << 30;
/// At most this many lockers (unless the stack needs more).
const MAX_LOCKERS: usize = 4;
/// Gradients per chunk of the first phase.
const GRAD_CHUNK: usize = 128;
/// Variables per chunk of nesting.
const NEST_CHUNK: usize = 256;
/// How long a thread waiting for the others yields before it sleeps: they are at work and
/// due soon, and waking a sleeping thread can cost more than the wait on a busy machine.
const SPIN: Duration = Duration::from_micros(100);

/// How many variables ahead the loops prefetch what the next ones touch. Each lock is a
/// serializing atomic on a line the step has long evicted: without prefetching, the misses
/// would be taken one after the other.
const AHEAD: usize = 8;

/// Hint that the cache line of `addr` will be used soon.
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and has no observable effect, whatever
    // the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Prefetch the tensor of `t` (its layout and the fields around it).
#[inline(always)]
fn prefetch_tensor(t: &Tensor) {
    let at = t.layout() as *const Layout as usize;
    prefetch(at.wrapping_sub(64));
    prefetch(at);
    prefetch(at.wrapping_add(64));
}

/// Prefetch the dimensions and strides of `t`'s layout (this reads its tensor: prefetch that
/// first).
#[inline(always)]
fn prefetch_layout(t: &Tensor) {
    prefetch(t.dims().as_ptr() as usize);
    prefetch(t.stride().as_ptr() as usize);
}

/// Prefetch a storage's lock (just before the storage) from the storage's address (0: not
/// known).
#[inline(always)]
fn prefetch_storage(storage: usize) {
    if storage != 0 {
        prefetch(storage.wrapping_sub(16));
        prefetch(storage.wrapping_add(16));
    }
}

/// Prefetch every cache line of `[lo, hi)` (at most 4 KiB).
#[inline(always)]
fn prefetch_range(lo: usize, hi: usize) {
    let hi = hi.min(lo.saturating_add(4096));
    let mut a = lo & !63;
    while a < hi {
        prefetch(a);
        a += 64;
    }
}

/// Hashes addresses (already well spread) cheaply.
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, x: usize) {
        self.0 = (x as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

/// A set of addresses.
pub(crate) type AddrSet = HashSet<usize, BuildHasherDefault<AddrHasher>>;

/// The address of a CPU storage's elements (`None` for another device or an empty one).
pub(crate) fn storage_addr(storage: &Storage) -> Option<usize> {
    use candle_core::CpuStorage as C;
    let Storage::Cpu(cpu) = storage else {
        return None;
    };
    let (ptr, len) = match cpu {
        C::F32(v) => (v.as_ptr() as usize, v.len()),
        C::F64(v) => (v.as_ptr() as usize, v.len()),
        C::F16(v) => (v.as_ptr() as usize, v.len()),
        C::BF16(v) => (v.as_ptr() as usize, v.len()),
        C::U8(v) => (v.as_ptr() as usize, v.len()),
        C::U32(v) => (v.as_ptr() as usize, v.len()),
        C::I64(v) => (v.as_ptr() as usize, v.len()),
        _ => return None,
    };
    (len > 0).then_some(ptr)
}

/// The contiguous elements of a CPU storage as a raw slice of `T`.
pub(crate) trait Elem: downhill::Float {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}
impl Elem for f32 {
    fn slice(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}
impl Elem for f64 {
    fn slice(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// A variable or gradient the fused step can use in place: on the CPU, of the optimizer's
/// element type (`f32` or `f64`).
#[inline]
pub(crate) fn check_device_dtype(
    name: &str,
    what: &'static str,
    t: &Tensor,
    dtype: DType,
) -> Result<()> {
    if !matches!(t.device(), Device::Cpu) {
        return Err(Error::NotCpu {
            name: name.to_string(),
            what,
        });
    }
    if t.dtype() != dtype || !matches!(dtype, DType::F32 | DType::F64) {
        return Err(Error::DType {
            name: name.to_string(),
            what,
            dtype: t.dtype(),
            expected: if matches!(dtype, DType::F64) {
                DType::F64
            } else {
                DType::F32
            },
        });
    }
    Ok(())
}

/// The optimizer's variables and what about them cannot change, shared with the lockers.
pub(crate) struct Vars {
    pub vars: Vec<Var>,
    pub names: Vec<String>,
    /// The variables' tensor ids: their gradients' keys.
    pub ids: Vec<TensorId>,
    /// Where each variable's elements lie in its storage (a `Var`'s layout never changes).
    pub spans: Vec<Range<usize>>,
    /// The shapes, end to end: variable `i`'s is `shapes[shape_at[i]..shape_at[i + 1]]`.
    pub shapes: Vec<usize>,
    pub shape_at: Vec<usize>,
    /// The element type of every variable.
    pub dtype: DType,
    /// Zero gradients for variables the loss did not reach (made on first need, kept): the
    /// locking treats every variable alike; the optimizer then skips these ones.
    pub zeros: Vec<OnceLock<Tensor>>,
    /// Whether each variable had no gradient in the step being locked.
    pub missing: Vec<AtomicBool>,
    /// The address of each variable's storage elements as last seen (0: empty).
    pub bases: Vec<AtomicUsize>,
    /// The same addresses as a set, for finding a gradient that shares a variable's storage.
    pub storages: RwLock<AddrSet>,
    /// Set when a base moved (a custom in-place op may replace a storage): `storages` is
    /// rebuilt after the step.
    pub moved: AtomicBool,
    /// The lowest and highest address in `storages` (a cheap first test).
    pub lowest: AtomicUsize,
    pub highest: AtomicUsize,
    /// The address of each variable's storage as last locked (its lock lies just before;
    /// 0: not yet), for prefetching.
    pub lock_at: Vec<AtomicUsize>,
}

impl Vars {
    fn shape(&self, i: usize) -> &[usize] {
        &self.shapes[self.shape_at[i]..self.shape_at[i + 1]]
    }

    /// Rebuild `storages` from `bases` if a storage moved.
    fn refresh(&self) {
        if self.moved.swap(false, Ordering::Relaxed) {
            let set: AddrSet = self
                .bases
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .filter(|&b| b != 0)
                .collect();
            self.set_bounds(&set);
            if let Ok(mut s) = self.storages.write() {
                *s = set;
            }
        }
    }

    /// Record the lowest and highest address of `set`.
    pub(crate) fn set_bounds(&self, set: &AddrSet) {
        let lo = set.iter().copied().min().unwrap_or(usize::MAX);
        let hi = set.iter().copied().max().unwrap_or(0);
        self.lowest.store(lo, Ordering::Relaxed);
        self.highest.store(hi, Ordering::Relaxed);
    }
}

/// Chunks of work, taken by whoever is free: `next` counts the chunks taken (with
/// [`FAILED`] set, none can be taken any more), `resolved` the ones finished (done or failed).
struct Chunks {
    count: usize,
    next: AtomicUsize,
    resolved: AtomicUsize,
}

/// In `Chunks::next`: a chunk failed; take no more.
const FAILED: usize = 1 << (usize::BITS - 1);

impl Chunks {
    fn new(count: usize) -> Self {
        Chunks {
            count,
            next: AtomicUsize::new(0),
            resolved: AtomicUsize::new(0),
        }
    }

    /// Start a step (nobody is taking chunks).
    fn reset(&self) {
        self.next.store(0, Ordering::Relaxed);
        self.resolved.store(0, Ordering::Relaxed);
    }

    /// Take the next chunk, if any is left and none failed.
    fn take(&self) -> Option<usize> {
        let mut s = self.next.load(Ordering::Acquire);
        loop {
            if s & FAILED != 0 || s >= self.count {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(s),
                Err(now) => s = now,
            }
        }
    }

    /// No more chunks are to be taken.
    fn fail(&self) {
        self.next.fetch_or(FAILED, Ordering::AcqRel);
    }

    fn failed(&self) -> bool {
        self.next.load(Ordering::Acquire) & FAILED != 0
    }

    /// A taken chunk is finished; whether that was the last.
    fn resolve(&self) -> bool {
        self.resolved.fetch_add(1, Ordering::AcqRel);
        self.finished()
    }

    /// Every chunk is taken (or none may be) and every taken one finished.
    fn finished(&self) -> bool {
        let s = self.next.load(Ordering::Acquire);
        let taken = s & !FAILED;
        (s & FAILED != 0 || taken >= self.count) && self.resolved.load(Ordering::Acquire) == taken
    }
}

/// Chunks of work split into one range per participant: each takes from its own range
/// first (the same items every step, while their cache lines are still its own), then from
/// the others'.
struct Work {
    /// Items per chunk.
    chunk: usize,
    items: usize,
    /// Per participant: its chunks, and the index of its first.
    ranges: Vec<(Chunks, usize)>,
}

impl Work {
    fn new(items: usize, chunk: usize, participants: usize) -> Self {
        let chunks = items.div_ceil(chunk);
        let ranges = (0..participants)
            .map(|p| {
                let (a, b) = (p * chunks / participants, (p + 1) * chunks / participants);
                (Chunks::new(b - a), a)
            })
            .collect();
        Work {
            chunk,
            items,
            ranges,
        }
    }

    fn reset(&self) {
        for (r, _) in &self.ranges {
            r.reset();
        }
    }

    /// The items of chunk `c`.
    fn items(&self, c: usize) -> Range<usize> {
        (c * self.chunk).min(self.items)..((c + 1) * self.chunk).min(self.items)
    }

    /// Take a chunk: `home`'s first, then the others'.
    fn take(&self, home: usize) -> Option<usize> {
        let n = self.ranges.len();
        (0..n).find_map(|k| {
            let (r, first) = &self.ranges[(home + k) % n];
            r.take().map(|c| first + c)
        })
    }

    fn fail(&self) {
        for (r, _) in &self.ranges {
            r.fail();
        }
    }

    fn failed(&self) -> bool {
        self.ranges.iter().any(|(r, _)| r.failed())
    }

    /// Taken chunk `c` is finished; whether that was the last.
    fn resolve(&self, c: usize) -> bool {
        if let Some((r, _)) = self.ranges.iter().rev().find(|(_, first)| *first <= c) {
            r.resolve();
        }
        self.finished()
    }

    fn finished(&self) -> bool {
        self.ranges.iter().all(|(r, _)| r.finished())
    }
}

/// A wait for a condition that others make true, with a short yielding spin first.
struct Signal {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Signal {
    fn new() -> Self {
        Signal {
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Wake the waiters (after making their condition true).
    fn notify(&self) {
        let _g = self.lock.lock();
        self.cv.notify_all();
    }

    /// Wait until `done`, yielding a while first if `spin`.
    fn wait(&self, spin: bool, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            if !spin || start.elapsed() > SPIN {
                let Ok(mut g) = self.lock.lock() else {
                    return;
                };
                while !done() {
                    g = match self.cv.wait_timeout(g, Duration::from_millis(10)) {
                        Ok((g, _)) => g,
                        Err(_) => return,
                    };
                }
                return;
            }
            std::thread::yield_now();
        }
    }
}

/// A tensor's elements, published by the thread that locked it: address and length.
#[derive(Default)]
struct Part {
    at: AtomicUsize,
    len: AtomicUsize,
}

impl Part {
    fn set(&self, at: usize, len: usize) {
        self.at.store(at, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
    }
    fn get(&self) -> (usize, usize) {
        (
            self.at.load(Ordering::Relaxed),
            self.len.load(Ordering::Relaxed),
        )
    }
}

/// What the caller and the lockers share.
struct Shared {
    vars: Arc<Vars>,
    grads: Work,
    nest: Work,
    /// Signalled when the last chunk of `grads` or of `nest` is finished.
    signal: Signal,
    /// Each variable's elements and its gradient's, this step.
    params: Vec<Part>,
    gradients: Vec<Part>,
    /// The first error of this step, by variable.
    error: Mutex<Option<(usize, Error)>>,
    /// The most variables one locker may nest (its stack): a multiple of [`NEST_CHUNK`].
    depth: usize,
    /// Set if a locker panicked while locking: its chunks may never be finished, so nobody
    /// waits for them.
    broken: AtomicBool,
}

impl Shared {
    fn record(&self, index: usize, e: Error) {
        if let Ok(mut slot) = self.error.lock() {
            let first = match slot.as_ref() {
                Some((i, _)) => index < *i,
                None => true,
            };
            if first {
                *slot = Some((index, e));
            }
        }
    }

    fn grads_finished(&self) -> bool {
        self.grads.finished() || self.broken.load(Ordering::Acquire)
    }

    fn nest_finished(&self) -> bool {
        self.nest.finished() || self.broken.load(Ordering::Acquire)
    }

    fn take_error(&self) -> Option<Error> {
        self.error
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .map(|(_, e)| e)
    }

    /// Take and read-lock chunks of gradients until none is left; the guards.
    fn read_gradients<'g, T: Elem>(
        &'g self,
        home: usize,
        grads: &'g GradStore,
        guards: &mut Vec<ReadGuard<'g>>,
    ) {
        // The lookups land all over the gradient store's table, which the last step has
        // evicted: one sequential pass over it first (a cheap stream) makes them cache hits.
        if self.vars.vars.len() > 4 * GRAD_CHUNK {
            for id in grads.get_ids() {
                std::hint::black_box(*id);
            }
        }
        while let Some(c) = self.grads.take(home) {
            let range = self.grads.items(c);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                read_chunk::<T>(self, range.clone(), grads, guards)
            }))
            .unwrap_or_else(|_| {
                Err((
                    range.start,
                    Error::Locker("panicked on the gradients".into()),
                ))
            });
            if let Err((i, e)) = outcome {
                self.record(i, e);
                self.grads.fail();
            }
            if self.grads.resolve(c) {
                self.signal.notify();
            }
        }
    }
}

/// A read-locked gradient and its storage's address.
type ReadGuard<'a> = (candle_core::StorageRef<'a>, usize);

/// Release read locks, prefetching the next ones' lines.
fn release_guards(guards: &mut Vec<ReadGuard<'_>>) {
    let at: Vec<usize> = guards.iter().map(|g| g.1).collect();
    for (i, g) in guards.drain(..).enumerate() {
        if let Some(&s) = at.get(i + AHEAD) {
            prefetch_storage(s);
        }
        drop(g);
    }
}

/// Look up, check and read-lock the gradients of `range`, publishing their elements; the
/// first failure with its variable.
fn read_chunk<'g, T: Elem>(
    shared: &'g Shared,
    range: Range<usize>,
    grads: &'g GradStore,
    guards: &mut Vec<ReadGuard<'g>>,
) -> std::result::Result<(), (usize, Error)> {
    let vars = &*shared.vars;
    let n = range.len();
    let lookup = |k: usize| -> std::result::Result<&'g Tensor, (usize, Error)> {
        let i = range.start + k;
        let found = grads.get_id(vars.ids[i]);
        vars.missing[i].store(found.is_none(), Ordering::Relaxed);
        match found {
            Some(g) => Ok(g),
            None => zero(vars, i).map_err(|e| (i, e)),
        }
    };
    // Look up ahead of the checks (the lookups' misses overlap the checks' work), and
    // prefetch what the checks read.
    let mut tensors: Vec<&Tensor> = Vec::with_capacity(n);
    for k in 0..n.min(2 * AHEAD) {
        let g = lookup(k)?;
        prefetch_tensor(g);
        tensors.push(g);
    }
    let mut offsets: Vec<(usize, usize)> = Vec::with_capacity(n);
    for k in 0..n {
        if k + 2 * AHEAD < n {
            let g = lookup(k + 2 * AHEAD)?;
            prefetch_tensor(g);
            tensors.push(g);
        }
        if let Some(t) = tensors.get(k + AHEAD) {
            prefetch_layout(t);
        }
        let g = tensors[k];
        let i = range.start + k;
        let name = &vars.names[i];
        check_device_dtype(name, "gradient", g, vars.dtype).map_err(|e| (i, e))?;
        let shape = vars.shape(i);
        if g.dims() != shape {
            return Err((
                i,
                Error::GradientShape {
                    name: name.clone(),
                    shape: g.dims().to_vec(),
                    expected: shape.to_vec(),
                },
            ));
        }
        let offset = g.layout().contiguous_offsets().ok_or_else(|| {
            (
                i,
                Error::NotContiguous {
                    name: name.clone(),
                    what: "gradient",
                },
            )
        })?;
        offsets.push(offset);
    }
    let storages = vars
        .storages
        .read()
        .map_err(|_| (range.start, Error::Locker("poisoned".into())))?;
    let (lo, hi) = (
        vars.lowest.load(Ordering::Relaxed),
        vars.highest.load(Ordering::Relaxed),
    );
    for (k, g) in tensors.iter().enumerate() {
        let guard = g.storage_and_layout().0;
        let at = &*guard as *const Storage as usize;
        let i = range.start + k;
        let aliased =
            storage_addr(&guard).is_some_and(|a| (lo..=hi).contains(&a) && storages.contains(&a));
        let (a, b) = offsets[k];
        let data = match &*guard {
            Storage::Cpu(cpu) => T::slice(cpu).and_then(|d| d.get(a..b)),
            _ => None,
        };
        let data = data.map(|d| (d.as_ptr() as usize, d.len()));
        guards.push((guard, at));
        if aliased {
            let name = vars.names[i].clone();
            return Err((i, Error::AliasedGradient { name }));
        }
        let (at, len) = data.ok_or_else(|| {
            let msg = format!(
                "the gradient of '{}' does not match its layout",
                vars.names[i]
            );
            (i, Error::Locker(msg))
        })?;
        shared.gradients[i].set(at, len);
    }
    Ok(())
}

/// Variable `i`'s zero gradient, made on first need.
#[cold]
fn zero(vars: &Vars, i: usize) -> Result<&Tensor> {
    if let Some(z) = vars.zeros[i].get() {
        return Ok(z);
    }
    let z = vars.vars[i].as_tensor().zeros_like()?;
    // Only the thread that took variable `i`'s chunk makes its zero gradient.
    let _ = vars.zeros[i].set(z);
    vars.zeros[i]
        .get()
        .ok_or_else(|| Error::Locker("no zero gradient".into()))
}

/// What the caller asks a locker to do. A raw pointer: the caller waits until the locker
/// reports [`Reply::Done`], so the gradient store outlives its use.
struct Job {
    grads: *const GradStore,
}

// SAFETY: `GradStore` is `Sync` (a map of tensors, which are); the pointer is dereferenced
// only while the sending thread waits for the answer (see `Job`).
unsafe impl Send for Job {}

/// A locker's answers to a job: `Holding` (then, once released, `Done`), or just `Done`.
enum Reply {
    /// Holds locks (read locks of gradients, write locks of variables); waits for a message
    /// on its release channel before it lets go.
    Holding,
    /// Holds nothing any more, and will not touch the job's data again.
    Done,
}

/// One locker thread and its channels.
struct Worker {
    jobs: Sender<Job>,
    release: Sender<()>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

/// The threads that hold the locks while the caller steps; see the [module docs](self).
pub(crate) struct Lockers {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
}

impl Lockers {
    /// Lockers for `vars`: one per core (at most [`MAX_LOCKERS`]; one for few variables),
    /// or more if their stacks need it.
    pub(crate) fn start(vars: Arc<Vars>) -> Result<Self> {
        let n = vars.vars.len();
        let most = (STACK_MAX - STACK_BASE) / STACK_PER_VARIABLE / NEST_CHUNK * NEST_CHUNK;
        let depth = n.div_ceil(NEST_CHUNK).max(1) * NEST_CHUNK;
        let depth = depth.min(most);
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let wanted = if n <= 2 * NEST_CHUNK {
            1
        } else {
            cores.clamp(1, MAX_LOCKERS)
        };
        let count = wanted.max(n.div_ceil(depth));
        let shared = Arc::new(Shared {
            grads: Work::new(n, GRAD_CHUNK, count),
            nest: Work::new(n, NEST_CHUNK, count),
            signal: Signal::new(),
            params: (0..n).map(|_| Part::default()).collect(),
            gradients: (0..n).map(|_| Part::default()).collect(),
            error: Mutex::new(None),
            depth,
            broken: AtomicBool::new(false),
            vars,
        });
        let mut workers = Vec::with_capacity(count);
        for k in 0..count {
            let (job_tx, job_rx) = channel::<Job>();
            let (rel_tx, rel_rx) = channel();
            let (rep_tx, rep_rx) = channel::<Reply>();
            let stack = STACK_BASE + STACK_PER_VARIABLE * depth;
            let s = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name(format!("downhill-lock-{k}"))
                .stack_size(stack)
                .spawn(move || serve(&s, k, &job_rx, &rel_rx, &rep_tx))
                .map_err(|e| Error::Locker(format!("cannot start: {e}")))?;
            workers.push(Worker {
                jobs: job_tx,
                release: rel_tx,
                replies: rep_rx,
                thread: Some(thread),
            });
        }
        Ok(Lockers { shared, workers })
    }

    /// Read-lock every variable's gradient in `grads` (or its zero gradient) and check them,
    /// write-lock every variable, then run `f` on their elements on this thread, every lock
    /// held.
    ///
    /// Every error (a gradient on another device, of another type or shape, not contiguous,
    /// sharing a variable's storage; a variable whose storage changed) comes before `f` runs,
    /// so nothing has been written; the error of the first such variable is returned.
    pub(crate) fn with_locked<T: Elem, R>(
        &mut self,
        grads: &GradStore,
        f: impl FnOnce(&mut [&mut [T]], &[&[T]], Option<&[bool]>) -> R,
    ) -> Result<R> {
        let shared = &*self.shared;
        let n = shared.vars.vars.len();
        if T::DTYPE != dtype_of(shared.vars.dtype) {
            return Err(Error::Locker("element type mismatch".into()));
        }
        shared.grads.reset();
        shared.nest.reset();
        shared.broken.store(false, Ordering::Relaxed);
        drop(shared.take_error());
        // From the first job sent until every locker has answered `Done`, the lockers may
        // use `grads`: every path below waits for that (the guard's `drop` included, should
        // `f` panic).
        let mut guard = Unlock {
            workers: &self.workers,
            sent: Vec::with_capacity(self.workers.len()),
        };
        for w in &self.workers {
            let job = Job {
                grads: grads as *const GradStore,
            };
            let sent = w.jobs.send(job).is_ok();
            guard.sent.push(sent);
        }
        if !guard.sent.iter().any(|&s| s) {
            return Err(Error::Locker("the locker threads stopped".into()));
        }
        // The lockers take it from here; this thread sleeps, leaving them the cores.
        shared
            .signal
            .wait(false, || shared.nest_finished() || shared.grads.failed());
        shared.signal.wait(false, || shared.grads_finished());
        let broken = shared.broken.load(Ordering::Acquire);
        if broken || shared.grads.failed() || shared.nest.failed() {
            guard.release();
            return Err(shared.take_error().unwrap_or_else(|| {
                Error::Locker(
                    if broken {
                        "a locker panicked"
                    } else {
                        "refused"
                    }
                    .into(),
                )
            }));
        }
        // SAFETY: every part is the element range of a distinct variable (the optimizer
        // refuses a variable listed twice, or two over one storage) or of a gradient, in
        // storages held write-locked (variables) or read-locked (gradients, none sharing a
        // variable's storage) until `guard` releases them: all chunks are finished without
        // failure, so every part is set. The slices are valid, the mutable ones exclusively
        // ours, for as long as they live, which ends before the release.
        let mut params: Vec<&mut [T]> = Vec::with_capacity(n);
        let mut grad_slices: Vec<&[T]> = Vec::with_capacity(n);
        for (p, g) in shared.params.iter().zip(&shared.gradients) {
            let (a, len) = p.get();
            params.push(unsafe { std::slice::from_raw_parts_mut(a as *mut T, len) });
            let (a, len) = g.get();
            grad_slices.push(unsafe { std::slice::from_raw_parts(a as *const T, len) });
        }
        // Variables the loss did not reach (their "gradient" is a zero made for the locking).
        let missing = &shared.vars.missing;
        let mask = missing.iter().any(|m| m.load(Ordering::Relaxed)).then(|| {
            missing
                .iter()
                .map(|m| m.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        });
        let out = f(&mut params, &grad_slices, mask.as_deref());
        drop(params);
        drop(grad_slices);
        guard.release();
        shared.vars.refresh();
        Ok(out)
    }
}

fn dtype_of(d: DType) -> downhill::DType {
    if d == DType::F64 {
        downhill::DType::F64
    } else {
        downhill::DType::F32
    }
}

/// Lets every locker that holds locks go, and waits until every locker sent the job is done;
/// on drop too (`f` panicked), so that no locker is left holding locks or using the gradient
/// store.
struct Unlock<'a> {
    workers: &'a [Worker],
    /// Per locker: whether it was sent the job and has not answered `Done`.
    sent: Vec<bool>,
}

impl Unlock<'_> {
    fn release(&mut self) {
        // Let go of the lockers already holding first: they unwind in parallel.
        let mut released = vec![false; self.workers.len()];
        for ((w, sent), released) in self.workers.iter().zip(&mut self.sent).zip(&mut released) {
            match w.replies.try_recv() {
                Ok(Reply::Holding) => *released = w.release.send(()).is_ok(),
                Ok(Reply::Done) | Err(std::sync::mpsc::TryRecvError::Disconnected) => *sent = false,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
        }
        for ((w, sent), released) in self.workers.iter().zip(&mut self.sent).zip(&mut released) {
            if *sent && !*released {
                match w.replies.recv() {
                    Ok(Reply::Holding) => *released = w.release.send(()).is_ok(),
                    _ => *sent = false,
                }
            }
        }
        for ((w, sent), released) in self.workers.iter().zip(&mut self.sent).zip(released) {
            if std::mem::take(sent) && released {
                let _ = w.replies.recv();
            }
        }
    }
}

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

impl Drop for Lockers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // Closing the channels ends the thread's loop.
            let (tx, _) = channel();
            drop(std::mem::replace(&mut w.jobs, tx));
            let (tx, _) = channel();
            drop(std::mem::replace(&mut w.release, tx));
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A locker's loop: one job at a time.
fn serve(
    shared: &Shared,
    home: usize,
    jobs: &Receiver<Job>,
    release: &Receiver<()>,
    replies: &Sender<Reply>,
) {
    let track = Track::new(shared.depth);
    while let Ok(job) = jobs.recv() {
        // SAFETY: see `Job`: the caller waits for `Done`, sent after the last use.
        let grads = unsafe { &*job.grads };
        let ctx = Ctx {
            shared,
            home,
            release,
            replies,
            track: &track,
        };
        let ok = if shared.vars.dtype == DType::F64 {
            run::<f64>(&ctx, grads)
        } else {
            run::<f32>(&ctx, grads)
        };
        if !ok || replies.send(Reply::Done).is_err() {
            return;
        }
    }
}

/// What a locker works with.
struct Ctx<'a> {
    shared: &'a Shared,
    /// This locker's number: its home range of gradients to read and of variables to nest.
    home: usize,
    release: &'a Receiver<()>,
    replies: &'a Sender<Reply>,
    track: &'a Track,
}

impl Ctx<'_> {
    /// Tell the caller this locker holds locks, and wait until it may let go; whether the
    /// caller is still there.
    fn hold(&self) -> bool {
        self.replies.send(Reply::Holding).is_ok() && self.release.recv().is_ok()
    }
}

/// One job: gradients, then variables; whether the caller is still there.
fn run<T: Elem>(ctx: &Ctx<'_>, grads: &GradStore) -> bool {
    let shared = ctx.shared;
    let mut read = Vec::new();
    shared.read_gradients::<T>(ctx.home, grads, &mut read);
    shared.signal.wait(true, || shared.grads_finished());
    let mut here = true;
    let mut nested = false;
    if !shared.grads.failed() && !shared.broken.load(Ordering::Acquire) {
        if let Some(c) = shared.nest.take(ctx.home) {
            nested = true;
            let gone = Cell::new(false);
            let range = shared.nest.items(c);
            let outcome = catch_unwind(AssertUnwindSafe(|| lock_variables::<T>(ctx, &gone, c)));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err((i, e))) => {
                    // The chunk of the failure is resolved and taking stopped, by the level
                    // that saw it.
                    shared.record(i, e);
                    shared.signal.notify();
                }
                Err(_) => {
                    shared.record(range.start, Error::Locker("panicked while locking".into()));
                    shared.nest.fail();
                    shared.broken.store(true, Ordering::Release);
                    shared.signal.notify();
                }
            }
            here = !gone.get();
        }
    }
    if !nested && !read.is_empty() && !shared.grads.failed() {
        // The step reads these gradients: keep them locked until it is over.
        here = ctx.hold();
    }
    release_guards(&mut read);
    here
}

/// Write-lock the variables of `range`, then of every chunk left to take, nested; the first
/// failure with its variable. `gone`: set if the caller went away while they were held.
fn lock_variables<T: Elem>(
    ctx: &Ctx<'_>,
    gone: &Cell<bool>,
    chunk: usize,
) -> std::result::Result<(), (usize, Error)> {
    let shared = ctx.shared;
    let vars = &shared.vars;
    let range = shared.nest.items(chunk);
    prefetch_ahead(vars, range.clone());
    let error = RefCell::new(None);
    let level = Level::<T> {
        ctx,
        gone,
        error: &error,
        index: range.start,
        end: range.end,
        chunk,
        depth: 0,
        _t: PhantomData,
    };
    let outcome = vars.vars[range.start].as_tensor().inplace_op1(&level);
    if let Err(e) = outcome {
        if error.borrow().is_none() {
            // candle refused before our hook ran: the chunk is ours to resolve.
            *error.borrow_mut() = Some((range.start, Error::Candle(e)));
            shared.nest.fail();
            shared.nest.resolve(chunk);
        }
    }
    match error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Prefetch what locking the first variables of `range` touches.
fn prefetch_ahead(vars: &Vars, range: Range<usize>) {
    let first = range.start;
    for v in &vars.vars[range.clone()][..range.len().min(2 * AHEAD)] {
        prefetch_tensor(v);
    }
    for i in first..range.end.min(first + AHEAD) {
        prefetch_layout(&vars.vars[i]);
        prefetch_storage(vars.lock_at[i].load(Ordering::Relaxed));
    }
}

/// Stack addresses the recursion touches, kept from step to step for prefetching.
struct Track {
    /// Each level's frame, this step.
    frames: Vec<Cell<usize>>,
    /// Each level's storage (its lock just before), this step.
    locks: Vec<Cell<usize>>,
    /// Stack bytes per level, as measured (0: not yet).
    frame_size: Cell<usize>,
}

impl Track {
    fn new(depth: usize) -> Self {
        Track {
            frames: (0..depth).map(|_| Cell::new(0)).collect(),
            locks: (0..depth).map(|_| Cell::new(0)).collect(),
            frame_size: Cell::new(0),
        }
    }

    /// The stack bytes of a level (a guess before the first measure).
    fn frame(&self) -> usize {
        match self.frame_size.get() {
            0 => 512,
            n => n.min(1 << 16),
        }
    }
}

/// One level of the recursion: holds the write lock of variable `index` while the next level
/// runs.
struct Level<'a, T> {
    ctx: &'a Ctx<'a>,
    /// Set if the caller went away while the locks were held.
    gone: &'a Cell<bool>,
    /// The failure, with its variable (candle's error only carries text).
    error: &'a RefCell<Option<(usize, Error)>>,
    index: usize,
    /// The chunk `index` is in, and its end.
    chunk: usize,
    end: usize,
    /// Levels above this one in this locker.
    depth: usize,
    _t: PhantomData<fn() -> T>,
}

/// What comes after a level.
enum Next {
    /// Variable `index` (the first of `chunk` if that is new), ending at `end`.
    Var {
        index: usize,
        chunk: usize,
        end: usize,
    },
    /// Nothing: the locks were held, the caller is done with them.
    Unwind,
}

impl<T: Elem> Level<'_, T> {
    /// Fail at this level's variable: record, stop the taking, resolve its chunk.
    #[cold]
    #[inline(never)]
    fn fail(&self, e: Error) -> candle_core::Error {
        let msg = e.to_string();
        *self.error.borrow_mut() = Some((self.index, e));
        let nest = &self.ctx.shared.nest;
        nest.fail();
        if nest.resolve(self.chunk) {
            self.ctx.shared.signal.notify();
        }
        candle_core::Error::Msg(msg)
    }

    /// The work of a level but the recursion (kept out of the recursing frame, which is
    /// repeated once per variable, to keep that small): publish the variable's elements,
    /// prefetch for the next levels, and say what comes next.
    #[inline(never)]
    fn enter(&self, storage: &mut CpuStorage, here: usize) -> candle_core::Result<Next> {
        let (i, d) = (self.index, self.depth);
        let shared = self.ctx.shared;
        let vars = &*shared.vars;
        let t = self.ctx.track;
        t.frames[d].set(here);
        if d == 1 {
            t.frame_size.set(t.frames[0].get().saturating_sub(here));
        }
        let lock = storage as *mut CpuStorage as usize;
        vars.lock_at[i].store(lock, Ordering::Relaxed);
        t.locks[d].set(lock);
        // The next levels: their variables, and the stack their frames will take.
        if i + 2 * AHEAD < self.end {
            prefetch_tensor(&vars.vars[i + 2 * AHEAD]);
        }
        if i + AHEAD < self.end {
            prefetch_layout(&vars.vars[i + AHEAD]);
            prefetch_storage(vars.lock_at[i + AHEAD].load(Ordering::Relaxed));
        }
        let f = t.frame();
        let ahead = here.saturating_sub(AHEAD * f);
        prefetch_range(ahead.saturating_sub(f), ahead);
        let Some(data) = T::slice_mut(storage) else {
            let name = vars.names[i].clone();
            let what = format!("the storage of '{name}' changed its element type");
            return Err(self.fail(Error::Locker(what)));
        };
        let base = data.as_ptr() as usize;
        let Some(part) = data.get_mut(vars.spans[i].clone()) else {
            let name = vars.names[i].clone();
            let what = format!("the storage of '{name}' is shorter than its layout");
            return Err(self.fail(Error::Locker(what)));
        };
        let known = &vars.bases[i];
        if !part.is_empty() && known.load(Ordering::Relaxed) != base {
            known.store(base, Ordering::Relaxed);
            vars.moved.store(true, Ordering::Relaxed);
        }
        shared.params[i].set(part.as_mut_ptr() as usize, part.len());
        // The next variable: in this chunk, or the first of the next chunk left (nested
        // here), or none: then every lock this locker takes is held.
        if i + 1 < self.end {
            return Ok(Next::Var {
                index: i + 1,
                chunk: self.chunk,
                end: self.end,
            });
        }
        if shared.nest.resolve(self.chunk) {
            shared.signal.notify();
        }
        let room = d + 1 + NEST_CHUNK <= shared.depth;
        if let Some(c) = room.then(|| shared.nest.take(self.ctx.home)).flatten() {
            let r = shared.nest.items(c);
            prefetch_ahead(vars, r.clone());
            return Ok(Next::Var {
                index: r.start,
                chunk: c,
                end: r.end,
            });
        }
        self.hold();
        Ok(Next::Unwind)
    }

    /// After the next level returned `outcome`: account for a refusal by candle itself,
    /// prefetch for the unwinding.
    #[inline(never)]
    fn leave(
        &self,
        outcome: candle_core::Result<()>,
        index: usize,
        chunk: usize,
    ) -> candle_core::Result<()> {
        if let Err(e) = &outcome {
            if self.error.borrow().is_none() {
                // candle refused variable `index` before our hook ran: resolve its chunk.
                let msg = e.to_string();
                *self.error.borrow_mut() = Some((index, Error::Locker(msg.clone())));
                let shared = self.ctx.shared;
                shared.nest.fail();
                if shared.nest.resolve(chunk) {
                    shared.signal.notify();
                }
                return Err(candle_core::Error::Msg(msg));
            }
        }
        // Unwinding: the level AHEAD above returns soon: its lock and its frame.
        let t = self.ctx.track;
        if let Some(j) = self.depth.checked_sub(AHEAD) {
            prefetch_storage(t.locks[j].get());
            let lo = t.frames[j].get();
            prefetch_range(lo, lo + t.frame());
        }
        outcome
    }

    /// Innermost: every chunk this locker took is locked. Wait for the caller to finish.
    #[inline(never)]
    fn hold(&self) {
        let ctx = self.ctx;
        if !ctx.hold() {
            self.gone.set(true);
        }
        // The unwinding starts: prefetch the first levels it returns through.
        let t = ctx.track;
        for j in self.depth.saturating_sub(AHEAD)..=self.depth {
            prefetch_storage(t.locks[j].get());
            let lo = t.frames[j].get();
            prefetch_range(lo, lo + t.frame());
        }
    }
}

impl<T: Elem> candle_core::InplaceOp1 for Level<'_, T> {
    fn name(&self) -> &'static str {
        "downhill-step"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, _layout: &Layout) -> candle_core::Result<()> {
        let here = std::ptr::addr_of!(self) as usize;
        let Next::Var { index, chunk, end } = self.enter(storage, here)? else {
            return Ok(());
        };
        let level = Level::<T> {
            index,
            chunk,
            end,
            depth: self.depth + 1,
            ..*self
        };
        let outcome = self.ctx.shared.vars.vars[index]
            .as_tensor()
            .inplace_op1(&level);
        self.leave(outcome, index, chunk)
    }
}
