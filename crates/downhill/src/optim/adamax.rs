//! Adamax: Adam with the infinity norm in place of the second moment.
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`),
//! weight decay $\lambda$ and gradient $g_t$ (after `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form, \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t\\
//! u_t &= \max(\beta_2 u_{t-1},\ |g_t| + \epsilon)\\
//! \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\, \frac{m_t}{u_t}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.002 | `lr` |
//! | `betas` | (0.9, 0.999) | `betas` |
//! | `eps` | 1e-8 | `eps` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `decoupled_weight_decay` | false | — |
//! | `maximize` | false | `maximize` |
//!
//! State: `m` (PyTorch's `exp_avg`) and `u` (`exp_inf`); per tensor, `step`.
//!
//! Differences from the paper: ε is added to $|g_t|$ inside the maximum, as in PyTorch (the
//! paper has no ε). The first moment is updated as PyTorch's `lerp`, which rounds like
//! `m + (1−β₁)(g − m)`. The decoupled form of weight decay is an addition of downhill.
//!
//! # References
//! - D. P. Kingma, J. Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015,
//!   arXiv:1412.6980, §7.1.
//!
//! # Example
//! ```
//! use downhill::{optim::adamax::Adamax, Optimizer, ParamInfo, RuleOptimizer};
//! let adamax = Adamax { lr: 0.1, ..Default::default() };
//! let mut opt = RuleOptimizer::<f64, _>::new(adamax, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0].abs() < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::adam::check_betas;
use super::{torch_hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::Result;

/// Adamax's configuration (PyTorch's `torch.optim.Adamax`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adamax {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first moment and of the infinity norm.
    pub betas: (f64, f64),
    /// ε added to `|g|` in the infinity norm.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Adamax {
    fn default() -> Self {
        Adamax {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of Adamax.
#[derive(Clone, Copy, Debug)]
pub struct AdamaxCoef {
    one_minus_beta1: f64,
    beta2: f64,
    eps: f64,
    /// `lr / (1 − β₁ᵗ)`.
    clr: f64,
}

impl Rule for Adamax {
    const NAME: &'static str = "adamax";
    type Scalars = StepCount;
    type Coef = AdamaxCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("adamax", "lr", self.lr)?;
        check_betas("adamax", self.betas, self.eps)?;
        check::non_negative("adamax", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "u"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdamaxCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let bias_correction = 1.0 - beta1.powf(s.step as f64);
        AdamaxCoef {
            one_minus_beta1: 1.0 - beta1,
            beta2,
            eps: self.eps,
            clr: lr / bias_correction,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &AdamaxCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let m = s[0].lerp(g, c.one_minus_beta1);
        let u = (s[1] * L::c(c.beta2)).max(g.abs() + L::c(c.eps));
        s[0] = m;
        s[1] = u;
        p + L::c(-c.clr) * m / u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Adamax {
                lr: -1.0,
                ..Default::default()
            },
            Adamax {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            Adamax {
                betas: (0.9, -0.1),
                ..Default::default()
            },
            Adamax {
                betas: (f64::NAN, 0.999),
                ..Default::default()
            },
            Adamax {
                eps: -1e-8,
                ..Default::default()
            },
            Adamax {
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
        assert!(Adamax::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let r = Adamax {
            lr: 0.1,
            eps: 0.0,
            ..Default::default()
        };
        let mut sc = StepCount::default();
        let c = r.begin(&mut sc, r.lr);
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = Adamax::update(&c, 1.0f64, -2.0, &mut s, &mut [0.0; 2]);
        // m = 0.1·(−2) = −0.2, u = 2, clr = 0.1/0.1 = 1: p = 1 + 0.2/2 = 1.1
        assert!((s[0] + 0.2).abs() < 1e-15);
        assert_eq!(s[1], 2.0);
        assert!((p - 1.1).abs() < 1e-12);
        // The first step moves by lr·sign(g) (up to ε), whatever |g|.
        assert!((p - 1.0 - r.lr).abs() < 1e-12);
    }
}
