//! Rprop: resilient backpropagation, a per-element step size adapted from the sign of
//! successive gradients only.
//!
//! With step-size factors $\eta^-, \eta^+$ (`etas`), bounds $\Delta_{\min}, \Delta_{\max}$
//! (`step_sizes`), initial step size $\gamma$ (`lr`) and gradient $g_t$ (after `maximize` and
//! clipping), for every element at step $t$ (with $g'_0 = 0$, $\Delta_0 = \gamma$):
//!
//! $$
//! \begin{aligned}
//! \sigma_t &= \operatorname{sign}(g_t\, g'_{t-1}), \qquad
//! f_t = \begin{cases} \eta^+ & \sigma_t > 0\\ \eta^- & \sigma_t < 0\\ 1 & \sigma_t = 0\end{cases}\\
//! \Delta_t &= \operatorname{clamp}(\Delta_{t-1} f_t,\ \Delta_{\min},\ \Delta_{\max})\\
//! g'_t &= \begin{cases} 0 & \sigma_t < 0\\ g_t & \text{otherwise}\end{cases}\\
//! \theta_t &= \theta_{t-1} - \operatorname{sign}(g'_t)\, \Delta_t
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.01 | `lr` (the initial step size Δ₀) |
//! | `etas` | (0.5, 1.2) | `etas` (η⁻, η⁺), needs 0 < η⁻ < 1 < η⁺ |
//! | `step_sizes` | (1e-6, 50) | `step_sizes` (Δ_min, Δ_max) |
//! | `weight_decay` | 0 | — (L2: `g ← g + weight_decay·θ`) |
//! | `decoupled_weight_decay` | false | — (`θ ← θ·(1 − lr·weight_decay)` instead) |
//! | `maximize` | false | `maximize` |
//!
//! State: `prev` ($g'_{t-1}$, PyTorch's `prev`) and `step_size` ($\Delta_t$, PyTorch's
//! `step_size`); per tensor, `step`.
//!
//! Differences from PyTorch (`torch.optim.Rprop`, the Rprop⁻ variant without weight
//! backtracking): none. The factor $f_t$ is selected exactly (from $\max(\sigma, 0)$ and
//! $\max(-\sigma, 0)$, each 0 or 1), so it is $\eta^\pm$ or 1 rounded to the element type as
//! PyTorch's `sign` tensor holds it. The step sizes start at the learning rate in force at the
//! first step (PyTorch fills `step_size` with the group's `lr` when the state is created); a
//! schedule changes nothing after that, as in PyTorch. Rprop has no weight decay in PyTorch;
//! `weight_decay` (0 by default) adds one as every rule of this library has it: an L2 penalty
//! on the gradient before its sign is taken, or with `decoupled_weight_decay` a decay of the
//! parameters by the learning rate in force. Since `lr` is only the initial step size, a
//! learning rate of 0 still moves the parameters by `step_sizes.0` per step (as in PyTorch).
//!
//! # References
//! - M. Riedmiller, H. Braun, *A Direct Adaptive Method for Faster Backpropagation Learning:
//!   The RPROP Algorithm*, IEEE International Conference on Neural Networks, 1993.
//!
//! # Example
//! ```
//! use downhill::{optim::rprop::Rprop, Optimizer, ParamInfo, RuleOptimizer};
//! let mut opt = RuleOptimizer::<f64, _>::new(Rprop::default(), vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! // Steps of 0.01, 0.012, 0.0144, …: the step grows while the sign holds.
//! assert!((x[0] - (3.0 - 0.01 * (1.0 + 1.2 + 1.44 + 1.728 + 2.0736))).abs() < 1e-12);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{torch_hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::{check, ensure};
use crate::kernel::Lane;
use crate::Result;

/// Rprop's configuration (PyTorch's `torch.optim.Rprop`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rprop {
    /// Initial step size Δ₀ of every element.
    pub lr: f64,
    /// (η⁻, η⁺): the step size's factor when the gradient's sign flips, and when it holds.
    pub etas: (f64, f64),
    /// (Δ_min, Δ_max): the bounds of the step sizes.
    pub step_sizes: (f64, f64),
    /// Weight decay (not in PyTorch's Rprop; 0 there).
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Rprop {
    fn default() -> Self {
        Rprop {
            lr: 1e-2,
            etas: (0.5, 1.2),
            step_sizes: (1e-6, 50.0),
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of Rprop.
#[derive(Clone, Copy, Debug)]
pub struct RpropCoef {
    /// The first step of this tensor: the step sizes start at `lr`.
    first: bool,
    lr: f64,
    etaminus: f64,
    etaplus: f64,
    step_size_min: f64,
    step_size_max: f64,
}

impl Rule for Rprop {
    const NAME: &'static str = "rprop";
    type Scalars = StepCount;
    type Coef = RpropCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("rprop", "lr", self.lr)?;
        let (minus, plus) = self.etas;
        ensure(
            minus > 0.0 && minus < 1.0,
            "rprop",
            "etaminus",
            minus,
            "must be in (0, 1)",
        )?;
        ensure(
            plus > 1.0 && plus.is_finite(),
            "rprop",
            "etaplus",
            plus,
            "must be finite and > 1",
        )?;
        let (lo, hi) = self.step_sizes;
        check::non_negative("rprop", "step_size_min", lo)?;
        ensure(
            hi.is_finite() && hi >= lo,
            "rprop",
            "step_size_max",
            hi,
            "must be finite and >= step_size_min",
        )?;
        check::non_negative("rprop", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["prev", "step_size"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> RpropCoef {
        s.step += 1;
        RpropCoef {
            first: s.step == 1,
            lr,
            etaminus: self.etas.0,
            etaplus: self.etas.1,
            step_size_min: self.step_sizes.0,
            step_size_max: self.step_sizes.1,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &RpropCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let (prev, step_size) = if c.first {
            (L::c(0.0), L::c(c.lr))
        } else {
            (s[0], s[1])
        };
        let sign = (g * prev).sign();
        let zero = L::c(0.0);
        let one = L::c(1.0);
        // Each of these is exactly 0 or 1, and exactly one of them is 1.
        let pos = sign.max(zero);
        let neg = (-sign).max(zero);
        let same = one - pos - neg;
        let factor = pos * L::c(c.etaplus) + neg * L::c(c.etaminus) + same;
        let step_size = (step_size * factor)
            .max(L::c(c.step_size_min))
            .min(L::c(c.step_size_max));
        let g = g * (one - neg);
        s[0] = g;
        s[1] = step_size;
        p - g.sign() * step_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Rprop {
                lr: -1.0,
                ..Default::default()
            },
            Rprop {
                lr: f64::NAN,
                ..Default::default()
            },
            Rprop {
                etas: (0.0, 1.2),
                ..Default::default()
            },
            Rprop {
                etas: (1.0, 1.2),
                ..Default::default()
            },
            Rprop {
                etas: (0.5, 1.0),
                ..Default::default()
            },
            Rprop {
                etas: (0.5, f64::INFINITY),
                ..Default::default()
            },
            Rprop {
                etas: (f64::NAN, 1.2),
                ..Default::default()
            },
            Rprop {
                step_sizes: (-1e-6, 50.0),
                ..Default::default()
            },
            Rprop {
                step_sizes: (1.0, 0.5),
                ..Default::default()
            },
            Rprop {
                step_sizes: (1e-6, f64::NAN),
                ..Default::default()
            },
            Rprop {
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
        assert!(Rprop::default().validate().is_ok());
    }

    #[test]
    fn steps_by_hand() {
        let rule = Rprop {
            lr: 0.25,
            etas: (0.5, 1.5),
            step_sizes: (0.125, 0.5),
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [3])]).unwrap();
        let mut x = [1.0f64, 1.0, 1.0];
        // Step 1: no previous gradient, every step size stays 0.25.
        opt.step(&mut [&mut x[..]], &[&[2.0, -3.0, 0.0][..]])
            .unwrap();
        assert_eq!(x, [0.75, 1.25, 1.0]);
        // Step 2: same sign (×1.5), flipped sign (×0.5, no move, gradient forgotten), zero
        // before (×1).
        opt.step(&mut [&mut x[..]], &[&[1.0, 3.0, -1.0][..]])
            .unwrap();
        assert_eq!(x, [0.375, 1.25, 1.25]);
        let sd = opt.state_dict();
        assert_eq!(
            sd.buffer::<f64>("g0.x.step_size", &[3]).unwrap(),
            vec![0.375, 0.125, 0.25]
        );
        assert_eq!(
            sd.buffer::<f64>("g0.x.prev", &[3]).unwrap(),
            vec![1.0, 0.0, -1.0]
        );
        // Step 3: ×1.5 clamped to 0.5; after a flip the previous gradient is 0 (×1); ×1.5.
        opt.step(&mut [&mut x[..]], &[&[1.0, 3.0, -1.0][..]])
            .unwrap();
        assert_eq!(x, [-0.125, 1.125, 1.625]);
        let sd = opt.state_dict();
        assert_eq!(
            sd.buffer::<f64>("g0.x.step_size", &[3]).unwrap(),
            vec![0.5, 0.125, 0.375]
        );
    }

    #[test]
    fn factor_is_exactly_eta_in_f32() {
        let rule = Rprop {
            lr: 1.0,
            etas: (0.3, 1.7),
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f32, _>::new(rule, vec![ParamInfo::new("x", [2])]).unwrap();
        let mut x = [0.0f32, 0.0];
        opt.step(&mut [&mut x[..]], &[&[1.0, 1.0][..]]).unwrap();
        opt.step(&mut [&mut x[..]], &[&[1.0, -1.0][..]]).unwrap();
        let sd = opt.state_dict();
        assert_eq!(
            sd.buffer::<f32>("g0.x.step_size", &[2]).unwrap(),
            vec![1.7f32, 0.3f32]
        );
    }
}
