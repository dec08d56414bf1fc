//! Adadelta: steps whose units match the parameters', from running averages of squared
//! gradients and squared updates.
//!
//! With learning rate $\gamma$, decay $\rho$ (`rho`), $\epsilon$ (`eps`), weight decay
//! $\lambda$ and gradient $g_t$ (after `maximize` and clipping):
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form, \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! v_t &= \rho\, v_{t-1} + (1-\rho)\, g_t^2\\
//! \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t\\
//! u_t &= \rho\, u_{t-1} + (1-\rho)\, \Delta_t^2\\
//! \theta_t &= \theta_{t-1} - \gamma\, \Delta_t
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 1.0 | `lr` |
//! | `rho` | 0.9 | `rho` |
//! | `eps` | 1e-6 | `eps` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `decoupled_weight_decay` | false | — |
//! | `maximize` | false | `maximize` |
//!
//! State: `v` (PyTorch's `square_avg`) and `u` (`acc_delta`); per tensor, `step`.
//!
//! Differences from the paper: the update is scaled by a learning rate γ (the paper has none,
//! i.e. γ = 1, the default), as in PyTorch. The decoupled form of weight decay is an addition
//! of downhill.
//!
//! # References
//! - M. D. Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012, arXiv:1212.5701.
//!
//! # Example
//! ```
//! use downhill::{optim::adadelta::Adadelta, Optimizer, ParamInfo, RuleOptimizer};
//! let mut opt =
//!     RuleOptimizer::<f64, _>::new(Adadelta::default(), vec![ParamInfo::new("x", [1])])?;
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
use crate::Result;

/// Adadelta's configuration (PyTorch's `torch.optim.Adadelta`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adadelta {
    /// Learning rate γ, scaling the update.
    pub lr: f64,
    /// Decay ρ of the running averages.
    pub rho: f64,
    /// ε added inside both square roots.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Adadelta {
    fn default() -> Self {
        Adadelta {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of Adadelta.
#[derive(Clone, Copy, Debug)]
pub struct AdadeltaCoef {
    lr: f64,
    rho: f64,
    one_minus_rho: f64,
    eps: f64,
}

impl Rule for Adadelta {
    const NAME: &'static str = "adadelta";
    type Scalars = StepCount;
    type Coef = AdadeltaCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("adadelta", "lr", self.lr)?;
        check::closed_unit_interval("adadelta", "rho", self.rho)?;
        check::non_negative("adadelta", "eps", self.eps)?;
        check::non_negative("adadelta", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["v", "u"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdadeltaCoef {
        s.step += 1;
        AdadeltaCoef {
            lr,
            rho: self.rho,
            one_minus_rho: 1.0 - self.rho,
            eps: self.eps,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(
        c: &AdadeltaCoef,
        p: L,
        g: L,
        s: &mut [L; MAX_BUFFERS],
        _: &mut [L; 2],
    ) -> L {
        let rho = L::c(c.rho);
        let one_minus_rho = L::c(c.one_minus_rho);
        let eps = L::c(c.eps);
        let v = s[0] * rho + one_minus_rho * g * g;
        let std = (v + eps).sqrt();
        let delta = (s[1] + eps).sqrt() / std * g;
        s[0] = v;
        s[1] = s[1] * rho + one_minus_rho * delta * delta;
        p + L::c(-c.lr) * delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Adadelta {
                lr: -1.0,
                ..Default::default()
            },
            Adadelta {
                lr: f64::INFINITY,
                ..Default::default()
            },
            Adadelta {
                rho: 1.01,
                ..Default::default()
            },
            Adadelta {
                rho: -0.1,
                ..Default::default()
            },
            Adadelta {
                rho: f64::NAN,
                ..Default::default()
            },
            Adadelta {
                eps: -1e-6,
                ..Default::default()
            },
            Adadelta {
                weight_decay: -1.0,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(Adadelta::default().validate().is_ok());
        assert!(Adadelta {
            rho: 1.0,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let r = Adadelta {
            lr: 0.5,
            rho: 0.9,
            eps: 1e-2,
            ..Default::default()
        };
        let c = r.begin(&mut StepCount::default(), r.lr);
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = Adadelta::update(&c, 1.0f64, 2.0, &mut s, &mut [0.0; 2]);
        // v = 0.4; Δ = √0.01/√0.41·2 = 0.2/√0.41; u = 0.1·Δ²; p = 1 − 0.5·Δ
        let delta = 0.2 / 0.41f64.sqrt();
        assert!((s[0] - 0.4).abs() < 1e-15);
        assert!((s[1] - 0.1 * delta * delta).abs() < 1e-15);
        assert!((p - (1.0 - 0.5 * delta)).abs() < 1e-12);
    }
}
