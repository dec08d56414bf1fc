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
//! of thresholds below `y`, found by an 8-level binary search. The AVX-512 path runs the
//! search on 16 lanes at once with register permutes for each level's table (no gathers),
//! and decodes with eight two-register permutes; both give the scalar path's codes, bit for
//! bit (tested).
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
            QuantMap::Signed => SIGNED.get_or_init(|| Codebook::new(&dynamic_map(true))),
            QuantMap::Unsigned => UNSIGNED.get_or_init(|| Codebook::new(&dynamic_map(false))),
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

/// A 256-entry map with what encoding needs: the entries, the thresholds between them, and
/// each binary-search level's table of thresholds.
#[derive(Clone, Debug)]
pub struct Codebook {
    /// The entries, ascending.
    pub values: [f32; 256],
    /// `thresholds[c]`: the largest `f32` that rounds to entry `c` or below (`c < 255`);
    /// `thresholds[255]` is +∞.
    pub thresholds: [f32; 256],
    /// Level `k` (0-based) of the search compares with `levels[k][code >> (8 − k)]`:
    /// `thresholds[j · 2^(8−k) + 2^(7−k) − 1]` for the `2^k` prefixes `j` (padded to 16 for
    /// the permutes of the first levels).
    pub levels: [[f32; 128]; 8],
    /// The code of 0.0 (what a block of zeros stores).
    pub zero_code: u8,
}

impl Codebook {
    /// The codebook of `values` (ascending).
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
        let mut levels = [[f32::INFINITY; 128]; 8];
        for (k, level) in levels.iter_mut().enumerate() {
            let span = 1usize << (8 - k);
            for (j, slot) in level.iter_mut().enumerate().take(1 << k) {
                *slot = thresholds[j * span + span / 2 - 1];
            }
        }
        let mut book = Codebook {
            values: *values,
            thresholds,
            levels,
            zero_code: 0,
        };
        book.zero_code = book.encode(0.0);
        book
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
            } else {
                // SAFETY: as above.
                unsafe { avx512::encode(self, x, absmax, codes) };
            }
            return absmax;
        }
        let absmax = block_absmax(x);
        if absmax == 0.0 {
            codes.fill(self.zero_code);
            return absmax;
        }
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = self.encode(v / absmax);
        }
        absmax
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
mod avx512 {
    //! The codecs on 16 lanes. Each function handles whole vectors and leaves the tail (fewer
    //! than 16 elements) to the scalar code, so both paths agree by construction there.

    use std::arch::x86_64::*;

    use super::Codebook;

    /// Decode `codes` into `out` (equal lengths).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn decode(book: &Codebook, codes: &[u8], absmax: f32, out: &mut [f32]) {
        let n = codes.len().min(out.len());
        let v = book.values.as_ptr();
        let tab: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(v.add(16 * i)));
        let scale = _mm512_set1_ps(absmax);
        let (b32, b64, b128) = (
            _mm512_set1_epi32(32),
            _mm512_set1_epi32(64),
            _mm512_set1_epi32(128),
        );
        let mut i = 0;
        while i + 16 <= n {
            let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.as_ptr().add(i).cast()));
            // Eight 32-entry lookups on the low five bits, then a selection tree on bits 5–7.
            let r: [__m512; 8] =
                std::array::from_fn(|j| _mm512_permutex2var_ps(tab[2 * j], idx, tab[2 * j + 1]));
            let m5 = _mm512_test_epi32_mask(idx, b32);
            let m6 = _mm512_test_epi32_mask(idx, b64);
            let m7 = _mm512_test_epi32_mask(idx, b128);
            let s01 = _mm512_mask_blend_ps(m5, r[0], r[1]);
            let s23 = _mm512_mask_blend_ps(m5, r[2], r[3]);
            let s45 = _mm512_mask_blend_ps(m5, r[4], r[5]);
            let s67 = _mm512_mask_blend_ps(m5, r[6], r[7]);
            let s03 = _mm512_mask_blend_ps(m6, s01, s23);
            let s47 = _mm512_mask_blend_ps(m6, s45, s67);
            let x = _mm512_mask_blend_ps(m7, s03, s47);
            _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(x, scale));
            i += 16;
        }
        for j in i..n {
            out[j] = book.values[codes[j] as usize] * absmax;
        }
    }

    /// Encode `x / absmax` into `codes` (equal lengths; `absmax` non-zero).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn encode(book: &Codebook, x: &[f32], absmax: f32, codes: &mut [u8]) {
        let n = x.len().min(codes.len());
        let l = &book.levels;
        let level = |k: usize, i: usize| _mm512_loadu_ps(l[k].as_ptr().add(16 * i));
        // Levels 0–4 fit one register (≤ 16 prefixes), level 5 two, level 6 four, level 7 eight.
        let t0 = _mm512_set1_ps(l[0][0]);
        let (t1, t2, t3, t4) = (level(1, 0), level(2, 0), level(3, 0), level(4, 0));
        let t5: [__m512; 2] = std::array::from_fn(|i| level(5, i));
        let t6: [__m512; 4] = std::array::from_fn(|i| level(6, i));
        let t7: [__m512; 8] = std::array::from_fn(|i| level(7, i));
        let scale = _mm512_set1_ps(absmax);
        let mut i = 0;
        while i + 16 <= n {
            let y = _mm512_div_ps(_mm512_loadu_ps(x.as_ptr().add(i)), scale);
            let mut code = _mm512_setzero_si512();
            // Level 0: one threshold.
            let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, t0);
            code = _mm512_mask_add_epi32(code, up, code, _mm512_set1_epi32(128));
            // Levels 1–4: the prefix (code >> (8 − k)) indexes one register.
            macro_rules! small {
                ($k:expr, $t:expr) => {{
                    let j = _mm512_srli_epi32::<{ 8 - $k }>(code);
                    let th = _mm512_permutexvar_ps(j, $t);
                    let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, th);
                    code = _mm512_mask_add_epi32(code, up, code, _mm512_set1_epi32(1 << (7 - $k)));
                }};
            }
            small!(1, t1);
            small!(2, t2);
            small!(3, t3);
            small!(4, t4);
            // Level 5: 32 prefixes, one two-register permute.
            let j = _mm512_srli_epi32::<3>(code);
            let th = _mm512_permutex2var_ps(t5[0], j, t5[1]);
            let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, th);
            code = _mm512_mask_add_epi32(code, up, code, _mm512_set1_epi32(4));
            // Level 6: 64 prefixes, two permutes and a blend on the prefix's bit 5.
            let j = _mm512_srli_epi32::<2>(code);
            let hi = _mm512_test_epi32_mask(j, _mm512_set1_epi32(32));
            let th = _mm512_mask_blend_ps(
                hi,
                _mm512_permutex2var_ps(t6[0], j, t6[1]),
                _mm512_permutex2var_ps(t6[2], j, t6[3]),
            );
            let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, th);
            code = _mm512_mask_add_epi32(code, up, code, _mm512_set1_epi32(2));
            // Level 7: 128 prefixes, four permutes and blends on bits 5 and 6.
            let j = _mm512_srli_epi32::<1>(code);
            let b5 = _mm512_test_epi32_mask(j, _mm512_set1_epi32(32));
            let b6 = _mm512_test_epi32_mask(j, _mm512_set1_epi32(64));
            let lo = _mm512_mask_blend_ps(
                b5,
                _mm512_permutex2var_ps(t7[0], j, t7[1]),
                _mm512_permutex2var_ps(t7[2], j, t7[3]),
            );
            let hi = _mm512_mask_blend_ps(
                b5,
                _mm512_permutex2var_ps(t7[4], j, t7[5]),
                _mm512_permutex2var_ps(t7[6], j, t7[7]),
            );
            let th = _mm512_mask_blend_ps(b6, lo, hi);
            let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, th);
            code = _mm512_mask_add_epi32(code, up, code, _mm512_set1_epi32(1));
            _mm_storeu_si128(codes.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(code));
            i += 16;
        }
        for j in i..n {
            codes[j] = book.encode(x[j] / absmax);
        }
    }

    /// `max |x|`, NaN passed over (as the scalar path: `max` keeps the non-NaN operand).
    #[target_feature(enable = "avx512f")]
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

    /// Widen bfloat16 `b` into `out` (equal lengths).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn bf16_decode(b: &[u16], out: &mut [f32]) {
        let n = b.len().min(out.len());
        let mut i = 0;
        while i + 16 <= n {
            let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(b.as_ptr().add(i).cast()));
            let f = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), f);
            i += 16;
        }
        for j in i..n {
            out[j] = super::f32_from_bf16(b[j]);
        }
    }

    /// Round `x` to bfloat16 into `out` (equal lengths).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn bf16_encode(x: &[f32], out: &mut [u16]) {
        let n = x.len().min(out.len());
        let one = _mm512_set1_epi32(1);
        let round = _mm512_set1_epi32(0x7fff);
        let quiet = _mm512_set1_epi32(0x0040);
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_loadu_ps(x.as_ptr().add(i));
            let bits = _mm512_castps_si512(v);
            let hi = _mm512_srli_epi32::<16>(bits);
            let lsb = _mm512_and_si512(hi, one);
            let rounded =
                _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(round, lsb)));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            let r = _mm512_mask_or_epi32(rounded, nan, hi, quiet);
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi16(r));
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
