//! NAdam: Adam with Nesterov momentum and a momentum schedule.
//!
//! With learning rate $\gamma$, moment decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`),
//! momentum decay $\psi$ (`momentum_decay`), weight decay $\lambda$ and gradient $g_t$ (after
//! `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form, \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! \mu_t &= \beta_1\left(1 - \tfrac12\, 0.96^{t\psi}\right), \quad
//! \mu_{t+1} = \beta_1\left(1 - \tfrac12\, 0.96^{(t+1)\psi}\right)\\
//! \Pi_t &= \textstyle\prod_{i=1}^{t} \mu_i\\
//! m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t\\
//! v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2\\
//! d_t &= \sqrt{v_t / (1-\beta_2^t)} + \epsilon\\
//! \theta_t &= \theta_{t-1} - \gamma\,\frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{d_t} -
//!   \gamma\,\frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m_t}{d_t}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.002 | `lr` |
//! | `betas` | (0.9, 0.999) | `betas` |
//! | `eps` | 1e-8 | `eps` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `momentum_decay` | 0.004 | `momentum_decay` |
//! | `decoupled_weight_decay` | false | `decoupled_weight_decay` (NAdamW) |
//! | `maximize` | false | `maximize` |
//!
//! State: `m` (PyTorch's `exp_avg`), `v` (`exp_avg_sq`); per tensor, `step` and `mu_product`
//! (the running product $\Pi_t$ of the momentum schedule, PyTorch's `mu_product`).
//!
//! Differences from the paper: the momentum schedule $\mu_t$ and the ε after the bias-corrected
//! square root are PyTorch's. Differences from PyTorch: none in the results. PyTorch keeps
//! `mu_product` as a tensor of the default scalar type; downhill keeps it in `f64`, which is
//! what the PyTorch reference cases match (rounding it through `f32` each step would move the
//! `f64` cases by about 1e-10). The first
//! moment is updated as PyTorch's `lerp`, which rounds like `m + (1−β₁)(g − m)`.
//!
//! # References
//! - T. Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop.
//! - I. Loshchilov, F. Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   arXiv:1711.05101 (decoupled weight decay).
//!
//! # Example
//! ```
//! use downhill::{optim::nadam::NAdam, Optimizer, ParamInfo, RuleOptimizer};
//! let nadam = NAdam { lr: 0.05, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(nadam, vec![ParamInfo::new("x", [1])])?;
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
use super::{count_from_f64, expect_scalars, torch_hyper, Rule, TensorScalars, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::{Error, Result};

/// NAdam's configuration (PyTorch's `torch.optim.NAdam`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NAdam {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first and second moments.
    pub betas: (f64, f64),
    /// ε added to the denominator.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Momentum decay ψ of the momentum schedule.
    pub momentum_decay: f64,
    /// Decoupled (NAdamW) rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for NAdam {
    fn default() -> Self {
        NAdam {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-tensor scalar state of NAdam.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NAdamScalars {
    /// Steps taken on this tensor.
    pub step: u64,
    /// Product of the momentum schedule μ₁⋯μₜ (1 before the first step).
    pub mu_product: f64,
}

impl Default for NAdamScalars {
    fn default() -> Self {
        NAdamScalars {
            step: 0,
            mu_product: 1.0,
        }
    }
}

impl TensorScalars for NAdamScalars {
    const FIELDS: &'static [&'static str] = &["step", "mu_product"];
    fn to_values(&self) -> Vec<f64> {
        vec![self.step as f64, self.mu_product]
    }
    fn from_values(values: &[f64]) -> Result<Self> {
        expect_scalars("nadam", Self::FIELDS, values)?;
        let mu_product = values[1];
        if !(0.0..=1.0).contains(&mu_product) {
            return Err(Error::State(format!(
                "field 'mu_product' must be in [0, 1], found {mu_product}"
            )));
        }
        Ok(NAdamScalars {
            step: count_from_f64("step", values[0])?,
            mu_product,
        })
    }
}

/// Per-step constants of NAdam.
#[derive(Clone, Copy, Debug)]
pub struct NAdamCoef {
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    bias_correction2: f64,
    eps: f64,
    /// Coefficient of `g / denom`: `−lr·(1 − μₜ)/(1 − Πₜ)`.
    grad_coef: f64,
    /// Coefficient of `m / denom`: `−lr·μₜ₊₁/(1 − Πₜ·μₜ₊₁)`.
    momentum_coef: f64,
}

impl Rule for NAdam {
    const NAME: &'static str = "nadam";
    type Scalars = NAdamScalars;
    type Coef = NAdamCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("nadam", "lr", self.lr)?;
        check_betas("nadam", self.betas, self.eps)?;
        check::non_negative("nadam", "weight_decay", self.weight_decay)?;
        check::non_negative("nadam", "momentum_decay", self.momentum_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn begin(&self, s: &mut NAdamScalars, lr: f64) -> NAdamCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let t = s.step as f64;
        let mu = beta1 * (1.0 - 0.5 * 0.96f64.powf(t * self.momentum_decay));
        let mu_next = beta1 * (1.0 - 0.5 * 0.96f64.powf((t + 1.0) * self.momentum_decay));
        s.mu_product *= mu;
        let mu_product_next = s.mu_product * mu_next;
        NAdamCoef {
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            bias_correction2: 1.0 - beta2.powf(t),
            eps: self.eps,
            grad_coef: -lr * (1.0 - mu) / (1.0 - s.mu_product),
            momentum_coef: (-lr * mu_next) / (1.0 - mu_product_next),
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &NAdamCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let m = s[0].lerp(g, c.one_minus_beta1);
        let v = s[1] * L::c(c.beta2) + L::c(c.one_minus_beta2) * g * g;
        s[0] = m;
        s[1] = v;
        let denom = (v / L::c(c.bias_correction2)).sqrt() + L::c(c.eps);
        let p = p + L::c(c.grad_coef) * g / denom;
        p + L::c(c.momentum_coef) * m / denom
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        for bad in [
            NAdam {
                lr: -1.0,
                ..Default::default()
            },
            NAdam {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            NAdam {
                betas: (0.9, -0.1),
                ..Default::default()
            },
            NAdam {
                eps: f64::NAN,
                ..Default::default()
            },
            NAdam {
                weight_decay: -0.1,
                ..Default::default()
            },
            NAdam {
                momentum_decay: -1e-3,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{bad:?}"
            );
        }
        assert!(NAdam::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let rule = NAdam {
            lr: 0.1,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [1])]).unwrap();
        let mut x = [1.0f64];
        opt.step(&mut [&mut x[..]], &[&[0.5][..]]).unwrap();
        let mu1 = 0.9 * (1.0 - 0.5 * 0.96f64.powf(0.004));
        let mu2 = 0.9 * (1.0 - 0.5 * 0.96f64.powf(0.008));
        // m = 0.05, v = 0.00025, v / (1 − β₂) = 0.25, denom = 0.5 + 1e-8.
        let denom = 0.5 + 1e-8;
        let want = 1.0
            - 0.1 * (1.0 - mu1) / (1.0 - mu1) * 0.5 / denom
            - 0.1 * mu2 / (1.0 - mu1 * mu2) * 0.05 / denom;
        assert!((x[0] - want).abs() < 1e-12, "{} vs {want}", x[0]);
        let sd = opt.state_dict();
        assert_eq!(sd.scalar("g0.x.step").unwrap(), 1.0);
        assert!((sd.scalar("g0.x.mu_product").unwrap() - mu1).abs() < 1e-15);
    }

    #[test]
    fn scalars_round_trip_and_refuse_impossible_values() {
        let s = NAdamScalars {
            step: 7,
            mu_product: 0.25,
        };
        assert_eq!(NAdamScalars::from_values(&s.to_values()).unwrap(), s);
        for bad in [
            [-1.0, 0.5],
            [1.5, 0.5],
            [2.0, 1.5],
            [2.0, f64::NAN],
            [2.0, -0.1],
        ] {
            assert!(
                matches!(NAdamScalars::from_values(&bad), Err(Error::State(_))),
                "{bad:?}"
            );
        }
    }
}
