//! The coded step for `bf16` state on AVX-512 registers: each buffer's 16 values are widened
//! from bfloat16 into a vector, updated by the rule's unchanged `update`, and rounded back,
//! with no scratch. (8-bit state needs a block's absmax before its first code is written, so it
//! keeps the block scratch of [`super::packed_segment`].)
//!
//! Reductions are summed as the scratch path sums them, chunk by chunk of
//! [`super::SCRATCH`] elements (16 running sums, then a tree), so both paths give the same
//! bits (tested with SIMD on and off).

#![cfg(target_arch = "x86_64")]

use pulp::{Simd, WithSimd};

use super::lowbit::{avx512, bf16_from_f32, f32_from_bf16};
use super::simd::{SimdFloat, Vector};
use super::{spill, tree_sum, Float, Lane, Prelude, SCRATCH, SUMS};
use crate::optim::{Rule, MAX_BUFFERS};

/// One segment of a tensor whose `N` state buffers are all `bf16`.
pub(super) struct Bf16Op<'a, R: Rule, const N: usize> {
    pub coef: &'a R::Coef,
    pub pre: &'a Prelude,
    /// Where the segment starts in its tensor (chunks lie at multiples of [`SCRATCH`]).
    pub start: usize,
    pub p: &'a mut [f32],
    pub g: &'a [f32],
    pub bits: [&'a mut [u16]; N],
}

/// 16 bfloat16 widened to a vector of `f32` ([`avx512::widen16`]) at level `S`.
///
/// # Safety
/// `src` is valid for 16 reads; the CPU has AVX-512 F and BW, and `S` is its 16-lane level.
#[inline(always)]
unsafe fn widen<S: Simd>(src: *const u16) -> <f32 as SimdFloat>::V<S> {
    std::mem::transmute_copy(&avx512::widen16(src))
}

/// A vector of `f32` at level `S` rounded to bfloat16 into `dst` ([`avx512::round16`]).
///
/// # Safety
/// As [`widen`], `dst` valid for 16 writes.
#[inline(always)]
unsafe fn narrow<S: Simd>(x: <f32 as SimdFloat>::V<S>, dst: *mut u16) {
    avx512::round16(std::mem::transmute_copy(&x), dst);
}

impl<R: Rule, const N: usize> WithSimd for Bf16Op<'_, R, N> {
    type Output = [f64; 2];

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [f64; 2] {
        // Only dispatched at x86-64-v4 (16 lanes of f32).
        assert_eq!(std::mem::size_of::<<f32 as SimdFloat>::V<S>>(), 64);
        let Bf16Op {
            coef,
            pre,
            start,
            p,
            g,
            bits,
        } = self;
        let coef = *coef;
        let coef = &coef;
        let pre = *pre;
        let vpre = pre.resolve::<Vector<S, f32>>();
        let spre = pre.resolve::<f32>();
        let zero = Vector::<S, f32>::c(0.0);
        let len = p.len();
        assert!(g.len() == len && bits.iter().all(|b| b.len() == len));
        let mut red = [0.0f64; 2];
        let mut a = 0;
        while a < len {
            let b = (((start + a) / SCRATCH + 1) * SCRATCH - start).min(len);
            let (pv, pt) = f32::split_mut::<S>(&mut p[a..b]);
            let (gv, gt) = f32::split::<S>(&g[a..b]);
            // The vector body: as SegmentOp with one vector of SUMS lanes.
            let mut vred = [[zero; 2]; 1];
            for j in 0..pv.len() {
                let mut s = [zero; MAX_BUFFERS];
                for k in 0..N {
                    // SAFETY: 16 values from `a + 16 j` lie within the chunk; AVX-512 is
                    // checked before this op is dispatched.
                    s[k] = Vector::new(simd, unsafe { widen::<S>(bits[k][a + 16 * j..].as_ptr()) });
                }
                let (pj, gj) = vpre.apply(Vector::new(simd, pv[j]), Vector::new(simd, gv[j]));
                pv[j] = R::update(coef, pj, gj, &mut s, &mut vred[0]).v;
                for k in 0..N {
                    // SAFETY: as above.
                    unsafe { narrow::<S>(s[k].v, bits[k][a + 16 * j..].as_mut_ptr()) };
                }
            }
            // The scalar tail (the tensor's last few elements).
            let mut sums = [0, 1].map(|j| spill::<S, f32>(&vred, j));
            let first = pv.len() * SUMS;
            let tail = a + 16 * pv.len();
            for i in 0..pt.len() {
                let mut s = [0.0f32; MAX_BUFFERS];
                for k in 0..N {
                    s[k] = f32_from_bf16(bits[k][tail + i]);
                }
                let slot = (first + i) % SUMS;
                let mut r = [sums[0][slot], sums[1][slot]];
                let (pi, gi) = spre.apply(pt[i], gt[i]);
                pt[i] = R::update(coef, pi, gi, &mut s, &mut r);
                [sums[0][slot], sums[1][slot]] = r;
                for k in 0..N {
                    bits[k][tail + i] = bf16_from_f32(s[k]);
                }
            }
            red[0] += tree_sum(sums[0]).to_f64();
            red[1] += tree_sum(sums[1]).to_f64();
            a = b;
        }
        red
    }
}
