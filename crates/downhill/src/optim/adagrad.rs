//! Adagrad: per-coordinate step sizes from the running sum of squared gradients.
//!
//! With learning rate $\gamma$, learning-rate decay $\eta$ (`lr_decay`), $\epsilon$ (`eps`),
//! initial accumulator $a_0$ (`initial_accumulator_value`), weight decay $\lambda$ and gradient
//! $g_t$ (after `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form, \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! \tilde\gamma_t &= \frac{\gamma}{1 + (t-1)\,\eta}\\
//! s_t &= s_{t-1} + g_t^2, \qquad s_0 = a_0\\
//! \theta_t &= \theta_{t-1} - \tilde\gamma_t\, \frac{g_t}{\sqrt{s_t} + \epsilon}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.01 | `lr` |
//! | `lr_decay` | 0 | `lr_decay` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `initial_accumulator_value` | 0 | `initial_accumulator_value` |
//! | `eps` | 1e-10 | `eps` |
//! | `decoupled_weight_decay` | false | — |
//! | `maximize` | false | `maximize` |
//!
//! State: `sum`, the running sum of squared gradients (PyTorch's `sum`), starting at
//! `initial_accumulator_value`; per tensor, `step`.
//!
//! Differences from the paper: the diagonal form only, with ε added after the square root and
//! PyTorch's `lr_decay` (not in the paper). Sparse gradients are not supported. The decoupled
//! form of weight decay is an addition of downhill (PyTorch's Adagrad has only the L2 form).
//!
//! # References
//! - J. Duchi, E. Hazan, Y. Singer, *Adaptive Subgradient Methods for Online Learning and
//!   Stochastic Optimization*, JMLR 12, 2011.
//!
//! # Example
//! ```
//! use downhill::{optim::adagrad::Adagrad, Optimizer, ParamInfo, RuleOptimizer};
//! let adagrad = Adagrad { lr: 0.5, ..Default::default() };
//! let mut opt = RuleOptimizer::<f64, _>::new(adagrad, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0].abs() < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{torch_hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::precision::StatePrecision;
use crate::Result;

/// Adagrad's configuration (PyTorch's `torch.optim.Adagrad`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adagrad {
    /// Learning rate γ.
    pub lr: f64,
    /// Learning-rate decay η: step `t` uses `lr / (1 + (t − 1)·lr_decay)`.
    pub lr_decay: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Initial value of the sum of squared gradients.
    pub initial_accumulator_value: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of Adagrad.
#[derive(Clone, Copy, Debug)]
pub struct AdagradCoef {
    /// The decayed learning rate of this step.
    clr: f64,
    eps: f64,
    /// bitsandbytes' order of operations (state in fewer bits).
    bnb: bool,
}

impl Rule for Adagrad {
    const NAME: &'static str = "adagrad";
    type Scalars = StepCount;
    type Coef = AdagradCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("adagrad", "lr", self.lr)?;
        check::non_negative("adagrad", "lr_decay", self.lr_decay)?;
        check::non_negative("adagrad", "weight_decay", self.weight_decay)?;
        check::non_negative(
            "adagrad",
            "initial_accumulator_value",
            self.initial_accumulator_value,
        )?;
        check::non_negative("adagrad", "eps", self.eps)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["sum"]
    }

    fn buffer_init(&self, _k: usize) -> f64 {
        self.initial_accumulator_value
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdagradCoef {
        s.step += 1;
        let t = s.step as f64;
        AdagradCoef {
            clr: lr / (1.0 + (t - 1.0) * self.lr_decay),
            eps: self.eps,
            bnb: false,
        }
    }

    fn begin_for(&self, s: &mut StepCount, lr: f64, precision: StatePrecision) -> AdagradCoef {
        AdagradCoef {
            bnb: precision.is_low(),
            ..self.begin(s, lr)
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &AdagradCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let sum = s[0] + g * g;
        s[0] = sum;
        let std = sum.sqrt() + L::c(c.eps);
        if c.bnb {
            p + L::c(-c.clr) * (g / std)
        } else {
            p + L::c(-c.clr) * g / std
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Adagrad {
                lr: -1.0,
                ..Default::default()
            },
            Adagrad {
                lr: f64::NAN,
                ..Default::default()
            },
            Adagrad {
                lr_decay: -0.1,
                ..Default::default()
            },
            Adagrad {
                weight_decay: f64::INFINITY,
                ..Default::default()
            },
            Adagrad {
                initial_accumulator_value: -1.0,
                ..Default::default()
            },
            Adagrad {
                eps: -1e-10,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(Adagrad::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let r = Adagrad {
            lr: 0.1,
            initial_accumulator_value: 0.5,
            ..Default::default()
        };
        let mut sc = StepCount::default();
        let c = r.begin(&mut sc, r.lr);
        assert_eq!(sc.step, 1);
        let mut s = [r.buffer_init(0), 0.0, 0.0, 0.0];
        let p = Adagrad::update(&c, 1.0f64, 2.0, &mut s, &mut [0.0; 2]);
        // sum = 0.5 + 4 = 4.5; p = 1 − 0.1·2 / (√4.5 + 1e-10)
        assert_eq!(s[0], 4.5);
        let want = 1.0 + (-0.1 * 2.0) / (4.5f64.sqrt() + 1e-10);
        assert_eq!(p, want);
        assert!((p - (1.0 - 0.2 / 4.5f64.sqrt())).abs() < 1e-10);
    }

    #[test]
    fn lr_decay_shrinks_later_steps() {
        let r = Adagrad {
            lr: 1.0,
            lr_decay: 0.5,
            ..Default::default()
        };
        let mut sc = StepCount::default();
        assert_eq!(r.begin(&mut sc, 1.0).clr, 1.0);
        assert_eq!(r.begin(&mut sc, 1.0).clr, 1.0 / 1.5);
        assert_eq!(r.begin(&mut sc, 1.0).clr, 0.5);
    }
}
