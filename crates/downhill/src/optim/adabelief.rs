//! AdaBelief: Adam whose second moment tracks the squared deviation of the gradient from its
//! running mean (the "belief" in the current direction) instead of the squared gradient.
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
//! s_t &= (1-\beta_2)\,(g_t - m_t)^2 + \beta_2 s_{t-1} + \epsilon_r\\
//! \hat m_t &= \frac{m_t}{1-\beta_1^t}, \quad\text{or with Nesterov }
//!   \hat m_t = \beta_1\,\frac{m_t}{1-\beta_1^{t+1}} + (1-\beta_1)\,\frac{g_t}{1-\beta_1^t}\\
//! \theta_t &= \theta_{t-1} + (-\gamma)\,\frac{\hat m_t}{\sqrt{s_t/(1-\beta_2^t)} + \epsilon}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | optax (`optax.adabelief`) |
//! |---|---|---|
//! | `lr` | 0.001 | `learning_rate` (no default) |
//! | `betas` | (0.9, 0.999) | `b1`, `b2` |
//! | `eps` | 1e-16 | `eps` |
//! | `eps_root` | 1e-16 | `eps_root` |
//! | `nesterov` | false | `nesterov` |
//! | `weight_decay` | 0 | — |
//! | `decoupled_weight_decay` | false | — |
//! | `maximize` | false | — |
//!
//! State: `m` (optax's `mu`) and `s` (`nu`, which holds $s_t$ with $\epsilon_r$ added); per
//! tensor, `step`.
//!
//! This is optax 0.2.8's `optax.adabelief` (`scale_by_belief`, then `scale_by_learning_rate`),
//! in optax's order of operations. Differences from it: optax has no default learning rate;
//! 0.001 here is the paper's. Weight decay (either form; the paper's official code decouples
//! it) and `maximize` are downhill's additions, applied to the gradient or the parameter before
//! the rule like every rule's. Differences from the paper: as in optax, $\epsilon_r$ is added
//! to the stored $s_t$ (the paper adds $\epsilon$ there, so it accumulates the same way) and
//! $\epsilon$ is added outside the square root of the bias-corrected $s_t$.
//!
//! # References
//! - J. Zhuang, T. Tang, Y. Ding, S. Tatikonda, N. Dvornek, X. Papademetris, J. S. Duncan,
//!   *AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients*,
//!   NeurIPS 2020, arXiv:2010.07468.
//!
//! # Example
//! ```
//! use downhill::{optim::adabelief::AdaBelief, Optimizer, ParamInfo, RuleOptimizer};
//! let adabelief = AdaBelief { lr: 0.1, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(adabelief, vec![ParamInfo::new("x", [1])])?;
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

/// AdaBelief's configuration (optax's `optax.adabelief`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaBelief {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first moment and of the belief `s`.
    pub betas: (f64, f64),
    /// ε added to the denominator, outside the square root.
    pub eps: f64,
    /// ε added to `s` at every step (inside the square root).
    pub eps_root: f64,
    /// Nesterov momentum (optax's form).
    pub nesterov: bool,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for AdaBelief {
    fn default() -> Self {
        AdaBelief {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-16,
            eps_root: 1e-16,
            nesterov: false,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of AdaBelief.
#[derive(Clone, Copy, Debug)]
pub struct AdaBeliefCoef {
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    /// 1 − β₁ᵗ.
    bias_correction1: f64,
    /// 1 − β₁ᵗ⁺¹ (Nesterov's look-ahead).
    bias_correction1_next: f64,
    bias_correction2: f64,
    eps: f64,
    eps_root: f64,
    neg_lr: f64,
    nesterov: bool,
}

impl Rule for AdaBelief {
    const NAME: &'static str = "adabelief";
    type Scalars = StepCount;
    type Coef = AdaBeliefCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("adabelief", "lr", self.lr)?;
        check_betas("adabelief", self.betas, self.eps)?;
        check::non_negative("adabelief", "eps_root", self.eps_root)?;
        check::non_negative("adabelief", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "s"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdaBeliefCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let t = s.step as f64;
        AdaBeliefCoef {
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            bias_correction1: 1.0 - beta1.powf(t),
            bias_correction1_next: 1.0 - beta1.powf(t + 1.0),
            bias_correction2: 1.0 - beta2.powf(t),
            eps: self.eps,
            eps_root: self.eps_root,
            neg_lr: -lr,
            nesterov: self.nesterov,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(
        c: &AdaBeliefCoef,
        p: L,
        g: L,
        s: &mut [L; MAX_BUFFERS],
        _: &mut [L; 2],
    ) -> L {
        let m = L::c(c.one_minus_beta1) * g + L::c(c.beta1) * s[0];
        let e = g - m;
        let v = L::c(c.one_minus_beta2) * (e * e) + L::c(c.beta2) * s[1] + L::c(c.eps_root);
        s[0] = m;
        s[1] = v;
        let m_hat = if c.nesterov {
            L::c(c.beta1) * (m / L::c(c.bias_correction1_next))
                + L::c(c.one_minus_beta1) * (g / L::c(c.bias_correction1))
        } else {
            m / L::c(c.bias_correction1)
        };
        let v_hat = v / L::c(c.bias_correction2);
        let u = m_hat / (v_hat.sqrt() + L::c(c.eps));
        p + u * L::c(c.neg_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            AdaBelief {
                lr: f64::NAN,
                ..Default::default()
            },
            AdaBelief {
                betas: (-0.1, 0.999),
                ..Default::default()
            },
            AdaBelief {
                betas: (0.9, 1.0),
                ..Default::default()
            },
            AdaBelief {
                eps: -1e-16,
                ..Default::default()
            },
            AdaBelief {
                eps_root: -1e-16,
                ..Default::default()
            },
            AdaBelief {
                weight_decay: -0.1,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(AdaBelief::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let r = AdaBelief {
            lr: 0.1,
            betas: (0.5, 0.75),
            eps: 0.0,
            eps_root: 0.0,
            ..Default::default()
        };
        let mut sc = StepCount::default();
        let c = r.begin(&mut sc, r.lr);
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = AdaBelief::update(&c, 1.0f64, -2.0, &mut s, &mut [0.0; 2]);
        // m = −1; g − m = −1, s = 0.25; m̂ = −2, ŝ = 1: p = 1 − 0.1·(−2) = 1.2.
        assert_eq!((s[0], s[1]), (-1.0, 0.25));
        assert!((p - 1.2).abs() < 1e-15, "{p}");
        // Nesterov: m̂ = 0.5·(−1/0.75) + 0.5·(−2/0.5) = −8/3: p = 1 + 0.1·(8/3).
        let r = AdaBelief {
            nesterov: true,
            ..r
        };
        let mut sc = StepCount::default();
        let c = r.begin(&mut sc, r.lr);
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = AdaBelief::update(&c, 1.0f64, -2.0, &mut s, &mut [0.0; 2]);
        assert!((p - (1.0 + 0.8 / 3.0)).abs() < 1e-15, "{p}");
    }

    #[test]
    fn eps_root_accumulates_in_the_state() {
        // A constant gradient equal to the mean leaves s = eps_root·(1 + β₂ + β₂² + …).
        let r = AdaBelief {
            betas: (0.0, 0.5),
            eps_root: 1.0,
            ..Default::default()
        };
        let mut sc = StepCount::default();
        let mut s = [0.0f64; MAX_BUFFERS];
        for _ in 0..3 {
            let c = r.begin(&mut sc, r.lr);
            AdaBelief::update(&c, 0.0f64, 1.0, &mut s, &mut [0.0; 2]);
        }
        assert_eq!(s[1], 1.75);
    }
}
