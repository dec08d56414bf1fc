//! Kernels: the only code that runs an update rule over memory, chooses a SIMD level or
//! splits work across threads.
//!
//! A step is one fused pass per element over all tensors: every chunk of the [`Plan`] runs on
//! some rayon thread (the pool the caller is in), each of its segments in one SIMD function
//! chosen once at run time (AVX-512, AVX2+FMA, NEON or scalar, through `pulp`). Inside, the
//! element-wise stages before the rule (maximize, gradient scaling from norm clipping, value
//! clipping, L2 or decoupled weight decay) and the rule itself run back to back on registers,
//! so each input is read once and each output written once. The vector body and the scalar
//! tail run the same generic code, and no fused multiply-add is used, so every SIMD level and
//! every thread count gives the same bits (only a NaN fed to `max`/`min` can differ between
//! levels). Nothing here allocates.

#[cfg(target_arch = "x86_64")]
mod bf16_step;
mod lane;
pub mod lowbit;
pub(crate) mod matmul;
mod plan;
pub mod roofline;
pub mod simd;
pub mod trace;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

pub use lane::{DType, Float, Lane};
pub use plan::{Plan, Segment, CHUNK};
use simd::Vector;

use crate::optim::{Rule, MAX_BUFFERS};

static ARCH: OnceLock<Arch> = OnceLock::new();
static SIMD_ENABLED: AtomicBool = AtomicBool::new(true);

fn arch() -> Arch {
    if SIMD_ENABLED.load(Ordering::Relaxed) {
        *ARCH.get_or_init(Arch::new)
    } else {
        Arch::Scalar
    }
}

/// Turn SIMD off (scalar code only) or back on, process-wide. Results are the same bits
/// either way; this exists for tests and benchmarks.
pub fn set_simd_enabled(enabled: bool) {
    SIMD_ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether the low-bit codecs ([`lowbit`]) take their AVX-512 path (SIMD on, and the CPU
/// has AVX-512 F, BW, DQ and VBMI: the byte-table lookups need `vpermi2b`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn lowbit_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    SIMD_ENABLED.load(Ordering::Relaxed)
        && *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vbmi")
        })
}

/// The SIMD level steps run at on this machine.
pub fn simd_level() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        #[allow(unreachable_patterns)]
        match arch() {
            Arch::V4(_) => "x86-64-v4 (AVX-512)",
            Arch::V3(_) => "x86-64-v3 (AVX2, FMA)",
            _ => "scalar",
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        match arch() {
            Arch::Scalar => "scalar",
            _ => "aarch64 (NEON)",
        }
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// The element-wise stages that run before a rule, with their scalars resolved for one group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prelude {
    /// Negate the gradient (`maximize`).
    pub maximize: bool,
    /// Multiply the gradient by this (global-norm clipping), if any.
    pub grad_scale: Option<f64>,
    /// Clamp the gradient to `[-c, c]`, if any.
    pub clip_value: Option<f64>,
    /// L2 penalty: `g <- g + l2 * p` (0: none).
    pub l2: f64,
    /// Decoupled decay: `p <- p * factor`, with `factor = 1 - lr * weight_decay`, if any.
    pub decay_factor: Option<f64>,
}

/// A [`Prelude`] as lanes. `maximize` and the norm-clipping scale fold into one multiplier:
/// `(−g)·s` and `g·(−s)` are the same bits.
#[derive(Clone, Copy)]
pub(crate) struct Resolved<L> {
    grad_mul: Option<L>,
    clamp: Option<(L, L)>,
    l2: Option<L>,
    decay: Option<L>,
}

impl Prelude {
    #[inline(always)]
    pub(crate) fn resolve<L: Lane>(&self) -> Resolved<L> {
        let sign = if self.maximize { -1.0 } else { 1.0 };
        Resolved {
            grad_mul: match (self.grad_scale, self.maximize) {
                (Some(s), _) => Some(L::c(sign * s)),
                (None, true) => Some(L::c(-1.0)),
                (None, false) => None,
            },
            clamp: self.clip_value.map(|c| (L::c(-c), L::c(c))),
            l2: (self.l2 != 0.0).then(|| L::c(self.l2)),
            decay: self.decay_factor.map(L::c),
        }
    }
}

impl<L: Lane> Resolved<L> {
    #[inline(always)]
    pub(crate) fn apply(&self, p: L, g: L) -> (L, L) {
        let mut g = g;
        let mut p = p;
        if let Some(m) = self.grad_mul {
            g = g * m;
        }
        if let Some((lo, hi)) = self.clamp {
            g = g.max(lo).min(hi);
        }
        if let Some(wd) = self.l2 {
            g = g + wd * p;
        }
        if let Some(f) = self.decay {
            p = p * f;
        }
        (p, g)
    }
}

/// A slice as a raw pointer and a length, to hand disjoint parts of it to threads.
#[derive(Debug)]
pub(crate) struct RawSlice<F> {
    ptr: *mut F,
    len: usize,
    /// The index of `ptr`'s element: a sharded optimizer keeps only its range
    /// `[origin, origin + len)` of a tensor's state, indexed as the whole tensor is.
    origin: usize,
}

impl<F> Clone for RawSlice<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F> Copy for RawSlice<F> {}

// SAFETY: a `RawSlice` is only dereferenced through `slice`/`slice_mut`, whose callers
// guarantee that concurrent accesses touch disjoint ranges (or only read).
unsafe impl<F: Send> Send for RawSlice<F> {}
unsafe impl<F: Sync> Sync for RawSlice<F> {}

impl<F> Default for RawSlice<F> {
    fn default() -> Self {
        RawSlice {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
            origin: 0,
        }
    }
}

impl<F> RawSlice<F> {
    /// Borrow `s` for the duration of a step.
    pub(crate) fn new(s: &mut [F]) -> Self {
        Self::at(s, 0)
    }

    /// Borrow `s` as elements `[origin, origin + s.len())` of a longer sequence: `slice(a, b)`
    /// then takes `s[a - origin..b - origin]`.
    pub(crate) fn at(s: &mut [F], origin: usize) -> Self {
        RawSlice {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            origin,
        }
    }

    /// [`read_only`](RawSlice::read_only) as elements `[origin, origin + s.len())`.
    pub(crate) fn read_only_at(s: &[F], origin: usize) -> Self {
        RawSlice {
            ptr: s.as_ptr() as *mut F,
            len: s.len(),
            origin,
        }
    }

    /// `[start, end)` of the slice, mutably.
    ///
    /// # Safety
    /// The slice must be alive and not accessed elsewhere in this range while the result lives.
    #[inline(always)]
    unsafe fn slice_mut<'a>(self, start: usize, end: usize) -> &'a mut [F] {
        debug_assert!(self.origin <= start && start <= end && end - self.origin <= self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(start - self.origin), end - start)
    }

    /// `[start, end)` of the slice.
    ///
    /// # Safety
    /// The slice must be alive and not written in this range while the result lives.
    #[inline(always)]
    unsafe fn slice<'a>(self, start: usize, end: usize) -> &'a [F] {
        debug_assert!(self.origin <= start && start <= end && end - self.origin <= self.len);
        std::slice::from_raw_parts(self.ptr.add(start - self.origin), end - start)
    }
}

/// One tensor's memory for a step: parameters, gradient (read only) and state buffers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TensorViews<F> {
    pub p: RawSlice<F>,
    pub g: RawSlice<F>,
    pub bufs: [RawSlice<F>; MAX_BUFFERS],
    pub nbuf: usize,
    /// Index of this tensor's [`Prelude`].
    pub group: usize,
    /// Whether the tensor takes part in this step (it has a gradient); an inactive tensor's
    /// memory is not touched and its sums are zero.
    pub active: bool,
    /// The state in fewer bits ([`lowbit`]), one per buffer, when `bufs` is unused.
    pub packed: Option<[PackedView; MAX_BUFFERS]>,
}

/// One state buffer stored in fewer bits, for a step.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum PackedView {
    /// No buffer.
    #[default]
    None,
    /// bfloat16 values.
    Bf16(RawSlice<u16>),
    /// 8-bit codes into `book`, one absmax per [`lowbit::BLOCK`].
    Q8 {
        codes: RawSlice<u8>,
        absmax: RawSlice<f32>,
        book: &'static lowbit::Codebook,
    },
}

/// Run `body` for every chunk of `plan`, in parallel when there is more than one.
fn for_each_chunk(plan: &Plan, body: impl Fn(usize) + Sync + Send) {
    let n = plan.num_chunks();
    if n <= 1 || rayon::current_num_threads() == 1 {
        (0..n).for_each(body);
    } else {
        (0..n).into_par_iter().for_each(body);
    }
}

/// Run `f(t, a[t], b[t], c[t], d[t])` for every tensor `t` (a whole-tensor stage), tensors in
/// parallel when there is more than one: each tensor is computed by one thread alone, so the
/// result does not depend on the thread count. Allocates nothing.
pub(crate) fn par_tensors<A: Send, B: Send, C: Send, D: Send>(
    a: &mut [A],
    b: &mut [B],
    c: &mut [C],
    d: &mut [D],
    f: impl Fn(usize, &mut A, &mut B, &mut C, &mut D) + Sync + Send,
) {
    if a.len() <= 1 || rayon::current_num_threads() == 1 {
        for (t, (((a, b), c), d)) in a.iter_mut().zip(b).zip(c).zip(d).enumerate() {
            f(t, a, b, c, d);
        }
    } else {
        a.par_iter_mut()
            .zip(b.par_iter_mut())
            .zip(c.par_iter_mut())
            .zip(d.par_iter_mut())
            .enumerate()
            .for_each(|(t, (((a, b), c), d))| f(t, a, b, c, d));
    }
}

/// Apply rule `R` to every element of every tensor: one fused pass. `coefs` holds each tensor's
/// constants, `pres` each group's prelude; `partials[s]` receives segment `s`'s two
/// reductions.
///
/// # Safety
/// Every view must be valid for the length the plan gives its tensor; parameter and buffer
/// views must not overlap each other or any gradient view.
pub(crate) unsafe fn update_all<F: Float, R: Rule>(
    plan: &Plan,
    views: &[TensorViews<F>],
    coefs: &[R::Coef],
    pres: &[Prelude],
    partials: RawSlice<[f64; 2]>,
) {
    pass_all::<F, R, false>(plan, views, coefs, pres, partials)
}

/// The reading pass of a rule that [measures](Rule::MEASURES): [`Rule::measure`] on every
/// element, after the same prelude as the update, writing nothing but `partials`.
///
/// # Safety
/// As [`update_all`].
pub(crate) unsafe fn measure_all<F: Float, R: Rule>(
    plan: &Plan,
    views: &[TensorViews<F>],
    coefs: &[R::Coef],
    pres: &[Prelude],
    partials: RawSlice<[f64; 2]>,
) {
    pass_all::<F, R, true>(plan, views, coefs, pres, partials)
}

/// One pass of rule `R` over every element: the update, or with `MEASURE` the reading pass.
///
/// # Safety
/// As [`update_all`].
unsafe fn pass_all<F: Float, R: Rule, const MEASURE: bool>(
    plan: &Plan,
    views: &[TensorViews<F>],
    coefs: &[R::Coef],
    pres: &[Prelude],
    partials: RawSlice<[f64; 2]>,
) {
    let arch = arch();
    for_each_chunk(plan, |c| {
        for (si, seg) in plan.chunk(c) {
            let v = &views[seg.tensor];
            if !v.active {
                // SAFETY: each segment index belongs to exactly one chunk.
                unsafe { partials.slice_mut(si, si + 1)[0] = [0.0; 2] };
                continue;
            }
            let (a, b) = (seg.start, seg.end);
            if let Some(packed) = &v.packed {
                // SAFETY: as below; the plan starts a packed tensor's segments on block
                // boundaries, so blocks are never shared between threads.
                let red = unsafe {
                    packed_segment::<F, R>(
                        arch,
                        v,
                        packed,
                        &coefs[seg.tensor],
                        &pres[v.group],
                        a,
                        b,
                    )
                };
                // SAFETY: each segment index belongs to exactly one chunk.
                unsafe { partials.slice_mut(si, si + 1)[0] = red };
                continue;
            }
            // SAFETY: segments are disjoint ranges of their tensors (the plan), and the
            // caller guarantees the views are valid and non-overlapping.
            let op = Segment1::<F, R> {
                coef: &coefs[seg.tensor],
                pre: &pres[v.group],
                p: unsafe { v.p.slice_mut(a, b) },
                g: unsafe { v.g.slice(a, b) },
                bufs: std::array::from_fn(|k| {
                    if k < v.nbuf {
                        unsafe { v.bufs[k].slice_mut(a, b) }
                    } else {
                        &mut []
                    }
                }),
            };
            let red = run_segment::<F, R, MEASURE>(arch, v.nbuf, op);
            // SAFETY: each segment index belongs to exactly one chunk.
            unsafe { partials.slice_mut(si, si + 1)[0] = red };
        }
    });
}

/// Run one segment at the SIMD level `arch`, with the buffer count `nbuf` as a constant (so
/// the buffers stay in registers).
fn run_segment<F: Float, R: Rule, const MEASURE: bool>(
    arch: Arch,
    nbuf: usize,
    op: Segment1<'_, F, R>,
) -> [f64; 2] {
    match nbuf {
        0 => arch.dispatch(SegmentOp::<F, R, 0, MEASURE>(op)),
        1 => arch.dispatch(SegmentOp::<F, R, 1, MEASURE>(op)),
        2 => arch.dispatch(SegmentOp::<F, R, 2, MEASURE>(op)),
        3 => arch.dispatch(SegmentOp::<F, R, 3, MEASURE>(op)),
        _ => arch.dispatch(SegmentOp::<F, R, MAX_BUFFERS, MEASURE>(op)),
    }
}

/// Elements a coded step updates at once: one 8-bit block, a 1 KiB scratch per `f32` buffer.
/// (Four blocks at once measured slower: the scratch and the prefetched next chunk crowd L1.)
const SCRATCH: usize = lowbit::BLOCK;

/// The update of elements `[a, b)` of a tensor whose state is stored in fewer bits, chunk by
/// chunk of [`SCRATCH`] elements: decode each buffer's chunk (block by block) into a scratch
/// on the stack, run the fused update on it (the same SIMD code as full-precision state),
/// encode it back block by block. While a chunk is decoded and encoded, the next chunk's
/// parameters and gradients are prefetched, so its update waits on no memory. `a` is a
/// multiple of [`lowbit::BLOCK`]. Returns the reductions' sums (per chunk, then added in chunk
/// order; chunks lie at multiples of [`SCRATCH`] in the tensor, cut by the plan's segments,
/// which do not depend on the thread count).
///
/// # Safety
/// As [`update_all`], with `packed` valid for the tensor's length and block count.
unsafe fn packed_segment<F: Float, R: Rule>(
    arch: Arch,
    v: &TensorViews<F>,
    packed: &[PackedView; MAX_BUFFERS],
    coef: &R::Coef,
    pre: &Prelude,
    a: usize,
    b: usize,
) -> [f64; 2] {
    use lowbit::BLOCK;
    debug_assert_eq!(a % BLOCK, 0);
    #[cfg(target_arch = "x86_64")]
    if let Some(red) = unsafe { bf16_registers::<F, R>(arch, v, packed, coef, pre, a, b) } {
        return red;
    }
    let mut scratch = [[F::c(0.0); SCRATCH]; MAX_BUFFERS];
    let mut wide = [0.0f32; SCRATCH];
    let mut red = [0.0f64; 2];
    let mut start = a;
    while start < b {
        // Chunks at multiples of SCRATCH in the tensor (the first may be shorter).
        let end = ((start / SCRATCH + 1) * SCRATCH).min(b);
        let n = end - start;
        if end < b {
            let next = (end + SCRATCH).min(b);
            // SAFETY: within this segment's range of the caller's views.
            unsafe {
                prefetch(v.p.slice(end, next));
                prefetch(v.g.slice(end, next));
            }
        }
        for (k, view) in packed.iter().enumerate().take(v.nbuf) {
            let out = &mut scratch[k][..n];
            // SAFETY: this chunk of the tensor belongs to this segment alone (see above).
            let decode = |dst: &mut [f32]| unsafe {
                match *view {
                    PackedView::None => {}
                    PackedView::Bf16(bits) => {
                        lowbit::bf16_decode_block(bits.slice(start, end), dst)
                    }
                    PackedView::Q8 {
                        codes,
                        absmax,
                        book,
                    } => {
                        for (i, dst) in dst.chunks_mut(BLOCK).enumerate() {
                            let s = start + i * BLOCK;
                            let e = s + dst.len();
                            let scale = absmax.slice(s / BLOCK, s / BLOCK + 1)[0];
                            book.decode_block(codes.slice(s, e), scale, dst);
                        }
                    }
                }
            };
            match as_f32_mut(out) {
                Some(dst) => decode(dst),
                None => {
                    decode(&mut wide[..n]);
                    for (o, &x) in out.iter_mut().zip(&wide[..n]) {
                        *o = F::from_f64(f64::from(x));
                    }
                }
            }
        }
        let [s0, s1, s2, s3] = &mut scratch;
        let bufs = [&mut s0[..n], &mut s1[..n], &mut s2[..n], &mut s3[..n]];
        let op = Segment1::<F, R> {
            coef,
            pre,
            // SAFETY: the caller's views, this segment's range.
            p: unsafe { v.p.slice_mut(start, end) },
            g: unsafe { v.g.slice(start, end) },
            bufs: bufs.map(|s| &mut s[..]),
        };
        let r = run_segment::<F, R, false>(arch, v.nbuf, op);
        red[0] += r[0];
        red[1] += r[1];
        for (k, view) in packed.iter().enumerate().take(v.nbuf) {
            let new = narrow(&scratch[k][..n], &mut wide[..n]);
            // SAFETY: as above.
            unsafe {
                match *view {
                    PackedView::None => {}
                    PackedView::Bf16(bits) => {
                        lowbit::bf16_encode_block(new, bits.slice_mut(start, end));
                    }
                    PackedView::Q8 {
                        codes,
                        absmax,
                        book,
                    } => {
                        for (i, x) in new.chunks(BLOCK).enumerate() {
                            let s = start + i * BLOCK;
                            let e = s + x.len();
                            let scale = book.encode_block(x, codes.slice_mut(s, e));
                            absmax.slice_mut(s / BLOCK, s / BLOCK + 1)[0] = scale;
                        }
                    }
                }
            }
        }
        start = end;
    }
    red
}

/// The update of `[a, b)` when every state buffer is `bf16`, `F` is `f32` and the CPU has
/// AVX-512: on registers ([`bf16_step`]); `None` otherwise (the scratch path then runs).
///
/// # Safety
/// As [`packed_segment`].
#[cfg(target_arch = "x86_64")]
unsafe fn bf16_registers<F: Float, R: Rule>(
    arch: Arch,
    v: &TensorViews<F>,
    packed: &[PackedView; MAX_BUFFERS],
    coef: &R::Coef,
    pre: &Prelude,
    a: usize,
    b: usize,
) -> Option<[f64; 2]> {
    if !matches!(arch, Arch::V4(_)) {
        return None;
    }
    let all_bf16 = packed[..v.nbuf]
        .iter()
        .all(|p| matches!(p, PackedView::Bf16(_)));
    if !is_f32::<F>() || !lowbit_avx512() || !all_bf16 || v.nbuf == 0 {
        return None;
    }
    // SAFETY: this segment's range of the caller's views; `F` is `f32`.
    let p = as_f32_mut(unsafe { v.p.slice_mut(a, b) })?;
    let g = unsafe { v.g.slice(a, b) };
    // SAFETY: `F` is `f32` (same type): same layout.
    let g = unsafe { std::slice::from_raw_parts(g.as_ptr().cast::<f32>(), g.len()) };
    let bits = |k: usize| match packed[k] {
        // SAFETY: as above.
        PackedView::Bf16(bits) => unsafe { bits.slice_mut(a, b) },
        _ => &mut [],
    };
    macro_rules! run {
        ($n:literal) => {
            arch.dispatch(bf16_step::Bf16Op::<R, $n> {
                coef,
                pre,
                start: a,
                p,
                g,
                bits: std::array::from_fn(bits),
            })
        };
    }
    Some(match v.nbuf {
        1 => run!(1),
        2 => run!(2),
        3 => run!(3),
        _ => run!(4),
    })
}

/// Ask for `x`'s cache lines (a hint; nothing on targets without one).
#[inline(always)]
fn prefetch<T>(x: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = x.as_ptr().cast::<i8>();
        for off in (0..std::mem::size_of_val(x)).step_by(64) {
            // SAFETY: a prefetch never faults, and the address lies within `x`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

fn is_f32<F: Float>() -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()
}

/// `x` as `f32`s, when `F` is `f32`.
#[inline(always)]
fn as_f32_mut<F: Float>(x: &mut [F]) -> Option<&mut [f32]> {
    // SAFETY: `F` is `f32` (same type): same layout.
    is_f32::<F>()
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f32>(), x.len()) })
}

/// `F` values as `f32`: the slice itself when `F` is `f32`, else rounded into `tmp`.
#[inline(always)]
fn narrow<'a, F: Float>(x: &'a [F], tmp: &'a mut [f32]) -> &'a [f32] {
    if is_f32::<F>() {
        // SAFETY: `F` is `f32` (same type): same layout.
        return unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) };
    }
    for (t, v) in tmp.iter_mut().zip(x) {
        *t = v.to_f64() as f32;
    }
    tmp
}

/// One segment's slices.
struct Segment1<'a, F: Float, R: Rule> {
    coef: &'a R::Coef,
    pre: &'a Prelude,
    p: &'a mut [F],
    g: &'a [F],
    bufs: [&'a mut [F]; MAX_BUFFERS],
}

/// One segment with `N` state buffers, as a pulp operation: the update, or with `MEASURE`
/// the reading pass.
struct SegmentOp<'a, F: Float, R: Rule, const N: usize, const MEASURE: bool>(Segment1<'a, F, R>);

impl<F: Float, R: Rule, const N: usize, const MEASURE: bool> WithSimd
    for SegmentOp<'_, F, R, N, MEASURE>
{
    type Output = [f64; 2];

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [f64; 2] {
        let Segment1 {
            coef,
            pre,
            p,
            g,
            mut bufs,
        } = self.0;
        // Local copies: provably unaliased by the stores below, so constants stay in registers.
        let coef = *coef;
        let coef = &coef;
        let pre = *pre;
        let (pv, pt) = F::split_mut::<S>(p);
        let (gv, gt) = F::split::<S>(g);
        let n = pv.len();
        assert_eq!(gv.len(), n);
        let mut bv: [&mut [F::V<S>]; N] = std::array::from_fn(|_| Default::default());
        let mut bt: [&mut [F]; N] = std::array::from_fn(|_| Default::default());
        for k in 0..N {
            let (v, t) = F::split_mut::<S>(std::mem::take(&mut bufs[k]));
            assert_eq!(v.len(), n);
            bv[k] = v;
            bt[k] = t;
        }

        // Vector body. Reductions go to 16 running sums, element e of the segment to sum
        // e mod 16, whatever the vector width: the same bits at every SIMD level.
        let vpre = pre.resolve::<Vector<S, F>>();
        let zero = Vector::<S, F>::c(0.0);
        let reps = reps::<S, F>();
        let mut vred = [[zero; 2]; SUMS];
        // Blocks of `reps` vectors, so that each running sum has a fixed register.
        let mut i = 0;
        while i < n {
            for (r, red) in vred.iter_mut().enumerate().take(reps.min(n - i)) {
                let j = i + r;
                let mut s = [zero; MAX_BUFFERS];
                for k in 0..N {
                    s[k] = Vector::new(simd, bv[k][j]);
                }
                let (pj, gj) = vpre.apply(Vector::new(simd, pv[j]), Vector::new(simd, gv[j]));
                if MEASURE {
                    R::measure(coef, pj, gj, &s, red);
                    continue;
                }
                pv[j] = R::update(coef, pj, gj, &mut s, red).v;
                for k in 0..N {
                    bv[k][j] = s[k].v;
                }
            }
            i += reps;
        }

        // Scalar tail: the same code on single elements.
        let spre = pre.resolve::<F>();
        let mut sums = [0, 1].map(|j| spill::<S, F>(&vred[..reps], j));
        let first = n * (SUMS / reps);
        for i in 0..pt.len() {
            let mut s = [F::c(0.0); MAX_BUFFERS];
            for k in 0..N {
                s[k] = bt[k][i];
            }
            let slot = (first + i) % SUMS;
            let mut red = [sums[0][slot], sums[1][slot]];
            let (pi, gi) = spre.apply(pt[i], gt[i]);
            if MEASURE {
                R::measure(coef, pi, gi, &s, &mut red);
                [sums[0][slot], sums[1][slot]] = red;
                continue;
            }
            pt[i] = R::update(coef, pi, gi, &mut s, &mut red);
            [sums[0][slot], sums[1][slot]] = red;
            for k in 0..N {
                bt[k][i] = s[k];
            }
        }
        sums.map(|s| tree_sum(s).to_f64())
    }
}

/// Number of running sums of a reduction, whatever the SIMD width.
const SUMS: usize = 16;

/// Vectors of `F` at level `S` that hold [`SUMS`] lanes.
#[inline(always)]
fn reps<S: Simd, F: Float>() -> usize {
    let lanes = std::mem::size_of::<F::V<S>>() / std::mem::size_of::<F>();
    debug_assert!(lanes > 0 && SUMS.is_multiple_of(lanes));
    SUMS / lanes
}

/// The `j`th of each pair of vector sums, laid out as [`SUMS`] scalars in element order.
#[inline(always)]
fn spill<S: Simd, F: Float>(v: &[[Vector<S, F>; 2]], j: usize) -> [F; SUMS] {
    let mut out = [F::c(0.0); SUMS];
    let (vs, _) = F::split_mut::<S>(&mut out);
    for (dst, src) in vs.iter_mut().zip(v) {
        *dst = src[j].v;
    }
    out
}

/// Sum of [`SUMS`] values as a fixed pairwise tree.
#[inline(always)]
fn tree_sum<F: Float>(mut a: [F; SUMS]) -> F {
    let mut width = SUMS;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            a[i] = a[i] + a[i + width];
        }
    }
    a[0]
}

/// Write into `out` every gradient after the gradient side of its group's prelude
/// (`maximize`, norm scaling, value clipping, L2 penalty; not the decoupled decay, which
/// belongs to the parameter): what a whole-tensor stage ([`Rule::transform`]) starts from.
/// `views[t].bufs[0]` is tensor `t`'s output.
///
/// # Safety
/// As [`update_all`], with `bufs[0]` of each view valid for the tensor's length.
pub(crate) unsafe fn prelude_grads<F: Float>(
    plan: &Plan,
    views: &[TensorViews<F>],
    pres: &[Prelude],
) {
    let arch = arch();
    for_each_chunk(plan, |c| {
        for (_, seg) in plan.chunk(c) {
            let v = &views[seg.tensor];
            if !v.active {
                continue;
            }
            let (a, b) = (seg.start, seg.end);
            // SAFETY: segments are disjoint ranges of their tensors; the caller guarantees
            // the views.
            arch.dispatch(PreludeOp {
                pre: &pres[v.group],
                p: unsafe { v.p.slice(a, b) },
                g: unsafe { v.g.slice(a, b) },
                out: unsafe { v.bufs[0].slice_mut(a, b) },
            });
        }
    });
}

struct PreludeOp<'a, F> {
    pre: &'a Prelude,
    p: &'a [F],
    g: &'a [F],
    out: &'a mut [F],
}

impl<F: Float> WithSimd for PreludeOp<'_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let pre = Prelude {
            decay_factor: None,
            ..*self.pre
        };
        let (pv, pt) = F::split::<S>(self.p);
        let (gv, gt) = F::split::<S>(self.g);
        let (ov, ot) = F::split_mut::<S>(self.out);
        let vpre = pre.resolve::<Vector<S, F>>();
        for ((o, &p), &g) in ov.iter_mut().zip(pv).zip(gv) {
            *o = vpre.apply(Vector::new(simd, p), Vector::new(simd, g)).1.v;
        }
        let spre = pre.resolve::<F>();
        for ((o, &p), &g) in ot.iter_mut().zip(pt).zip(gt) {
            *o = spre.apply(p, g).1;
        }
    }
}

/// What a scan of the gradients found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GradScan {
    /// Every element is finite.
    pub finite: bool,
    /// Sum of squares of all elements (when asked for; summed per segment, then in plan order).
    pub sum_squares: f64,
}

/// Check every gradient for NaN/inf and, if `norm`, sum their squares: one read of the
/// gradients, in parallel, with a result independent of the thread count. Tensors that are
/// not `active` (no gradient this step) are passed over.
pub(crate) fn scan_grads<F: Float>(
    plan: &Plan,
    grads: &[&[F]],
    active: &[bool],
    norm: bool,
    partials: RawSlice<[f64; 2]>,
) -> GradScan {
    scan_grads_from(plan, grads, &[], active, norm, partials)
}

/// [`scan_grads`] of gradients that are elements `owned[t]` of their tensors (a sharded
/// optimizer's share; none given: whole tensors). The plan runs only segments inside them.
pub(crate) fn scan_grads_from<F: Float>(
    plan: &Plan,
    grads: &[&[F]],
    owned: &[std::ops::Range<usize>],
    active: &[bool],
    norm: bool,
    partials: RawSlice<[f64; 2]>,
) -> GradScan {
    let arch = arch();
    for_each_chunk(plan, |c| {
        for (si, seg) in plan.chunk(c) {
            if !active[seg.tensor] {
                // SAFETY: each segment index belongs to exactly one chunk.
                unsafe { partials.slice_mut(si, si + 1)[0] = [0.0; 2] };
                continue;
            }
            let origin = owned.get(seg.tensor).map_or(0, |r| r.start);
            let g = &grads[seg.tensor][seg.start - origin..seg.end - origin];
            let r = arch.dispatch(ScanOp { g, norm });
            // SAFETY: each segment index belongs to exactly one chunk.
            unsafe { partials.slice_mut(si, si + 1)[0] = r };
        }
    });
    // SAFETY: the parallel writes above are finished.
    scan_totals(unsafe { partials.slice(0, plan.num_segments()) })
}

/// The scan's result from its per-segment partials, added in plan order.
pub(crate) fn scan_totals(partials: &[[f64; 2]]) -> GradScan {
    let mut out = GradScan {
        finite: true,
        sum_squares: 0.0,
    };
    for r in partials {
        out.finite &= r[1] == 0.0;
        out.sum_squares += r[0];
    }
    out
}

/// Add `x · 0` (NaN unless finite) and, if `norm`, `x²` to the running sums `a`. (A helper,
/// not a closure: closures do not inherit the SIMD target features.)
#[inline(always)]
fn scan_vector<S: Simd, F: Float>(simd: S, a: &mut [Vector<S, F>; 2], x: F::V<S>, norm: bool) {
    let x = Vector::new(simd, x);
    a[0] = a[0] + x * Vector::c(0.0);
    if norm {
        a[1] = a[1] + x * x;
    }
}

struct ScanOp<'a, F> {
    g: &'a [F],
    norm: bool,
}

impl<F: Float> WithSimd for ScanOp<'_, F> {
    type Output = [f64; 2];

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [f64; 2] {
        let (gv, gt) = F::split::<S>(self.g);
        let zero = Vector::<S, F>::c(0.0);
        let reps = reps::<S, F>();
        // `x · 0` is 0 for finite x and NaN for NaN or ±inf; [bad, squares] per running sum.
        let mut acc = [[zero; 2]; SUMS];
        // Blocks of `reps` vectors, so that each running sum has a fixed register.
        let blocks = gv.chunks_exact(reps);
        let rest = blocks.remainder();
        for block in blocks {
            for r in 0..reps {
                scan_vector(simd, &mut acc[r], block[r], self.norm);
            }
        }
        for (a, &x) in acc.iter_mut().zip(rest) {
            scan_vector(simd, a, x, self.norm);
        }
        let mut sums = [0, 1].map(|j| spill::<S, F>(&acc[..reps], j));
        let first = gv.len() * (SUMS / reps);
        for (i, &x) in gt.iter().enumerate() {
            let slot = (first + i) % SUMS;
            sums[0][slot] = sums[0][slot] + x * F::c(0.0);
            if self.norm {
                sums[1][slot] = sums[1][slot] + x * x;
            }
        }
        let [bad, sq] = sums.map(|s| tree_sum(s).to_f64());
        [sq, if bad == 0.0 { 0.0 } else { 1.0 }]
    }
}
