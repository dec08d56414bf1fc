//! LAMB: Adam's direction, with weight decay, rescaled per tensor (layer) by the trust ratio
//! ‖θ‖ / ‖direction‖.
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`),
//! $\bar\epsilon$ (`eps_root`), weight decay $\lambda$ and gradient $g_t$ of one tensor (after
//! `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! m_t &= (1-\beta_1)\, g_t + \beta_1 m_{t-1}\\
//! v_t &= (1-\beta_2)\, g_t^2 + \beta_2 v_{t-1}\\
//! u_t &= \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t) + \bar\epsilon} + \epsilon} +
//!   \lambda\,\theta_{t-1}\\
//! r_t &= \frac{\lVert\theta_{t-1}\rVert}{\lVert u_t\rVert}
//!   \ \ (1 \text{ if either norm is } 0)\\
//! \theta_t &= \theta_{t-1} - \gamma\, r_t\, u_t
//! \end{aligned}
//! $$
//!
//! The norms are Euclidean, over each parameter tensor.
//!
//! | hyperparameter | default |
//! |---|---|
//! | `lr` | 0.001 |
//! | `betas` | (0.9, 0.999) |
//! | `eps` | 1e-6 |
//! | `eps_root` | 0 |
//! | `weight_decay` | 0 |
//! | `decoupled_weight_decay` | true |
//! | `maximize` | false |
//!
//! State: `m`, `v` (Adam's moments); per tensor, `step`.
//!
//! How it runs: the trust ratio needs two norms over the tensor before any element can be
//! moved, so the rule [measures](Rule::MEASURES): the reading pass recomputes every
//! element's direction $u_t$ from the stored moments without writing them (the same code as
//! the update, so the same bits) and sums $\theta^2$ and $u_t^2$; [`absorb`](Rule::absorb)
//! turns the two sums into $r_t$, a constant of this step; the update pass computes $u_t$
//! again, writes $m_t$, $v_t$ and $\theta_t$.
//!
//! PyTorch has no LAMB; this is optax 0.2.8's `optax.lamb` (`scale_by_adam`,
//! `add_decayed_weights`, `scale_by_trust_ratio` with its defaults — no minimum norm, trust
//! coefficient 1, no ε — then the learning rate), with its defaults; optax has no default
//! learning rate, 0.001 is downhill's usual one. The weight decay is added to Adam's
//! direction, inside the trust ratio (optax's and the paper's, the default
//! `decoupled_weight_decay: true`).
//! `decoupled_weight_decay: false` instead adds PyTorch's L2 penalty $\lambda\theta$ to the
//! gradient before the rule (the generic weight-decay stage; with `true` [`Rule::hyper`]
//! reports no decay to that stage, as the rule applies it). optax's `mask` (weight decay on some tensors only) is
//! not offered; parameter groups with `weight_decay: 0` do the same. As in optax the first
//! and second moments are bias-corrected and the ratio is not clipped (the paper's scaling
//! function φ is the identity).
//!
//! # References
//! - Y. You, J. Li, S. Reddi, J. Hseu, S. Kumar, S. Bhojanapalli, X. Song, J. Demmel,
//!   K. Keutzer, C.-J. Hsieh, *Large Batch Optimization for Deep Learning: Training BERT in 76
//!   minutes*, ICLR 2020, arXiv:1904.00962.
//!
//! # Example
//! ```
//! use downhill::{optim::lamb::Lamb, Optimizer, ParamInfo, RuleOptimizer};
//! let rule = Lamb { lr: 0.05, weight_decay: 0.01, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(rule, vec![ParamInfo::new("x", [2])])?;
//! let mut x = vec![3.0f32, -1.0];
//! for _ in 0..5 {
//!     let g: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0 && x[1] > -1.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::adam::check_betas;
use super::{Hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::Result;

/// LAMB's configuration (optax's `optax.lamb`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lamb {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first and second moments.
    pub betas: (f64, f64),
    /// ε added to the denominator.
    pub eps: f64,
    /// ε̄ added under the square root.
    pub eps_root: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// `true` (the reference's): λθ added to Adam's direction before the trust ratio; `false`: PyTorch's L2
    /// penalty, `g ← g + λθ` before the rule.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Lamb {
    fn default() -> Self {
        Lamb {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-6,
            eps_root: 0.0,
            weight_decay: 0.0,
            decoupled_weight_decay: true,
            maximize: false,
        }
    }
}

/// Per-step constants of LAMB.
#[derive(Clone, Copy, Debug)]
pub struct LambCoef {
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    bias_correction1: f64,
    bias_correction2: f64,
    eps: f64,
    eps_root: f64,
    weight_decay: f64,
    neg_lr: f64,
    /// The trust ratio, set by [`Rule::absorb`].
    ratio: f64,
}

/// The new moments and the direction `u` (with weight decay) of one element: the same code,
/// so the same bits, in the reading pass and in the update.
#[inline(always)]
fn direction<L: Lane>(c: &LambCoef, p: L, g: L, m: L, v: L) -> (L, L, L) {
    let m = L::c(c.one_minus_beta1) * g + L::c(c.beta1) * m;
    let v = L::c(c.one_minus_beta2) * (g * g) + L::c(c.beta2) * v;
    let m_hat = m / L::c(c.bias_correction1);
    let v_hat = v / L::c(c.bias_correction2);
    let mut u = m_hat / ((v_hat + L::c(c.eps_root)).sqrt() + L::c(c.eps));
    if c.weight_decay != 0.0 {
        u = u + L::c(c.weight_decay) * p;
    }
    (m, v, u)
}

impl Rule for Lamb {
    const NAME: &'static str = "lamb";
    type Scalars = StepCount;
    type Coef = LambCoef;
    const MEASURES: bool = true;

    fn validate(&self) -> Result<()> {
        check::non_negative("lamb", "lr", self.lr)?;
        check_betas("lamb", self.betas, self.eps)?;
        check::non_negative("lamb", "eps_root", self.eps_root)?;
        check::non_negative("lamb", "weight_decay", self.weight_decay)
    }

    fn hyper(&self) -> Hyper {
        // Decoupled: applied by the rule, inside the trust ratio (as optax); else the L2 penalty.
        Hyper::decay_in_rule(
            self.lr,
            self.weight_decay,
            self.decoupled_weight_decay,
            self.maximize,
        )
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> LambCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let t = s.step as f64;
        LambCoef {
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            bias_correction1: 1.0 - beta1.powf(t),
            bias_correction2: 1.0 - beta2.powf(t),
            eps: self.eps,
            eps_root: self.eps_root,
            weight_decay: if self.decoupled_weight_decay {
                self.weight_decay
            } else {
                0.0
            },
            neg_lr: -lr,
            ratio: f64::NAN,
        }
    }

    #[inline(always)]
    fn measure<L: Lane>(c: &LambCoef, p: L, g: L, s: &[L; MAX_BUFFERS], red: &mut [L; 2]) {
        let (_, _, u) = direction(c, p, g, s[0], s[1]);
        red[0] = red[0] + p * p;
        red[1] = red[1] + u * u;
    }

    fn absorb(&self, _: &mut StepCount, c: &mut LambCoef, tensor: [f64; 2], _group: [f64; 2]) {
        let param_norm = tensor[0].sqrt();
        let update_norm = tensor[1].sqrt();
        c.ratio = if param_norm == 0.0 || update_norm == 0.0 {
            1.0
        } else {
            param_norm / update_norm
        };
    }

    #[inline(always)]
    fn update<L: Lane>(c: &LambCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let (m, v, u) = direction(c, p, g, s[0], s[1]);
        s[0] = m;
        s[1] = v;
        p + L::c(c.neg_lr) * (u * L::c(c.ratio))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        for bad in [
            Lamb {
                lr: -1.0,
                ..Default::default()
            },
            Lamb {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            Lamb {
                betas: (0.9, -0.1),
                ..Default::default()
            },
            Lamb {
                eps: f64::NAN,
                ..Default::default()
            },
            Lamb {
                eps_root: -1.0,
                ..Default::default()
            },
            Lamb {
                weight_decay: -0.01,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{bad:?}"
            );
        }
        assert!(Lamb::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand_per_tensor_trust_ratio() {
        let rule = Lamb {
            lr: 0.1,
            eps: 0.0,
            weight_decay: 0.5,
            ..Default::default()
        };
        let infos = vec![ParamInfo::new("w", [2]), ParamInfo::new("z", [2])];
        let mut opt = RuleOptimizer::<f64, _>::new(rule, infos).unwrap();
        let mut w = [3.0f64, 4.0];
        let mut z = [0.0f64, 0.0];
        opt.step(
            &mut [&mut w[..], &mut z[..]],
            &[&[2.0, -1.0][..], &[1.0, 1.0][..]],
        )
        .unwrap();
        // Step 1 with ε = 0: Adam's direction is sign(g); u = sign(g) + 0.5·θ.
        let u = [1.0 + 1.5, -1.0 + 2.0];
        let r = 5.0 / (u[0] * u[0] + u[1] * u[1]).sqrt();
        assert!((w[0] - (3.0 - 0.1 * r * u[0])).abs() < 1e-14, "{w:?}");
        assert!((w[1] - (4.0 - 0.1 * r * u[1])).abs() < 1e-14, "{w:?}");
        // ‖θ‖ = 0: the ratio is 1, a plain Adam step of size lr.
        assert!(
            (z[0] + 0.1).abs() < 1e-14 && (z[1] + 0.1).abs() < 1e-14,
            "{z:?}"
        );
        let sd = opt.state_dict();
        assert!((sd.buffer::<f64>("g0.w.m", &[2]).unwrap()[0] - 0.2).abs() < 1e-15);
    }

    #[test]
    fn the_reading_pass_writes_nothing_but_the_ratio() {
        // After one step the moments are one EMA step from zero: had the reading pass written
        // them, they would be two.
        let rule = Lamb::default();
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [3])]).unwrap();
        let mut x = [1.0f64, -2.0, 0.5];
        let g = [0.5f64, 0.25, -1.0];
        opt.step(&mut [&mut x[..]], &[&g[..]]).unwrap();
        let m: Vec<f64> = opt.buffer(0, 0).unwrap().to_vec();
        for (mi, gi) in m.iter().zip(g) {
            assert!((mi - 0.1 * gi).abs() < 1e-16, "{m:?}");
        }
        let v: Vec<f64> = opt.buffer(0, 1).unwrap().to_vec();
        for (vi, gi) in v.iter().zip(g) {
            assert!((vi - 0.001 * gi * gi).abs() < 1e-18, "{v:?}");
        }
    }

    #[test]
    fn decoupled_weight_decay_is_the_rules_own_and_l2_the_preludes() {
        let decoupled = Lamb {
            weight_decay: 0.3,
            ..Default::default()
        };
        assert_eq!(decoupled.hyper().weight_decay, 0.0);
        let mut s = Default::default();
        assert_eq!(decoupled.begin(&mut s, 0.1).weight_decay, 0.3);
        let l2 = Lamb {
            decoupled_weight_decay: false,
            ..decoupled
        };
        let h = l2.hyper();
        assert_eq!((h.weight_decay, h.decoupled_weight_decay), (0.3, false));
        let mut s = Default::default();
        assert_eq!(l2.begin(&mut s, 0.1).weight_decay, 0.0);
    }
}
