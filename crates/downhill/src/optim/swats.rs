//! SWATS: start with Adam, switch each tensor to SGD with momentum once the SGD learning rate
//! that Adam's steps imply has settled.
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`), switch
//! tolerance $\varepsilon_s$ (`switch_eps`) and gradient $g_k$ (after `maximize`, clipping and
//! weight decay), per tensor at step $k$. Adam phase:
//!
//! $$
//! \begin{aligned}
//! m_k &= \beta_1 m_{k-1} + (1-\beta_1)\, g_k\\
//! v_k &= \beta_2 v_{k-1} + (1-\beta_2)\, g_k^2\\
//! s_k &= -\gamma\,\frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\,\frac{m_k}{\sqrt{v_k}+\epsilon},
//! \qquad \theta_k = \theta_{k-1} + s_k\\
//! \text{if } s_k^\top g_k \ne 0:\quad
//! \gamma_k &= \frac{s_k^\top s_k}{-s_k^\top g_k}, \quad
//! \lambda_k = \beta_2 \lambda_{k-1} + (1-\beta_2)\,\gamma_k,\\
//! &\text{switch to SGD with } \Lambda = \frac{\lambda_k}{1-\beta_2^k}
//! \text{ if } k > 1 \text{ and } \left|\frac{\lambda_k}{1-\beta_2^k} - \gamma_k\right|
//! < \varepsilon_s
//! \end{aligned}
//! $$
//!
//! SGD phase (from the step after the switch on):
//!
//! $$
//! b_k = \beta_1 b_{k-1} + g_k \ (b \text{ starts at } 0), \qquad
//! \theta_k = \theta_{k-1} - (1-\beta_1)\,\Lambda\, b_k
//! $$
//!
//! | hyperparameter | default |
//! |---|---|
//! | `lr` | 0.001 |
//! | `betas` | (0.9, 0.999) |
//! | `eps` | 1e-9 |
//! | `switch_eps` | 1e-9 |
//! | `weight_decay` | 0 |
//! | `decoupled_weight_decay` | false |
//! | `maximize` | false |
//!
//! State: `m`, `v` (Adam's moments), `buf` (the SGD momentum buffer); per tensor, `step`,
//! `lambda` ($\lambda_k$), `phase` (0 Adam, 1 SGD), `sgd_lr` ($\Lambda$, 0 before the
//! switch) and `switched_at` (the step at which the tensor switched, 0 if it has not).
//!
//! PyTorch has no SWATS; this is the paper's Algorithm 1, per parameter tensor, exactly as
//! the reference implementation in `tests/reference/paper_optims.py`. Choices the paper leaves
//! open: each tensor switches on its own; the first moment is updated as `β₁m + (1−β₁)g` (not
//! as a `lerp`); no switch is considered on a step where $s_k^\top g_k = 0$ or at $k = 1$.
//! Difference from the reference: a step whose estimate $\gamma_k$ is not finite (an `f32`
//! step that overflowed) leaves $\lambda$ unchanged, where the reference would make it NaN
//! for ever.
//! The learning rate (and so a schedule) scales only the Adam phase: after the switch the
//! step size is SWATS' own estimate $\Lambda$, which a schedule does not change. Weight decay
//! and `maximize` are applied to the gradient as for every rule (the paper has neither).
//!
//! # References
//! - N. S. Keskar, R. Socher, *Improving Generalization Performance by Switching from Adam to
//!   SGD*, 2017, arXiv:1712.07628.
//!
//! # Example
//! ```
//! use downhill::{optim::swats::Swats, Optimizer, ParamInfo, RuleOptimizer};
//! let swats = Swats { lr: 0.05, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(swats, vec![ParamInfo::new("x", [1])])?;
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

/// SWATS' configuration; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Swats {
    /// Learning rate γ of the Adam phase.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first and second moments; β₁ is also the SGD momentum.
    pub betas: (f64, f64),
    /// ε added to the denominator of the Adam step.
    pub eps: f64,
    /// Switch to SGD when the bias-corrected SGD learning-rate estimate is this close to the
    /// current one.
    pub switch_eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Swats {
    fn default() -> Self {
        Swats {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-9,
            switch_eps: 1e-9,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// The phase of one tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Adam steps, estimating the SGD learning rate.
    #[default]
    Adam,
    /// SGD with momentum at the estimated learning rate.
    Sgd,
}

/// Per-tensor scalar state of SWATS.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SwatsScalars {
    /// Steps taken on this tensor (both phases).
    pub step: u64,
    /// Running average λ of the SGD learning-rate estimates.
    pub lambda: f64,
    /// Current phase.
    pub phase: Phase,
    /// The SGD learning rate Λ (0 in the Adam phase).
    pub sgd_lr: f64,
    /// The step at which the tensor switched to SGD (0: not yet).
    pub switched_at: u64,
}

fn state_error(message: String) -> Error {
    Error::State(format!("swats: {message}"))
}

impl TensorScalars for SwatsScalars {
    const FIELDS: &'static [&'static str] = &["step", "lambda", "phase", "sgd_lr", "switched_at"];
    fn to_values(&self) -> Vec<f64> {
        vec![
            self.step as f64,
            self.lambda,
            match self.phase {
                Phase::Adam => 0.0,
                Phase::Sgd => 1.0,
            },
            self.sgd_lr,
            self.switched_at as f64,
        ]
    }
    fn from_values(values: &[f64]) -> Result<Self> {
        expect_scalars("swats", Self::FIELDS, values)?;
        let step = count_from_f64("step", values[0])?;
        let lambda = values[1];
        if !lambda.is_finite() {
            return Err(state_error(format!(
                "field 'lambda' must be finite, found {lambda}"
            )));
        }
        let phase = if values[2] == 0.0 {
            Phase::Adam
        } else if values[2] == 1.0 {
            Phase::Sgd
        } else {
            return Err(state_error(format!(
                "field 'phase' must be 0 or 1, found {}",
                values[2]
            )));
        };
        let sgd_lr = values[3];
        if !sgd_lr.is_finite() {
            return Err(state_error(format!(
                "field 'sgd_lr' must be finite, found {sgd_lr}"
            )));
        }
        let switched_at = count_from_f64("switched_at", values[4])?;
        let consistent = match phase {
            Phase::Adam => switched_at == 0 && sgd_lr == 0.0,
            Phase::Sgd => (2..=step).contains(&switched_at),
        };
        if !consistent {
            return Err(state_error(format!(
                "phase {}, switched_at {switched_at}, sgd_lr {sgd_lr} and step {step} \
                 are inconsistent",
                values[2]
            )));
        }
        Ok(SwatsScalars {
            step,
            lambda,
            phase,
            sgd_lr,
            switched_at,
        })
    }
}

/// Per-step constants of SWATS.
#[derive(Clone, Copy, Debug)]
pub struct SwatsCoef {
    /// This step is an SGD step.
    sgd: bool,
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    eps: f64,
    /// Adam phase: `−lr·√(1 − β₂ᵏ)/(1 − β₁ᵏ)`; SGD phase: `−(1 − β₁)·Λ`.
    step_size: f64,
}

impl Rule for Swats {
    const NAME: &'static str = "swats";
    type Scalars = SwatsScalars;
    type Coef = SwatsCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("swats", "lr", self.lr)?;
        check_betas("swats", self.betas, self.eps)?;
        check::non_negative("swats", "switch_eps", self.switch_eps)?;
        check::non_negative("swats", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "v", "buf"]
    }

    fn begin(&self, s: &mut SwatsScalars, lr: f64) -> SwatsCoef {
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let k = s.step as f64;
        let sgd = s.phase == Phase::Sgd;
        let step_size = if sgd {
            -(1.0 - beta1) * s.sgd_lr
        } else {
            -lr * (1.0 - beta2.powf(k)).powf(0.5) / (1.0 - beta1.powf(k))
        };
        SwatsCoef {
            sgd,
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            eps: self.eps,
            step_size,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &SwatsCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], red: &mut [L; 2]) -> L {
        if c.sgd {
            let b = s[2] * L::c(c.beta1) + g;
            s[2] = b;
            return p + L::c(c.step_size) * b;
        }
        let m = s[0] * L::c(c.beta1) + L::c(c.one_minus_beta1) * g;
        let v = s[1] * L::c(c.beta2) + L::c(c.one_minus_beta2) * g * g;
        s[0] = m;
        s[1] = v;
        let step = L::c(c.step_size) * m / (v.sqrt() + L::c(c.eps));
        red[0] = red[0] + step * g;
        red[1] = red[1] + step * step;
        p + step
    }

    fn end(&self, s: &mut SwatsScalars, red: [f64; 2]) {
        let [step_dot_grad, step_dot_step] = red;
        if s.phase == Phase::Sgd || step_dot_grad == 0.0 {
            return;
        }
        let beta2 = self.betas.1;
        let gamma = step_dot_step / -step_dot_grad;
        let lambda = beta2 * s.lambda + (1.0 - beta2) * gamma;
        if !lambda.is_finite() {
            // The step overflowed (f32): keep the estimate as it was rather than poison it.
            return;
        }
        s.lambda = lambda;
        let corrected = s.lambda / (1.0 - beta2.powf(s.step as f64));
        if s.step > 1 && (corrected - gamma).abs() < self.switch_eps {
            s.phase = Phase::Sgd;
            s.sgd_lr = corrected;
            s.switched_at = s.step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        for bad in [
            Swats {
                lr: -1.0,
                ..Default::default()
            },
            Swats {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            Swats {
                betas: (0.9, f64::NAN),
                ..Default::default()
            },
            Swats {
                eps: -1e-9,
                ..Default::default()
            },
            Swats {
                switch_eps: -1e-9,
                ..Default::default()
            },
            Swats {
                switch_eps: f64::INFINITY,
                ..Default::default()
            },
            Swats {
                weight_decay: -0.1,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{bad:?}"
            );
        }
        assert!(Swats::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let rule = Swats {
            lr: 0.1,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [2])]).unwrap();
        let mut x = [1.0f64, -2.0];
        let g = [0.5, -0.25];
        opt.step(&mut [&mut x[..]], &[&g[..]]).unwrap();
        // Step 1: m = 0.1 g, v = 0.001 g², s = −0.1·√0.001/0.1 · 0.1 g/(√0.001 |g| + ε).
        let c = -0.1 * 0.001f64.sqrt() / 0.1;
        let s: Vec<f64> = g
            .iter()
            .map(|&gi| c * (0.1 * gi) / ((0.001 * gi * gi).sqrt() + 1e-9))
            .collect();
        assert!((x[0] - (1.0 + s[0])).abs() < 1e-15);
        assert!((x[1] - (-2.0 + s[1])).abs() < 1e-15);
        // γ₁ = s·s / −s·g, λ₁ = 0.001 γ₁; no switch at k = 1.
        let gamma = (s[0] * s[0] + s[1] * s[1]) / -(s[0] * g[0] + s[1] * g[1]);
        let sd = opt.state_dict();
        assert!((sd.scalar("g0.x.lambda").unwrap() - 0.001 * gamma).abs() < 1e-15);
        assert_eq!(sd.scalar("g0.x.phase").unwrap(), 0.0);
        assert_eq!(sd.scalar("g0.x.switched_at").unwrap(), 0.0);
    }

    #[test]
    fn constant_gradient_switches_then_steps_as_sgd() {
        // A constant gradient on one element: every Adam step is −lr·sign(g) (up to ε), so
        // γₖ = lr/|g| each step and the bias-corrected average equals it: switch at k = 2.
        let (lr, g) = (0.1f64, 0.5f64);
        let rule = Swats {
            lr,
            switch_eps: 1e-6,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [1])]).unwrap();
        let mut x = vec![1.0f64];
        for _ in 0..2 {
            opt.step(&mut [&mut x[..]], &[&[g][..]]).unwrap();
        }
        let sd = opt.state_dict();
        assert_eq!(sd.scalar("g0.x.phase").unwrap(), 1.0);
        assert_eq!(sd.scalar("g0.x.switched_at").unwrap(), 2.0);
        let sgd_lr = sd.scalar("g0.x.sgd_lr").unwrap();
        assert!((sgd_lr - lr / g).abs() < 1e-6, "{sgd_lr}");
        let m_before = sd.buffer::<f64>("g0.x.m", &[1]).unwrap()[0];
        // Step 3 is SGD: buf = g, x −= (1 − β₁)·Λ·buf; m and v are left alone.
        let before = x[0];
        opt.step(&mut [&mut x[..]], &[&[g][..]]).unwrap();
        assert!((x[0] - (before - 0.1 * sgd_lr * g)).abs() < 1e-15);
        // Step 4: buf = 0.9 g + g.
        let before = x[0];
        opt.step(&mut [&mut x[..]], &[&[g][..]]).unwrap();
        assert!((x[0] - (before - 0.1 * sgd_lr * 1.9 * g)).abs() < 1e-15);
        let sd = opt.state_dict();
        assert_eq!(sd.buffer::<f64>("g0.x.m", &[1]).unwrap()[0], m_before);
        assert_eq!(sd.scalar("g0.x.step").unwrap(), 4.0);
        assert_eq!(sd.scalar("g0.x.switched_at").unwrap(), 2.0);

        // The scalars survive a checkpoint round trip.
        let scalars: Vec<f64> = SwatsScalars::FIELDS
            .iter()
            .map(|f| sd.scalar(&format!("g0.x.{f}")).unwrap())
            .collect();
        let s = SwatsScalars::from_values(&scalars).unwrap();
        assert_eq!(s.phase, Phase::Sgd);
        assert_eq!(SwatsScalars::from_values(&s.to_values()).unwrap(), s);
        let mut again = RuleOptimizer::<f64, _>::new(
            Swats {
                lr,
                switch_eps: 1e-6,
                ..Default::default()
            },
            vec![ParamInfo::new("x", [1])],
        )
        .unwrap();
        again.load_state_dict(&sd).unwrap();
        let mut y = x.clone();
        opt.step(&mut [&mut x[..]], &[&[g][..]]).unwrap();
        again.step(&mut [&mut y[..]], &[&[g][..]]).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn impossible_scalars_are_refused() {
        let ok = SwatsScalars {
            step: 5,
            lambda: 0.01,
            phase: Phase::Sgd,
            sgd_lr: 0.2,
            switched_at: 3,
        };
        assert_eq!(SwatsScalars::from_values(&ok.to_values()).unwrap(), ok);
        let fresh = SwatsScalars::default();
        assert_eq!(
            SwatsScalars::from_values(&fresh.to_values()).unwrap(),
            fresh
        );
        for bad in [
            [-1.0, 0.0, 0.0, 0.0, 0.0],          // negative step
            [5.0, f64::INFINITY, 0.0, 0.0, 0.0], // infinite lambda
            [5.0, f64::NAN, 0.0, 0.0, 0.0],      // NaN lambda
            [5.0, 0.0, 2.0, 0.0, 0.0],           // phase not 0/1
            [5.0, 0.0, 0.5, 0.0, 0.0],           // phase not 0/1
            [5.0, 0.0, 1.0, f64::NAN, 3.0],      // non-finite sgd_lr
            [5.0, 0.0, 1.0, 0.2, 0.0],           // SGD phase without a switch step
            [5.0, 0.0, 1.0, 0.2, 6.0],           // switched after the current step
            [5.0, 0.0, 0.0, 0.0, 3.0],           // Adam phase with a switch step
            [5.0, 0.0, 0.0, 0.0, 2.5],           // fractional switch step
        ] {
            assert!(
                matches!(SwatsScalars::from_values(&bad), Err(Error::State(_))),
                "{bad:?}"
            );
        }
        assert!(SwatsScalars::from_values(&[1.0, 0.0]).is_err());
    }
}
