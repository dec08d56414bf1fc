//! Yogi: Adam whose second moment moves additively, by at most $(1-\beta_2)\,g^2$ a step, toward
//! $g^2$, so that it cannot collapse after a run of small gradients.
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`),
//! $\epsilon_r$ (`eps_root`), weight decay $\lambda$ and gradient $g_t$ (after `maximize` and
//! clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form: \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! m_t &= (1-\beta_1)\, g_t + \beta_1 m_{t-1}\\
//! v_t &= v_{t-1} - (1-\beta_2)\,\operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2\\
//! \theta_t &= \theta_{t-1} + (-\gamma)\,
//!   \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t) + \epsilon_r} + \epsilon}
//! \end{aligned}
//! $$
//!
//! with $m_0 = v_0 = $ `initial_accumulator_value`.
//!
//! | hyperparameter | default | optax (`optax.yogi`, `scale_by_yogi`) |
//! |---|---|---|
//! | `lr` | 0.01 | `learning_rate` (no default) |
//! | `betas` | (0.9, 0.999) | `b1`, `b2` |
//! | `eps` | 0.001 | `eps` |
//! | `eps_root` | 0 | `eps_root` (`scale_by_yogi` only) |
//! | `initial_accumulator_value` | 1e-6 | `initial_accumulator_value` (`scale_by_yogi` only) |
//! | `weight_decay` | 0 | — |
//! | `decoupled_weight_decay` | false | — |
//! | `maximize` | false | — |
//!
//! State: `m` (optax's `mu`) and `v` (`nu`), both starting at `initial_accumulator_value`;
//! per tensor, `step`.
//!
//! This is optax 0.2.8's `optax.yogi` (`scale_by_yogi`, then `scale_by_learning_rate`), in
//! optax's order of operations. Differences from it: optax has no default learning rate; 0.01
//! here is the paper's default. Weight decay (either form) and `maximize` are downhill's
//! additions, applied to the gradient or the parameter before the rule like every rule's
//! (optax: `chain(add_decayed_weights(λ), yogi)` for the L2 form). Differences from the paper:
//! optax's bias corrections of $m$ and $v$ and its `eps_root` (the paper has neither), and
//! both moments start at `initial_accumulator_value` (the paper starts $m$ at 0).
//!
//! # References
//! - M. Zaheer, S. J. Reddi, D. Sachan, S. Kale, S. Kumar, *Adaptive Methods for Nonconvex
//!   Optimization*, NeurIPS 2018.
//!
//! # Example
//! ```
//! use downhill::{optim::yogi::Yogi, Optimizer, ParamInfo, RuleOptimizer};
//! let yogi = Yogi { lr: 0.1, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(yogi, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0f32];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::adam::check_betas;
use super::{torch_hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::Result;

/// Yogi's configuration (optax's `optax.yogi`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Yogi {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first and second moments.
    pub betas: (f64, f64),
    /// ε added to the denominator, outside the square root.
    pub eps: f64,
    /// ε added inside the square root.
    pub eps_root: f64,
    /// Initial value of both moments.
    pub initial_accumulator_value: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Yogi {
    fn default() -> Self {
        Yogi {
            lr: 1e-2,
            betas: (0.9, 0.999),
            eps: 1e-3,
            eps_root: 0.0,
            initial_accumulator_value: 1e-6,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of Yogi.
#[derive(Clone, Copy, Debug)]
pub struct YogiCoef {
    beta1: f64,
    one_minus_beta1: f64,
    one_minus_beta2: f64,
    bias_correction1: f64,
    bias_correction2: f64,
    eps: f64,
    eps_root: f64,
    neg_lr: f64,
}

impl Rule for Yogi {
    const NAME: &'static str = "yogi";
    type Scalars = StepCount;
    type Coef = YogiCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("yogi", "lr", self.lr)?;
        check_betas("yogi", self.betas, self.eps)?;
        check::non_negative("yogi", "eps_root", self.eps_root)?;
        check::non_negative(
            "yogi",
            "initial_accumulator_value",
            self.initial_accumulator_value,
        )?;
        check::non_negative("yogi", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn buffer_init(&self, _k: usize) -> f64 {
        self.initial_accumulator_value
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> YogiCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let t = s.step as f64;
        YogiCoef {
            beta1,
            one_minus_beta1: 1.0 - beta1,
            one_minus_beta2: 1.0 - beta2,
            bias_correction1: 1.0 - beta1.powf(t),
            bias_correction2: 1.0 - beta2.powf(t),
            eps: self.eps,
            eps_root: self.eps_root,
            neg_lr: -lr,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &YogiCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let m = L::c(c.one_minus_beta1) * g + L::c(c.beta1) * s[0];
        let g2 = g * g;
        let v = s[1] - L::c(c.one_minus_beta2) * (s[1] - g2).sign() * g2;
        s[0] = m;
        s[1] = v;
        let m_hat = m / L::c(c.bias_correction1);
        let v_hat = v / L::c(c.bias_correction2);
        let u = m_hat / ((v_hat + L::c(c.eps_root)).sqrt() + L::c(c.eps));
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
            Yogi {
                lr: -1.0,
                ..Default::default()
            },
            Yogi {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            Yogi {
                betas: (0.9, f64::NAN),
                ..Default::default()
            },
            Yogi {
                eps: -1e-3,
                ..Default::default()
            },
            Yogi {
                eps_root: f64::INFINITY,
                ..Default::default()
            },
            Yogi {
                initial_accumulator_value: -1e-6,
                ..Default::default()
            },
            Yogi {
                weight_decay: f64::NAN,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(Yogi::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let r = Yogi {
            lr: 0.1,
            betas: (0.5, 0.75),
            eps: 0.0,
            initial_accumulator_value: 0.0,
            ..Default::default()
        };
        let mut sc = StepCount::default();
        let c = r.begin(&mut sc, r.lr);
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = Yogi::update(&c, 1.0f64, -2.0, &mut s, &mut [0.0; 2]);
        // m = 0.5·(−2) = −1; v = 0 − 0.25·sign(0 − 4)·4 = 1; m̂ = −2, v̂ = 4:
        // p = 1 − 0.1·(−2/2) = 1.1.
        assert_eq!((s[0], s[1]), (-1.0, 1.0));
        assert!((p - 1.1).abs() < 1e-15, "{p}");
        // Above g², v moves down by (1 − β₂)·g², not toward g² multiplicatively.
        let p = Yogi::update(&c, 0.0f64, 1.0, &mut [0.0, 3.0, 0.0, 0.0], &mut [0.0; 2]);
        // m = 0.5, v = 3 − 0.25 = 2.75: p = −0.1·1/√11.
        assert!((p + 0.1 / 11f64.sqrt()).abs() < 1e-15, "{p}");
    }

    #[test]
    fn moments_start_at_the_initial_accumulator() {
        let r = Yogi {
            initial_accumulator_value: 0.25,
            ..Default::default()
        };
        let opt = RuleOptimizer::<f64, _>::new(r, vec![ParamInfo::new("w", [2, 2])]).unwrap();
        let sd = opt.state_dict();
        assert_eq!(sd.buffer::<f64>("g0.w.m", &[2, 2]).unwrap(), &[0.25; 4]);
        assert_eq!(sd.buffer::<f64>("g0.w.v", &[2, 2]).unwrap(), &[0.25; 4]);
    }
}
