//! Optimizer state stored in fewer bits than the parameters: bfloat16, and 8-bit block-wise
//! dynamic quantization (Dettmers et al., *8-bit Optimizers via Block-wise Quantization*,
//! ICLR 2022, [arXiv:2110.02861](https://arxiv.org/abs/2110.02861)), as bitsandbytes stores it.
//!
//! **8-bit.** A buffer is cut into blocks of [`BLOCK`] elements. Each block keeps one `f32`
//! absmax and one `u8` code per element into a 256-entry [`Codebook`] (bitsandbytes'
//! `create_dynamic_map`, [`dynamic_map`]). Decoding is `map[code] · absmax`. Encoding a block:
//! `absmax = max |x|`, `y = x / absmax` (rounded to `f32`), `code` = the entry nearest to `y`,
//! ties to the lower index; a block of zeros gets the code of 0.0.
//!
//! Nearest rounding is exact and needs no distance arithmetic: between entries `c` and
//! `c + 1` the boundary is their midpoint, computed exactly in `f64`; [`Codebook`] keeps, per
//! boundary, the largest `f32` that still rounds down (`T[c]`). Then `code(y)` is the number
//! of thresholds below `y`: the scalar path finds it by an 8-level binary search.
//!
//! The AVX-512 path (with BW, DQ and VBMI: Ice Lake, Zen 4 and later) uses the maps' shape
//! instead. Within each decade `10^(i−6)` a dynamic map's entries are evenly spaced, so the
//! code is a concave piecewise-linear function of `|y|`: the minimum of seven lines, one per
//! decade ([`Lines`]), floored, is the code or one below it (shifted by half a code, so that
//! the estimate never overshoots). One comparison with the threshold `T[estimate]` settles
//! it. Tables of 256 `f32` (the thresholds, and the entries for decoding) are looked up 64
//! lanes at a time as four byte planes with `vpermi2b`, no gathers. Both paths give the same
//! codes for every `f32` (tested on a sweep of all bit patterns and around every threshold).
//!
//! **bf16.** Each value is rounded to nearest-even bfloat16 (NaN stays NaN) and read back
//! exactly by widening.
//!
//! Blocks are encoded and decoded whole, 256 elements at a time, by the step kernel
//! ([`super`]): a block's new state waits in a 1 KiB scratch on the stack (L1) between the
//! update and the encoding, never in a copy of the tensor's state.

use std::sync::OnceLock;

/// Elements per 8-bit block (bitsandbytes' block size for optimizer state).
pub const BLOCK: usize = 256;

/// Which 256-entry map an 8-bit buffer uses: `Signed` for first moments and one-state
/// optimizers, `Unsigned` for second moments of two-state optimizers (bitsandbytes' choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMap {
    /// `create_dynamic_map(signed=True)`: from −0.99297 to 1.
    Signed,
    /// `create_dynamic_map(signed=False)`: from 0 to 1.
    Unsigned,
}

impl QuantMap {
    /// `"signed"` or `"unsigned"` (the names in checkpoints and reference cases).
    pub fn name(self) -> &'static str {
        match self {
            QuantMap::Signed => "signed",
            QuantMap::Unsigned => "unsigned",
        }
    }

    /// The map's codebook (built once).
    pub fn codebook(self) -> &'static Codebook {
        static SIGNED: OnceLock<Codebook> = OnceLock::new();
        static UNSIGNED: OnceLock<Codebook> = OnceLock::new();
        match self {
            QuantMap::Signed => SIGNED.get_or_init(|| Codebook::dynamic(true)),
            QuantMap::Unsigned => UNSIGNED.get_or_init(|| Codebook::dynamic(false)),
        }
    }
}

/// `torch.linspace(start, end, steps)` in `f32`, as PyTorch's CPU kernel computes it: a step
/// `(end − start) / (steps − 1)` in `f32`, the first half counted up from `start`, the second
/// half down from `end`, each value one fused multiply-add (a single rounding: with a
/// separate multiply and add, 42 entries of the signed map come out one ulp off).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)`, sorted: for
/// each decade `10^(i−6)`, `i = 0…6`, the midpoints of `linspace(0.1, 1, 2^i + 1)` (signed,
/// with their negatives) or of `linspace(0.1, 1, 2^(i+1) + 1)` (unsigned), scaled by the
/// decade in `f32`; then 0 and 1.
pub fn dynamic_map(signed: bool) -> [f32; 256] {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7usize {
        let items = if signed {
            (1 << i) + 1
        } else {
            (1 << (i + 1)) + 1
        };
        let bounds = linspace_f32(0.1, 1.0, items);
        // Python's `10 ** (i - 6)` (an exact power for i = 6), rounded to `f32` by the multiply.
        let scale = 10f64.powi(i as i32 - 6) as f32;
        for w in bounds.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            if signed {
                data.push(-scale * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.resize(256, 0.0);
    data.sort_by(f32::total_cmp);
    let mut out = [0.0; 256];
    out.copy_from_slice(&data);
    out
}

/// A 256-entry map with what encoding needs: the entries, the thresholds between them, their
/// byte planes for the vector lookups, and for bitsandbytes' dynamic maps the lines that
/// estimate a code.
#[derive(Clone, Debug)]
pub struct Codebook {
    /// The entries, ascending.
    pub values: [f32; 256],
    /// `thresholds[c]`: the largest `f32` that rounds to entry `c` or below (`c < 255`);
    /// `thresholds[255]` is +∞.
    pub thresholds: [f32; 256],
    /// The code of 0.0 (what a block of zeros stores).
    pub zero_code: u8,
    /// `values` as byte planes (decoding).
    value_planes: Planes,
    /// `thresholds` as byte planes (the encoding's last comparison).
    threshold_planes: Planes,
    /// The code estimate of a dynamic map (none for another map: encoded by the scalar path).
    lines: Option<Lines>,
}

/// A table of 256 `f32` as four planes of bytes: `planes[b][c]` is byte `b` (little-endian)
/// of entry `c`, so that one `vpermi2b` pair looks up one byte of 64 entries.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Planes([[u8; 256]; 4]);

impl Planes {
    fn new(table: &[f32; 256]) -> Planes {
        let mut planes = [[0u8; 256]; 4];
        for (c, v) in table.iter().enumerate() {
            for (plane, byte) in planes.iter_mut().zip(v.to_bits().to_le_bytes()) {
                plane[c] = byte;
            }
        }
        Planes(planes)
    }
}

/// The code estimate of a dynamic map. Counting `k` over the map's non-negative entries
/// (0, then decade 0's, …, decade 6's, then 1), entry `j` of decade `i` (`n_i` entries, spacing
/// `w_i = 0.9 / n_i`, scale `s_i = 10^(i−6)`, centred at `s_i (0.1 + (j + ½) w_i)`) is number
/// `base_i + j`, and its boundaries with its neighbours lie where
/// `f_i(u) = base_i + (u / s_i − 0.1) / w_i − ½` is an integer plus ½. The lines meet at the
/// decade ends (`f_i(s_i) = f_{i+1}(s_i)`) with falling slopes, so `min_i f_i(u)` is the
/// piecewise-linear count, and `⌊min_i f_i(u)⌋` is `k(u)` or `k(u) − 1` (with half a code to
/// spare for rounding and for the entries' own `f32` rounding). Signed maps put `k` at code
/// `127 + k` for `y ≥ 0` and `127 − k` below zero, where the estimate `126 − ⌊…⌋` is again
/// the code or one below.
#[derive(Clone, Copy, Debug)]
struct Lines {
    /// Slope `1 / (s_i w_i)` of each decade's line.
    slope: [f32; 7],
    /// Intercept `base_i − 0.1 / w_i − ½`.
    intercept: [f32; 7],
    /// The largest count (128 signed: 127 entries and 1; 255 unsigned).
    top: i32,
    /// Whether the map is signed.
    signed: bool,
}

impl Lines {
    /// The lines of `create_dynamic_map(signed)`.
    fn of_dynamic_map(signed: bool) -> Lines {
        let (mut slope, mut intercept) = ([0.0f32; 7], [0.0f32; 7]);
        let mut base = 1.0f64;
        for i in 0..7 {
            let n = f64::from(if signed { 1u32 << i } else { 1u32 << (i + 1) });
            let scale = 10f64.powi(i as i32 - 6);
            let width = 0.9 / n;
            slope[i] = (1.0 / (scale * width)) as f32;
            intercept[i] = (base - 0.1 / width - 0.5) as f32;
            base += n;
        }
        Lines {
            slope,
            intercept,
            top: if signed { 128 } else { 255 },
            signed,
        }
    }
}

impl Codebook {
    /// The codebook of `values` (ascending); without [`Lines`], so encoded by the scalar
    /// binary search.
    pub fn new(values: &[f32; 256]) -> Codebook {
        let mut thresholds = [f32::INFINITY; 256];
        for c in 0..255 {
            let (a, b) = (values[c], values[c + 1]);
            // Exact in f64: two f32 summed and halved.
            let mid = (f64::from(a) + f64::from(b)) / 2.0;
            let mut t = mid as f32;
            if f64::from(t) > mid {
                t = next_down(t);
            }
            thresholds[c] = t;
        }
        let mut book = Codebook {
            values: *values,
            thresholds,
            zero_code: 0,
            value_planes: Planes::new(values),
            threshold_planes: Planes::new(&thresholds),
            lines: None,
        };
        book.zero_code = book.encode(0.0);
        book
    }

    /// The codebook of bitsandbytes' dynamic map, with the lines of its vector encoding.
    fn dynamic(signed: bool) -> Codebook {
        Codebook {
            lines: Some(Lines::of_dynamic_map(signed)),
            ..Codebook::new(&dynamic_map(signed))
        }
    }

    /// The code of `y`: the index of the nearest entry, ties to the lower (0 for NaN).
    #[inline(always)]
    pub fn encode(&self, y: f32) -> u8 {
        let mut code = 0usize;
        for k in 0..8 {
            let half = 1usize << (7 - k);
            if y > self.thresholds[code + half - 1] {
                code += half;
            }
        }
        code as u8
    }

    /// Encode one block: its absmax, and the codes of `x / absmax`.
    pub fn encode_block(&self, x: &[f32], codes: &mut [u8]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if super::lowbit_avx512() {
            // SAFETY: the CPU has AVX-512F (checked); the slices have equal lengths.
            let absmax = unsafe { avx512::absmax(x) };
            if absmax == 0.0 {
                codes.fill(self.zero_code);
                return absmax;
            }
            if let Some(lines) = &self.lines {
                // SAFETY: as above.
                unsafe { avx512::encode(self, lines, x, absmax, codes) };
                return absmax;
            }
            self.encode_scalar(x, absmax, codes);
            return absmax;
        }
        let absmax = block_absmax(x);
        if absmax == 0.0 {
            codes.fill(self.zero_code);
            return absmax;
        }
        self.encode_scalar(x, absmax, codes);
        absmax
    }

    /// The codes of `x / absmax`, one by one.
    fn encode_scalar(&self, x: &[f32], absmax: f32, codes: &mut [u8]) {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = self.encode(v / absmax);
        }
    }

    /// Decode one block into `out`: `values[code] · absmax`.
    pub fn decode_block(&self, codes: &[u8], absmax: f32, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::lowbit_avx512() {
            // SAFETY: the CPU has AVX-512F (checked); the slices have equal lengths.
            unsafe { avx512::decode(self, codes, absmax, out) };
            return;
        }
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = self.values[c as usize] * absmax;
        }
    }
}

/// `max |x|` over a block (0 for an empty one; NaN is passed over, as C's `fmaxf`), with
/// eight independent running maxima (the maximum does not depend on the order).
#[inline]
pub fn block_absmax(x: &[f32]) -> f32 {
    let mut m = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in m.iter_mut().zip(c) {
            *a = a.max(v.abs());
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0f32, |a, v| a.max(v.abs()));
    m.iter().fold(tail, |a, &v| a.max(v))
}

/// The largest `f32` below `x` (for finite, non-zero positive or negative `x`).
fn next_down(x: f32) -> f32 {
    if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else if x < 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        -f32::from_bits(1)
    }
}

/// `x` rounded to nearest-even bfloat16 (NaN stays a quiet NaN).
#[inline(always)]
pub fn bf16_from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// A bfloat16 widened to `f32` (exact).
#[inline(always)]
pub fn f32_from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// Round a block to bfloat16.
pub fn bf16_encode_block(x: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if super::lowbit_avx512() {
        // SAFETY: the CPU has AVX-512F (checked); the slices have equal lengths.
        unsafe { avx512::bf16_encode(x, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = bf16_from_f32(v);
    }
}

/// Widen a block of bfloat16.
pub fn bf16_decode_block(b: &[u16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::lowbit_avx512() {
        // SAFETY: the CPU has AVX-512F (checked); the slices have equal lengths.
        unsafe { avx512::bf16_decode(b, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(b) {
        *o = f32_from_bf16(v);
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    //! The codecs on 16 lanes, and table lookups on 64. Each function handles whole vectors
    //! (64 elements for the 8-bit codecs, 16 for bf16 and absmax) and leaves the rest to the
    //! scalar code, so both paths agree by construction there.
    //!
    //! A lookup takes 64 code bytes in *pack order*, the order in which `vpackusdw` and
    //! `vpackuswb` narrow four vectors of 16 codes (element `16q + 4l + j` of the 64 sits at byte
    //! `16l + 4q + j`), and widens its four byte planes back with `vpunpck*`, which undoes that
    //! order: the four results are the four vectors, each in element order. Codes read from or
    //! written to memory pass through [`swap`], the permutation between the two orders.

    use std::arch::x86_64::*;

    use super::{Codebook, Lines, Planes};

    /// The permutation between element order and pack order (its own inverse): byte
    /// `16q + 4l + j` ↔ byte `16l + 4q + j`.
    #[inline(always)]
    unsafe fn swap() -> __m512i {
        const IDX: [u8; 64] = {
            let mut idx = [0u8; 64];
            let mut e = 0;
            while e < 64 {
                let (q, l, j) = (e / 16, (e / 4) % 4, e % 4);
                idx[e] = (16 * l + 4 * q + j) as u8;
                e += 1;
            }
            idx
        };
        _mm512_loadu_si512(IDX.as_ptr().cast())
    }

    /// Entries `c` (64 bytes, pack order) of a table given as byte planes: four vectors of
    /// 16 `f32` bit patterns, in element order.
    #[inline(always)]
    unsafe fn look(c: __m512i, planes: &Planes) -> [__m512i; 4] {
        // Bit 7 of each code picks the upper or the lower 128 entries.
        let upper = _mm512_movepi8_mask(c);
        let mut bytes = [_mm512_setzero_si512(); 4];
        for (out, plane) in bytes.iter_mut().zip(&planes.0) {
            let t = plane.as_ptr();
            let lo = _mm512_permutex2var_epi8(
                _mm512_load_si512(t.cast()),
                c,
                _mm512_load_si512(t.add(64).cast()),
            );
            let hi = _mm512_permutex2var_epi8(
                _mm512_load_si512(t.add(128).cast()),
                c,
                _mm512_load_si512(t.add(192).cast()),
            );
            *out = _mm512_mask_blend_epi8(upper, lo, hi);
        }
        let w01lo = _mm512_unpacklo_epi8(bytes[0], bytes[1]);
        let w01hi = _mm512_unpackhi_epi8(bytes[0], bytes[1]);
        let w23lo = _mm512_unpacklo_epi8(bytes[2], bytes[3]);
        let w23hi = _mm512_unpackhi_epi8(bytes[2], bytes[3]);
        [
            _mm512_unpacklo_epi16(w01lo, w23lo),
            _mm512_unpackhi_epi16(w01lo, w23lo),
            _mm512_unpacklo_epi16(w01hi, w23hi),
            _mm512_unpackhi_epi16(w01hi, w23hi),
        ]
    }

    /// Four vectors of codes (each 0…255) narrowed to 64 bytes in pack order.
    #[inline(always)]
    unsafe fn pack(c: [__m512i; 4]) -> __m512i {
        _mm512_packus_epi16(
            _mm512_packus_epi32(c[0], c[1]),
            _mm512_packus_epi32(c[2], c[3]),
        )
    }

    /// The code of each lane of `y`, or one below it ([`Lines`]).
    #[inline(always)]
    unsafe fn estimate<const SIGNED: bool>(lines: &Lines, y: __m512) -> __m512i {
        let u = if SIGNED {
            _mm512_abs_ps(y)
        } else {
            // Unsigned maps hold no negative entry: below zero (and NaN) counts as zero.
            _mm512_max_ps(y, _mm512_setzero_ps())
        };
        let mut f = _mm512_fmadd_ps(
            u,
            _mm512_set1_ps(lines.slope[0]),
            _mm512_set1_ps(lines.intercept[0]),
        );
        for i in 1..7 {
            let line = _mm512_fmadd_ps(
                u,
                _mm512_set1_ps(lines.slope[i]),
                _mm512_set1_ps(lines.intercept[i]),
            );
            f = _mm512_min_ps(f, line);
        }
        let k = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(f);
        let zero = _mm512_setzero_si512();
        let k = _mm512_max_epi32(_mm512_min_epi32(k, _mm512_set1_epi32(lines.top)), zero);
        if !SIGNED {
            return k;
        }
        let negative = _mm512_movepi32_mask(_mm512_castps_si512(y));
        let up = _mm512_add_epi32(k, _mm512_set1_epi32(127));
        let down = _mm512_mask_sub_epi32(up, negative, _mm512_set1_epi32(126), k);
        _mm512_max_epi32(down, zero)
    }

    /// The codes of 64 values (four vectors), as 64 bytes in element order.
    #[inline(always)]
    unsafe fn encode64<const SIGNED: bool>(
        book: &Codebook,
        lines: &Lines,
        y: [__m512; 4],
    ) -> __m512i {
        let guess = [
            estimate::<SIGNED>(lines, y[0]),
            estimate::<SIGNED>(lines, y[1]),
            estimate::<SIGNED>(lines, y[2]),
            estimate::<SIGNED>(lines, y[3]),
        ];
        let bound = look(pack(guess), &book.threshold_planes);
        let one = _mm512_set1_epi32(1);
        let mut codes = guess;
        for q in 0..4 {
            let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y[q], _mm512_castsi512_ps(bound[q]));
            codes[q] = _mm512_mask_add_epi32(guess[q], above, guess[q], one);
            // NaN gets code 0, as the scalar search gives it.
            let number = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(y[q], y[q]);
            codes[q] = _mm512_maskz_mov_epi32(number, codes[q]);
        }
        _mm512_permutexvar_epi8(swap(), pack(codes))
    }

    /// Decode `codes` into `out` (equal lengths).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vbmi")]
    pub(super) unsafe fn decode(book: &Codebook, codes: &[u8], absmax: f32, out: &mut [f32]) {
        let n = codes.len().min(out.len());
        let scale = _mm512_set1_ps(absmax);
        let order = swap();
        let mut i = 0;
        while i + 64 <= n {
            let c = _mm512_loadu_si512(codes.as_ptr().add(i).cast());
            let v = look(_mm512_permutexvar_epi8(order, c), &book.value_planes);
            for (q, bits) in v.iter().enumerate() {
                let x = _mm512_mul_ps(_mm512_castsi512_ps(*bits), scale);
                _mm512_storeu_ps(out.as_mut_ptr().add(i + 16 * q), x);
            }
            i += 64;
        }
        for j in i..n {
            out[j] = book.values[codes[j] as usize] * absmax;
        }
    }

    /// Encode `x / absmax` into `codes` (equal lengths; `absmax` non-zero).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vbmi")]
    pub(super) unsafe fn encode(
        book: &Codebook,
        lines: &Lines,
        x: &[f32],
        absmax: f32,
        codes: &mut [u8],
    ) {
        if lines.signed {
            encode_with::<true>(book, lines, x, absmax, codes);
        } else {
            encode_with::<false>(book, lines, x, absmax, codes);
        }
    }

    /// [`encode`] for a signed or an unsigned map.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vbmi")]
    unsafe fn encode_with<const SIGNED: bool>(
        book: &Codebook,
        lines: &Lines,
        x: &[f32],
        absmax: f32,
        codes: &mut [u8],
    ) {
        let n = x.len().min(codes.len());
        let scale = _mm512_set1_ps(absmax);
        let mut i = 0;
        while i + 64 <= n {
            let p = x.as_ptr().add(i);
            let y = [
                _mm512_div_ps(_mm512_loadu_ps(p), scale),
                _mm512_div_ps(_mm512_loadu_ps(p.add(16)), scale),
                _mm512_div_ps(_mm512_loadu_ps(p.add(32)), scale),
                _mm512_div_ps(_mm512_loadu_ps(p.add(48)), scale),
            ];
            let c = encode64::<SIGNED>(book, lines, y);
            _mm512_storeu_si512(codes.as_mut_ptr().add(i).cast(), c);
            i += 64;
        }
        for j in i..n {
            codes[j] = book.encode(x[j] / absmax);
        }
    }

    /// `max |x|`, NaN passed over (as the scalar path: `max` keeps the non-NaN operand).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vbmi")]
    pub(super) unsafe fn absmax(x: &[f32]) -> f32 {
        let n = x.len();
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let v = _mm512_abs_ps(_mm512_loadu_ps(x.as_ptr().add(i + 16 * k)));
                // `max(v, a)` returns `a` when `v` is NaN.
                *a = _mm512_max_ps(v, *a);
            }
            i += 64;
        }
        let m = _mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3]));
        let mut lanes = [0.0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), m);
        let mut out = lanes.iter().fold(0.0f32, |a, &v| a.max(v));
        for &v in &x[i..] {
            out = out.max(v.abs());
        }
        out
    }

    /// 16 bfloat16 at `src` widened to `f32` (exact).
    ///
    /// # Safety
    /// `src` is valid for 16 reads; the CPU has AVX-512 F and BW.
    #[inline(always)]
    pub(in crate::kernel) unsafe fn widen16(src: *const u16) -> __m512 {
        let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.cast()));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
    }

    /// 16 `f32` rounded to nearest-even bfloat16 (NaN stays a quiet NaN) into `dst`.
    ///
    /// # Safety
    /// `dst` is valid for 16 writes; the CPU has AVX-512 F and BW.
    #[inline(always)]
    pub(in crate::kernel) unsafe fn round16(v: __m512, dst: *mut u16) {
        let bits = _mm512_castps_si512(v);
        let hi = _mm512_srli_epi32::<16>(bits);
        let lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb);
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let r = _mm512_mask_or_epi32(rounded, nan, hi, _mm512_set1_epi32(0x0040));
        _mm256_storeu_si256(dst.cast(), _mm512_cvtepi32_epi16(r));
    }

    /// Widen bfloat16 `b` into `out` (equal lengths).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vbmi")]
    pub(super) unsafe fn bf16_decode(b: &[u16], out: &mut [f32]) {
        let n = b.len().min(out.len());
        let mut i = 0;
        while i + 16 <= n {
            _mm512_storeu_ps(out.as_mut_ptr().add(i), widen16(b.as_ptr().add(i)));
            i += 16;
        }
        for j in i..n {
            out[j] = super::f32_from_bf16(b[j]);
        }
    }

    /// Round `x` to bfloat16 into `out` (equal lengths).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vbmi")]
    pub(super) unsafe fn bf16_encode(x: &[f32], out: &mut [u16]) {
        let n = x.len().min(out.len());
        let mut i = 0;
        while i + 16 <= n {
            round16(_mm512_loadu_ps(x.as_ptr().add(i)), out.as_mut_ptr().add(i));
            i += 16;
        }
        for j in i..n {
            out[j] = super::bf16_from_f32(x[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest entry by brute force, in f64 (ties to the lower index).
    fn nearest(values: &[f32; 256], y: f32) -> u8 {
        let mut best = 0;
        for c in 1..256 {
            let d = (f64::from(y) - f64::from(values[c])).abs();
            let b = (f64::from(y) - f64::from(values[best])).abs();
            if d < b {
                best = c;
            }
        }
        best as u8
    }

    #[test]
    fn maps_are_sorted_with_zero_and_one() {
        for signed in [true, false] {
            let m = dynamic_map(signed);
            assert!(m.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(m[255], 1.0);
            assert!(m.contains(&0.0));
        }
        assert_eq!(dynamic_map(false)[0], 0.0);
        assert!((dynamic_map(true)[0] + 0.992_968_75).abs() < 1e-7);
    }

    #[test]
    fn encoding_is_the_nearest_entry_everywhere() {
        for map in [QuantMap::Signed, QuantMap::Unsigned] {
            let book = map.codebook();
            // Every entry, every threshold and its neighbours, and a sweep.
            let mut ys: Vec<f32> = Vec::new();
            for c in 0..256 {
                let t = book.thresholds[c];
                let v = book.values[c];
                ys.extend([v, t, next_down(v), next_down(t)]);
                if t.is_finite() {
                    ys.push(f32::from_bits(t.to_bits().wrapping_add(1)));
                }
            }
            ys.extend((0..20_001).map(|i| -1.0 + i as f32 * 1e-4));
            ys.extend([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 2.0, -2.0]);
            for &y in &ys {
                // (Far outside [−1, 1] the brute force's f64 distances all round alike.)
                if y.abs() <= 4.0 {
                    assert_eq!(
                        book.encode(y),
                        nearest(&book.values, y),
                        "{map:?} y = {y:e}"
                    );
                }
            }
            assert_eq!(book.values[book.zero_code as usize], 0.0);
        }
    }

    #[test]
    fn vector_and_scalar_codecs_agree() {
        let book = QuantMap::Signed.codebook();
        let x: Vec<f32> = (0..BLOCK + 7)
            .map(|i| ((i as f32) * 0.37).sin() * 1e-3 * (1.0 + (i % 13) as f32))
            .collect();
        for len in [BLOCK, 7, 16, 100, BLOCK + 7] {
            let x = &x[..len];
            let mut codes = vec![0u8; len];
            let absmax = book.encode_block(x, &mut codes);
            assert_eq!(absmax, block_absmax(x));
            let want: Vec<u8> = x.iter().map(|&v| book.encode(v / absmax)).collect();
            assert_eq!(codes, want, "len {len}");
            let mut back = vec![0.0f32; len];
            book.decode_block(&codes, absmax, &mut back);
            for (b, &c) in back.iter().zip(&codes) {
                assert_eq!(b.to_bits(), (book.values[c as usize] * absmax).to_bits());
            }
            let mut bf = vec![0u16; len];
            bf16_encode_block(x, &mut bf);
            let want: Vec<u16> = x.iter().map(|&v| bf16_from_f32(v)).collect();
            assert_eq!(bf, want);
        }
        let mut zeros = [9u8; 20];
        assert_eq!(book.encode_block(&[0.0; 20], &mut zeros), 0.0);
        assert!(zeros.iter().all(|&c| c == book.zero_code));
    }

    /// The codes of `ys` by `encode_block` with absmax 1 (so `y / 1 = y`), against the scalar
    /// search, for both maps. With AVX-512 (BW, DQ, VBMI) this checks the vector estimate and
    /// lookups; elsewhere both sides are the scalar search.
    fn vector_codes_match(ys: &[f32]) {
        let ys: Vec<f32> = ys
            .iter()
            .copied()
            .filter(|y| y.is_nan() || y.abs() <= 1.0)
            .collect();
        for map in [QuantMap::Signed, QuantMap::Unsigned] {
            let book = map.codebook();
            for chunk in ys.chunks(BLOCK - 1) {
                // A block's absmax must be 1 for y / absmax to be y: pin it with a last 1.0.
                let mut x = chunk.to_vec();
                x.push(1.0);
                let mut codes = vec![0u8; x.len()];
                let absmax = book.encode_block(&x, &mut codes);
                assert_eq!(absmax, 1.0);
                for (&y, &c) in x.iter().zip(&codes) {
                    assert_eq!(c, book.encode(y), "{map:?} y = {y:e} ({:#x})", y.to_bits());
                }
            }
        }
    }

    /// Every threshold and entry ±64 ulps, and every 4099th bit pattern in [−1, 1] (about
    /// 520 000 values: every exponent, signs, zeros, NaN).
    #[test]
    fn vector_encoding_matches_the_search_on_a_sweep() {
        let mut ys: Vec<f32> = Vec::new();
        for map in [QuantMap::Signed, QuantMap::Unsigned] {
            let book = map.codebook();
            for &t in book.thresholds.iter().chain(&book.values) {
                if t.is_finite() {
                    for d in -64i32..=64 {
                        ys.push(f32::from_bits(t.to_bits().wrapping_add_signed(d)));
                    }
                }
            }
        }
        ys.extend((0..=u32::MAX / 4099).map(|i| f32::from_bits(i * 4099)));
        ys.extend([0.0, -0.0, 1.0, -1.0, f32::NAN, -f32::NAN]);
        vector_codes_match(&ys);
    }

    /// Every `f32` in [−1, 1], both maps (a few minutes in release): run by hand with
    /// `cargo test --release -p downhill -- --ignored every_f32`.
    #[test]
    #[ignore = "exhaustive: minutes; the sweep above runs by default"]
    fn vector_encoding_matches_the_search_for_every_f32() {
        let mut start = 0u64;
        while start < 1 << 32 {
            let ys: Vec<f32> = (start..start + (1 << 24))
                .map(|b| f32::from_bits(b as u32))
                .collect();
            vector_codes_match(&ys);
            start += 1 << 24;
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_from_f32(1.0), 0x3f80);
        // Halfway between 0x3f80 and 0x3f81: to even (0x3f80); just above: up.
        assert_eq!(bf16_from_f32(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_from_f32(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_from_f32(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert!(f32_from_bf16(bf16_from_f32(f32::NAN)).is_nan());
        assert_eq!(f32_from_bf16(bf16_from_f32(f32::INFINITY)), f32::INFINITY);
        assert_eq!(f32_from_bf16(bf16_from_f32(-2.5)), -2.5);
    }
}
