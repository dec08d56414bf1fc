//! Adafactor: Adam-like steps with a factored second moment (row and column statistics of
//! each matrix instead of one value per element), relative step sizes and update clipping.
//!
//! With learning rate $\gamma$, decay exponent $\tau$ (`beta2_decay`), $\epsilon_1,
//! \epsilon_2$ (`eps`), clipping threshold $d$, weight decay $\lambda$ and gradient $G_t$
//! (after `maximize` and clipping) at step $t$; for a tensor of two or more dimensions the
//! statistics are over its last two (an $n \times m$ matrix for each index of the leading
//! ones), for a vector or a scalar they are per element:
//!
//! $$
//! \begin{aligned}
//! \hat\beta_{2,t} &= 1 - t^{\tau}, \qquad \rho_t = \min(\gamma, 1/\sqrt{t}), \qquad
//! \alpha_t = \max\big(\epsilon_2, \mathrm{RMS}(\theta_{t-1})\big)\,\rho_t\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda)\\
//! R_t &= \hat\beta_{2,t} R_{t-1} + (1-\hat\beta_{2,t})\,\mathrm{mean}_{j}(G_t^2)_{ij}
//!   && \text{(rows, matrices)}\\
//! C_t &= \hat\beta_{2,t} C_{t-1} + (1-\hat\beta_{2,t})\,\mathrm{mean}_{i}(G_t^2)_{ij}
//!   && \text{(columns, matrices)}\\
//! \hat V_t &= \frac{R_t C_t^\top}{\max(\mathrm{mean}_i R_{t,i}, \epsilon_1)}
//!   && \text{(matrices; vectors: } \hat V_t = \hat\beta_{2,t}\hat V_{t-1} +
//!   (1-\hat\beta_{2,t})\,G_t^2)\\
//! U_t &= \frac{G_t}{\sqrt{\max(\hat V_t, \epsilon_1^2)}}, \qquad
//! \hat U_t = \frac{U_t}{\max\big(1, \mathrm{RMS}(U_t)/d\big)}\\
//! \theta_t &= \theta_{t-1} - \alpha_t \hat U_t
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default |
//! |---|---|
//! | `lr` | 0.01 |
//! | `beta2_decay` | −0.8 |
//! | `eps` | (None, 0.001): $\epsilon_1$ None is the machine epsilon of the parameters' type |
//! | `d` | 1 |
//! | `weight_decay` | 0 (always decoupled) |
//! | `maximize` | false |
//!
//! State, per tensor: `step`; for a tensor of two or more dimensions `row_var` (shape of the
//! parameter with the last dimension 1) and `col_var` (second-to-last dimension 1), so a
//! $n \times m$ matrix keeps $n + m$ values; for a vector or a scalar `variance` (one per
//! element). No per-element buffer, so a matrix's state is sublinear in its size.
//!
//! This is PyTorch's `torch.optim.Adafactor`, which differs from the paper (and so from
//! optax and from `transformers`) as PyTorch documents: `lr` caps the relative step size
//! $\rho_t$ (the paper's constant 0.01) and scales the decoupled weight decay; the mean
//! rather than the sum of squares forms $R$ and $C$; $\epsilon_1$ is applied to the
//! estimate $\hat V$ and its row mean, not added to $G^2$; there is no first moment. Order
//! as PyTorch: $\alpha_t$ reads the parameter before the weight decay, and the decay
//! multiplies it before the update is added. The RMS of the parameter and of the update are
//! summed in `f64` (PyTorch: in the parameters' type); the row and column norms are summed in
//! `f64` and rounded to the parameters' type before they are squared, as PyTorch's
//! `vector_norm` then `square_`.
//!
//! Stages ([`Rule::transform`]): the whole-tensor stage forms $\hat U_t$'s direction $U_t$
//! from the statistics (which it updates) and leaves it as the gradient of the element pass,
//! with $-\alpha_t/\max(1, \mathrm{RMS}(U_t)/d)$ in this step's constants; the element pass
//! applies the decay and $\theta + c\,U$.
//!
//! # References
//! - N. Shazeer, M. Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*,
//!   ICML 2018, arXiv:1804.04235.
//!
//! # Example
//! ```
//! use downhill::{optim::adafactor::Adafactor, Optimizer, ParamInfo, RuleOptimizer};
//! let rule = Adafactor { lr: 0.05, ..Default::default() };
//! let params = vec![ParamInfo::new("w", [4, 3]), ParamInfo::new("b", [3])];
//! let mut opt = RuleOptimizer::<f32, _>::new(rule, params)?;
//! let (mut w, mut b) = (vec![1.0f32; 12], vec![0.5f32; 3]);
//! for _ in 0..5 {
//!     let (gw, gb) = (w.clone(), b.clone()); // gradient of ½|x|²
//!     opt.step(&mut [&mut w[..], &mut b[..]], &[&gw[..], &gb[..]])?;
//! }
//! assert!(w[0] < 1.0 && b[0] < 0.5);
//! // 4 row and 3 column statistics for `w`, 3 for `b`: 10 values for 15 parameters.
//! assert_eq!(opt.state_bytes_per_param(), 4.0 * 10.0 / 15.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{Hyper, Rule, StepCount, Whole, MAX_BUFFERS};
use crate::error::{check, ensure};
use crate::kernel::{DType, Float, Lane};
use crate::Result;

/// Adafactor's configuration (PyTorch's `torch.optim.Adafactor`); see the
/// [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adafactor {
    /// Learning rate γ: the cap of the relative step size and the weight decay's scale.
    pub lr: f64,
    /// Exponent τ ≤ 0 of the second moment's decay: 1 − β̂₂,ₜ = t^τ.
    pub beta2_decay: f64,
    /// (ε₁, ε₂): ε₁ floors the variance estimate (`None`: the machine epsilon of the
    /// parameters' type, `f32::EPSILON` or `f64::EPSILON`); ε₂ floors the parameter RMS.
    pub eps: (Option<f64>, f64),
    /// Clipping threshold d ≥ 1 of the update's RMS.
    pub d: f64,
    /// Decoupled weight decay λ (scaled by the learning rate).
    pub weight_decay: f64,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Adafactor {
    fn default() -> Self {
        Adafactor {
            lr: 1e-2,
            beta2_decay: -0.8,
            eps: (None, 1e-3),
            d: 1.0,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// Per-step constants of Adafactor.
#[derive(Clone, Copy, Debug)]
pub struct AdafactorCoef {
    /// 1 − β̂₂,ₜ = t^τ, the weight of the new statistics.
    one_minus_beta2: f64,
    /// ρₜ = min(γ, 1/√t).
    rho: f64,
    eps1: Option<f64>,
    eps2: f64,
    d: f64,
    /// −αₜ / max(1, RMS(U)/d), set by the whole-tensor stage.
    step: f64,
}

/// `x` raised to at least `lo`, as `torch.clamp_(min=lo)` (a NaN stays NaN).
#[inline]
fn clamp_min<F: Float>(x: F, lo: F) -> F {
    if x < lo {
        lo
    } else {
        x
    }
}

/// The Euclidean norm of `xs`, summed in `f64`.
fn norm<F: Float>(xs: impl Iterator<Item = F>) -> f64 {
    xs.map(|x| x.to_f64() * x.to_f64()).sum::<f64>().sqrt()
}

impl Rule for Adafactor {
    const NAME: &'static str = "adafactor";
    type Scalars = StepCount;
    type Coef = AdafactorCoef;
    const TRANSFORMS: bool = true;

    fn validate(&self) -> Result<()> {
        const OPT: &str = "adafactor";
        check::non_negative(OPT, "lr", self.lr)?;
        ensure(
            self.beta2_decay.is_finite() && self.beta2_decay <= 0.0,
            OPT,
            "beta2_decay",
            self.beta2_decay,
            "must be finite and <= 0",
        )?;
        if let Some(eps1) = self.eps.0 {
            check::non_negative(OPT, "eps1", eps1)?;
        }
        check::non_negative(OPT, "eps2", self.eps.1)?;
        ensure(
            self.d.is_finite() && self.d >= 1.0,
            OPT,
            "d",
            self.d,
            "must be finite and >= 1",
        )?;
        check::non_negative(OPT, "weight_decay", self.weight_decay)
    }

    /// Adafactor's weight decay is always decoupled (PyTorch has no L2 form for it).
    fn hyper(&self) -> Hyper {
        Hyper {
            lr: self.lr,
            weight_decay: self.weight_decay,
            decoupled_weight_decay: true,
            maximize: self.maximize,
        }
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn buffers(&self) -> &'static [&'static str] {
        &[]
    }

    fn tensor_state(&self, shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        let n = shape.len();
        if n >= 2 {
            let mut row = shape.to_vec();
            row[n - 1] = 1;
            let mut col = shape.to_vec();
            col[n - 2] = 1;
            vec![("row_var", row), ("col_var", col)]
        } else {
            vec![("variance", shape.to_vec())]
        }
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdafactorCoef {
        s.step += 1;
        let t = s.step as f64;
        AdafactorCoef {
            one_minus_beta2: t.powf(self.beta2_decay),
            rho: lr.min(1.0 / t.powf(0.5)),
            eps1: self.eps.0,
            eps2: self.eps.1,
            d: self.d,
            step: 0.0,
        }
    }

    fn transform<F: Float>(&self, c: &mut AdafactorCoef, t: Whole<'_, F>) {
        let len = t.g.len();
        if len == 0 {
            return;
        }
        let eps1 = c.eps1.unwrap_or(match F::DTYPE {
            DType::F32 => f32::EPSILON as f64,
            DType::F64 => f64::EPSILON,
        });
        let alpha = c.eps2.max(norm(t.p.iter().copied()) / (len as f64).sqrt()) * c.rho;
        let w = c.one_minus_beta2;
        let floor = F::from_f64(eps1 * eps1);
        let g = t.g;
        if t.shape.len() >= 2 {
            let (rows, cols) = (t.shape[t.shape.len() - 2], t.shape[t.shape.len() - 1]);
            let [row_var, col_var] = t.tensor_state else {
                unreachable!("tensor_state declares row_var and col_var for matrices")
            };
            let mat = rows * cols;
            let mean_sq = |norm: f64, n: usize| {
                let x = F::from_f64(norm);
                x * x / F::from_f64(n as f64)
            };
            for (b, g) in g.chunks_exact_mut(mat).enumerate() {
                let r = &mut row_var[b * rows..(b + 1) * rows];
                let cv = &mut col_var[b * cols..(b + 1) * cols];
                for (i, ri) in r.iter_mut().enumerate() {
                    let m = mean_sq(norm(g[i * cols..(i + 1) * cols].iter().copied()), cols);
                    *ri = ri.lerp(m, w);
                }
                for (j, cj) in cv.iter_mut().enumerate() {
                    let m = mean_sq(norm((0..rows).map(|i| g[i * cols + j])), rows);
                    *cj = cj.lerp(m, w);
                }
                let row_sum = r.iter().fold(F::from_f64(0.0), |a, &x| a + x);
                let row_mean = clamp_min(row_sum / F::from_f64(rows as f64), F::from_f64(eps1));
                for (i, &ri) in r.iter().enumerate() {
                    for (j, &cj) in cv.iter().enumerate() {
                        let v = ri * cj / row_mean;
                        let k = i * cols + j;
                        g[k] = F::from_f64(1.0) / clamp_min(v, floor).sqrt() * g[k];
                    }
                }
            }
        } else {
            let [variance] = t.tensor_state else {
                unreachable!("tensor_state declares variance for vectors and scalars")
            };
            for (v, g) in variance.iter_mut().zip(g.iter_mut()) {
                *v = v.lerp(*g * *g, w);
                *g = F::from_f64(1.0) / clamp_min(*v, floor).sqrt() * *g;
            }
        }
        let rms = norm(g.iter().copied()) / ((len as f64).sqrt() * c.d);
        c.step = -alpha / rms.max(1.0);
    }

    #[inline(always)]
    fn update<L: Lane>(
        c: &AdafactorCoef,
        p: L,
        u: L,
        _: &mut [L; MAX_BUFFERS],
        _: &mut [L; 2],
    ) -> L {
        p + L::c(c.step) * u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let d = Adafactor::default;
        for (bad, name) in [
            (Adafactor { lr: -1.0, ..d() }, "lr"),
            (
                Adafactor {
                    lr: f64::NAN,
                    ..d()
                },
                "lr",
            ),
            (
                Adafactor {
                    beta2_decay: 0.1,
                    ..d()
                },
                "beta2_decay",
            ),
            (
                Adafactor {
                    beta2_decay: f64::NEG_INFINITY,
                    ..d()
                },
                "beta2_decay",
            ),
            (
                Adafactor {
                    eps: (Some(-1e-30), 1e-3),
                    ..d()
                },
                "eps1",
            ),
            (
                Adafactor {
                    eps: (None, -1e-3),
                    ..d()
                },
                "eps2",
            ),
            (Adafactor { d: 0.5, ..d() }, "d"),
            (
                Adafactor {
                    d: f64::INFINITY,
                    ..d()
                },
                "d",
            ),
            (
                Adafactor {
                    weight_decay: -0.1,
                    ..d()
                },
                "weight_decay",
            ),
        ] {
            match bad.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "adafactor",
                    name: n,
                    ..
                }) => assert_eq!(n, name, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(d().validate().is_ok());
        assert!(Adafactor {
            eps: (Some(1e-30), 0.0),
            beta2_decay: 0.0,
            ..d()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn eps_is_optional_in_options() {
        let json = serde_json::to_value(Adafactor::default()).unwrap();
        assert_eq!(json["eps"], serde_json::json!([null, 0.001]));
        let back: Adafactor =
            serde_json::from_value(serde_json::json!({"eps": [1e-30, 0.01]})).unwrap();
        assert_eq!(back.eps, (Some(1e-30), 0.01));
    }

    #[test]
    fn state_is_factored() {
        let rule = Adafactor::default();
        assert_eq!(
            rule.tensor_state(&[5, 3]),
            vec![("row_var", vec![5, 1]), ("col_var", vec![1, 3])]
        );
        assert_eq!(
            rule.tensor_state(&[2, 5, 3]),
            vec![("row_var", vec![2, 5, 1]), ("col_var", vec![2, 1, 3])]
        );
        assert_eq!(rule.tensor_state(&[3]), vec![("variance", vec![3])]);
        assert_eq!(rule.tensor_state(&[]), vec![("variance", vec![])]);
        let params = vec![ParamInfo::new("w", [50, 30]), ParamInfo::new("b", [30])];
        let opt = RuleOptimizer::<f64, _>::new(rule, params).unwrap();
        assert_eq!(
            opt.state_bytes_per_param(),
            8.0 * (50.0 + 30.0 + 30.0) / 1530.0
        );
    }

    /// A rank-one gradient is its own factored estimate, so the first step is
    /// θ − α·sign(G) with α = RMS(θ)·lr (after the decay, which α does not see).
    #[test]
    fn first_step_by_hand() {
        let rule = Adafactor {
            lr: 0.01,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt =
            RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("w", [2, 2])]).unwrap();
        let mut w = [3.0, 4.0, 0.0, 0.0];
        // outer([1, −2], [1, 2]): G² has row means (2.5, 10), column means (2.5, 10).
        let g = [1.0, 2.0, -2.0, -4.0];
        opt.step(&mut [&mut w[..]], &[&g[..]]).unwrap();
        let alpha = 2.5 * 0.01; // RMS(θ) = √(25/4)
        let decay = 1.0 - 0.01 * 0.5;
        let want = [3.0 * decay - alpha, 4.0 * decay - alpha, alpha, alpha];
        for (x, y) in w.iter().zip(want) {
            assert!((x - y).abs() < 1e-15, "{w:?} vs {want:?}");
        }
        // The norms are rounded before they are squared, as PyTorch's: √5² = 5 + 1 ulp.
        for k in 0..2 {
            let stat = opt.tensor_state(0, k).unwrap();
            assert!((stat[0] - 2.5).abs() < 1e-15 && (stat[1] - 10.0).abs() < 1e-14);
        }
    }

    /// An update whose RMS exceeds d is scaled down to RMS d; ε₂ floors α for a small
    /// parameter; ε₁² floors the variance; the second step mixes the statistics with weight
    /// 2^τ.
    #[test]
    fn clipping_eps2_and_decay_of_statistics() {
        let rule = Adafactor {
            lr: 0.1,
            eps: (Some(0.5), 0.2),
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("b", [2])]).unwrap();
        let mut b = [0.0, 0.0];
        // v = (0.01, 4): √max(v, ε₁²) = (0.5, 2), U = (0.2, 1), RMS(U) = √0.52 < d = 1,
        // so no clipping; α = ε₂·lr = 0.02.
        opt.step(&mut [&mut b[..]], &[&[0.1, 2.0][..]]).unwrap();
        assert!(
            (b[0] + 0.004).abs() < 1e-17 && (b[1] + 0.02).abs() < 1e-17,
            "{b:?}"
        );
        // Step 2: weight 2^−0.8; ρ = min(0.1, 1/√2) = 0.1; RMS(b) < ε₂, so α = 0.02.
        let w = 2f64.powf(-0.8);
        let v = [0.01 + w * (900.0 - 0.01), 4.0 + w * (900.0 - 4.0)];
        let u = v.map(|v| 30.0 / v.sqrt());
        let rms = ((u[0] * u[0] + u[1] * u[1]) / 2.0).sqrt();
        assert!(rms > 1.2, "{rms}");
        let want = [-0.004 - 0.02 * u[0] / rms, -0.02 - 0.02 * u[1] / rms];
        opt.step(&mut [&mut b[..]], &[&[30.0, 30.0][..]]).unwrap();
        for k in 0..2 {
            assert!((b[k] - want[k]).abs() < 1e-15, "{b:?} vs {want:?}");
            let got = opt.tensor_state(0, 0).unwrap()[k];
            assert!((got - v[k]).abs() < 1e-12, "{got} vs {}", v[k]);
        }
    }
}
