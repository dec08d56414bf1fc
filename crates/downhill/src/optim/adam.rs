//! Adam: adaptive moment estimation, with AMSGrad; with decoupled weight decay it is AdamW.
//!
//! With learning rate $\gamma$, moment decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`),
//! weight decay $\lambda$ and gradient $g_t$ (after `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form: Adam's \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form: AdamW)}\\
//! m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t\\
//! v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2\\
//! \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad)}, \quad \text{else } \hat v_t = v_t\\
//! \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
//!   \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | Adam default | AdamW default ([`Adam::adamw`]) |
//! |---|---|---|
//! | `lr` | 0.001 | 0.001 |
//! | `betas` | (0.9, 0.999) | (0.9, 0.999) |
//! | `eps` | 1e-8 | 1e-8 |
//! | `weight_decay` | 0 | 0.01 |
//! | `decoupled_weight_decay` | false | true |
//! | `amsgrad` | false | false |
//! | `maximize` | false | false |
//!
//! State: `m` (PyTorch's `exp_avg`), `v` (`exp_avg_sq`), and with AMSGrad `v_max`
//! (`max_exp_avg_sq`); per tensor, `step`.
//!
//! Differences from the papers: the ε is added after the bias correction of $\sqrt{v}$ and
//! the decoupled decay is scaled by the learning rate, both as in PyTorch. The first moment is
//! updated as PyTorch's `lerp`, which rounds like `m + (1−β₁)(g − m)`.
//!
//! With state in `bf16` or `8bit` ([`crate::precision`]) the reference is bitsandbytes'
//! `Adam8bit`/`AdamW8bit`, and the step follows its kernel's order of operations:
//! $m = m\beta_1 + g(1-\beta_1)$, $v = v\beta_2 + (g g)(1-\beta_2)$,
//! $d = \sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon$, $\theta = \theta + (-\gamma/(1-\beta_1^t))\,(m/d)$;
//! and weight decay is decoupled ($\theta \leftarrow \theta(1-\gamma\lambda)$) for `adam`
//! too, as bitsandbytes applies it. In 8 bits `v` (and `v_max`) use the unsigned map.
//!
//! # References
//! - D. P. Kingma, J. Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015,
//!   arXiv:1412.6980.
//! - S. J. Reddi, S. Kale, S. Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018
//!   (AMSGrad).
//! - I. Loshchilov, F. Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
//!   arXiv:1711.05101 (AdamW).
//!
//! # Example
//! ```
//! use downhill::{optim::adam::Adam, Optimizer, ParamInfo, RuleOptimizer};
//! let adamw = Adam { lr: 0.05, ..Adam::adamw() };
//! let mut opt = RuleOptimizer::<f32, _>::new(adamw, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0f32];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]];
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{torch_hyper, Hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::lowbit::QuantMap;
use crate::kernel::Lane;
use crate::precision::StatePrecision;
use crate::Result;

/// Adam's configuration (PyTorch's `torch.optim.Adam` / `AdamW`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adam {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first and second moments.
    pub betas: (f64, f64),
    /// ε added to the denominator.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled (AdamW) rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Use the running maximum of `v` (AMSGrad).
    pub amsgrad: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            amsgrad: false,
            maximize: false,
        }
    }
}

impl Adam {
    /// AdamW's defaults (PyTorch's `torch.optim.AdamW`): decoupled `weight_decay = 0.01`.
    pub fn adamw() -> Self {
        Adam {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..Default::default()
        }
    }
}

/// Per-step constants of Adam.
#[derive(Clone, Copy, Debug)]
pub struct AdamCoef {
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    step_size: f64,
    bias_correction2_sqrt: f64,
    eps: f64,
    amsgrad: bool,
    /// bitsandbytes' order of operations (state in fewer bits).
    bnb: bool,
}

/// Validate `betas` and `eps` as every Adam-family rule does.
pub(crate) fn check_betas(opt: &'static str, betas: (f64, f64), eps: f64) -> Result<()> {
    check::unit_interval(opt, "beta1", betas.0)?;
    check::unit_interval(opt, "beta2", betas.1)?;
    check::non_negative(opt, "eps", eps)
}

impl Rule for Adam {
    const NAME: &'static str = "adam";
    type Scalars = StepCount;
    type Coef = AdamCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("adam", "lr", self.lr)?;
        check_betas("adam", self.betas, self.eps)?;
        check::non_negative("adam", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        if self.amsgrad {
            &["m", "v", "v_max"]
        } else {
            &["m", "v"]
        }
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdamCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let t = s.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2 = 1.0 - beta2.powf(t);
        AdamCoef {
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            step_size: lr / bias_correction1,
            bias_correction2_sqrt: bias_correction2.sqrt(),
            eps: self.eps,
            amsgrad: self.amsgrad,
            bnb: false,
        }
    }

    fn begin_for(&self, s: &mut StepCount, lr: f64, precision: StatePrecision) -> AdamCoef {
        AdamCoef {
            bnb: precision.is_low(),
            ..self.begin(s, lr)
        }
    }

    fn hyper_for(&self, precision: StatePrecision) -> Hyper {
        Hyper {
            decoupled_weight_decay: self.decoupled_weight_decay || precision.is_low(),
            ..self.hyper()
        }
    }

    fn quant_map(&self, k: usize) -> QuantMap {
        if k == 0 {
            QuantMap::Signed
        } else {
            QuantMap::Unsigned
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &AdamCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        if c.bnb {
            return bnb_update(c, p, g, s);
        }
        let m = s[0].lerp(g, c.one_minus_beta1);
        let v = s[1] * L::c(c.beta2) + L::c(c.one_minus_beta2) * g * g;
        s[0] = m;
        s[1] = v;
        let v_hat = if c.amsgrad {
            s[2] = s[2].max(v);
            s[2]
        } else {
            v
        };
        let denom = v_hat.sqrt() / L::c(c.bias_correction2_sqrt) + L::c(c.eps);
        p + L::c(-c.step_size) * m / denom
    }
}

/// The update in bitsandbytes' order of operations (state stored in fewer bits).
#[inline(always)]
fn bnb_update<L: Lane>(c: &AdamCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS]) -> L {
    let m = s[0] * L::c(c.beta1) + g * L::c(c.one_minus_beta1);
    let v = s[1] * L::c(c.beta2) + (g * g) * L::c(c.one_minus_beta2);
    s[0] = m;
    s[1] = v;
    let v_hat = if c.amsgrad {
        s[2] = s[2].max(v);
        s[2]
    } else {
        v
    };
    let denom = v_hat.sqrt() / L::c(c.bias_correction2_sqrt) + L::c(c.eps);
    p + L::c(-c.step_size) * (m / denom)
}
