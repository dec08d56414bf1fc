//! Kernels: the only place that runs an update rule over memory.
//!
//! [`update_tensor`] streams one tensor's parameters, gradient and state buffers through a
//! rule's element function exactly once. Everything around the rule that is element-wise
//! (maximize, gradient scaling from norm clipping, value clipping, L2 and decoupled weight
//! decay) is merged into the same pass, so each input is read once and each output written
//! once. Scalars are computed by the caller, once per tensor.

mod lane;

pub use lane::{DType, Float, Lane};

use crate::optim::{Rule, MAX_BUFFERS};

/// The element-wise stages that run before a rule, with their per-tensor scalars resolved.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prelude {
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

/// One fused pass of `R` over one tensor. `bufs` holds the tensor's state buffers in the order
/// of [`Rule::buffers`] (unused slots are empty). Returns the rule's two reductions, summed.
pub(crate) fn update_tensor<F: Float, R: Rule>(
    coef: &R::Coef,
    pre: &Prelude,
    p: &mut [F],
    g: &[F],
    bufs: &mut [&mut [F]; MAX_BUFFERS],
    nbuf: usize,
) -> [f64; 2] {
    let n = p.len();
    debug_assert_eq!(g.len(), n);
    debug_assert!(bufs[..nbuf].iter().all(|b| b.len() == n));
    let grad_scale = pre.grad_scale.map(F::c);
    let clip = pre.clip_value.map(|c| (F::c(-c), F::c(c)));
    let l2 = (pre.l2 != 0.0).then(|| F::c(pre.l2));
    let decay = pre.decay_factor.map(F::c);
    let mut red = [F::c(0.0); 2];
    for i in 0..n {
        let mut gi = g[i];
        if pre.maximize {
            gi = -gi;
        }
        if let Some(s) = grad_scale {
            gi = gi * s;
        }
        if let Some((lo, hi)) = clip {
            gi = gi.max(lo).min(hi);
        }
        let mut pi = p[i];
        if let Some(wd) = l2 {
            gi = gi + wd * pi;
        }
        if let Some(f) = decay {
            pi = pi * f;
        }
        let mut s = [F::c(0.0); MAX_BUFFERS];
        for k in 0..nbuf {
            s[k] = bufs[k][i];
        }
        p[i] = R::update(coef, pi, gi, &mut s, &mut red);
        for k in 0..nbuf {
            bufs[k][i] = s[k];
        }
    }
    [red[0].to_f64(), red[1].to_f64()]
}
