//! AdEMAMix: Adam with a mixture of two momenta, a fast EMA and a slow one that keeps very old
//! gradients.
//!
//! With learning rate $\gamma$, decays $\beta_1, \beta_2, \beta_3$ (`betas`), mixing
//! coefficient $\alpha$ (`alpha`), $\epsilon$ (`eps`), $\bar\epsilon$ (`eps_root`), weight
//! decay $\lambda$ and gradient $g_t$ (after `maximize` and clipping), at step $t$:
//!
//! $$
//! \begin{aligned}
//! m^{(1)}_t &= (1-\beta_1)\, g_t + \beta_1 m^{(1)}_{t-1}\\
//! m^{(2)}_t &= (1-\beta_{3,t})\, g_t + \beta_{3,t}\, m^{(2)}_{t-1}\\
//! \nu_t &= (1-\beta_2)\, g_t^2 + \beta_2 \nu_{t-1}\\
//! \theta_t &= \theta_{t-1} - \gamma\left(
//!   \frac{m^{(1)}_t/(1-\beta_1^t) + \alpha_t\, m^{(2)}_t}
//!   {\sqrt{\nu_t/(1-\beta_2^t) + \bar\epsilon} + \epsilon} + \lambda\,\theta_{t-1}\right)
//! \end{aligned}
//! $$
//!
//! The slow momentum is not bias-corrected. Without warm-ups $\alpha_t = \alpha$ and
//! $\beta_{3,t} = \beta_3$. The paper's schedulers, evaluated at $k = t - 1$ (the steps
//! already taken, as optax evaluates a schedule) are the warm-ups `alpha_warmup` $=T_\alpha$
//! and `beta3_warmup` $=T_{\beta_3}$: for $k < T$,
//!
//! $$
//! \alpha_t = \frac{k}{T_\alpha}\,\alpha, \qquad
//! \beta_{3,t} = f^{-1}\!\Big(\big(1-\tfrac{k}{T_{\beta_3}}\big) f(\beta_1) +
//!   \tfrac{k}{T_{\beta_3}} f(\beta_3)\Big),\quad
//! f(\beta) = \frac{\ln 0.5}{\ln \beta} - 1,\ f^{-1}(x) = 0.5^{1/(x+1)},
//! $$
//!
//! and $\alpha$, $\beta_3$ from then on (the official implementation's `alpha_scheduler(alpha,
//! 0, T_alpha)` and `beta3_scheduler(beta3, beta1, T_beta3)`).
//!
//! | hyperparameter | default |
//! |---|---|
//! | `lr` | 0.001 |
//! | `betas` | (0.9, 0.999, 0.9999) |
//! | `alpha` | 5.0 |
//! | `eps` | 1e-8 |
//! | `eps_root` | 0 |
//! | `weight_decay` | 0 |
//! | `decoupled_weight_decay` | true |
//! | `alpha_warmup` | none |
//! | `beta3_warmup` | none |
//! | `maximize` | false |
//!
//! State: `m1` (fast EMA), `m2` (slow EMA), `nu` (second moment), optax's names; per tensor,
//! `step`.
//!
//! PyTorch has no AdEMAMix; this is optax 0.2.8's `optax.contrib.ademamix` with its defaults
//! (optax has no default learning rate; 0.001 is the authors' PyTorch code's). optax takes
//! `b3` and `alpha` either as numbers or as schedules of the step count; downhill takes
//! numbers plus the paper's two warm-ups (named as the authors' PyTorch code names them),
//! which reproduce optax given the official schedulers. Weight decay is added to the update,
//! as optax does (`add_decayed_weights` after the rescaling, then the learning rate: the
//! default `decoupled_weight_decay: true`).
//! `decoupled_weight_decay: false` instead adds PyTorch's L2 penalty $\lambda\theta$ to the
//! gradient before the rule (the generic weight-decay stage; with `true` [`Rule::hyper`]
//! reports no decay to that stage, as the rule applies it).
//!
//! # References
//! - M. Pagliardini, P. Ablin, D. Grangier, *The AdEMAMix Optimizer: Better, Faster, Older*,
//!   ICLR 2025, arXiv:2409.03137.
//!
//! # Example
//! ```
//! use downhill::{optim::ademamix::AdEMAMix, Optimizer, ParamInfo, RuleOptimizer};
//! let rule = AdEMAMix { lr: 0.05, alpha_warmup: Some(100), ..Default::default() };
//! let mut opt = RuleOptimizer::<f32, _>::new(rule, vec![ParamInfo::new("x", [1])])?;
//! let mut x = vec![3.0f32];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]];
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{Hyper, Rule, StepCount, MAX_BUFFERS};
use crate::error::check;
use crate::kernel::lowbit::QuantMap;
use crate::kernel::Lane;
use crate::Result;

/// AdEMAMix's configuration (optax's `optax.contrib.ademamix`); see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdEMAMix {
    /// Learning rate γ.
    pub lr: f64,
    /// Decays (β₁, β₂, β₃) of the fast EMA, the second moment and the slow EMA.
    pub betas: (f64, f64, f64),
    /// Weight α of the slow EMA.
    pub alpha: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// ε̄ added under the square root.
    pub eps_root: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// `true` (the reference's): λθ added to the update (`θ − γ(u + λθ)`); `false`: PyTorch's L2
    /// penalty, `g ← g + λθ` before the rule.
    pub decoupled_weight_decay: bool,
    /// Steps over which α rises linearly from 0 (the paper's T_α); none: α from the start.
    pub alpha_warmup: Option<u64>,
    /// Steps over which β₃ rises from β₁ (the paper's T_β₃); none: β₃ from the start.
    pub beta3_warmup: Option<u64>,
    /// Maximize instead of minimize.
    pub maximize: bool,
}

impl Default for AdEMAMix {
    fn default() -> Self {
        AdEMAMix {
            lr: 1e-3,
            betas: (0.9, 0.999, 0.9999),
            alpha: 5.0,
            eps: 1e-8,
            eps_root: 0.0,
            weight_decay: 0.0,
            decoupled_weight_decay: true,
            alpha_warmup: None,
            beta3_warmup: None,
            maximize: false,
        }
    }
}

impl AdEMAMix {
    /// α after `k` steps already taken (the paper's linear warm-up from 0).
    pub fn alpha_at(&self, k: u64) -> f64 {
        match self.alpha_warmup {
            Some(t) if k < t => (k as f64 / t as f64) * self.alpha,
            _ => self.alpha,
        }
    }

    /// β₃ after `k` steps already taken (the paper's warm-up from β₁, linear in the
    /// half-life).
    pub fn beta3_at(&self, k: u64) -> f64 {
        match self.beta3_warmup {
            Some(t) if k < t => {
                let f = |beta: f64| 0.5f64.ln() / beta.ln() - 1.0;
                let a = k as f64 / t as f64;
                let x = (1.0 - a) * f(self.betas.0) + a * f(self.betas.2);
                0.5f64.powf(1.0 / (x + 1.0))
            }
            _ => self.betas.2,
        }
    }
}

/// Per-step constants of AdEMAMix.
#[derive(Clone, Copy, Debug)]
pub struct AdEMAMixCoef {
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    beta3: f64,
    one_minus_beta3: f64,
    alpha: f64,
    bias_correction1: f64,
    bias_correction2: f64,
    eps: f64,
    eps_root: f64,
    weight_decay: f64,
    neg_lr: f64,
}

impl Rule for AdEMAMix {
    const NAME: &'static str = "ademamix";
    type Scalars = StepCount;
    type Coef = AdEMAMixCoef;

    fn validate(&self) -> Result<()> {
        check::non_negative("ademamix", "lr", self.lr)?;
        check::unit_interval("ademamix", "beta1", self.betas.0)?;
        check::unit_interval("ademamix", "beta2", self.betas.1)?;
        check::unit_interval("ademamix", "beta3", self.betas.2)?;
        check::non_negative("ademamix", "alpha", self.alpha)?;
        check::non_negative("ademamix", "eps", self.eps)?;
        check::non_negative("ademamix", "eps_root", self.eps_root)?;
        check::non_negative("ademamix", "weight_decay", self.weight_decay)
    }

    fn hyper(&self) -> Hyper {
        // Decoupled: applied by the rule, to the update (as optax); else the L2 penalty.
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
        &["m1", "m2", "nu"]
    }

    /// In 8 bits, the two first moments use the signed map and `nu` the unsigned one (as
    /// bitsandbytes' `AdEMAMix8bit`).
    fn quant_map(&self, k: usize) -> QuantMap {
        if k == 2 {
            QuantMap::Unsigned
        } else {
            QuantMap::Signed
        }
    }

    fn begin(&self, s: &mut StepCount, lr: f64) -> AdEMAMixCoef {
        let k = s.step;
        s.step += 1;
        let (beta1, beta2, _) = self.betas;
        let beta3 = self.beta3_at(k);
        let t = s.step as f64;
        AdEMAMixCoef {
            beta1,
            one_minus_beta1: 1.0 - beta1,
            beta2,
            one_minus_beta2: 1.0 - beta2,
            beta3,
            one_minus_beta3: 1.0 - beta3,
            alpha: self.alpha_at(k),
            bias_correction1: 1.0 - beta1.powf(t),
            bias_correction2: 1.0 - beta2.powf(t),
            eps: self.eps,
            eps_root: self.eps_root,
            weight_decay: if self.decoupled_weight_decay {
                self.weight_decay
            } else {
                0.0
            },
            neg_lr: -lr,
        }
    }

    #[inline(always)]
    fn update<L: Lane>(
        c: &AdEMAMixCoef,
        p: L,
        g: L,
        s: &mut [L; MAX_BUFFERS],
        _: &mut [L; 2],
    ) -> L {
        let m1 = L::c(c.one_minus_beta1) * g + L::c(c.beta1) * s[0];
        let m2 = L::c(c.one_minus_beta3) * g + L::c(c.beta3) * s[1];
        let nu = L::c(c.one_minus_beta2) * (g * g) + L::c(c.beta2) * s[2];
        s[0] = m1;
        s[1] = m2;
        s[2] = nu;
        let m1_hat = m1 / L::c(c.bias_correction1);
        let nu_hat = nu / L::c(c.bias_correction2);
        let mut u =
            (m1_hat + L::c(c.alpha) * m2) / ((nu_hat + L::c(c.eps_root)).sqrt() + L::c(c.eps));
        if c.weight_decay != 0.0 {
            u = u + L::c(c.weight_decay) * p;
        }
        p + L::c(c.neg_lr) * u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Optimizer, ParamInfo, RuleOptimizer};

    #[test]
    fn invalid_hyperparameters_are_refused() {
        for bad in [
            AdEMAMix {
                lr: f64::NAN,
                ..Default::default()
            },
            AdEMAMix {
                betas: (1.0, 0.999, 0.9999),
                ..Default::default()
            },
            AdEMAMix {
                betas: (0.9, -0.5, 0.9999),
                ..Default::default()
            },
            AdEMAMix {
                betas: (0.9, 0.999, 1.0),
                ..Default::default()
            },
            AdEMAMix {
                alpha: -1.0,
                ..Default::default()
            },
            AdEMAMix {
                eps: -1e-8,
                ..Default::default()
            },
            AdEMAMix {
                eps_root: f64::INFINITY,
                ..Default::default()
            },
            AdEMAMix {
                weight_decay: -0.1,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{bad:?}"
            );
        }
        assert!(AdEMAMix::default().validate().is_ok());
    }

    #[test]
    fn first_step_by_hand() {
        let rule = AdEMAMix {
            lr: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::new(rule, vec![ParamInfo::new("x", [1])]).unwrap();
        let mut x = [1.0f64];
        opt.step(&mut [&mut x[..]], &[&[0.5][..]]).unwrap();
        // m̂₁ = 0.5, m₂ = 1e-4·0.5 (no bias correction), ν̂ = 0.25.
        let want = 1.0 - 0.1 * ((0.5 + 5.0 * 0.5e-4) / (0.5 + 1e-8) + 0.5);
        assert!((x[0] - want).abs() < 1e-14, "{} vs {want}", x[0]);
        let sd = opt.state_dict();
        assert!((sd.buffer::<f64>("g0.x.m2", &[1]).unwrap()[0] - 0.5e-4).abs() < 1e-15);
    }

    #[test]
    fn warmups_follow_the_papers_schedulers() {
        let rule = AdEMAMix {
            betas: (0.9, 0.999, 0.999),
            alpha: 8.0,
            alpha_warmup: Some(10),
            beta3_warmup: Some(10),
            ..Default::default()
        };
        assert_eq!(rule.alpha_at(0), 0.0);
        assert_eq!(rule.alpha_at(5), 4.0);
        assert_eq!(rule.alpha_at(10), 8.0);
        assert_eq!(rule.alpha_at(1000), 8.0);
        // β₃ starts at β₁ and ends at β₃; half way the half-life is the mean of the two.
        assert!((rule.beta3_at(0) - 0.9).abs() < 1e-15);
        assert_eq!(rule.beta3_at(10), 0.999);
        let half_life = |b: f64| 0.5f64.ln() / b.ln();
        let mid = half_life(rule.beta3_at(5));
        assert!((mid - 0.5 * (half_life(0.9) + half_life(0.999))).abs() < 1e-9);
        let plain = AdEMAMix::default();
        assert_eq!(plain.alpha_at(0), 5.0);
        assert_eq!(plain.beta3_at(0), 0.9999);
    }

    #[test]
    fn decoupled_weight_decay_is_the_rules_own_and_l2_the_preludes() {
        let decoupled = AdEMAMix {
            weight_decay: 0.3,
            ..Default::default()
        };
        assert_eq!(decoupled.hyper().weight_decay, 0.0);
        let mut s = Default::default();
        assert_eq!(decoupled.begin(&mut s, 0.1).weight_decay, 0.3);
        let l2 = AdEMAMix {
            decoupled_weight_decay: false,
            ..decoupled
        };
        let h = l2.hyper();
        assert_eq!((h.weight_decay, h.decoupled_weight_decay), (0.3, false));
        let mut s = Default::default();
        assert_eq!(l2.begin(&mut s, 0.1).weight_decay, 0.0);
    }
}
