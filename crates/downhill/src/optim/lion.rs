//! Lion: evolved sign momentum. The step is the sign of an interpolation between the momentum
//! and the gradient, so every coordinate moves by exactly the learning rate (plus decay).
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2$ (`betas`), weight decay $\lambda$ and
//! gradient $g_t$ (after `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! c_t &= (1-\beta_1)\, g_t + \beta_1 m_{t-1}\\
//! m_t &= (1-\beta_2)\, g_t + \beta_2 m_{t-1}\\
//! \theta_t &= \theta_{t-1} + (-\gamma)\,\bigl(\operatorname{sign}(c_t) + \lambda\,\theta_{t-1}\bigr)
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | optax (`optax.lion`) |
//! |---|---|---|
//! | `lr` | 0.0001 | `learning_rate` (no default) |
//! | `betas` | (0.9, 0.99) | `b1`, `b2` |
//! | `weight_decay` | 0.001 | `weight_decay` |
//! | `maximize` | false | — |
//!
//! State: one buffer, `m` (optax's `mu`); per tensor, `step`. Lion keeps no second moment: its
//! state is one value per parameter, half of Adam's.
//!
//! This is optax 0.2.8's `optax.lion` (`scale_by_lion` in its default `"hard"` mode, then
//! `add_decayed_weights`, then `scale_by_learning_rate`), in optax's order of operations.
//! Differences from it: optax has no default learning rate; 1e-4 here follows the paper's
//! advice of a learning rate 3–10× smaller than AdamW's (1e-3). Weight decay is decoupled as in
//! the paper and optax: it is added to the sign step, scaled by the learning rate, and is
//! therefore applied by the rule itself (there is no `decoupled_weight_decay` option; the
//! generic L2 penalty is not used). `maximize` negates the gradient (optax has no such option).
//! optax's `mu_dtype` (a lower-precision momentum) is not offered: `m` has the parameters'
//! type.
//!
//! # References
//! - X. Chen, C. Liang, D. Huang, E. Real, K. Wang, Y. Liu, H. Pham, X. Dong, T. Luong,
//!   C.-J. Hsieh, Y. Lu, Q. V. Le, *Symbolic Discovery of Optimization Algorithms*,
//!   NeurIPS 2023, arXiv:2302.06675.
//!
//! # Example
//! ```
//! use downhill::{optim::lion::Lion, Optimizer, ParamInfo, RuleOptimizer};
//! let lion = Lion { lr: 0.1, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(lion, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0f32];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!((x[0] - 2.5).abs() < 0.01); // five steps of lr, a little decay
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{Hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::precision::StatePrecision;
use crate::Result;

/// Lion's configuration (optax's `optax.lion`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lion {
    /// Learning rate γ.
    pub lr: f64,
    /// (β₁, β₂): β₁ interpolates the step's direction, β₂ is the momentum's decay.
    pub betas: (f64, f64),
    /// Decoupled weight decay λ, added to the sign step before the learning rate.
    pub weight_decay: f64,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Lion {
    fn default() -> Self {
        Lion {
            lr: 1e-4,
            betas: (0.9, 0.99),
            weight_decay: 1e-3,
            maximize: false,
        }
    }
}

/// Per-step constants of Lion.
#[derive(Clone, Copy, Debug)]
pub struct LionCoef {
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    weight_decay: f64,
    neg_lr: f64,
}

impl Rule for Lion {
    const NAME: &'static str = "lion";
    type Scalars = StepCount;
    type Coef = LionCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("lion", "lr", self.lr)?;
        check::unit_interval("lion", "beta1", self.betas.0)?;
        check::unit_interval("lion", "beta2", self.betas.1)?;
        check::non_negative("lion", "weight_decay", self.weight_decay)
    }

    /// Weight decay is the rule's own (added to the sign step), so the prelude gets none.
    fn hyper(&self) -> Hyper {
        Hyper {
            lr: self.lr,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: self.maximize,
        }
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn buffers(&self) -> &'static [&'static str] {
        &["m"]
    }

    fn begin_for(&self, s: &mut StepCount, lr: f64, precision: StatePrecision) -> LionCoef {
        let coef = self.begin(s, lr);
        if precision.is_low() {
            // bitsandbytes decays first, decoupled: the prelude does it (`hyper_for`).
            return LionCoef {
                weight_decay: 0.0,
                ..coef
            };
        }
        coef
    }

    fn hyper_for(&self, precision: StatePrecision) -> Hyper {
        if precision.is_low() {
            Hyper {
                weight_decay: self.weight_decay,
                decoupled_weight_decay: true,
                ..self.hyper()
            }
        } else {
            self.hyper()
        }
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> LionCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        LionCoef {
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            weight_decay: self.weight_decay,
            neg_lr: -lr,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &LionCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let m = s[0];
        let direction = (L::c(c.one_minus_beta1) * g + L::c(c.beta1) * m).sign();
        s[0] = L::c(c.one_minus_beta2) * g + L::c(c.beta2) * m;
        let u = direction + L::c(c.weight_decay) * p;
        p + u * L::c(c.neg_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Lion {
                lr: -1.0,
                ..Default::default()
            },
            Lion {
                lr: f64::NAN,
                ..Default::default()
            },
            Lion {
                betas: (1.0, 0.99),
                ..Default::default()
            },
            Lion {
                betas: (0.9, -0.1),
                ..Default::default()
            },
            Lion {
                betas: (0.9, f64::NAN),
                ..Default::default()
            },
            Lion {
                weight_decay: -1e-3,
                ..Default::default()
            },
            Lion {
                weight_decay: f64::INFINITY,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(Lion::default().validate().is_ok());
    }

    #[test]
    fn first_steps_by_hand() {
        let r = Lion {
            lr: 0.1,
            betas: (0.5, 0.75),
            weight_decay: 0.5,
            maximize: false,
        };
        let mut sc = StepCount::default();
        let mut s = [0.0f64; MAX_BUFFERS];
        // Step 1: c = 0.5·g, sign −1; m = 0.25·(−2) = −0.5; p = 1 − 0.1·(−1 + 0.5·1) = 1.05.
        let c = r.begin(&mut sc, r.lr);
        let p = Lion::update(&c, 1.0f64, -2.0, &mut s, &mut [0.0; 2]);
        assert_eq!(s[0], -0.5);
        assert!((p - 1.05).abs() < 1e-15, "{p}");
        // Step 2, g = 0.4: c = 0.2 − 0.25 < 0 (the momentum wins), sign −1;
        // m = 0.1 − 0.375 = −0.275; p = 1.05 − 0.1·(−1 + 0.525) = 1.0975.
        let c = r.begin(&mut sc, r.lr);
        let p = Lion::update(&c, p, 0.4, &mut s, &mut [0.0; 2]);
        assert!((s[0] + 0.275).abs() < 1e-15);
        assert!((p - 1.0975).abs() < 1e-15, "{p}");
        assert_eq!(sc.step, 2);
        // A zero direction moves by the decay only.
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = Lion::update(&c, 2.0f64, 0.0, &mut s, &mut [0.0; 2]);
        assert!((p - (2.0 - 0.1 * 0.5 * 2.0)).abs() < 1e-15);
    }

    #[test]
    fn one_buffer_and_no_prelude_decay() {
        let r = Lion::default();
        assert_eq!(r.buffers(), &["m"]);
        assert_eq!(r.hyper().weight_decay, 0.0);
        let opt = RuleOptimizer::<f32, _>::new(r, vec![ParamInfo::new("w", [3, 2])]).unwrap();
        assert_eq!(opt.state_bytes_per_param(), 4.0);
        let sd = opt.state_dict();
        assert_eq!(sd.buffer::<f32>("g0.w.m", &[3, 2]).unwrap().len(), 6);
    }
}
