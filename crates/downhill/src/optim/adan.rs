//! Adan: adaptive Nesterov momentum, with the Nesterov look-ahead estimated from the
//! difference of successive gradients (no gradient at an extrapolated point is needed).
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2, \beta_3$ (`betas`), $\epsilon$
//! (`eps`), $\bar\epsilon$ (`eps_root`), weight decay $\lambda$ and gradient $g_t$ (after
//! `maximize` and clipping), at step $t$ (with $g_0 := g_1$, so the first difference is 0):
//!
//! $$
//! \begin{aligned}
//! \Delta_t &= g_t - g_{t-1}\\
//! m_t &= (1-\beta_1)\, g_t + \beta_1 m_{t-1}\\
//! v_t &= (1-\beta_2)\, \Delta_t + \beta_2 v_{t-1}\\
//! n_t &= (1-\beta_3)\, \big(g_t + (1-\beta_2)\,\Delta_t\big)^2 + \beta_3 n_{t-1}\\
//! u_t &= \frac{m_t/(1-\beta_1^t) + (1-\beta_2)\, v_t/(1-\beta_2^t)}
//!   {\sqrt{n_t/(1-\beta_3^t) + \bar\epsilon} + \epsilon}\\
//! \theta_t &= \theta_{t-1} - \gamma\,\big(u_t + \lambda\,\theta_{t-1}\big)
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default |
//! |---|---|
//! | `lr` | 0.001 |
//! | `betas` | (0.98, 0.92, 0.99) |
//! | `eps` | 1e-8 |
//! | `eps_root` | 1e-8 |
//! | `weight_decay` | 0 |
//! | `decoupled_weight_decay` | true |
//! | `maximize` | false |
//!
//! State: `m`, `v`, `n` (optax's names) and `g_prev` (the previous gradient, optax's `g`);
//! per tensor, `step`.
//!
//! PyTorch has no Adan; this is optax 0.2.8's `optax.adan` (`scale_by_adan`, then
//! `add_decayed_weights`, then the learning rate), with its defaults; optax has no default
//! learning rate, 0.001 is the authors' implementation's. The betas are decays of the old
//! value, as in optax and the authors' code: the paper's $\beta_k$ are $1-\beta_k$ here.
//! Differences from the paper: the three moments are bias-corrected (as in optax and the
//! authors' implementation), there is no restart, and weight decay is added to the update
//! ($\theta - \gamma(u + \lambda\theta)$) instead of the paper's proximal division by
//! $1+\gamma\lambda$ — as optax does (the default `decoupled_weight_decay: true`).
//! `decoupled_weight_decay: false` instead adds PyTorch's L2 penalty $\lambda\theta$ to the
//! gradient before the rule (the generic weight-decay stage; with `true` [`Rule::hyper`]
//! reports no decay to that stage, as the rule applies it).
//!
//! # References
//! - X. Xie, P. Zhou, H. Li, Z. Lin, S. Yan, *Adan: Adaptive Nesterov Momentum Algorithm for
//!   Faster Optimizing Deep Models*, IEEE TPAMI 2024, arXiv:2208.06677.
//!
//! # Example
//! ```
//! use downhill::{optim::adan::Adan, Optimizer, ParamInfo, RuleOptimizer};
//! let adan = Adan { lr: 0.05, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(adan, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0f32];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]];
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{Hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::Result;

/// Adan's configuration (optax's `optax.adan`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adan {
    /// Learning rate γ.
    pub lr: f64,
    /// Decays (β₁, β₂, β₃) of the gradient, gradient-difference and squared-term averages.
    pub betas: (f64, f64, f64),
    /// ε added to the denominator.
    pub eps: f64,
    /// ε̄ added under the square root.
    pub eps_root: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// `true` (the reference's): λθ added to the update (`θ − γ(u + λθ)`); `false`: PyTorch's L2
    /// penalty, `g ← g + λθ` before the rule.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Adan {
    fn default() -> Self {
        Adan {
            lr: 1e-3,
            betas: (0.98, 0.92, 0.99),
            eps: 1e-8,
            eps_root: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: true,
            maximize: false,
        }
    }
}

/// Per-step constants of Adan.
#[derive(Clone, Copy, Debug)]
pub struct AdanCoef {
    /// The first step: the gradient difference is 0.
    first: bool,
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    beta3: f64,
    one_minus_beta3: f64,
    bias_correction1: f64,
    bias_correction2: f64,
    bias_correction3: f64,
    eps: f64,
    eps_root: f64,
    weight_decay: f64,
    neg_lr: f64,
}

impl Rule for Adan {
    const NAME: &'static str = "adan";
    type Scalars = StepCount;
    type Coef = AdanCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("adan", "lr", self.lr)?;
        check::unit_interval("adan", "beta1", self.betas.0)?;
        check::unit_interval("adan", "beta2", self.betas.1)?;
        check::unit_interval("adan", "beta3", self.betas.2)?;
        check::non_negative("adan", "eps", self.eps)?;
        check::non_negative("adan", "eps_root", self.eps_root)?;
        check::non_negative("adan", "weight_decay", self.weight_decay)
    }

    fn hyper(&self) -> Hyper {
        // Decoupled: applied by the rule, to the update (as optax); else the L2 penalty.
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
        &["m", "v", "n", "g_prev"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdanCoef {
        s.step += 1;
        let (beta1, beta2, beta3) = self.betas;
        let t = s.step as f64;
        AdanCoef {
            first: s.step == 1,
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            beta3,
            one_minus_beta3: 1.0 - beta3,
            bias_correction1: 1.0 - beta1.powf(t),
            bias_correction2: 1.0 - beta2.powf(t),
            bias_correction3: 1.0 - beta3.powf(t),
            eps: self.eps,
            eps_root: self.eps_root,
            weight_decay: if self.decoupled_weight_decay {
                self.weight_decay
            } else {
                0.0
            },
            neg_lr: -lr,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &AdanCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let diff = if c.first { L::c(0.0) } else { g - s[3] };
        let m = L::c(c.one_minus_beta1) * g + L::c(c.beta1) * s[0];
        let v = L::c(c.one_minus_beta2) * diff + L::c(c.beta2) * s[1];
        let sq = g + L::c(c.one_minus_beta2) * diff;
        let n = L::c(c.one_minus_beta3) * (sq * sq) + L::c(c.beta3) * s[2];
        s[0] = m;
        s[1] = v;
        s[2] = n;
        s[3] = g;
        let m_hat = m / L::c(c.bias_correction1);
        let v_hat = v / L::c(c.bias_correction2);
        let n_hat = n / L::c(c.bias_correction3);
        let mut u = (m_hat + L::c(c.one_minus_beta2) * v_hat)
            / ((n_hat + L::c(c.eps_root)).sqrt() + L::c(c.eps));
        if c.weight_decay != 0.0 {
            u = u + L::c(c.weight_decay) * p;
        }
        p + L::c(c.neg_lr) * u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        for bad in [
            Adan {
                lr: -1.0,
                ..Default::default()
            },
            Adan {
                betas: (1.0, 0.92, 0.99),
                ..Default::default()
            },
            Adan {
                betas: (0.98, -0.1, 0.99),
                ..Default::default()
            },
            Adan {
                betas: (0.98, 0.92, f64::NAN),
                ..Default::default()
            },
            Adan {
                eps: -1e-8,
                ..Default::default()
            },
            Adan {
                eps_root: f64::INFINITY,
                ..Default::default()
            },
            Adan {
                weight_decay: -0.1,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{bad:?}"
            );
        }
        assert!(Adan::default().validate().is_ok());
    }

    #[test]
    fn first_two_steps_by_hand() {
        let rule = Adan {
            lr: 0.1,
            weight_decay: 0.5,
            eps_root: 0.0,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [1])]).unwrap();
        let mut x = [1.0f64];
        // Step 1: no difference; m̂ = g, v̂ = 0, n̂ = g².
        opt.step(&mut [&mut x[..]], &[&[0.5][..]]).unwrap();
        let want1 = 1.0 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.5 * 1.0);
        assert!((x[0] - want1).abs() < 1e-14, "{} vs {want1}", x[0]);
        // Step 2: difference 0.25 − 0.5.
        let p1 = x[0];
        opt.step(&mut [&mut x[..]], &[&[0.25][..]]).unwrap();
        let (b1, b2, b3) = (0.98f64, 0.92f64, 0.99f64);
        let d = -0.25;
        let m = (1.0 - b1) * 0.25 + b1 * (1.0 - b1) * 0.5;
        let v = (1.0 - b2) * d;
        let n = (1.0 - b3) * (0.25 + (1.0 - b2) * d).powi(2) + b3 * (1.0 - b3) * 0.25;
        let u = (m / (1.0 - b1 * b1) + (1.0 - b2) * v / (1.0 - b2 * b2))
            / ((n / (1.0 - b3 * b3)).sqrt() + 1e-8);
        let want2 = p1 - 0.1 * (u + 0.5 * p1);
        assert!((x[0] - want2).abs() < 1e-14, "{} vs {want2}", x[0]);
        let sd = opt.state_dict();
        assert_eq!(sd.scalar("g0.x.step").unwrap(), 2.0);
        assert_eq!(sd.buffer::<f64>("g0.x.g_prev", &[1]).unwrap(), &[0.25]);
    }

    #[test]
    fn decoupled_weight_decay_is_the_rules_own_and_l2_the_preludes() {
        let decoupled = Adan {
            weight_decay: 0.3,
            ..Default::default()
        };
        assert_eq!(decoupled.hyper().weight_decay, 0.0);
        let mut s = Default::default();
        assert_eq!(decoupled.begin(&mut s, 0.1).weight_decay, 0.3);
        let l2 = Adan {
            decoupled_weight_decay: false,
            ..decoupled
        };
        let h = l2.hyper();
        assert_eq!((h.weight_decay, h.decoupled_weight_decay), (0.3, false));
        let mut s = Default::default();
        assert_eq!(l2.begin(&mut s, 0.1).weight_decay, 0.0);
    }
}
