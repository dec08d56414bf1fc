//! The Transformer ("Noam") schedule of Vaswani et al. (2017): linear warm-up, then decay as
//! the inverse square root of the step.
//!
//! $$\eta_t = \eta_{\text{base}} \cdot d_{\text{model}}^{-1/2} \cdot \min\left((t+1)^{-1/2},\ (t+1)\cdot w^{-3/2}\right)$$
//!
//! with $w$ = `warmup_steps` and $t$ counted from 0 (the paper's step number is $t + 1$); the
//! peak is at $t + 1 = w$. With the paper's setting the base learning rate is 1.
//!
//! PyTorch has no class for it: this is `LambdaLR(optimizer, lambda t: d_model**-0.5 *
//! min((t+1)**-0.5, (t+1) * warmup_steps**-1.5))`. Both parameters are required.
//! JSON form: `{"kind": "noam", "d_model": 512, "warmup_steps": 4000}`.

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::{error::ensure, Result};

/// Linear warm-up then inverse-square-root decay (Vaswani et al. 2017).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noam {
    /// The model width $d_{\text{model}}$ (at least 1); the rate scales as its inverse square root.
    pub d_model: u64,
    /// Warm-up steps (at least 1): the rate peaks at step `warmup_steps − 1` (0-based).
    pub warmup_steps: u64,
}

impl Noam {
    /// The Noam schedule for width `d_model` and `warmup_steps` warm-up steps.
    pub fn new(d_model: u64, warmup_steps: u64) -> Self {
        Self {
            d_model,
            warmup_steps,
        }
    }
}

impl Schedule for Noam {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        // `max(1)` only matters for invalid zeros, which would divide by zero.
        let d_model = self.d_model.max(1) as f64;
        let warmup = self.warmup_steps.max(1) as f64;
        let n = step as f64 + 1.0;
        base_lr * d_model.powf(-0.5) * f64::min(n.powf(-0.5), n * warmup.powf(-1.5))
    }

    fn validate(&self) -> Result<()> {
        ensure(
            self.d_model > 0,
            "noam",
            "d_model",
            self.d_model as f64,
            "must be >= 1",
        )?;
        ensure(
            self.warmup_steps > 0,
            "noam",
            "warmup_steps",
            self.warmup_steps as f64,
            "must be >= 1",
        )
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("noam", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::Error;

    #[test]
    fn warms_up_then_decays() {
        let s = Noam::new(64, 8);
        assert!(s.validate().is_ok());
        // Step 0: 64^-0.5 · 8^-1.5.
        assert!(close(s.lr(1.0, 0), 0.125 * 8f64.powf(-1.5), 1e-15));
        // Linear during warm-up, peak at t + 1 = warmup, where both branches meet.
        for t in 0..7 {
            assert!(s.lr(1.0, t + 1) > s.lr(1.0, t));
            assert!(close(s.lr(1.0, t), (t + 1) as f64 * s.lr(1.0, 0), 1e-14));
        }
        assert!(close(s.lr(1.0, 7), 0.125 / 8f64.sqrt(), 1e-15));
        for t in 7..500 {
            assert!(s.lr(1.0, t + 1) < s.lr(1.0, t));
        }
        assert!(close(s.lr(1.0, 99), 0.125 / 10.0, 1e-15));
        assert!(s.lr(1.0, u64::MAX) > 0.0);
        assert_finite_everywhere(&s, 1.0);
    }

    #[test]
    fn scales_with_base_lr() {
        let s = Noam::new(512, 4000);
        for t in [0, 100, 3999, 10_000] {
            assert!(close(s.lr(2.0, t), 2.0 * s.lr(1.0, t), 1e-15));
        }
    }

    #[test]
    fn invalid_parameters_are_refused() {
        for (d_model, warmup_steps, field) in [(0, 10, "d_model"), (512, 0, "warmup_steps")] {
            let s = Noam::new(d_model, warmup_steps);
            match s.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "noam",
                    name,
                    ..
                }) => assert_eq!(name, field),
                other => panic!("{s:?}: {other:?}"),
            }
            assert!(s.lr(1.0, 0).is_finite());
            assert!(s.lr(1.0, u64::MAX).is_finite());
        }
    }

    #[test]
    fn round_trips() {
        assert_round_trip(&Noam::new(64, 8), 1.0, 50);
    }
}
