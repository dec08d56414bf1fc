//! Schedule-Free AdamW: AdamW without momentum, whose iterates are interpolated and averaged
//! instead, so that no learning-rate decay schedule is needed.
//!
//! Three sequences: $z$ (the base optimizer's iterates), $x$ (their weighted average, the
//! point to evaluate) and $y$ (where gradients are taken: the parameters this optimizer
//! steps). With learning rate $\gamma$, warm-up length $W$ (`warmup_steps`), $\beta_1, \beta_2$
//! (`betas`), $\epsilon$ (`eps`), weight decay $\lambda$, averaging power $r$
//! (`weight_lr_power`) and gradient $g_t$ at $y_{t-1}$ (after `maximize` and clipping), at step
//! $t$ (from 1, with $z_0 = x_0 = y_0$ the initial parameters, $w_0 = 0$, $\gamma^{\max}_0 = 0$):
//!
//! $$
//! \begin{aligned}
//! \gamma(k) &= \begin{cases} \gamma & \text{no warm-up}\\
//!   -\gamma\,(1 - \min(k, W)/W) + \gamma & \text{warm-up}\end{cases}\\
//! v_t &= (1-\beta_2)\, g_t^2 + \beta_2 v_{t-1}, \qquad
//! u_t = \frac{g_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} + \lambda\, y_{t-1}\\
//! z_t &= z_{t-1} - \gamma(t-1)\, u_t\\
//! \gamma^{\max}_t &= \max(\gamma^{\max}_{t-1}, \gamma(t)), \quad
//! w_t = w_{t-1} + (\gamma^{\max}_t)^r, \quad c_t = (\gamma^{\max}_t)^r / w_t\\
//! x_{t-1} &= \frac{y_{t-1} - (1-\beta_1)\, z_{t-1}}{\beta_1}, \qquad
//! x_t = (1 - c_t)\, x_{t-1} + c_t z_t\\
//! y_t &= \beta_1 x_t + (1-\beta_1)\, z_t
//!   = y_{t-1} + c_t\,(z_{t-1} - y_{t-1}) + \bigl(1 - \beta_1(1 - c_t)\bigr)(z_t - z_{t-1})
//! \end{aligned}
//! $$
//!
//! $x$ is not stored: [`eval_params`] recovers it from $y$ and $z$ (optax's
//! `schedule_free_eval_params`).
//!
//! | hyperparameter | default | optax (`optax.contrib.schedule_free_adamw`) |
//! |---|---|---|
//! | `lr` | 0.0025 | `learning_rate` |
//! | `warmup_steps` | none (`null`) | `warmup_steps` (≥ 1) |
//! | `betas` | (0.9, 0.999) | `b1`, `b2` (0 < β₁ < 1) |
//! | `eps` | 1e-8 | `eps` |
//! | `weight_decay` | 0 | `weight_decay` |
//! | `decoupled_weight_decay` | true | — (false: an L2 penalty on the gradient instead) |
//! | `weight_lr_power` | 2 | `weight_lr_power` |
//! | `maximize` | false | — |
//!
//! State: `z` ($z$) and `v` ($v$, optax's `nu`); per tensor, `step` (steps taken),
//! `weight_sum` ($w$) and `max_lr` ($\gamma^{\max}$). optax keeps these three scalars once for
//! the whole model; every tensor of a group steps together, so keeping them per tensor gives
//! the same values.
//!
//! Differences from optax: $y_t$ is computed in the last form above, which is optax's
//! algebraically but rounds differently (in the last bits): optax recovers $x_{t-1}$ by
//! dividing by $\beta_1$ and recombines, so that even a learning rate of 0, or a zero gradient
//! without weight decay, moves $y$ by rounding; here they leave it exactly where it is. The
//! learning rate of the warm-up is $\gamma(t-1)$ for the step of $z$ and $\gamma(t)$ for the
//! averaging weights, as in optax (whose inner optimizer counts from 0 and the wrapper from 1);
//! optax computes the warm-up in `float32` (its step count is an `int32`, and `int32 / int` is
//! `float32` in JAX), so with a warm-up every learning rate, the peak included, is rounded to
//! `f32`, also for `f64` parameters; so it is here. A schedule of this library multiplies
//! $\gamma$ (the warm-up's peak) in both. The weight decay is optax's: $\lambda y$ is added to
//! the scaled update, so it is multiplied by the learning rate (the generic weight-decay stage
//! does not run); `decoupled_weight_decay = false` (an addition) applies it as an L2 penalty
//! $g_t \leftarrow g_t + \lambda y_{t-1}$ before the second moment instead. optax keeps $w$ and
//! $\gamma^{\max}$ in the parameters' type; here they are `f64`. `maximize` is an addition (the
//! gradient is negated first). optax's `state_dtype` is not offered: $z$ has the parameters'
//! type. A warm-up of 0 steps (which in optax holds the learning rate at 0 for ever) is
//! refused.
//!
//! # References
//! - A. Defazio, X. Yang, H. Mehta, K. Mishchenko, A. Khaled, A. Cutkosky, *The Road Less
//!   Scheduled*, NeurIPS 2024, arXiv:2405.15682.
//!
//! # Example
//! ```
//! use downhill::optim::schedule_free_adamw::{eval_params, ScheduleFreeAdamW};
//! use downhill::{Optimizer, ParamInfo, RuleOptimizer};
//! let rule = ScheduleFreeAdamW { lr: 0.1, warmup_steps: Some(2), ..Default::default() };
//! let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [1])])?;
//! let mut y = vec![3.0];
//! for _ in 0..10 {
//!     let g = vec![2.0 * y[0]]; // d/dy y²
//!     opt.step(&mut [&mut y[..]], &[&g[..]])?;
//! }
//! let state = opt.state_dict();
//! let z = state.buffer::<f64>("g0.x.z", &[1])?;
//! let mut x = vec![0.0];
//! eval_params(0.9, &y, z, &mut x);
//! assert!(y[0] < 3.0 && x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{count_from_f64, expect_scalars, Hyper, Rule, TensorScalars, MAX_BUFFERS};
use crate::error::{check, ensure};
use crate::kernel::{Float, Lane};
use crate::{Error, Result};

/// Schedule-Free AdamW's configuration (optax's `optax.contrib.schedule_free_adamw`); see the
/// [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleFreeAdamW {
    /// Learning rate γ (the peak of the warm-up).
    pub lr: f64,
    /// Length of the linear warm-up from 0 to `lr`, if any.
    pub warmup_steps: Option<u64>,
    /// (β₁, β₂): the interpolation between the average x and the iterates z, and the decay
    /// of the second moment.
    pub betas: (f64, f64),
    /// ε added to the denominator.
    pub eps: f64,
    /// Weight decay λ (AdamW's, multiplied by the learning rate).
    pub weight_decay: f64,
    /// The weight decay as optax applies it (true), or as an L2 penalty on the gradient.
    pub decoupled_weight_decay: bool,
    /// Power r of the maximal learning rate that weighs each iterate in the average.
    pub weight_lr_power: f64,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for ScheduleFreeAdamW {
    fn default() -> Self {
        ScheduleFreeAdamW {
            lr: 0.0025,
            warmup_steps: None,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: true,
            weight_lr_power: 2.0,
            maximize: false,
        }
    }
}

/// Per-tensor scalar state of Schedule-Free AdamW.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScheduleFreeScalars {
    /// Steps taken on this tensor.
    pub step: u64,
    /// Sum w of the averaging weights so far.
    pub weight_sum: f64,
    /// The largest learning rate so far.
    pub max_lr: f64,
}

fn state_error(message: String) -> Error {
    Error::State(format!("schedule_free_adamw: {message}"))
}

impl TensorScalars for ScheduleFreeScalars {
    const FIELDS: &'static [&'static str] = &["step", "weight_sum", "max_lr"];
    fn to_values(&self) -> Vec<f64> {
        vec![self.step as f64, self.weight_sum, self.max_lr]
    }
    fn from_values(values: &[f64]) -> Result<Self> {
        expect_scalars("schedule_free_adamw", Self::FIELDS, values)?;
        let step = count_from_f64("step", values[0])?;
        for (name, x) in [("weight_sum", values[1]), ("max_lr", values[2])] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(state_error(format!(
                    "field '{name}' must be finite and >= 0, found {x}"
                )));
            }
        }
        Ok(ScheduleFreeScalars {
            step,
            weight_sum: values[1],
            max_lr: values[2],
        })
    }
}

/// Per-step constants of Schedule-Free AdamW.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleFreeCoef {
    /// The first step: z starts at the parameters.
    first: bool,
    beta2: f64,
    one_minus_beta2: f64,
    /// `1 − β₂ᵗ`.
    bias_correction2: f64,
    eps: f64,
    /// λ, or none when 0 (optax skips the term).
    weight_decay: Option<f64>,
    /// `−γ(t−1)`.
    neg_lr: f64,
    /// The averaging coefficient cₜ.
    ck: f64,
    /// `1 − β₁(1 − cₜ)`: the weight of z's step in y's.
    dz_weight: f64,
}

impl ScheduleFreeAdamW {
    /// The warm-up's learning rate at count `k` (optax's `warmup_constant_schedule`), in
    /// `f32` as optax computes it (its count is an `int32`, and `int32 / int` is `float32`).
    fn warmup_lr(&self, lr: f64, k: u64) -> f64 {
        match self.warmup_steps {
            None => lr,
            Some(w) => {
                let peak = lr as f32;
                let frac = 1.0f32 - k.min(w) as f32 / w as f32;
                ((0.0 - peak) * frac + peak) as f64
            }
        }
    }
}

impl Rule for ScheduleFreeAdamW {
    const NAME: &'static str = "schedule_free_adamw";
    type Scalars = ScheduleFreeScalars;
    type Coef = ScheduleFreeCoef;

    fn validate(&self) -> Result<()> {
        const OPT: &str = "schedule_free_adamw";
        check::non_negative(OPT, "lr", self.lr)?;
        if let Some(w) = self.warmup_steps {
            ensure(
                w >= 1,
                OPT,
                "warmup_steps",
                w as f64,
                "must be >= 1 (or null: no warm-up)",
            )?;
        }
        let (beta1, beta2) = self.betas;
        ensure(
            beta1 > 0.0 && beta1 < 1.0,
            OPT,
            "beta1",
            beta1,
            "must be in (0, 1)",
        )?;
        check::unit_interval(OPT, "beta2", beta2)?;
        check::non_negative(OPT, "eps", self.eps)?;
        check::non_negative(OPT, "weight_decay", self.weight_decay)?;
        check::non_negative(OPT, "weight_lr_power", self.weight_lr_power)
    }

    fn hyper(&self) -> Hyper {
        // Decoupled: weight decay is applied inside the rule (optax's place for it).
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
        &["z", "v"]
    }

    /// The model is evaluated at x, not at the parameters y: [`eval_params`] (before the
    /// first step, x = y).
    const EVAL_POINT: bool = true;

    fn eval_point<F: Float>(
        &self,
        scalars: &ScheduleFreeScalars,
        p: &[F],
        buffers: &[Vec<F>],
        out: &mut [F],
    ) {
        match buffers.first() {
            Some(z) if scalars.step > 0 => eval_params(self.betas.0, p, z, out),
            _ => out.copy_from_slice(p),
        }
    }

    fn begin(&self, s: &mut ScheduleFreeScalars, lr: f64) -> ScheduleFreeCoef {
        let k = s.step;
        s.step += 1;
        let (beta1, beta2) = self.betas;
        let max_lr = s.max_lr.max(self.warmup_lr(lr, k + 1));
        let weight = max_lr.powf(self.weight_lr_power);
        let weight_sum = s.weight_sum + weight;
        let ck = if weight.is_nan() || weight_sum.is_nan() {
            f64::NAN
        } else {
            let c = weight / weight_sum;
            if c.is_nan() {
                0.0
            } else {
                c
            }
        };
        s.max_lr = max_lr;
        s.weight_sum = weight_sum;
        ScheduleFreeCoef {
            first: s.step == 1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            bias_correction2: 1.0 - beta2.powf(s.step as f64),
            eps: self.eps,
            weight_decay: (self.decoupled_weight_decay && self.weight_decay != 0.0)
                .then_some(self.weight_decay),
            neg_lr: -self.warmup_lr(lr, k),
            ck,
            dz_weight: 1.0 - beta1 * (1.0 - ck),
        }
    }

    #[inline(always)]
    fn update<L: Lane>(
        c: &ScheduleFreeCoef,
        y: L,
        g: L,
        s: &mut [L; MAX_BUFFERS],
        _: &mut [L; 2],
    ) -> L {
        let z_prev = if c.first { y } else { s[0] };
        let v = L::c(c.one_minus_beta2) * (g * g) + L::c(c.beta2) * s[1];
        let v_hat = v / L::c(c.bias_correction2);
        let scaling = L::c(1.0) / (v_hat.sqrt() + L::c(c.eps));
        let mut u = scaling * g;
        if let Some(wd) = c.weight_decay {
            u = u + L::c(wd) * y;
        }
        let dz = L::c(c.neg_lr) * u;
        s[0] = z_prev + dz;
        s[1] = v;
        // optax's y_t = β₁((1 − c)x_{t−1} + c z_t) + (1 − β₁)z_t with x_{t−1} recovered from
        // y_{t−1} and z_{t−1}, rearranged so that nothing moves when c = 0 and dz = 0.
        y + (L::c(c.ck) * (z_prev - y) + L::c(c.dz_weight) * dz)
    }
}

/// The point to evaluate, x = (y − (1 − β₁)·z)/β₁, of one tensor: from its parameters `y`
/// (what the optimizer steps) and its state buffer `z`, into `x`, with `b1` the group's β₁
/// (optax's `schedule_free_eval_params`, rounded as optax rounds it: β₁ and 1 − β₁ in the
/// element type).
///
/// # Panics
/// If the three slices differ in length.
pub fn eval_params<F: Float>(b1: f64, y: &[F], z: &[F], x: &mut [F]) {
    assert!(
        y.len() == z.len() && y.len() == x.len(),
        "eval_params: lengths of y ({}), z ({}) and x ({}) differ",
        y.len(),
        z.len(),
        x.len()
    );
    let beta1 = F::from_f64(b1);
    let one_minus = F::from_f64(1.0) - beta1;
    for ((xi, &yi), &zi) in x.iter_mut().zip(y).zip(z) {
        *xi = (yi - one_minus * zi) / beta1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            ScheduleFreeAdamW {
                lr: -1.0,
                ..Default::default()
            },
            ScheduleFreeAdamW {
                lr: f64::NAN,
                ..Default::default()
            },
            ScheduleFreeAdamW {
                warmup_steps: Some(0),
                ..Default::default()
            },
            ScheduleFreeAdamW {
                betas: (0.0, 0.999),
                ..Default::default()
            },
            ScheduleFreeAdamW {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            ScheduleFreeAdamW {
                betas: (0.9, 1.0),
                ..Default::default()
            },
            ScheduleFreeAdamW {
                eps: -1e-8,
                ..Default::default()
            },
            ScheduleFreeAdamW {
                weight_decay: -0.1,
                ..Default::default()
            },
            ScheduleFreeAdamW {
                weight_lr_power: f64::NAN,
                ..Default::default()
            },
            ScheduleFreeAdamW {
                weight_lr_power: -1.0,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(ScheduleFreeAdamW::default().validate().is_ok());
    }

    #[test]
    fn two_steps_by_hand() {
        let (lr, b1, b2, eps) = (0.1f64, 0.9f64, 0.999f64, 1e-8f64);
        let rule = ScheduleFreeAdamW {
            lr,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("w", [2])]).unwrap();
        let y0 = [1.0f64, -2.0];
        let mut y = y0;
        let g1 = [0.5, -0.25];
        opt.step(&mut [&mut y[..]], &[&g1[..]]).unwrap();
        // Step 1: v = (1−β₂)g², v̂ = v/(1−β₂), z = y₀ − γ·g/(√v̂ + ε); c₁ = 1 so x₁ = z₁.
        let mut v = [0.0; 2];
        let mut z = [0.0; 2];
        let mut x = [0.0; 2];
        for i in 0..2 {
            v[i] = (1.0 - b2) * (g1[i] * g1[i]);
            let u = 1.0 / ((v[i] / (1.0 - b2)).sqrt() + eps) * g1[i];
            z[i] = y0[i] + -lr * u;
            x[i] = z[i];
            let want = b1 * x[i] + (1.0 - b1) * z[i];
            assert!((y[i] - want).abs() < 1e-14, "{} {want}", y[i]);
        }
        let sd = opt.state_dict();
        assert_eq!(sd.buffer::<f64>("g0.w.z", &[2]).unwrap(), z.to_vec());
        assert!((sd.scalar("g0.w.weight_sum").unwrap() - lr * lr).abs() < 1e-17);
        // Step 2: c₂ = γ²/(2γ²) = 1/2, x₂ = (x₁ + z₂)/2.
        let g2 = [-1.0, 0.125];
        let y1 = y;
        opt.step(&mut [&mut y[..]], &[&g2[..]]).unwrap();
        let bc2 = 1.0 - b2 * b2;
        for i in 0..2 {
            v[i] = (1.0 - b2) * (g2[i] * g2[i]) + b2 * v[i];
            let u = 1.0 / ((v[i] / bc2).sqrt() + eps) * g2[i];
            let z2 = z[i] + -lr * u;
            let x2 = 0.5 * x[i] + 0.5 * z2;
            let want = b1 * x2 + (1.0 - b1) * z2;
            assert!((y[i] - want).abs() < 1e-14, "{} {want}", y[i]);
            z[i] = z2;
            x[i] = x2;
        }
        assert_ne!(y, y1);
        // The evaluation point recovered from y and z is x.
        let sd = opt.state_dict();
        let zs = sd.buffer::<f64>("g0.w.z", &[2]).unwrap();
        let mut xs = [0.0; 2];
        eval_params(b1, &y, zs, &mut xs);
        for i in 0..2 {
            assert!((xs[i] - x[i]).abs() < 1e-14, "{} {}", xs[i], x[i]);
        }
    }

    #[test]
    fn warmup_leaves_z_at_the_start_on_the_first_step() {
        let rule = ScheduleFreeAdamW {
            lr: 0.5,
            warmup_steps: Some(4),
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("w", [1])]).unwrap();
        let mut y = [2.0f64];
        opt.step(&mut [&mut y[..]], &[&[1.0][..]]).unwrap();
        // γ(0) = 0: z, and so y, do not move; the averaging weight uses γ(1) = γ/4.
        assert_eq!(y, [2.0]);
        let sd = opt.state_dict();
        assert_eq!(sd.buffer::<f64>("g0.w.z", &[1]).unwrap(), vec![2.0]);
        assert_eq!(sd.scalar("g0.w.max_lr").unwrap(), 0.125);
        assert_eq!(sd.scalar("g0.w.weight_sum").unwrap(), 0.125 * 0.125);
    }

    /// Where optax's recombination of x and z would move y by rounding, this form does not.
    #[test]
    fn no_step_leaves_y_exactly() {
        for (lr, g) in [(0.0, 0.7), (0.3, 0.0)] {
            let rule = ScheduleFreeAdamW {
                lr,
                betas: (0.7, 0.999),
                ..Default::default()
            };
            let mut opt =
                RuleOptimizer::<f32, _>::new(rule, vec![ParamInfo::new("w", [4])]).unwrap();
            let y0 = [0.1f32, -1.3, 5.1, 123.4]; // optax's form moves the last two
            let mut y = y0;
            for _ in 0..5 {
                opt.step(&mut [&mut y[..]], &[&[g; 4][..]]).unwrap();
            }
            assert_eq!(y, y0, "lr {lr}, g {g}");
        }
    }

    /// `decoupled_weight_decay = false`: the decay is an L2 penalty on the gradient.
    #[test]
    fn l2_weight_decay_is_added_to_the_gradient() {
        let l2 = ScheduleFreeAdamW {
            lr: 0.1,
            weight_decay: 0.25,
            decoupled_weight_decay: false,
            ..Default::default()
        };
        let plain = ScheduleFreeAdamW {
            lr: 0.1,
            ..Default::default()
        };
        let info = || vec![ParamInfo::new("w", [2])];
        let mut a = RuleOptimizer::<f64, _>::new(l2, info()).unwrap();
        let mut b = RuleOptimizer::<f64, _>::new(plain, info()).unwrap();
        let (mut ya, mut yb) = ([1.0f64, -0.5], [1.0f64, -0.5]);
        for k in 0..4 {
            let g = [0.5 - k as f64, 0.25];
            let gb = [g[0] + 0.25 * yb[0], g[1] + 0.25 * yb[1]];
            a.step(&mut [&mut ya[..]], &[&g[..]]).unwrap();
            b.step(&mut [&mut yb[..]], &[&gb[..]]).unwrap();
        }
        assert_eq!(ya, yb);
    }

    #[test]
    #[should_panic(expected = "lengths")]
    fn eval_params_refuses_mismatched_lengths() {
        let mut x = [0.0f32; 2];
        eval_params(0.9, &[1.0f32, 2.0], &[1.0f32], &mut x);
    }
}

#[cfg(test)]
mod eval_point_tests {
    use super::*;
    use crate::{Optimizer, ParamInfo, RuleOptimizer};

    /// The optimizer gives x = (y − (1 − β₁)z)/β₁ through `Optimizer::eval_params`; before
    /// the first step, the parameters themselves.
    #[test]
    fn the_optimizer_evaluates_at_the_average() {
        let rule = ScheduleFreeAdamW {
            lr: 0.1,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [3])]).unwrap();
        assert!(opt.has_eval_point());
        let mut y = vec![1.0, -2.0, 0.5];
        let mut x = vec![0.0; 3];
        opt.eval_params(&[&y], &mut [&mut x]).unwrap();
        assert_eq!(x, y);
        for _ in 0..5 {
            let g: Vec<f64> = y.iter().map(|v| 2.0 * v).collect();
            opt.step(&mut [&mut y[..]], &[&g[..]]).unwrap();
        }
        opt.eval_params(&[&y], &mut [&mut x]).unwrap();
        let z = opt.buffer(0, 0).unwrap().to_vec();
        let mut want = vec![0.0; 3];
        eval_params(0.9, &y, &z, &mut want);
        assert_eq!(x, want);
        assert_ne!(x, y);
        assert!(opt.eval_params(&[&y], &mut [&mut x[..2]]).is_err());
    }
}
