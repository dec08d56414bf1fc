//! Gradient noise: Gaussian noise added to every gradient element, with a variance that
//! anneals over the steps.
//!
//! $$ g_t \leftarrow g_t + \mathcal N\!\left(0,\ \sigma_t^2\right), \qquad
//!    \sigma_t^2 = \frac{\eta}{(1 + t)^\gamma} $$
//!
//! where $t$ counts the steps applied before this one (0 for the first). Neelakantan et al.,
//! *Adding Gradient Noise Improves Learning for Very Deep Networks*, 2015
//! (<https://arxiv.org/abs/1511.06807>), who use $\eta \in \{0.01, 0.3, 1\}$ and
//! $\gamma = 0.55$.
//!
//! The noise is added after clipping, so its variance is exactly $\sigma_t^2$ whatever the
//! gradient's size. It is reproducible and counter-based ([`crate::normal`]): the noise of
//! element $j$ of tensor $i$ at step $t$ is a function of `(seed, t, i, j)` alone, so it
//! depends neither on thread count nor on earlier steps, a resumed run adds the same noise as
//! an uninterrupted one, and `downhill-cuda` adds the same bits on the GPU.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::check;
use crate::kernel::Float;
use crate::normal;
use crate::Result;

/// Annealed Gaussian gradient noise; see the [module docs](self). Absent fields take their
/// defaults when deserialized; unknown ones are refused.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradientNoise {
    /// Variance at the first step, η (default 0.01).
    pub eta: f64,
    /// Decay exponent, γ (default 0.55).
    pub gamma: f64,
    /// Seed of the noise streams.
    pub seed: u64,
}

impl Default for GradientNoise {
    fn default() -> Self {
        GradientNoise {
            eta: 0.01,
            gamma: 0.55,
            seed: 0,
        }
    }
}

impl GradientNoise {
    /// Refuse a negative or non-finite η or γ.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("gradient_noise", "eta", self.eta)?;
        check::non_negative("gradient_noise", "gamma", self.gamma)?;
        Ok(())
    }

    /// The variance σ² added at the step with `t` steps before it.
    pub fn variance(&self, t: u64) -> f64 {
        self.eta / (1.0 + t as f64).powf(self.gamma)
    }

    /// The key of step `t`'s normals ([`crate::normal::standard_normal`]'s `key`; the
    /// tensor's index is the stream, the element's index the index).
    pub fn key(&self, t: u64) -> u64 {
        normal::mix(normal::mix(self.seed) ^ t)
    }

    /// `out[i] = clamp(scale · g[i]) + σ_t · z` per tensor, computed in `f64` and rounded
    /// once, with `z` the tensor's standard normals for step `t`. `scale` and `clamp` are
    /// norm and value clipping. This is what a step adds when the optimizer has noise.
    pub fn apply<F: Float>(
        &self,
        t: u64,
        grads: &[&[F]],
        scale: Option<f64>,
        clamp: Option<f64>,
        out: &mut [Vec<F>],
    ) {
        self.apply_from(t, grads, &[], scale, clamp, out)
    }

    /// As [`apply`](GradientNoise::apply), for gradients that are elements `origins[i]..` of
    /// their tensors (a rank's share; none given: from the start): element `j` of `grads[i]`
    /// gets the noise of element `origins[i] + j`, as in the whole.
    pub fn apply_from<F: Float>(
        &self,
        t: u64,
        grads: &[&[F]],
        origins: &[usize],
        scale: Option<f64>,
        clamp: Option<f64>,
        out: &mut [Vec<F>],
    ) {
        let sigma = self.variance(t).sqrt();
        let key = self.key(t);
        out.par_iter_mut()
            .zip(grads.par_iter())
            .enumerate()
            .for_each(|(tensor, (out, g))| {
                let origin = origins.get(tensor).copied().unwrap_or(0);
                out.clear();
                out.extend(g.iter().enumerate().map(|(i, &x)| {
                    let mut x = x.to_f64();
                    if let Some(s) = scale {
                        x *= s;
                    }
                    if let Some(c) = clamp {
                        x = x.clamp(-c, c);
                    }
                    let z = normal::standard_normal(key, tensor as u64, (origin + i) as u64);
                    F::from_f64(x + sigma * z)
                }));
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variance_anneals_as_the_paper_says() {
        let n = GradientNoise::default();
        assert_eq!(n.variance(0), 0.01);
        assert!((n.variance(99) - 0.01 / 100f64.powf(0.55)).abs() < 1e-15);
        assert!(n.variance(10) < n.variance(9));
    }

    #[test]
    fn noise_has_the_stated_variance_and_is_reproducible() {
        let n = GradientNoise {
            eta: 0.25,
            gamma: 0.55,
            seed: 7,
        };
        let g = vec![1.0f64; 200_000];
        let mut a = vec![Vec::new()];
        n.apply(3, &[&g], None, None, &mut a);
        let mean = a[0].iter().sum::<f64>() / g.len() as f64;
        let var = a[0].iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        let want = n.variance(3);
        assert!((var / want - 1.0).abs() < 0.02, "variance {var} vs {want}");
        let mut b = vec![Vec::new()];
        n.apply(3, &[&g], None, None, &mut b);
        assert_eq!(a, b);
        n.apply(4, &[&g], None, None, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn clipping_comes_before_the_noise() {
        let n = GradientNoise {
            eta: 0.0,
            gamma: 0.55,
            seed: 0,
        };
        let mut out = vec![Vec::new()];
        n.apply(0, &[&[4.0f32, -9.0][..]], Some(0.5), Some(3.0), &mut out);
        assert_eq!(out[0], vec![2.0, -3.0]);
    }

    #[test]
    fn refuses_negative_eta() {
        let n = GradientNoise {
            eta: -1.0,
            ..Default::default()
        };
        assert!(n.validate().is_err());
    }
}
