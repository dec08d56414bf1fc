//! ADOPT: Adam with the gradient normalized by the *previous* second moment (so the two are
//! independent) and the momentum taken after the normalization; it converges for any β₂.
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2$ (`betas`), $\epsilon$ (`eps`), weight
//! decay $\lambda$ and gradient $g_t$ (after `maximize` and clipping), at step $t$. The first
//! step only initializes the second moment and leaves the parameter as it is:
//!
//! $$
//! v_1 = g_1^2, \qquad m_1 = 0, \qquad \theta_1 = \theta_0.
//! $$
//!
//! From step 2 on:
//!
//! $$
//! \begin{aligned}
//! g_t &\leftarrow g_t + \lambda\,\theta_{t-1} && \text{(L2 form: \texttt{weight\_decay})}\\
//! \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) && \text{(decoupled form)}\\
//! n_t &= \operatorname{clip}\Bigl(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},\
//!   -(t-1)^{1/4},\ (t-1)^{1/4}\Bigr) && \text{(no clip without \texttt{use\_clipping})}\\
//! v_t &= (1-\beta_2)\, g_t^2 + \beta_2 v_{t-1}\\
//! m_t &= (1-\beta_1)\, n_t + \beta_1 m_{t-1}\\
//! \theta_t &= \theta_{t-1} + (-\gamma)\, m_t
//!   \quad\text{or with Nesterov } \theta_{t-1} + (-\gamma)\,\bigl((1-\beta_1)\, n_t + \beta_1 m_t\bigr)
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default | optax (`optax.contrib.adopt`) |
//! |---|---|---|
//! | `lr` | 0.001 | `learning_rate` (no default) |
//! | `betas` | (0.9, 0.9999) | `b1`, `b2` |
//! | `eps` | 1e-6 | `eps` |
//! | `nesterov` | false | `nesterov` |
//! | `use_clipping` | true | `use_clipping` (with `clip_value_fn` $= x^{1/4}$) |
//! | `weight_decay` | 0 | — |
//! | `decoupled_weight_decay` | false | — |
//! | `maximize` | false | — |
//!
//! State: `m` (optax's `mu`) and `v` (`nu`); per tensor, `step` (the first step is the one
//! where `step` goes from 0 to 1).
//!
//! This is optax 0.2.8's `optax.contrib.adopt` (`scale_by_adopt`, then
//! `scale_by_learning_rate`), in optax's order of operations, with its default clipping of the
//! normalized gradient to $\pm(t-1)^{1/4}$ (optax's `clip_value_fn` applied to the step count
//! before the step). Differences from it: `clip_value_fn` cannot be changed (only switched off
//! with `use_clipping: false`); optax has no default learning rate, 0.001 here is the paper's.
//! On the first step optax computes $m_1 = 0\cdot n_1 + 1\cdot m_0$, which is NaN when
//! $g_1/\epsilon$ overflows (without clipping); here $m$ is simply left at 0. Weight decay
//! (either form) and `maximize` are downhill's additions, applied before the rule like every
//! rule's (so decoupled decay also shrinks the parameter on the first step).
//!
//! # References
//! - S. Taniguchi, K. Harada, G. Minegishi, Y. Oshima, S. C. Jeong, G. Nagahara, T. Iiyama,
//!   M. Suzuki, Y. Iwasawa, Y. Matsuo, *ADOPT: Modified Adam Can Converge with Any β₂ with the
//!   Optimal Rate*, NeurIPS 2024, arXiv:2411.02853.
//!
//! # Example
//! ```
//! use downhill::{optim::adopt::Adopt, Optimizer, ParamInfo, RuleOptimizer};
//! let adopt = Adopt { lr: 0.1, ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(adopt, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0f32];
//! opt.step(&mut [&mut x[..]], &[&[6.0f32][..]])?;
//! assert_eq!(x[0], 3.0); // the first step only measures the gradient
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]]; // d/dx x²
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::adam::check_betas;
use super::{torch_hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::Lane;
use crate::Result;

/// ADOPT's configuration (optax's `optax.contrib.adopt`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adopt {
    /// Learning rate γ.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first and second moments.
    pub betas: (f64, f64),
    /// Lower bound of the normalizer √v.
    pub eps: f64,
    /// Nesterov momentum (optax's form).
    pub nesterov: bool,
    /// Clip the normalized gradient to ±(t − 1)^¼ at step t.
    pub use_clipping: bool,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled rather than L2 weight decay.
    pub decoupled_weight_decay: bool,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for Adopt {
    fn default() -> Self {
        Adopt {
            lr: 1e-3,
            betas: (0.9, 0.9999),
            eps: 1e-6,
            nesterov: false,
            use_clipping: true,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Per-step constants of ADOPT.
#[derive(Clone, Copy, Debug)]
pub struct AdoptCoef {
    /// The first step: set `v = g²` and nothing else.
    first: bool,
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    eps: f64,
    /// The clipping bound (t − 1)^¼, or +∞ without clipping.
    clip: f64,
    use_clipping: bool,
    nesterov: bool,
    neg_lr: f64,
}

impl Rule for Adopt {
    const NAME: &'static str = "adopt";
    type Scalars = StepCount;
    type Coef = AdoptCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("adopt", "lr", self.lr)?;
        check_betas("adopt", self.betas, self.eps)?;
        check::non_negative("adopt", "weight_decay", self.weight_decay)
    }

    torch_hyper!();

    fn buffers(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdoptCoef {
        let count = s.step;
        s.step += 1;
        let (beta1, beta2) = self.betas;
        AdoptCoef {
            first: count == 0,
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            eps: self.eps,
            clip: if self.use_clipping {
                (count as f64).powf(0.25)
            } else {
                f64::INFINITY
            },
            use_clipping: self.use_clipping,
            nesterov: self.nesterov,
            neg_lr: -lr,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(c: &AdoptCoef, p: L, g: L, s: &mut [L; MAX_BUFFERS], _: &mut [L; 2]) -> L {
        let g2 = g * g;
        if c.first {
            s[1] = g2;
            return p;
        }
        let mut n = g / s[1].sqrt().max(L::c(c.eps));
        if c.use_clipping {
            n = n.max(L::c(-c.clip)).min(L::c(c.clip));
        }
        s[1] = L::c(c.one_minus_beta2) * g2 + L::c(c.beta2) * s[1];
        let m = L::c(c.one_minus_beta1) * n + L::c(c.beta1) * s[0];
        s[0] = m;
        let u = if c.nesterov {
            L::c(c.one_minus_beta1) * n + L::c(c.beta1) * m
        } else {
            m
        };
        p + u * L::c(c.neg_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn invalid_hyperparameters_are_refused() {
        let bad = [
            Adopt {
                lr: -1e-3,
                ..Default::default()
            },
            Adopt {
                betas: (1.0, 0.9999),
                ..Default::default()
            },
            Adopt {
                betas: (0.9, f64::NAN),
                ..Default::default()
            },
            Adopt {
                eps: f64::NAN,
                ..Default::default()
            },
            Adopt {
                weight_decay: f64::INFINITY,
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{r:?}"
            );
        }
        assert!(Adopt::default().validate().is_ok());
    }

    fn step(r: &Adopt, sc: &mut StepCount, p: f64, g: f64, s: &mut [f64; MAX_BUFFERS]) -> f64 {
        let c = r.begin(sc, r.lr);
        Adopt::update(&c, p, g, s, &mut [0.0; 2])
    }

    #[test]
    fn first_steps_by_hand() {
        let r = Adopt {
            lr: 0.1,
            betas: (0.5, 0.75),
            ..Default::default()
        };
        let mut sc = StepCount::default();
        let mut s = [0.0f64; MAX_BUFFERS];
        // Step 1 only measures: v = g² = 4.
        let p = step(&r, &mut sc, 1.0, -2.0, &mut s);
        assert_eq!((p, s[0], s[1]), (1.0, 0.0, 4.0));
        // Step 2 (clip ±1): n = 3/√4 = 1.5 → 1; v = 0.25·9 + 0.75·4 = 5.25; m = 0.5;
        // p = 1 − 0.1·0.5 = 0.95.
        let p = step(&r, &mut sc, p, 3.0, &mut s);
        assert_eq!((s[0], s[1]), (0.5, 5.25));
        assert!((p - 0.95).abs() < 1e-15, "{p}");
        // Step 3 (clip ±2^¼): n = −1/√5.25, m = 0.5·n + 0.25.
        let p3 = step(&r, &mut sc, p, -1.0, &mut s);
        let m = 0.5 * (-1.0 / 5.25f64.sqrt()) + 0.25;
        assert!((s[0] - m).abs() < 1e-15);
        assert!((p3 - (0.95 - 0.1 * m)).abs() < 1e-15, "{p3}");
    }

    #[test]
    fn clipping_off_and_nesterov() {
        let r = Adopt {
            lr: 0.1,
            betas: (0.5, 0.75),
            use_clipping: false,
            nesterov: true,
            ..Default::default()
        };
        let mut sc = StepCount::default();
        let mut s = [0.0f64; MAX_BUFFERS];
        step(&r, &mut sc, 1.0, -2.0, &mut s);
        // n = 1.5 (not clipped), m = 0.75; Nesterov: u = 0.5·1.5 + 0.5·0.75 = 1.125.
        let p = step(&r, &mut sc, 1.0, 3.0, &mut s);
        assert_eq!(s[0], 0.75);
        assert!((p - (1.0 - 0.1125)).abs() < 1e-15, "{p}");
        // eps bounds the normalizer from below: v = 0 gives n = g/eps.
        let r = Adopt { eps: 0.5, ..r };
        let mut sc = StepCount::default();
        let mut s = [0.0f64; MAX_BUFFERS];
        step(&r, &mut sc, 0.0, 0.0, &mut s);
        step(&r, &mut sc, 0.0, 0.25, &mut s);
        assert_eq!(s[0], 0.25); // 0.5·(0.25/0.5)
    }
}
