//! Muon: momentum orthogonalized by Newton–Schulz, for the 2-D weights of hidden layers.
//!
//! With learning rate $\gamma$, weight decay $\lambda$, momentum $\mu$, coefficients
//! $(a, b, c)$ (`ns_coefficients`), $k$ iterations (`ns_steps`), $\varepsilon$ (`eps`) and
//! gradient $G_t$ (after `maximize` and clipping) of an $A \times B$ matrix, at step $t$:
//!
//! $$
//! \begin{aligned}
//! M_t &= \mu M_{t-1} + (1-\mu)\, G_t
//!   \qquad \tilde M_t = \begin{cases} (1-\mu)\,G_t + \mu M_t & \text{nesterov}\\
//!   M_t & \text{otherwise}\end{cases}\\
//! X_0 &= \tilde M_t / \max(\lVert \tilde M_t \rVert_F, \varepsilon)
//!   \quad \text{(transposed first when } A > B\text{)}\\
//! X_{i+1} &= a X_i + \big(b\, X_i X_i^\top + c\, (X_i X_i^\top)^2\big) X_i,
//!   \quad i = 0, \dots, k-1, \qquad O_t = X_k \ \text{(transposed back)}\\
//! \theta_t &= \theta_{t-1}\,(1 - \gamma\lambda) - \gamma' O_t, \qquad
//! \gamma' = \gamma \cdot \begin{cases}
//!   \sqrt{\max(1, A/B)} & \text{\texttt{adjust\_lr\_fn} null or "original"}\\
//!   0.2\,\sqrt{\max(A, B)} & \text{"match\_rms\_adamw"}\\
//!   \sqrt{A/B} & \text{"spectral\_unclamped"}
//! \end{cases}
//! \end{aligned}
//! $$
//!
//! ($M_t$ and $\tilde M_t$ are PyTorch's `lerp`s, with weights $1-\mu$ and $\mu$.)
//!
//! | hyperparameter | default |
//! |---|---|
//! | `lr` | 0.001 |
//! | `weight_decay` | 0.1 (always decoupled) |
//! | `momentum` | 0.95 |
//! | `nesterov` | true |
//! | `ns_coefficients` | (3.4445, −4.7750, 2.0315) |
//! | `eps` | 1e-7 |
//! | `ns_steps` | 5 |
//! | `adjust_lr_fn` | null (= "original") |
//! | `maximize` | false |
//!
//! State: per tensor, `step` and `momentum_buffer` ($M$, of the parameter's shape, kept as
//! tensor state: the element pass only applies the decay and $\theta - \gamma' O$).
//! Parameters must be matrices: any other shape is refused at construction
//! ([`Error::Setup`](crate::Error::Setup), naming it); give biases and embeddings to another
//! optimizer, as PyTorch says.
//!
//! This is PyTorch's `torch.optim.Muon` (2.15), with one difference: the Newton–Schulz
//! iteration runs in the parameters' type (`f32` or `f64`), where PyTorch casts the momentum
//! to bfloat16 for it (a cast that makes results depend on the BLAS and that no other
//! implementation reproduces); the reference cases were made the same way. The products use
//! [`matrixmultiply`] (why that crate: `kernel/matmul.rs`): single-threaded per tensor, so the
//! bits do not depend on the thread count, but it fuses multiply-adds where the CPU can, so
//! unlike the element-wise rules they may differ between CPUs. Validation is stricter than
//! PyTorch's: `momentum` must be below 1 and `eps` positive (PyTorch accepts `eps = 0`, which
//! makes a zero gradient NaN), and every value finite. `maximize` is ours (PyTorch's Muon has
//! none).
//!
//! # References
//! - K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein, *Muon: An
//!   optimizer for hidden layers in neural networks*, blog post, 2024,
//!   <https://kellerjordan.github.io/posts/muon/>.
//! - J. Liu et al. (Moonshot AI), *Muon is Scalable for LLM Training*, 2025, arXiv:2502.16982
//!   (`match_rms_adamw`).
//! - J. Bernstein, *Deriving Muon*, 2025 (`spectral_unclamped`).
//!
//! # Example
//! ```
//! use downhill::{optim::muon::Muon, Optimizer, ParamInfo, RuleOptimizer};
//! let rule = Muon { lr: 0.02, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(rule, vec![ParamInfo::new("w", [4, 3])])?;
//! let mut w: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
//! let before: f32 = w.iter().map(|x| x * x).sum();
//! for _ in 0..10 {
//!     let g = w.clone(); // gradient of ½|W|²
//!     opt.step(&mut [&mut w[..]], &[&g[..]])?;
//! }
//! assert!(w.iter().map(|x| x * x).sum::<f32>() < before);
//! // Muon steps matrices only.
//! let bias = RuleOptimizer::<f32, _>::new(Muon::default(), vec![ParamInfo::new("b", [3])]);
//! assert!(matches!(bias, Err(downhill::Error::Setup(_))));
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{Hyper, Rule, StepCount, Whole, MAX_BUFFERS};
use crate::error::{check, ensure};
use crate::kernel::matmul::{gemm, Mat};
use crate::kernel::{Float, Lane};
use crate::{Error, ParamInfo, Result};

/// How Muon scales the learning rate by the matrix's shape `A × B` (PyTorch's
/// `adjust_lr_fn`; `null` is [`Original`](AdjustLr::Original)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjustLr {
    /// `"original"` (Keller Jordan's): `lr·√max(1, A/B)`.
    #[serde(rename = "original")]
    Original,
    /// `"match_rms_adamw"` (Moonshot's): `lr·0.2·√max(A, B)`, an update of AdamW's RMS.
    #[serde(rename = "match_rms_adamw")]
    MatchRmsAdamw,
    /// `"spectral_unclamped"` (Bernstein's): `lr·√(A/B)`.
    #[serde(rename = "spectral_unclamped")]
    SpectralUnclamped,
}

impl AdjustLr {
    /// The factor of the learning rate for a matrix of `rows × cols`.
    fn ratio(this: Option<AdjustLr>, rows: usize, cols: usize) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        match this {
            None | Some(AdjustLr::Original) => (a / b).max(1.0).sqrt(),
            Some(AdjustLr::MatchRmsAdamw) => 0.2 * a.max(b).sqrt(),
            Some(AdjustLr::SpectralUnclamped) => (a / b).sqrt(),
        }
    }
}

/// Muon's configuration (PyTorch's `torch.optim.Muon`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Muon {
    /// Learning rate γ (before the shape adjustment).
    pub lr: f64,
    /// Decoupled weight decay λ (scaled by the unadjusted learning rate).
    pub weight_decay: f64,
    /// Momentum μ.
    pub momentum: f64,
    /// Orthogonalize the Nesterov look-ahead rather than the momentum.
    pub nesterov: bool,
    /// Coefficients (a, b, c) of the quintic Newton–Schulz polynomial.
    pub ns_coefficients: (f64, f64, f64),
    /// Floor of the Frobenius norm the iteration starts by dividing by.
    pub eps: f64,
    /// Newton–Schulz iterations (below 100).
    pub ns_steps: u32,
    /// Learning-rate scaling by shape (`null`: "original").
    pub adjust_lr_fn: Option<AdjustLr>,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Muon {
    fn default() -> Self {
        Muon {
            lr: 1e-3,
            weight_decay: 0.1,
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: (3.4445, -4.7750, 2.0315),
            eps: 1e-7,
            ns_steps: 5,
            adjust_lr_fn: None,
            maximize: false,
        }
    }
}

/// Per-step constants of Muon.
#[derive(Clone, Copy, Debug)]
pub struct MuonCoef {
    lr: f64,
    momentum: f64,
    nesterov: bool,
    ns_coefficients: (f64, f64, f64),
    eps: f64,
    ns_steps: u32,
    adjust_lr_fn: Option<AdjustLr>,
    /// −γ' (the adjusted learning rate), set by the whole-tensor stage.
    step: f64,
}

/// The Newton–Schulz iteration of PyTorch's `_zeropower_via_newtonschulz` on the `rows ×
/// cols` matrix `x` (row-major), in place, with `rows ≤ cols`.
fn newton_schulz<F: Float>(x: &mut Vec<F>, rows: usize, cols: usize, c: &MuonCoef) {
    debug_assert!(rows <= cols && x.len() == rows * cols);
    let norm = x
        .iter()
        .map(|v| v.to_f64() * v.to_f64())
        .sum::<f64>()
        .sqrt();
    let norm = F::from_f64(norm);
    let eps = F::from_f64(c.eps);
    let norm = if norm < eps { eps } else { norm };
    for v in x.iter_mut() {
        *v = *v / norm;
    }
    let (a, b, cc) = c.ns_coefficients;
    let mut gram = vec![F::from_f64(0.0); rows * rows];
    let mut poly = vec![F::from_f64(0.0); rows * rows];
    let mut next = vec![F::from_f64(0.0); rows * cols];
    for _ in 0..c.ns_steps {
        // A = X Xᵀ; B = b·A + c·A·A (`addmm(A, A, A, beta=b, alpha=c)`);
        // X = a·X + B·X (`addmm(X, B, X, beta=a)`).
        let xm = Mat::new(x, rows, cols);
        gemm(1.0, xm, xm.t(), 0.0, &mut gram);
        poly.copy_from_slice(&gram);
        let gm = Mat::new(&gram, rows, rows);
        gemm(cc, gm, gm, b, &mut poly);
        next.copy_from_slice(x);
        gemm(1.0, Mat::new(&poly, rows, rows), xm, a, &mut next);
        std::mem::swap(x, &mut next);
    }
}

impl Rule for Muon {
    const NAME: &'static str = "muon";
    type Scalars = StepCount;
    type Coef = MuonCoef;
    const TRANSFORMS: bool = true;

    fn validate(&self) -> Result<()> {
        const OPT: &str = "muon";
        check::non_negative(OPT, "lr", self.lr)?;
        check::non_negative(OPT, "weight_decay", self.weight_decay)?;
        check::unit_interval(OPT, "momentum", self.momentum)?;
        let (a, b, c) = self.ns_coefficients;
        for (name, x) in [
            ("ns_coefficients.a", a),
            ("ns_coefficients.b", b),
            ("ns_coefficients.c", c),
        ] {
            ensure(x.is_finite(), OPT, name, x, "must be finite")?;
        }
        check::positive(OPT, "eps", self.eps)?;
        ensure(
            self.ns_steps < 100,
            OPT,
            "ns_steps",
            self.ns_steps as f64,
            "must be < 100",
        )
    }

    /// Muon's weight decay is always decoupled, by the unadjusted learning rate.
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

    fn check_param(&self, info: &ParamInfo) -> Result<()> {
        if info.shape.len() == 2 {
            Ok(())
        } else {
            Err(Error::Setup(format!(
                "muon steps matrices only, but parameter '{}' has shape {:?}; give it to \
                 another optimizer (in another group or optimizer)",
                info.name, info.shape
            )))
        }
    }

    fn tensor_state(&self, shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        vec![("momentum_buffer", shape.to_vec())]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> MuonCoef {
        s.step += 1;
        MuonCoef {
            lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            ns_coefficients: self.ns_coefficients,
            eps: self.eps,
            ns_steps: self.ns_steps,
            adjust_lr_fn: self.adjust_lr_fn,
            step: 0.0,
        }
    }

    fn transform<F: Float>(&self, c: &mut MuonCoef, t: Whole<'_, F>) {
        let (rows, cols) = (t.shape[0], t.shape[1]);
        c.step = -c.lr * AdjustLr::ratio(c.adjust_lr_fn, rows, cols);
        let [buf] = t.tensor_state else {
            unreachable!("tensor_state declares momentum_buffer")
        };
        let g = t.g;
        if g.is_empty() {
            return;
        }
        for (m, g) in buf.iter_mut().zip(g.iter_mut()) {
            *m = m.lerp(*g, 1.0 - c.momentum);
            if c.nesterov {
                *g = g.lerp(*m, c.momentum);
            } else {
                *g = *m;
            }
        }
        // The iteration works on the wide orientation: Xᵀ when the matrix is tall.
        if rows > cols {
            let mut x: Vec<F> = (0..cols * rows)
                .map(|k| g[(k % rows) * cols + k / rows])
                .collect();
            newton_schulz(&mut x, cols, rows, c);
            for (k, v) in x.into_iter().enumerate() {
                g[(k % rows) * cols + k / rows] = v;
            }
        } else {
            let mut x = g.to_vec();
            newton_schulz(&mut x, rows, cols, c);
            g.copy_from_slice(&x);
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &MuonCoef, p: L, o: L, _: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        p + L::c(c.step) * o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let d = Muon::default;
        for (bad, name) in [
            (Muon { lr: -1.0, ..d() }, "lr"),
            (
                Muon {
                    lr: f64::INFINITY,
                    ..d()
                },
                "lr",
            ),
            (
                Muon {
                    weight_decay: -0.1,
                    ..d()
                },
                "weight_decay",
            ),
            (
                Muon {
                    momentum: 1.0,
                    ..d()
                },
                "momentum",
            ),
            (
                Muon {
                    momentum: -0.1,
                    ..d()
                },
                "momentum",
            ),
            (
                Muon {
                    ns_coefficients: (f64::NAN, 0.0, 0.0),
                    ..d()
                },
                "ns_coefficients.a",
            ),
            (
                Muon {
                    ns_coefficients: (1.0, 0.0, f64::INFINITY),
                    ..d()
                },
                "ns_coefficients.c",
            ),
            (Muon { eps: 0.0, ..d() }, "eps"),
            (
                Muon {
                    ns_steps: 100,
                    ..d()
                },
                "ns_steps",
            ),
        ] {
            match bad.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "muon",
                    name: n,
                    ..
                }) => assert_eq!(n, name, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(d().validate().is_ok());
        assert!(Muon {
            ns_steps: 99,
            momentum: 0.0,
            ..d()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn options_parse_as_pytorch_names_them() {
        let m: Muon = serde_json::from_value(serde_json::json!({
            "adjust_lr_fn": "match_rms_adamw", "ns_coefficients": [3.0, -3.2, 1.2]
        }))
        .unwrap();
        assert_eq!(m.adjust_lr_fn, Some(AdjustLr::MatchRmsAdamw));
        assert_eq!(m.ns_coefficients, (3.0, -3.2, 1.2));
        for bad in [
            serde_json::json!({"adjust_lr_fn": "other"}),
            serde_json::json!({"ns_coefficients": [1.0, 2.0]}),
            serde_json::json!({"ns_steps": -1}),
        ] {
            assert!(serde_json::from_value::<Muon>(bad).is_err());
        }
        let null: Muon = serde_json::from_value(serde_json::json!({"adjust_lr_fn": null})).unwrap();
        assert_eq!(null.adjust_lr_fn, None);
    }

    #[test]
    fn only_matrices_are_accepted() {
        for shape in [vec![3], vec![], vec![2, 3, 4]] {
            let e = RuleOptimizer::<f64, _>::new(
                Muon::default(),
                vec![ParamInfo::new("w", [2, 2]), ParamInfo::new("bias", shape)],
            )
            .unwrap_err();
            assert!(matches!(&e, Error::Setup(m) if m.contains("'bias'")), "{e}");
        }
        let opt = RuleOptimizer::<f64, _>::new(Muon::default(), vec![ParamInfo::new("w", [5, 3])])
            .unwrap();
        assert_eq!(opt.state_bytes_per_param(), 8.0);
    }

    fn step_once(rule: Muon, shape: [usize; 2], p: &mut [f64], g: &[f64]) {
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("w", shape)]).unwrap();
        opt.step(&mut [p], &[g]).unwrap();
    }

    /// With no iteration, O is the (Nesterov) momentum over its norm: on the first step
    /// M = (1−μ)G and M̃ = G + μ(M − G), both multiples of G, so O = G/‖G‖.
    #[test]
    fn first_step_by_hand_without_iterations() {
        let (lr, wd) = (0.1, 0.5);
        let rule = Muon {
            lr,
            weight_decay: wd,
            ns_steps: 0,
            ..Default::default()
        };
        let mut p = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let g = [3.0, 0.0, 0.0, 0.0, 4.0, 0.0]; // ‖G‖ = 5
        step_once(rule, [3, 2], &mut p, &g);
        let adjusted = lr * 1.5f64.sqrt(); // original: √max(1, 3/2)
        let want: Vec<f64> = (1..=6)
            .zip(g)
            .map(|(x, g)| x as f64 * (1.0 - lr * wd) - adjusted * g / 5.0)
            .collect();
        for (x, y) in p.iter().zip(&want) {
            assert!((x - y).abs() < 1e-15, "{p:?} vs {want:?}");
        }
    }

    /// On a diagonal matrix the iteration acts on each singular value alone:
    /// x ← a x + b x³ + c x⁵.
    #[test]
    fn iteration_on_singular_values() {
        let (a, b, c) = (3.4445, -4.7750, 2.0315);
        let rule = Muon {
            lr: 1.0,
            weight_decay: 0.0,
            momentum: 0.0,
            ns_steps: 3,
            adjust_lr_fn: Some(AdjustLr::SpectralUnclamped),
            ..Default::default()
        };
        let mut p = [0.0; 6];
        let g = [3.0, 0.0, 0.0, 0.0, 4.0, 0.0]; // 2 × 3, singular values 3 and 4
        step_once(rule, [2, 3], &mut p, &g);
        let f = |mut x: f64| {
            for _ in 0..3 {
                x = a * x + b * x.powi(3) + c * x.powi(5);
            }
            x
        };
        let s = (2.0f64 / 3.0).sqrt(); // spectral_unclamped: √(2/3)
        let want = [-s * f(0.6), 0.0, 0.0, 0.0, -s * f(0.8), 0.0];
        for (x, y) in p.iter().zip(want) {
            assert!((x - y).abs() < 1e-13, "{p:?} vs {want:?}");
        }
        assert!(f(0.6) > 0.5 && f(0.6) < 1.5 && f(0.8) > 0.5 && f(0.8) < 1.5);
    }

    /// A tall matrix is iterated as its transpose: stepping Gᵀ on a 5 × 3 parameter gives
    /// exactly the transpose of stepping G on a 3 × 5 one (with a shape-symmetric lr).
    #[test]
    fn tall_is_the_transpose_of_wide() {
        let rule = Muon {
            lr: 0.05,
            adjust_lr_fn: Some(AdjustLr::MatchRmsAdamw),
            ..Default::default()
        };
        let (r, c) = (3, 5);
        let wide_g: Vec<f64> = (0..15).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
        let wide_p: Vec<f64> = (0..15).map(|i| (i as f64 * 0.37).sin()).collect();
        let tr = |m: &[f64], rows: usize, cols: usize| -> Vec<f64> {
            (0..rows * cols)
                .map(|k| m[(k % rows) * cols + k / rows])
                .collect()
        };
        let mut wide = wide_p.clone();
        let mut tall = tr(&wide_p, r, c);
        let mut opt_w =
            RuleOptimizer::<f64, _>::new(rule.clone(), vec![ParamInfo::new("w", [r, c])]).unwrap();
        let mut opt_t =
            RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("w", [c, r])]).unwrap();
        for k in 0..3 {
            let g: Vec<f64> = wide_g.iter().map(|x| x * (k + 1) as f64).collect();
            opt_w.step(&mut [&mut wide[..]], &[&g[..]]).unwrap();
            opt_t
                .step(&mut [&mut tall[..]], &[&tr(&g, r, c)[..]])
                .unwrap();
        }
        assert_eq!(tall, tr(&wide, r, c));
        assert_ne!(wide, wide_p);
    }

    /// The same bits with 1 and 2 threads (tensors are transformed in parallel; each product
    /// is single-threaded).
    #[test]
    fn thread_count_does_not_change_bits() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let shapes = [[64, 48], [48, 64], [7, 5]];
                let infos = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ParamInfo::new(format!("w{i}"), *s))
                    .collect();
                let rule = Muon {
                    lr: 0.02,
                    ..Default::default()
                };
                let mut opt = RuleOptimizer::<f32, _>::new(rule, infos).unwrap();
                let mut ps: Vec<Vec<f32>> = shapes
                    .iter()
                    .map(|s| (0..s[0] * s[1]).map(|i| (i as f32 * 0.01).sin()).collect())
                    .collect();
                for step in 0..4 {
                    let gs: Vec<Vec<f32>> = ps
                        .iter()
                        .map(|p| {
                            p.iter()
                                .enumerate()
                                .map(|(i, x)| x + ((i * 31 + step) as f32 * 0.13).cos())
                                .collect()
                        })
                        .collect();
                    let mut views: Vec<&mut [f32]> = ps.iter_mut().map(|p| &mut p[..]).collect();
                    let grads: Vec<&[f32]> = gs.iter().map(|g| &g[..]).collect();
                    opt.step(&mut views, &grads).unwrap();
                }
                ps.iter()
                    .flatten()
                    .map(|x| x.to_bits())
                    .collect::<Vec<u32>>()
            })
        };
        assert_eq!(run(1), run(2));
    }
}
