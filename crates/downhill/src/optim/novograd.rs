//! NovoGrad: SGD with momentum on gradients normalized by a per-tensor (layer-wise) second
//! moment, with the weight decay inside the momentum.
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`),
//! $\bar\epsilon$ (`eps_root`), weight decay $\lambda$ and gradient $g_t$ of one tensor (after
//! `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! \nu_1 &= \lVert g_1\rVert^2, &
//! \nu_t &= (1-\beta_2)\,\lVert g_t\rVert^2 + \beta_2 \nu_{t-1}\\
//! m_1 &= \frac{g_1}{\sqrt{\nu_1+\bar\epsilon}+\epsilon} + \lambda\theta_0, &
//! m_t &= \beta_1 m_{t-1} + \frac{g_t}{\sqrt{\nu_t+\bar\epsilon}+\epsilon} + \lambda\theta_{t-1}\\
//! \theta_t &= \theta_{t-1} - \gamma\, m_t
//! \end{aligned}
//! $$
//!
//! $\nu$ is one number per tensor; $\lVert\cdot\rVert$ is the Euclidean norm over the tensor.
//!
//! | hyperparameter | default |
//! |---|---|
//! | `lr` | 0.001 |
//! | `betas` | (0.9, 0.25) |
//! | `eps` | 1e-6 |
//! | `eps_root` | 0 |
//! | `weight_decay` | 0 |
//! | `decoupled_weight_decay` | true |
//! | `maximize` | false |
//!
//! State: `mu` (the momentum $m$); per tensor, `step` and `nu` ($\nu$).
//!
//! How it runs: $\lVert g_t\rVert^2$ needs the whole tensor before any element can be
//! updated, so the rule [measures](Rule::MEASURES): the reading pass sums $g^2$, and
//! [`absorb`](Rule::absorb) turns the sum into $\nu_t$ (kept in the tensor's scalars) and the
//! denominator $\sqrt{\nu_t+\bar\epsilon}+\epsilon$ of this step's constants; the update pass
//! then needs only element-wise state.
//!
//! PyTorch has no NovoGrad; this is optax 0.2.8's `optax.novograd` with its defaults (optax
//! has no default learning rate; 0.001 is downhill's usual one). Like optax, the norm is
//! squared from its square root ($\lVert g\rVert^2$ as `norm(g)**2`), and the weight decay is
//! inside the momentum, decoupled from the normalization (the paper's and optax's, the default
//! `decoupled_weight_decay: true`).
//! `decoupled_weight_decay: false` instead adds PyTorch's L2 penalty $\lambda\theta$ to the
//! gradient before the rule (the generic weight-decay stage; with `true` [`Rule::hyper`]
//! reports no decay to that stage, as the rule applies it). Differences from the paper: optax's defaults
//! ($\beta_1 = 0.9$, $\beta_2 = 0.25$, not the paper's 0.95 and 0.98), $\epsilon$ outside the
//! root, and no $(1-\beta_1)$ factor on the new term (some implementations' "gradient
//! averaging"). $\nu$ is kept in `f64` for either element type.
//!
//! # References
//! - B. Ginsburg, P. Castonguay, O. Hrinchuk, O. Kuchaiev, V. Lavrukhin, R. Leary, J. Li,
//!   H. Nguyen, Y. Zhang, J. M. Cohen, *Stochastic Gradient Methods with Layer-wise Adaptive
//!   Moments for Training of Deep Networks*, 2019, arXiv:1905.11286.
//!
//! # Example
//! ```
//! use downhill::{optim::novograd::NovoGrad, Optimizer, ParamInfo, RuleOptimizer};
//! let rule = NovoGrad { lr: 0.05, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(rule, vec![ParamInfo::new("x", [2])])?;
//! let mut x = vec![3.0f32, -1.0];
//! for _ in 0..5 {
//!     let g: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0 && x[1] > -1.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::adam::check_betas;
use super::{count_from_f64, expect_scalars, Hyper, Rule, TensorScalars, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::{Error, Result};

/// NovoGrad's configuration (optax's `optax.novograd`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NovoGrad {
    /// Learning rate γ.
    pub lr: f64,
    /// Decays (β₁, β₂) of the momentum and of the per-tensor second moment.
    pub betas: (f64, f64),
    /// ε added to the denominator.
    pub eps: f64,
    /// ε̄ added under the square root.
    pub eps_root: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// `true` (the reference's): λθ added to the normalized gradient inside the momentum; `false`: PyTorch's L2
    /// penalty, `g ← g + λθ` before the rule.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for NovoGrad {
    fn default() -> Self {
        NovoGrad {
            lr: 1e-3,
            betas: (0.9, 0.25),
            eps: 1e-6,
            eps_root: 0.0,
            weight_decay: 0.0,
            decoupled_weight_decay: true,
            maximize: false,
        }
    }
}

/// Per-tensor scalar state of NovoGrad.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NovoGradScalars {
    /// Steps taken on this tensor.
    pub step: u64,
    /// The second moment ν of the tensor's gradient norm.
    pub nu: f64,
}

impl TensorScalars for NovoGradScalars {
    const FIELDS: &'static [&'static str] = &["step", "nu"];
    fn to_values(&self) -> Vec<f64> {
        vec![self.step as f64, self.nu]
    }
    fn from_values(values: &[f64]) -> Result<Self> {
        expect_scalars("novograd", Self::FIELDS, values)?;
        let step = count_from_f64("step", values[0])?;
        let nu = values[1];
        if !(nu.is_finite() && nu >= 0.0) {
            return Err(Error::State(format!(
                "novograd: field 'nu' must be finite and >= 0, found {nu}"
            )));
        }
        Ok(NovoGradScalars { step, nu })
    }
}

/// Per-step constants of NovoGrad.
#[derive(Clone, Copy, Debug)]
pub struct NovoGradCoef {
    /// The first step: the momentum starts from the new term alone, ν from ‖g‖².
    first: bool,
    beta1: f64,
    beta2: f64,
    eps: f64,
    eps_root: f64,
    weight_decay: f64,
    neg_lr: f64,
    /// `√(ν + ε̄) + ε`, set by [`Rule::absorb`].
    denom: f64,
}

impl Rule for NovoGrad {
    const NAME: &'static str = "novograd";
    type Scalars = NovoGradScalars;
    type Coef = NovoGradCoef;
    const MEASURES: bool = true;

    fn validate(&self) -> Result<()> {
        check::non_negative("novograd", "lr", self.lr)?;
        check_betas("novograd", self.betas, self.eps)?;
        check::non_negative("novograd", "eps_root", self.eps_root)?;
        check::non_negative("novograd", "weight_decay", self.weight_decay)
    }

    fn hyper(&self) -> Hyper {
        // Decoupled: applied by the rule, inside the momentum (as optax); else the L2 penalty.
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
        &["mu"]
    }

    fn begin(&self, s: &mut NovoGradScalars, lr: f64) -> NovoGradCoef {
        s.step += 1;
        NovoGradCoef {
            first: s.step == 1,
            beta1: self.betas.0,
            beta2: self.betas.1,
            eps: self.eps,
            eps_root: self.eps_root,
            weight_decay: if self.decoupled_weight_decay {
                self.weight_decay
            } else {
                0.0
            },
            neg_lr: -lr,
            denom: f64::NAN,
        }
    }

    #[inline(always)]
    /// The reading pass reads the gradient only.
    fn measure_reads(&self) -> usize {
        1
    }

    #[inline(always)]
    fn measure<L: Lane>(_: &NovoGradCoef, _: L, g: L, _: &[L; MAX_BUFFERS], red: &mut [L; 2]) {
        red[0] = red[0] + g * g;
    }

    fn absorb(
        &self,
        s: &mut NovoGradScalars,
        c: &mut NovoGradCoef,
        tensor: [f64; 2],
        _group: [f64; 2],
    ) {
        // optax: `jnp.linalg.norm(g) ** 2`.
        let norm = tensor[0].sqrt();
        let sq = norm * norm;
        s.nu = if c.first {
            sq
        } else {
            (1.0 - c.beta2) * sq + c.beta2 * s.nu
        };
        c.denom = (s.nu + c.eps_root).sqrt() + c.eps;
    }

    #[inline(always)]
    fn update<L: Lane>(
        c: &NovoGradCoef,
        p: L,
        g: L,
        s: &mut [L; MAX_BUFFERS],
        _: &mut [L; 2],
    ) -> L {
        let mut u = g / L::c(c.denom);
        if c.weight_decay != 0.0 {
            u = u + L::c(c.weight_decay) * p;
        }
        let mu = if c.first { u } else { L::c(c.beta1) * s[0] + u };
        s[0] = mu;
        p + L::c(c.neg_lr) * mu
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        for bad in [
            NovoGrad {
                lr: -1.0,
                ..Default::default()
            },
            NovoGrad {
                betas: (1.0, 0.25),
                ..Default::default()
            },
            NovoGrad {
                betas: (0.9, f64::NAN),
                ..Default::default()
            },
            NovoGrad {
                eps: -1e-6,
                ..Default::default()
            },
            NovoGrad {
                eps_root: -1.0,
                ..Default::default()
            },
            NovoGrad {
                weight_decay: f64::INFINITY,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{bad:?}"
            );
        }
        assert!(NovoGrad::default().validate().is_ok());
    }

    #[test]
    fn two_steps_by_hand_with_a_per_tensor_second_moment() {
        let rule = NovoGrad {
            lr: 0.1,
            weight_decay: 0.5,
            eps: 0.0,
            ..Default::default()
        };
        let infos = vec![ParamInfo::new("w", [2]), ParamInfo::new("b", [1])];
        let mut opt = RuleOptimizer::<f64, _>::new(rule, infos).unwrap();
        let mut w = [1.0f64, 2.0];
        let mut b = [1.0f64];
        // ‖g_w‖ = 5, ‖g_b‖ = 2: each tensor normalized by its own norm.
        opt.step(
            &mut [&mut w[..], &mut b[..]],
            &[&[3.0, 4.0][..], &[2.0][..]],
        )
        .unwrap();
        let mw = [3.0 / 5.0 + 0.5, 4.0 / 5.0 + 1.0];
        assert!((w[0] - (1.0 - 0.1 * mw[0])).abs() < 1e-15, "{w:?}");
        assert!((w[1] - (2.0 - 0.1 * mw[1])).abs() < 1e-15, "{w:?}");
        let mb = 2.0 / 2.0 + 0.5;
        assert!((b[0] - (1.0 - 0.1 * mb)).abs() < 1e-15, "{b:?}");
        assert_eq!(opt.scalars(0).unwrap().nu, 25.0);
        assert_eq!(opt.scalars(1).unwrap().nu, 4.0);
        // Step 2 on b: ν = 0.75·1 + 0.25·4 = 1.75.
        let b1 = b[0];
        opt.step(
            &mut [&mut w[..], &mut b[..]],
            &[&[0.0, 0.0][..], &[1.0][..]],
        )
        .unwrap();
        let nu = 0.75 * 1.0 + 0.25 * 4.0;
        assert_eq!(opt.scalars(1).unwrap().nu, nu);
        let mb2 = 0.9 * mb + (1.0 / nu.sqrt() + 0.5 * b1);
        assert!((b[0] - (b1 - 0.1 * mb2)).abs() < 1e-15, "{b:?}");
        assert_eq!(opt.state_dict().scalar("g0.b.nu").unwrap(), nu);
    }

    #[test]
    fn scalars_round_trip_and_refuse_impossible_values() {
        let s = NovoGradScalars { step: 3, nu: 0.5 };
        assert_eq!(NovoGradScalars::from_values(&s.to_values()).unwrap(), s);
        for bad in [[-1.0, 0.5], [1.5, 0.5], [2.0, -0.1], [2.0, f64::NAN]] {
            assert!(
                matches!(NovoGradScalars::from_values(&bad), Err(Error::State(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decoupled_weight_decay_is_the_rules_own_and_l2_the_preludes() {
        let decoupled = NovoGrad {
            weight_decay: 0.3,
            ..Default::default()
        };
        assert_eq!(decoupled.hyper().weight_decay, 0.0);
        let mut s = Default::default();
        assert_eq!(decoupled.begin(&mut s, 0.1).weight_decay, 0.3);
        let l2 = NovoGrad {
            decoupled_weight_decay: false,
            ..decoupled
        };
        let h = l2.hyper();
        assert_eq!((h.weight_decay, h.decoupled_weight_decay), (0.3, false));
        let mut s = Default::default();
        assert_eq!(l2.begin(&mut s, 0.1).weight_decay, 0.0);
    }
}
