//! The memory-bandwidth limits a step is measured against (`downhill bench`).
//!
//! [`Roofline`] is a [`Rule`] with exactly the memory streams of an optimizer with the same
//! number of state buffers (read `p`, `g` and every buffer; write `p` and every buffer) and
//! trivial arithmetic. Run through [`RuleOptimizer`](crate::RuleOptimizer) it uses the same
//! chunking, threads and SIMD as a real step, so the time it takes is what memory alone
//! costs. [`copy`] is a plain parallel copy, the classic (but, for read-modify-write
//! kernels, pessimistic) bandwidth figure.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Float, Lane, CHUNK};
use crate::optim::{Hyper, Rule, StepCount, MAX_BUFFERS};
use crate::Result;

/// A stand-in rule with `buffers` state buffers and trivial arithmetic:
/// `s_k ← s_k + g`, `p ← p − lr·g`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    /// Number of state buffers (0 to [`MAX_BUFFERS`]).
    pub buffers: usize,
    /// Learning rate (keeps the parameters moving).
    pub lr: f64,
}

const NAMES: [&str; MAX_BUFFERS] = ["s0", "s1", "s2", "s3"];

/// Per-step constant of [`Roofline`].
#[derive(Clone, Copy, Debug)]
pub struct RooflineCoef {
    lr: f64,
}

impl Rule for Roofline {
    const NAME: &'static str = "roofline";
    type Scalars = StepCount;
    type Coef = RooflineCoef;

    fn validate(&self) -> Result<()> {
        crate::error::ensure(
            self.buffers <= MAX_BUFFERS,
            "roofline",
            "buffers",
            self.buffers as f64,
            "at most 4",
        )
    }
    fn hyper(&self) -> Hyper {
        Hyper {
            lr: self.lr,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn buffers(&self) -> &'static [&'static str] {
        &NAMES[..self.buffers.min(MAX_BUFFERS)]
    }
    fn begin(&self, s: &mut StepCount, lr: f64) -> RooflineCoef {
        s.step += 1;
        RooflineCoef { lr }
    }
    #[inline(always)]
    fn update<L: Lane>(
        c: &RooflineCoef,
        p: L,
        g: L,
        s: &mut [L; MAX_BUFFERS],
        _: &mut [L; 2],
    ) -> L {
        for x in s.iter_mut() {
            *x = *x + g;
        }
        p - L::c(c.lr) * g
    }
}

/// [`Roofline`] with a reading pass before the update, as a rule that
/// [measures](Rule::MEASURES) (LAMB, NovoGrad, Prodigy) has: the pass reads `READS` values per
/// element — the gradient, then the parameter, then the buffers in order — and sums them (its
/// sums are ignored). What it does not use the kernel does not load, as for the real rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RooflineTwoPass<const READS: usize>(pub Roofline);

impl<const READS: usize> Rule for RooflineTwoPass<READS> {
    const NAME: &'static str = "roofline-two-pass";
    type Scalars = StepCount;
    type Coef = RooflineCoef;
    const MEASURES: bool = true;

    fn validate(&self) -> Result<()> {
        self.0.validate()?;
        crate::error::ensure(
            (1..=2 + self.0.buffers).contains(&READS),
            "roofline",
            "reads",
            READS as f64,
            "between 1 and 2 + buffers",
        )
    }
    fn hyper(&self) -> Hyper {
        self.0.hyper()
    }
    fn set_lr(&mut self, lr: f64) {
        self.0.set_lr(lr);
    }
    fn buffers(&self) -> &'static [&'static str] {
        self.0.buffers()
    }
    fn measure_reads(&self) -> usize {
        READS
    }
    fn begin(&self, s: &mut StepCount, lr: f64) -> RooflineCoef {
        self.0.begin(s, lr)
    }
    #[inline(always)]
    fn measure<L: Lane>(_: &RooflineCoef, p: L, g: L, s: &[L; MAX_BUFFERS], red: &mut [L; 2]) {
        let mut sum = g;
        if READS >= 2 {
            sum = sum + p;
        }
        for x in s.iter().take(READS.saturating_sub(2)) {
            sum = sum + *x;
        }
        red[0] = red[0] + sum;
    }
    #[inline(always)]
    fn update<L: Lane>(
        c: &RooflineCoef,
        p: L,
        g: L,
        s: &mut [L; MAX_BUFFERS],
        red: &mut [L; 2],
    ) -> L {
        Roofline::update(c, p, g, s, red)
    }
}

/// Copy `src` into `dst` in parallel chunks (in the caller's rayon pool).
///
/// # Panics
/// If the lengths differ.
pub fn copy<F: Float>(dst: &mut [F], src: &[F]) {
    assert_eq!(dst.len(), src.len(), "copy: lengths differ");
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}
