//! ASGD: averaged stochastic gradient descent (Polyak–Ruppert averaging), as PyTorch has it.
//!
//! With learning rate $\gamma$, decay term $\lambda$ (`lambd`), power $\alpha$ (`alpha`),
//! averaging start $t_0$ (`t0`), weight decay $w$ and gradient $g_t$ (after `maximize` and
//! clipping), per tensor at step $t$, with $\eta_1 = \gamma$ and $\mu_1 = 1$:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + w\,\theta_{t-1}\\
//! \theta_t &= \theta_{t-1}\,(1 - \lambda\eta_t) - \eta_t\, g_t\\
//! \bar\theta_t &= \begin{cases} \theta_t & \mu_t = 1\\
//!   \bar\theta_{t-1} + \mu_t\,(\theta_t - \bar\theta_{t-1}) & \text{otherwise}\end{cases}\\
//! \eta_{t+1} &= \frac{\gamma}{(1 + \lambda\gamma t)^{\alpha}}, \qquad
//! \mu_{t+1} = \frac{1}{\max(1,\ t - t_0)}
//! \end{aligned}
//! $$
//!
//! The parameters $\theta_t$ are the SGD iterates; the average $\bar\theta_t$ (state `ax`) is
//! the point to evaluate. Averaging starts after $t_0$ steps (before, $\bar\theta_t =
//! \theta_t$).
//!
//! | hyperparameter | default | PyTorch |
//! |---|---|---|
//! | `lr` | 0.01 | `lr` |
//! | `lambd` | 1e-4 | `lambd` |
//! | `alpha` | 0.75 | `alpha` |
//! | `t0` | 1e6 | `t0` |
//! | `weight_decay` | 0 | `weight_decay` (L2, added to the gradient) |
//! | `decoupled_weight_decay` | false | — (`θ ← θ·(1 − lr·weight_decay)` instead) |
//! | `maximize` | false | `maximize` |
//!
//! State: `ax` ($\bar\theta$, PyTorch's `ax`); per tensor, `step`, `eta` ($\eta$ of the next
//! step) and `mu` ($\mu$ of the next step), as PyTorch keeps them.
//!
//! Differences from PyTorch (`torch.optim.ASGD`, single-tensor path): none in the values.
//! PyTorch holds `eta` and `mu` in tensors of its default scalar type, `float32` (unless
//! `torch.set_default_dtype(torch.float64)`), so both are rounded to `f32` after each update,
//! also for `f64` parameters; so are they here. $\eta_{t+1}$ uses the learning rate in force at
//! step $t$, and $\eta_1$ the one at the first step, as in PyTorch. PyTorch's step counter is
//! also a `float32` tensor, exact only up to $2^{24}$ steps; here it is an integer.
//! `decoupled_weight_decay` is an addition (false by default, PyTorch's form): the parameters
//! decay by `1 − lr·weight_decay` before the step instead of the L2 penalty.
//!
//! # References
//! - B. T. Polyak, A. B. Juditsky, *Acceleration of Stochastic Approximation by Averaging*,
//!   SIAM Journal on Control and Optimization 30(4), 1992.
//! - L. Bottou, *Stochastic Gradient Descent Tricks*, Neural Networks: Tricks of the Trade,
//!   2012 (the learning-rate decay $\gamma/(1+\lambda\gamma t)^\alpha$).
//!
//! # Example
//! ```
//! use downhill::{optim::asgd::Asgd, Optimizer, ParamInfo, RuleOptimizer};
//! let asgd = Asgd { lr: 0.1, t0: 2.0, ..Default::default() };
//! let mut opt = RuleOptimizer::<f64, _>::new(asgd, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0);
//! let average = opt.state_dict().buffer::<f64>("g0.x.ax", &[1])?[0];
//! assert!(average > x[0]); // the average lags behind the iterates
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{count_from_f64, expect_scalars, torch_hyper, Rule, TensorScalars, MAX_BUFFERS};
use crate::error::{check, ensure};
use crate::kernel::Lane;
use crate::{Error, Result};

/// ASGD's configuration (PyTorch's `torch.optim.ASGD`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Asgd {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay term λ (of the parameters and of the learning rate).
    pub lambd: f64,
    /// Power α of the learning-rate decay.
    pub alpha: f64,
    /// The step after which averaging starts.
    pub t0: f64,
    /// Weight decay (L2 penalty added to the gradient).
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay (not in PyTorch's ASGD).
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Asgd {
    fn default() -> Self {
        Asgd {
            lr: 1e-2,
            lambd: 1e-4,
            alpha: 0.75,
            t0: 1e6,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-tensor scalar state of ASGD: PyTorch's `step`, `eta` and `mu`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AsgdScalars {
    /// Steps taken on this tensor.
    pub step: u64,
    /// The step size η of the next step (unused before the first step, which takes the
    /// learning rate).
    pub eta: f64,
    /// The averaging weight μ of the next step (unused before the first step: 1).
    pub mu: f64,
}

fn state_error(message: String) -> Error {
    Error::State(format!("asgd: {message}"))
}

impl TensorScalars for AsgdScalars {
    const FIELDS: &'static [&'static str] = &["step", "eta", "mu"];
    fn to_values(&self) -> Vec<f64> {
        vec![self.step as f64, self.eta, self.mu]
    }
    fn from_values(values: &[f64]) -> Result<Self> {
        expect_scalars("asgd", Self::FIELDS, values)?;
        let step = count_from_f64("step", values[0])?;
        let (eta, mu) = (values[1], values[2]);
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(state_error(format!(
                "field 'eta' must be finite and >= 0, found {eta}"
            )));
        }
        if !(mu.is_finite() && mu > 0.0 && mu <= 1.0) {
            return Err(state_error(format!(
                "field 'mu' must be in (0, 1], found {mu}"
            )));
        }
        Ok(AsgdScalars { step, eta, mu })
    }
}

/// Per-step constants of ASGD.
#[derive(Clone, Copy, Debug)]
pub struct AsgdCoef {
    /// `1 − λη`.
    decay: f64,
    /// `−η`.
    neg_eta: f64,
    mu: f64,
    /// μ = 1: the average is the iterate.
    copy: bool,
}

/// `x` rounded to `f32`, as PyTorch's default-dtype scalar tensors hold it.
fn as_f32(x: f64) -> f64 {
    x as f32 as f64
}

impl Rule for Asgd {
    const NAME: &'static str = "asgd";
    type Scalars = AsgdScalars;
    type Coef = AsgdCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("asgd", "lr", self.lr)?;
        check::non_negative("asgd", "lambd", self.lambd)?;
        check::non_negative("asgd", "alpha", self.alpha)?;
        ensure(self.t0.is_finite(), "asgd", "t0", self.t0, "must be finite")?;
        check::non_negative("asgd", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["ax"]
    }

    fn begin(&self, s: &mut AsgdScalars, lr: f64) -> AsgdCoef {
        if s.step == 0 {
            s.eta = as_f32(lr);
            s.mu = 1.0;
        }
        s.step += 1;
        let coef = AsgdCoef {
            decay: 1.0 - self.lambd * s.eta,
            neg_eta: -s.eta,
            mu: s.mu,
            copy: s.mu == 1.0,
        };
        let t = s.step as f64;
        s.eta = as_f32(lr / (1.0 + self.lambd * lr * t).powf(self.alpha));
        s.mu = as_f32(1.0 / (t - self.t0).max(1.0));
        coef
    }

    #[inline(always)]
    fn update<L: Lane>(c: &AsgdCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let p = p * L::c(c.decay);
        let p = p + L::c(c.neg_eta) * g;
        s[0] = if c.copy {
            p
        } else {
            s[0] + (p - s[0]) * L::c(c.mu)
        };
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Asgd {
                lr: -1.0,
                ..Default::default()
            },
            Asgd {
                lr: f64::NAN,
                ..Default::default()
            },
            Asgd {
                lambd: -1e-4,
                ..Default::default()
            },
            Asgd {
                alpha: -0.75,
                ..Default::default()
            },
            Asgd {
                alpha: f64::INFINITY,
                ..Default::default()
            },
            Asgd {
                t0: f64::NAN,
                ..Default::default()
            },
            Asgd {
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
        assert!(Asgd::default().validate().is_ok());
    }

    #[test]
    fn steps_by_hand() {
        let (lr, lambd, alpha) = (0.1, 0.5, 0.75);
        let rule = Asgd {
            lr,
            lambd,
            alpha,
            t0: 1.0,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [2])]).unwrap();
        let mut x = [1.0f64, -2.0];
        let g = [0.5, 0.25];
        // Step 1: η = f32(0.1), μ = 1: the average is the iterate.
        let eta1 = 0.1f32 as f64;
        opt.step(&mut [&mut x[..]], &[&g[..]]).unwrap();
        let want: Vec<f64> = [1.0f64, -2.0]
            .iter()
            .zip(&g)
            .map(|(&p, &gi)| p * (1.0 - lambd * eta1) + -eta1 * gi)
            .collect();
        assert_eq!(x.to_vec(), want);
        let sd = opt.state_dict();
        assert_eq!(sd.buffer::<f64>("g0.x.ax", &[2]).unwrap(), want);
        // Next: η₂ = f32(γ/(1 + λγ)^α), μ₂ = 1/max(1, 1 − t₀) = 1.
        let eta2 = (lr / (1.0 + lambd * lr).powf(alpha)) as f32 as f64;
        assert_eq!(sd.scalar("g0.x.eta").unwrap(), eta2);
        assert_eq!(sd.scalar("g0.x.mu").unwrap(), 1.0);
        // Step 2 (μ = 1 again), then μ₃ = 1/(2 − 1) = 1; step 3, then μ₄ = 1/2.
        opt.step(&mut [&mut x[..]], &[&g[..]]).unwrap();
        opt.step(&mut [&mut x[..]], &[&g[..]]).unwrap();
        let sd = opt.state_dict();
        assert_eq!(sd.scalar("g0.x.mu").unwrap(), 0.5);
        let ax3 = sd.buffer::<f64>("g0.x.ax", &[2]).unwrap();
        assert_eq!(ax3, x.to_vec());
        // Step 4 averages: ax = ax + (x − ax)/2.
        opt.step(&mut [&mut x[..]], &[&g[..]]).unwrap();
        let sd = opt.state_dict();
        let ax4 = sd.buffer::<f64>("g0.x.ax", &[2]).unwrap();
        for i in 0..2 {
            assert_eq!(ax4[i], ax3[i] + (x[i] - ax3[i]) * 0.5);
        }
    }

    #[test]
    fn impossible_scalars_are_refused() {
        let ok = AsgdScalars {
            step: 3,
            eta: 0.01,
            mu: 0.5,
        };
        assert_eq!(AsgdScalars::from_values(&ok.to_values()).unwrap(), ok);
        for bad in [
            [-1.0, 0.01, 1.0],
            [3.0, f64::NAN, 1.0],
            [3.0, -0.01, 1.0],
            [3.0, 0.01, 0.0],
            [3.0, 0.01, 1.5],
        ] {
            assert!(
                matches!(AsgdScalars::from_values(&bad), Err(Error::State(_))),
                "{bad:?}"
            );
        }
    }
}
