//! Prodigy: AdamW whose step size $d$ is estimated on the fly (a learning-rate-free method),
//! as optax's `optax.contrib.prodigy`.
//!
//! With learning rate $\gamma$ (a multiplier of the estimate, 1 by default), $\beta_1,
//! \beta_2$ (`betas`), $\beta_3$ (`beta3`, default $\sqrt{\beta_2}$), $\epsilon$ (`eps`), initial
//! estimate $d_0$ (`d0`), coefficient $c$ (`d_coef`), weight decay $\lambda$ and gradient $g_t$
//! (after `maximize` and clipping), at step $t$ with $x_0$ the parameters at the first step,
//! $r_0 = 0$, $s_0 = 0$; sums $\langle\cdot,\cdot\rangle$ and $\|\cdot\|_1$ run over every
//! tensor of the parameter group:
//!
//! $$
//! \begin{aligned}
//! \hat d_t &= d_{t-1}\,\gamma\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}, \qquad
//!   \delta_t = d_{t-1}\, g_t\\
//! m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,\delta_t, \qquad
//! v_t = \beta_2 v_{t-1} + (1-\beta_2)\,\delta_t^2\\
//! s_t &= \beta_3 s_{t-1} + \frac{\hat d_t\, \delta_t}{d_0}
//!   \quad \Bigl(\frac{d_{t-1}\,\delta_t}{d_0} \text{ with \texttt{safeguard\_warmup}}\Bigr)\\
//! r_t &= \beta_3 r_{t-1} + \frac{d_{t-1}}{d_0}\,\hat d_t\,\langle g_t,\ x_0 - x_{t-1}\rangle\\
//! d_t &= \max\Bigl(d_{t-1},\ \frac{c\, r_t}{\|s_t\|_1}\Bigr)\\
//! x_t &= x_{t-1} - \lambda\,\hat d_t\, x_{t-1} - \frac{\hat d_t\, m_t}{\sqrt{v_t} + d_t\,\epsilon}
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | optax (`optax.contrib.prodigy`) |
//! |---|---|---|
//! | `lr` | 1 | `learning_rate` |
//! | `betas` | (0.9, 0.999) | `betas` |
//! | `beta3` | none: $\sqrt{\beta_2}$ | `beta3` |
//! | `eps` | 1e-8 | `eps` |
//! | `d0` | 1e-6 | `estim_lr0` |
//! | `d_coef` | 1 | `estim_lr_coef` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `decoupled_weight_decay` | true | — (false: an L2 penalty on the gradient instead) |
//! | `safeguard_warmup` | false | `safeguard_warmup` |
//! | `maximize` | false | — |
//!
//! State: `exp_avg` ($m$), `exp_avg_sq` ($v$), `grad_sum` ($s$) and `params0` ($x_0$, taken at
//! the first step); per tensor, `step`, `d` ($d_t$, optax's `estim_lr`) and
//! `numerator_weighted` ($r_t$). $d$ and $r$ are one value for the whole group (optax: for the
//! whole model), kept identically in every tensor of the group.
//!
//! How it runs: a reading pass sums $\langle g_t, x_0 - x_{t-1}\rangle$ and
//! $\|s_t\|_1$ (computing $s_t$ without writing it) over every tensor; the group's sums give
//! $r_t$ and $d_t$ before the update pass, which needs $d_t$ in its denominator.
//!
//! Differences from optax: the parameter-tree sums of optax are the sums over a parameter
//! group here (several groups estimate $d$ each on their own; one group is optax's setting),
//! added in another order. optax keeps $d$ and $r$ in the parameters' type; here they are
//! `f64`. When $c\,r_t/\|s_t\|_1$ is NaN (every $s_t$ is 0, as with all-zero gradients from the
//! start) $d$ is kept, where optax's `maximum` would make it NaN for ever. The weight decay is
//! optax's own ($-\lambda\hat d_t x_{t-1}$ in the update; the generic weight-decay stage does
//! not run); `decoupled_weight_decay = false` (an addition) applies it as an L2 penalty
//! $g_t \leftarrow g_t + \lambda x_{t-1}$ instead, which then enters every sum. `maximize` is
//! an addition (the gradient is negated first). The learning rate (and a schedule of this
//! library) is optax's `learning_rate` (schedule).
//!
//! # References
//! - K. Mishchenko, A. Defazio, *Prodigy: An Expeditiously Adaptive Parameter-Free Learner*,
//!   ICML 2024, arXiv:2306.06101.
//!
//! # Example
//! ```
//! use downhill::{optim::prodigy::Prodigy, Optimizer, ParamInfo, RuleOptimizer};
//! let mut opt = RuleOptimizer::<f64, _>::new(Prodigy::default(), vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0];
//! for _ in 0..20 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! // d grew from 1e-6 as the distance travelled grew.
//! assert!(opt.state_dict().scalar("g0.x.d")? > 1e-6);
//! assert!(x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{count_from_f64, expect_scalars, Hyper, Rule, TensorScalars, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::{Error, Result};

/// Prodigy's configuration (optax's `optax.contrib.prodigy`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prodigy {
    /// Learning rate γ: multiplies the estimated step size d.
    pub lr: f64,
    /// (β₁, β₂): decay rates of Adam's moments.
    pub betas: (f64, f64),
    /// β₃: decay of the sums that estimate d (none: √β₂).
    pub beta3: Option<f64>,
    /// ε added to the denominator (times d).
    pub eps: f64,
    /// Initial estimate d₀ of the step size.
    pub d0: f64,
    /// Coefficient c of the estimate.
    pub d_coef: f64,
    /// Weight decay λ (AdamW's, times the step size d̂).
    pub weight_decay: f64,
    /// The weight decay as optax applies it (true), or as an L2 penalty on the gradient.
    pub decoupled_weight_decay: bool,
    /// Leave the learning rate out of the sum s (helps with a warm-up).
    pub safeguard_warmup: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Prodigy {
    fn default() -> Self {
        Prodigy {
            lr: 1.0,
            betas: (0.9, 0.999),
            beta3: None,
            eps: 1e-8,
            d0: 1e-6,
            d_coef: 1.0,
            weight_decay: 0.0,
            decoupled_weight_decay: true,
            safeguard_warmup: false,
            maximize: false,
        }
    }
}

impl Prodigy {
    /// β₃ in force: `beta3`, or √β₂.
    pub fn beta3(&self) -> f64 {
        self.beta3.unwrap_or_else(|| self.betas.1.powf(0.5))
    }
}

/// Per-tensor scalar state of Prodigy (the same in every tensor of a group).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProdigyScalars {
    /// Steps taken on this tensor.
    pub step: u64,
    /// The step-size estimate d (optax's `estim_lr`; unused before the first step: d₀).
    pub d: f64,
    /// The weighted numerator r of the estimate (optax's `numerator_weighted`).
    pub numerator_weighted: f64,
}

fn state_error(message: String) -> Error {
    Error::State(format!("prodigy: {message}"))
}

impl TensorScalars for ProdigyScalars {
    const FIELDS: &'static [&'static str] = &["step", "d", "numerator_weighted"];
    fn to_values(&self) -> Vec<f64> {
        vec![self.step as f64, self.d, self.numerator_weighted]
    }
    fn from_values(values: &[f64]) -> Result<Self> {
        expect_scalars("prodigy", Self::FIELDS, values)?;
        let step = count_from_f64("step", values[0])?;
        let (d, r) = (values[1], values[2]);
        if !(d.is_finite() && (d > 0.0 || (step == 0 && d == 0.0))) {
            return Err(state_error(format!(
                "field 'd' must be finite and > 0 after a step, found {d}"
            )));
        }
        if !r.is_finite() {
            return Err(state_error(format!(
                "field 'numerator_weighted' must be finite, found {r}"
            )));
        }
        Ok(ProdigyScalars {
            step,
            d,
            numerator_weighted: r,
        })
    }
}

/// Per-step constants of Prodigy.
#[derive(Clone, Copy, Debug)]
pub struct ProdigyCoef {
    /// The first step: x₀ is the parameter now.
    first: bool,
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    beta3: f64,
    d0: f64,
    /// d before this step.
    d: f64,
    /// d̂ = d·γ·√(1 − β₂ᵗ)/(1 − β₁ᵗ).
    dlr: f64,
    /// What scales δ in the sum s: d̂, or d with `safeguard_warmup`.
    grad_sum_scale: f64,
    /// −λ (0 when the decay is an L2 penalty).
    neg_weight_decay: f64,
    eps: f64,
    /// d after this step's estimate (set by `absorb`).
    d_new: f64,
}

impl Rule for Prodigy {
    const NAME: &'static str = "prodigy";
    type Scalars = ProdigyScalars;
    type Coef = ProdigyCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("prodigy", "lr", self.lr)?;
        check::unit_interval("prodigy", "beta1", self.betas.0)?;
        check::unit_interval("prodigy", "beta2", self.betas.1)?;
        if let Some(b3) = self.beta3 {
            check::unit_interval("prodigy", "beta3", b3)?;
        }
        check::non_negative("prodigy", "eps", self.eps)?;
        check::positive("prodigy", "d0", self.d0)?;
        check::non_negative("prodigy", "d_coef", self.d_coef)?;
        check::non_negative("prodigy", "weight_decay", self.weight_decay)
    }

    fn hyper(&self) -> Hyper {
        // Decoupled: weight decay is applied inside the rule (−λ·d̂·x, optax's form).
        Hyper::decay_in_rule(
            self.lr,
            self.weight_decay,
            self.decoupled_weight_decay,
            self.maximize,
        )
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn buffers(&self) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq", "grad_sum", "params0"]
    }

    fn begin(&self, s: &mut ProdigyScalars, lr: f64) -> ProdigyCoef {
        if s.step == 0 {
            s.d = self.d0;
            s.numerator_weighted = 0.0;
        }
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let t = s.step as f64;
        let bc = (1.0 - beta2.powf(t)).powf(0.5) / (1.0 - beta1.powf(t));
        let dlr = s.d * lr * bc;
        ProdigyCoef {
            first: s.step == 1,
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            beta3: self.beta3(),
            d0: self.d0,
            d: s.d,
            dlr,
            grad_sum_scale: if self.safeguard_warmup { s.d } else { dlr },
            neg_weight_decay: if self.decoupled_weight_decay {
                -self.weight_decay
            } else {
                0.0
            },
            eps: self.eps,
            d_new: s.d,
        }
    }

    const MEASURES: bool = true;

    #[inline(always)]
    /// The reading pass reads the parameter, the gradient, `grad_sum` and `params0` (not the
    /// moments).
    fn measure_reads(&self) -> usize {
        4
    }

    #[inline(always)]
    fn measure<L: Lane>(c: &ProdigyCoef, p: L, g: L, s: &[L; MAX_BUFFERS], red: &mut [L; 2]) {
        // ⟨g, x₀ − x⟩ (0 at the first step, where x₀ is x), and ‖s_t‖₁ with s_t as `update`
        // will write it.
        if !c.first {
            red[0] = red[0] + g * (s[3] - p);
        }
        let dg = L::c(c.d) * g;
        let grad_sum = L::c(c.beta3) * s[2] + L::c(c.grad_sum_scale) * dg / L::c(c.d0);
        red[1] = red[1] + grad_sum.abs();
    }

    fn absorb(
        &self,
        s: &mut ProdigyScalars,
        c: &mut ProdigyCoef,
        _tensor: [f64; 2],
        group: [f64; 2],
    ) {
        let [numerator, denominator] = group;
        let r = c.beta3 * s.numerator_weighted + (c.d / c.d0) * c.dlr * numerator;
        let estimate = self.d_coef * r / denominator;
        // `f64::max` keeps d when the estimate is NaN (optax would propagate it).
        s.d = c.d.max(estimate);
        s.numerator_weighted = r;
        c.d_new = s.d;
    }

    #[inline(always)]
    fn update<L: Lane>(c: &ProdigyCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let dlr = L::c(c.dlr);
        let dg = L::c(c.d) * g;
        let m = L::c(c.beta1) * s[0] + L::c(c.one_minus_beta1) * dg;
        let v = L::c(c.beta2) * s[1] + L::c(c.one_minus_beta2) * dg * dg;
        s[2] = L::c(c.beta3) * s[2] + L::c(c.grad_sum_scale) * dg / L::c(c.d0);
        if c.first {
            s[3] = p;
        }
        s[0] = m;
        s[1] = v;
        let decay = L::c(c.neg_weight_decay) * dlr * p;
        let step = dlr * m / (v.sqrt() + L::c(c.d_new) * L::c(c.eps));
        p + (decay - step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Prodigy {
                lr: -1.0,
                ..Default::default()
            },
            Prodigy {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            Prodigy {
                betas: (0.9, f64::NAN),
                ..Default::default()
            },
            Prodigy {
                beta3: Some(1.5),
                ..Default::default()
            },
            Prodigy {
                eps: -1e-8,
                ..Default::default()
            },
            Prodigy {
                d0: 0.0,
                ..Default::default()
            },
            Prodigy {
                d0: f64::INFINITY,
                ..Default::default()
            },
            Prodigy {
                d_coef: -1.0,
                ..Default::default()
            },
            Prodigy {
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
        assert!(Prodigy::default().validate().is_ok());
        assert_eq!(Prodigy::default().beta3(), 0.999f64.powf(0.5));
    }

    /// Six steps of two tensors in one group, by hand in f64: d is estimated from sums over
    /// both tensors and is the same in each.
    #[test]
    fn steps_by_hand() {
        let (b1, b2, eps, d0, wd) = (0.9f64, 0.999f64, 1e-8f64, 1e-3f64, 0.1f64);
        let b3 = b2.powf(0.5);
        let rule = Prodigy {
            d0,
            weight_decay: wd,
            ..Default::default()
        };
        let infos = vec![ParamInfo::new("a", [2]), ParamInfo::new("b", [1])];
        let mut opt = RuleOptimizer::<f64, _>::new(rule, infos).unwrap();
        let x0 = [1.0f64, -2.0, 0.5];
        let (mut a, mut b) = ([x0[0], x0[1]], [x0[2]]);
        // A gradient of constant direction: the distance from x₀ grows, and with it d (from
        // step 4 on).
        let grads = [[0.5f64, -0.25, 1.0]; 6];

        let (mut m, mut v, mut s) = ([0.0f64; 3], [0.0f64; 3], [0.0f64; 3]);
        let (mut x, mut d, mut r) = (x0, d0, 0.0f64);
        for (k, g) in grads.iter().enumerate() {
            let t = (k + 1) as f64;
            let dlr = d * 1.0 * ((1.0 - b2.powf(t)).powf(0.5) / (1.0 - b1.powf(t)));
            let mut num = 0.0;
            let mut den = 0.0;
            for i in 0..3 {
                let dg = d * g[i];
                m[i] = b1 * m[i] + (1.0 - b1) * dg;
                v[i] = b2 * v[i] + (1.0 - b2) * dg * dg;
                s[i] = b3 * s[i] + dlr * dg / d0;
                num += g[i] * (x0[i] - x[i]);
                den += s[i].abs();
            }
            r = b3 * r + (d / d0) * dlr * num;
            let d_new = d.max(r / den);
            for i in 0..3 {
                x[i] += -wd * dlr * x[i] - dlr * m[i] / (v[i].sqrt() + d_new * eps);
            }
            d = d_new;
            opt.step(&mut [&mut a[..], &mut b[..]], &[&g[..2], &g[2..]])
                .unwrap();
            let got = [a[0], a[1], b[0]];
            for i in 0..3 {
                assert!((got[i] - x[i]).abs() < 1e-15, "step {t}: {got:?} {x:?}");
            }
        }
        // d grew (identically in both tensors).
        assert!(d > 2.0 * d0, "{d}");
        let sd = opt.state_dict();
        for name in ["a", "b"] {
            let got = sd.scalar(&format!("g0.{name}.d")).unwrap();
            assert!((got - d).abs() <= 1e-15 * d, "{got} {d}");
            let got = sd.scalar(&format!("g0.{name}.numerator_weighted")).unwrap();
            assert!((got - r).abs() <= 1e-12 * r.abs(), "{got} {r}");
        }
        assert_eq!(
            sd.buffer::<f64>("g0.a.params0", &[2]).unwrap(),
            vec![x0[0], x0[1]]
        );
    }

    /// `decoupled_weight_decay = false`: the decay is an L2 penalty on the gradient (and so
    /// enters the estimate of d).
    #[test]
    fn l2_weight_decay_is_added_to_the_gradient() {
        let l2 = Prodigy {
            d0: 1e-2,
            weight_decay: 0.25,
            decoupled_weight_decay: false,
            ..Default::default()
        };
        let plain = Prodigy {
            d0: 1e-2,
            ..Default::default()
        };
        let info = || vec![ParamInfo::new("w", [2])];
        let mut a = RuleOptimizer::<f64, _>::new(l2, info()).unwrap();
        let mut b = RuleOptimizer::<f64, _>::new(plain, info()).unwrap();
        let (mut xa, mut xb) = ([1.0f64, -0.5], [1.0f64, -0.5]);
        for _ in 0..6 {
            let g = [0.5, -0.25];
            let gb = [g[0] + 0.25 * xb[0], g[1] + 0.25 * xb[1]];
            a.step(&mut [&mut xa[..]], &[&g[..]]).unwrap();
            b.step(&mut [&mut xb[..]], &[&gb[..]]).unwrap();
        }
        assert_eq!(xa, xb);
        let d = |o: &RuleOptimizer<f64, Prodigy>| o.state_dict().scalar("g0.w.d").unwrap();
        assert_eq!(d(&a), d(&b));
    }

    #[test]
    fn impossible_scalars_are_refused() {
        let ok = ProdigyScalars {
            step: 4,
            d: 1e-4,
            numerator_weighted: -0.5,
        };
        assert_eq!(ProdigyScalars::from_values(&ok.to_values()).unwrap(), ok);
        let fresh = ProdigyScalars::default();
        assert_eq!(
            ProdigyScalars::from_values(&fresh.to_values()).unwrap(),
            fresh
        );
        for bad in [
            [4.0, 0.0, 0.0],
            [4.0, -1e-4, 0.0],
            [4.0, f64::INFINITY, 0.0],
            [4.0, 1e-4, f64::NAN],
            [0.5, 1e-4, 0.0],
        ] {
            assert!(
                matches!(ProdigyScalars::from_values(&bad), Err(Error::State(_))),
                "{bad:?}"
            );
        }
    }
}
