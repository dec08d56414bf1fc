//! RMSProp: steps scaled by a running average of squared gradients, with optional momentum
//! and the centered variant.
//!
//! With learning rate $\gamma$, smoothing constant $\alpha$ (`alpha`), $\epsilon$ (`eps`),
//! momentum $\mu$, weight decay $\lambda$ and gradient $g_t$ (after `maximize` and clipping):
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form, \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! v_t &= \alpha\, v_{t-1} + (1-\alpha)\, g_t^2\\
//! \bar g_t &= \alpha\, \bar g_{t-1} + (1-\alpha)\, g_t && \text{(centered)}\\
//! d_t &= \begin{cases} \sqrt{v_t - \bar g_t^2} + \epsilon & \text{centered}\\
//!   \sqrt{v_t} + \epsilon & \text{otherwise} \end{cases}\\
//! b_t &= \mu\, b_{t-1} + g_t / d_t && (\mu > 0)\\
//! \theta_t &= \begin{cases} \theta_{t-1} - \gamma\, b_t & \mu > 0\\
//!   \theta_{t-1} - \gamma\, g_t / d_t & \text{otherwise} \end{cases}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.01 | `lr` |
//! | `alpha` | 0.99 | `alpha` |
//! | `eps` | 1e-8 | `eps` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `momentum` | 0 | `momentum` |
//! | `centered` | false | `centered` |
//! | `decoupled_weight_decay` | false | — |
//! | `maximize` | false | `maximize` |
//!
//! State: `v` (PyTorch's `square_avg`); with `momentum > 0` also `m` (`momentum_buffer`); when
//! centered also `g_avg` (`grad_avg`), in that order. All start at zero.
//!
//! Differences from the lecture: ε is added after the square root, as in PyTorch; the
//! centered average $\bar g_t$ is updated as PyTorch's `lerp`, which rounds like
//! `ḡ + (1−α)(g − ḡ)`. `alpha` is limited to `[0, 1]` (PyTorch only asks `alpha >= 0`). The
//! decoupled form of weight decay is an addition of downhill.
//!
//! # References
//! - T. Tieleman, G. Hinton, *Lecture 6.5 — RMSProp: Divide the gradient by a running average
//!   of its recent magnitude*, COURSERA: Neural Networks for Machine Learning, 2012.
//! - A. Graves, *Generating Sequences With Recurrent Neural Networks*, 2013, arXiv:1308.0850
//!   (the centered variant, with momentum).
//!
//! # Example
//! ```
//! use downhill::{optim::rmsprop::RmsProp, Optimizer, ParamInfo, RuleOptimizer};
//! let rmsprop = RmsProp { lr: 0.1, momentum: 0.5, centered: true, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(rmsprop, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0f32];
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

/// RMSProp's configuration (PyTorch's `torch.optim.RMSprop`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsProp {
    /// Learning rate γ.
    pub lr: f64,
    /// Smoothing constant α of the running averages.
    pub alpha: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Momentum factor μ (0: no momentum buffer).
    pub momentum: f64,
    /// Normalize by the estimated variance of the gradient rather than its second moment.
    pub centered: bool,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of RMSProp.
#[derive(Clone, Copy, Debug)]
pub struct RmsPropCoef {
    lr: f64,
    alpha: f64,
    one_minus_alpha: f64,
    eps: f64,
    momentum: f64,
    /// Buffer index of `m`, when `momentum > 0`.
    m: Option<usize>,
    /// Buffer index of `g_avg`, when centered.
    g_avg: Option<usize>,
    /// bitsandbytes' order of operations (state in fewer bits).
    bnb: bool,
}

impl Rule for RmsProp {
    const NAME: &'static str = "rmsprop";
    type Scalars = StepCount;
    type Coef = RmsPropCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("rmsprop", "lr", self.lr)?;
        check::closed_unit_interval("rmsprop", "alpha", self.alpha)?;
        check::non_negative("rmsprop", "eps", self.eps)?;
        check::non_negative("rmsprop", "weight_decay", self.weight_decay)?;
        check::non_negative("rmsprop", "momentum", self.momentum)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        match (self.momentum > 0.0, self.centered) {
            (false, false) => &["v"],
            (true, false) => &["v", "m"],
            (false, true) => &["v", "g_avg"],
            (true, true) => &["v", "m", "g_avg"],
        }
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> RmsPropCoef {
        s.step += 1;
        let has_m = self.momentum > 0.0;
        RmsPropCoef {
            lr,
            alpha: self.alpha,
            one_minus_alpha: 1.0 - self.alpha,
            eps: self.eps,
            momentum: self.momentum,
            m: has_m.then_some(1),
            g_avg: self.centered.then_some(1 + usize::from(has_m)),
            bnb: false,
        }
    }

    fn begin_for(&self, s: &mut StepCount, lr: f64, precision: StatePrecision) -> RmsPropCoef {
        RmsPropCoef {
            bnb: precision.is_low(),
            ..self.begin(s, lr)
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &RmsPropCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        // Buffer positions as constants, so the buffers stay in registers.
        match (c.m, c.g_avg) {
            (None, None) => rmsprop::<L, 0, 0>(c, p, g, s),
            (Some(_), None) => rmsprop::<L, 1, 0>(c, p, g, s),
            (None, Some(_)) => rmsprop::<L, 0, 1>(c, p, g, s),
            (Some(_), Some(_)) => rmsprop::<L, 1, 2>(c, p, g, s),
        }
    }
}

/// RMSProp's element rule with `m` at buffer `M` and `g_avg` at buffer `G` (0: absent).
#[inline(always)]
fn rmsprop<L: Lane, const M: usize, const G: usize>(
    c: &RmsPropCoef,
    p: L,
    g: L,
    s: &mut [L; MAX_BUFFERS],
) -> L {
    let v = if c.bnb {
        s[0] * L::c(c.alpha) + (g * g) * L::c(c.one_minus_alpha)
    } else {
        s[0] * L::c(c.alpha) + L::c(c.one_minus_alpha) * g * g
    };
    s[0] = v;
    let avg = if G > 0 {
        let ga = s[G].lerp(g, c.one_minus_alpha);
        s[G] = ga;
        (v + L::c(-1.0) * ga * ga).sqrt()
    } else {
        v.sqrt()
    };
    let avg = avg + L::c(c.eps);
    if M > 0 {
        let b = s[M] * L::c(c.momentum) + g / avg;
        s[M] = b;
        p + L::c(-c.lr) * b
    } else if c.bnb {
        p + L::c(-c.lr) * (g / avg)
    } else {
        p + L::c(-c.lr) * g / avg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            RmsProp {
                lr: -1.0,
                ..Default::default()
            },
            RmsProp {
                alpha: 1.5,
                ..Default::default()
            },
            RmsProp {
                alpha: -0.1,
                ..Default::default()
            },
            RmsProp {
                alpha: f64::NAN,
                ..Default::default()
            },
            RmsProp {
                eps: -1.0,
                ..Default::default()
            },
            RmsProp {
                weight_decay: -1.0,
                ..Default::default()
            },
            RmsProp {
                momentum: -0.5,
                ..Default::default()
            },
            RmsProp {
                momentum: f64::INFINITY,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(RmsProp::default().validate().is_ok());
        assert!(RmsProp {
            alpha: 1.0,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn buffers_depend_on_flags() {
        let r = |momentum, centered| RmsProp {
            momentum,
            centered,
            ..Default::default()
        };
        assert_eq!(r(0.0, false).buffers(), ["v"]);
        assert_eq!(r(0.9, false).buffers(), ["v", "m"]);
        assert_eq!(r(0.0, true).buffers(), ["v", "g_avg"]);
        assert_eq!(r(0.9, true).buffers(), ["v", "m", "g_avg"]);
    }

    #[test]
    fn first_step_by_hand() {
        let r = RmsProp {
            lr: 0.1,
            alpha: 0.9,
            eps: 0.0,
            ..Default::default()
        };
        let c = r.begin(&mut StepCount::default(), r.lr);
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = RmsProp::update(&c, 1.0f64, 2.0, &mut s, &mut [0.0; 2]);
        // v = 0.1·4 = 0.4; p = 1 − 0.1·2/√0.4
        assert!((s[0] - 0.4).abs() < 1e-15);
        assert!((p - (1.0 - 0.2 / 0.4f64.sqrt())).abs() < 1e-12);
    }

    #[test]
    fn first_step_centered_with_momentum_by_hand() {
        let r = RmsProp {
            lr: 0.1,
            alpha: 0.9,
            eps: 0.0,
            momentum: 0.5,
            centered: true,
            ..Default::default()
        };
        let c = r.begin(&mut StepCount::default(), r.lr);
        let mut s = [0.0f64; MAX_BUFFERS];
        let p = RmsProp::update(&c, 1.0f64, 2.0, &mut s, &mut [0.0; 2]);
        // v = 0.4, ḡ = 0.2, d = √(0.4 − 0.04) = 0.6, b = 2/0.6, p = 1 − 0.1·b
        assert!((s[2] - 0.2).abs() < 1e-15);
        assert!((s[1] - 2.0 / 0.6).abs() < 1e-12);
        assert!((p - (1.0 - 0.1 * 2.0 / 0.6)).abs() < 1e-12);
    }
}
