//! RAdam: rectified Adam, which falls back to bias-corrected momentum SGD while the variance
//! of the adaptive learning rate is intractable.
//!
//! With learning rate $\gamma$, moment decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`),
//! weight decay $\lambda$ and gradient $g_t$ (after `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form, \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t\\
//! v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2\\
//! \hat m_t &= m_t / (1-\beta_1^t)\\
//! \rho_\infty &= \frac{2}{1-\beta_2} - 1, \quad
//! \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}\\
//! \theta_t &= \begin{cases}
//!   \theta_{t-1} - \gamma\,\hat m_t\, \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon}\, r_t,
//!   \quad r_t = \sqrt{\dfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
//!   & \rho_t > 5\\
//!   \theta_{t-1} - \gamma\,\hat m_t & \text{otherwise}
//! \end{cases}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.001 | `lr` |
//! | `betas` | (0.9, 0.999) | `betas` |
//! | `eps` | 1e-8 | `eps` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `decoupled_weight_decay` | false | `decoupled_weight_decay` (RAdamW) |
//! | `maximize` | false | `maximize` |
//!
//! State: `m` (PyTorch's `exp_avg`), `v` (`exp_avg_sq`); per tensor, `step`.
//!
//! Differences from the paper: the threshold on $\rho_t$ is 5, as in PyTorch (the paper's
//! Algorithm 2 uses 4), and ε is added to $\sqrt{v_t}$ as in PyTorch. Differences from
//! PyTorch: none. The first moment is updated as PyTorch's `lerp`, which rounds like
//! `m + (1−β₁)(g − m)`.
//!
//! # References
//! - L. Liu, H. Jiang, P. He, W. Chen, X. Liu, J. Gao, J. Han, *On the Variance of the
//!   Adaptive Learning Rate and Beyond*, ICLR 2020, arXiv:1908.03265.
//! - I. Loshchilov, F. Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   arXiv:1711.05101 (decoupled weight decay).
//!
//! # Example
//! ```
//! use downhill::{optim::radam::RAdam, Optimizer, ParamInfo, RuleOptimizer};
//! let radam = RAdam { lr: 0.05, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(radam, vec![ParamInfo::new("x", [1])])?;
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

/// RAdam's configuration (PyTorch's `torch.optim.RAdam`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RAdam {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first and second moments.
    pub betas: (f64, f64),
    /// ε added to the denominator.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled (RAdamW) rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for RAdam {
    fn default() -> Self {
        RAdam {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of RAdam.
#[derive(Clone, Copy, Debug)]
pub struct RAdamCoef {
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    bias_correction1: f64,
    lr: f64,
    eps: f64,
    /// `ρₜ > 5`: take the rectified adaptive step.
    rectified: bool,
    bias_correction2_sqrt: f64,
    rect: f64,
}

impl Rule for RAdam {
    const NAME: &'static str = "radam";
    type Scalars = StepCount;
    type Coef = RAdamCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("radam", "lr", self.lr)?;
        check_betas("radam", self.betas, self.eps)?;
        check::non_negative("radam", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> RAdamCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let t = s.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2 = 1.0 - beta2.powf(t);
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * t * beta2.powf(t) / bias_correction2;
        let rectified = rho_t > 5.0;
        let rect = if rectified {
            ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt()
        } else {
            0.0
        };
        RAdamCoef {
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            bias_correction1,
            lr,
            eps: self.eps,
            rectified,
            bias_correction2_sqrt: bias_correction2.sqrt(),
            rect,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &RAdamCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let m = s[0].lerp(g, c.one_minus_beta1);
        let v = s[1] * L::c(c.beta2) + L::c(c.one_minus_beta2) * g * g;
        s[0] = m;
        s[1] = v;
        let m_hat = m / L::c(c.bias_correction1);
        if c.rectified {
            // PyTorch: `bias_correction2**0.5 / (sqrt(v) + eps)`, a Python number over a
            // tensor, which it computes as `reciprocal(denom) * number`.
            let adaptive = L::c(1.0) / (v.sqrt() + L::c(c.eps)) * L::c(c.bias_correction2_sqrt);
            p - m_hat * L::c(c.lr) * adaptive * L::c(c.rect)
        } else {
            p - m_hat * L::c(c.lr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        for bad in [
            RAdam {
                lr: -1.0,
                ..Default::default()
            },
            RAdam {
                lr: f64::INFINITY,
                ..Default::default()
            },
            RAdam {
                betas: (0.9, 1.0),
                ..Default::default()
            },
            RAdam {
                eps: -1e-8,
                ..Default::default()
            },
            RAdam {
                weight_decay: -0.1,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{bad:?}"
            );
        }
        assert!(RAdam::default().validate().is_ok());
    }

    fn run(rule: RAdam, grads: &[f64]) -> f64 {
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [1])]).unwrap();
        let mut x = [1.0f64];
        for &g in grads {
            opt.step(&mut [&mut x[..]], &[&[g][..]]).unwrap();
        }
        x[0]
    }

    #[test]
    fn first_step_is_unrectified() {
        // Default betas: ρ₁ = 1 ≤ 5, so the step is lr·m̂ = lr·g.
        let x = run(
            RAdam {
                lr: 0.1,
                ..Default::default()
            },
            &[0.5],
        );
        assert!((x - (1.0 - 0.1 * 0.5)).abs() < 1e-15, "{x}");
    }

    #[test]
    fn rectified_branch_by_hand() {
        // β₂ = 0.9: ρ∞ = 19, and ρₜ ≈ 1, 1.95, 2.86, 3.74, 4.58, 5.39: steps 1–5 take the
        // plain momentum step, step 6 the rectified one. Constant gradient and β₁ = 0, so
        // m̂ = g and v = (1 − β₂ᵗ) g².
        let (b2, lr, g, eps) = (0.9f64, 0.1, 0.5, 1e-8);
        let rule = RAdam {
            lr,
            betas: (0.0, b2),
            eps,
            ..Default::default()
        };
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        let rho = |t: f64| rho_inf - 2.0 * t * b2.powf(t) / (1.0 - b2.powf(t));
        let first = (1..100).find(|&t| rho(t as f64) > 5.0).unwrap();
        assert_eq!(first, 6);
        let mut want = 1.0;
        for t in 1..=first {
            let tf = t as f64;
            if rho(tf) > 5.0 {
                let r = rho(tf);
                let rect = ((r - 4.0) * (r - 2.0) * rho_inf
                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * r))
                    .sqrt();
                let bc2 = 1.0 - b2.powf(tf);
                let v: f64 = bc2 * g * g;
                want -= g * lr * bc2.sqrt() / (v.sqrt() + eps) * rect;
            } else {
                want -= g * lr;
            }
        }
        let x = run(rule, &vec![g; first]);
        assert!((x - want).abs() < 1e-12, "{x} vs {want}");
        // The rectified step is smaller than the unrectified one would have been.
        let unrect = 1.0 - g * lr * (first as f64);
        assert!(x > unrect);
    }
}
