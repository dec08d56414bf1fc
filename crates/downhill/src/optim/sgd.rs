//! Stochastic gradient descent with momentum, dampening and Nesterov momentum; with decoupled
//! weight decay it is SGDW.
//!
//! With learning rate $\gamma$, momentum $\mu$, dampening $\tau$, weight decay $\lambda$ and
//! gradient $g_t$ (after `maximize` and clipping):
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form, \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form, SGDW)}\\
//! b_t &= \begin{cases} g_t & t = 1\\ \mu\, b_{t-1} + (1-\tau)\, g_t & t > 1 \end{cases}\\
//! d_t &= \begin{cases} g_t + \mu\, b_t & \text{Nesterov}\\ b_t & \text{otherwise}\end{cases}
//! \qquad (d_t = g_t \text{ when } \mu = 0)\\
//! \theta_t &= \theta_{t-1} - \gamma\, d_t
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.001 | `lr` |
//! | `momentum` | 0 | `momentum` |
//! | `dampening` | 0 | `dampening` |
//! | `nesterov` | false | `nesterov` (needs `momentum > 0` and `dampening = 0`) |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `decoupled_weight_decay` | false (true for [`Sgd::sgdw`]) | — |
//! | `maximize` | false | `maximize` |
//!
//! State: `m`, the momentum buffer (PyTorch's `momentum_buffer`), kept only when
//! `momentum > 0`.
//!
//! Differences from PyTorch: none for `torch.optim.SGD`. SGDW (decoupled decay) follows
//! Loshchilov & Hutter: the weights shrink by `1 − lr·weight_decay` before the SGD step, with
//! the learning rate in force (so a schedule scales the decay too, as in AdamW).
//!
//! # References
//! - H. Robbins, S. Monro, *A Stochastic Approximation Method*, 1951.
//! - I. Sutskever, J. Martens, G. Dahl, G. Hinton, *On the importance of initialization and
//!   momentum in deep learning*, ICML 2013 (Nesterov momentum in this form).
//! - I. Loshchilov, F. Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   arXiv:1711.05101 (SGDW).
//!
//! # Example
//! ```
//! use downhill::{optim::sgd::Sgd, Optimizer, ParamInfo, RuleOptimizer};
//! let sgd = Sgd { lr: 0.1, momentum: 0.9, nesterov: true, ..Default::default() };
//! let mut opt = RuleOptimizer::<f64, _>::new(sgd, vec![ParamInfo::new("x", [1])])?;
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
use crate::error::{check, ensure};
use crate::kernel::Lane;
use crate::Result;

/// SGD's configuration (PyTorch's `torch.optim.SGD`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sgd {
    /// Learning rate γ.
    pub lr: f64,
    /// Momentum factor μ.
    pub momentum: f64,
    /// Dampening τ of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled (SGDW) rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

impl Sgd {
    /// SGDW's defaults: SGD with decoupled weight decay (`weight_decay = 0.01`, as AdamW).
    pub fn sgdw() -> Self {
        Sgd {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..Default::default()
        }
    }
}

/// Per-step constants of SGD.
#[derive(Clone, Copy, Debug)]
pub struct SgdCoef {
    lr: f64,
    momentum: f64,
    /// Weight of the old buffer: 0 on the first step (the buffer starts as the gradient).
    keep: f64,
    /// Weight of the gradient in the buffer: 1 on the first step, `1 − dampening` after.
    add: f64,
    nesterov: bool,
}

impl Rule for Sgd {
    const NAME: &'static str = "sgd";
    type Scalars = StepCount;
    type Coef = SgdCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("sgd", "lr", self.lr)?;
        check::non_negative("sgd", "momentum", self.momentum)?;
        check::non_negative("sgd", "dampening", self.dampening)?;
        check::non_negative("sgd", "weight_decay", self.weight_decay)?;
        ensure(
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            "sgd",
            "momentum",
            self.momentum,
            "Nesterov momentum requires momentum > 0 and dampening = 0",
        )
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        if self.momentum != 0.0 {
            &["m"]
        } else {
            &[]
        }
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> SgdCoef {
        s.step += 1;
        let first = s.step == 1;
        SgdCoef {
            lr,
            momentum: self.momentum,
            keep: if first { 0.0 } else { self.momentum },
            add: if first { 1.0 } else { 1.0 - self.dampening },
            nesterov: self.nesterov,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &SgdCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let d = if c.momentum != 0.0 {
            let b = s[0] * L::c(c.keep) + L::c(c.add) * g;
            s[0] = b;
            if c.nesterov {
                g + L::c(c.momentum) * b
            } else {
                b
            }
        } else {
            g
        };
        p - L::c(c.lr) * d
    }
}
