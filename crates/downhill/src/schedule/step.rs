//! Step decay: multiply the learning rate by `gamma` every `step_size` steps.
//!
//! $$\eta_t = \eta_{\text{base}} \cdot \gamma^{\lfloor t / \text{step\_size} \rfloor}$$
//!
//! PyTorch: `torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma=0.1)`.
//! Defaults: `gamma = 0.1`; `step_size` is required.
//! JSON form: `{"kind": "step", "step_size": 7, "gamma": 0.5}`.

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::{error::check, error::ensure, Result};

fn default_gamma() -> f64 {
    0.1
}

/// Multiply the learning rate by `gamma` every `step_size` steps (PyTorch's `StepLR`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepLr {
    /// Steps between decays (at least 1).
    pub step_size: u64,
    /// Multiplicative decay factor (finite, `> 0`; default `0.1`).
    #[serde(default = "default_gamma")]
    pub gamma: f64,
}

impl StepLr {
    /// Decay by PyTorch's default `gamma = 0.1` every `step_size` steps.
    pub fn new(step_size: u64) -> Self {
        Self {
            step_size,
            gamma: default_gamma(),
        }
    }
}

impl Schedule for StepLr {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        // `checked_div` only matters for an invalid `step_size = 0`.
        let decays = step.checked_div(self.step_size).unwrap_or(0);
        super::scale(base_lr, self.gamma.powf(decays as f64))
    }

    fn validate(&self) -> Result<()> {
        ensure(
            self.step_size > 0,
            "step",
            "step_size",
            self.step_size as f64,
            "must be >= 1",
        )?;
        check::positive("step", "gamma", self.gamma)
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("step", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::Error;

    #[test]
    fn decays_every_step_size_steps() {
        let s = StepLr {
            step_size: 7,
            gamma: 0.5,
        };
        assert!(s.validate().is_ok());
        assert_eq!(s.lr(0.1, 0), 0.1);
        assert_eq!(s.lr(0.1, 6), 0.1);
        assert_eq!(s.lr(0.1, 7), 0.05);
        assert_eq!(s.lr(0.1, 13), 0.05);
        assert_eq!(s.lr(0.1, 14), 0.025);
        assert!(close(s.lr(0.1, 29), 0.00625, 1e-15));
        // Non-increasing for gamma < 1.
        for t in 0..100 {
            assert!(s.lr(0.1, t + 1) <= s.lr(0.1, t));
        }
        // Huge steps underflow to 0, never NaN.
        assert_eq!(s.lr(0.1, u64::MAX), 0.0);
        assert_finite_everywhere(&s, 0.1);
    }

    #[test]
    fn default_gamma_is_a_tenth() {
        let s = StepLr::new(3);
        assert_eq!(s.gamma, 0.1);
        assert!(close(s.lr(1.0, 3), 0.1, 1e-15));
        let parsed =
            crate::schedule::from_json(&serde_json::json!({"kind": "step", "step_size": 3}))
                .unwrap();
        assert_eq!(parsed.to_json(), s.to_json());
    }

    #[test]
    fn growth_with_zero_base_is_zero_not_nan() {
        let s = StepLr {
            step_size: 1,
            gamma: 10.0,
        };
        assert!(s.validate().is_ok());
        assert_eq!(s.lr(0.0, u64::MAX), 0.0);
        assert_eq!(s.lr(1.0, u64::MAX), f64::INFINITY);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = [
            (0, 0.1, "step_size"),
            (1, 0.0, "gamma"),
            (1, -0.5, "gamma"),
            (1, f64::NAN, "gamma"),
            (1, f64::INFINITY, "gamma"),
        ];
        for (step_size, gamma, field) in bad {
            let s = StepLr { step_size, gamma };
            match s.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "step",
                    name,
                    ..
                }) => assert_eq!(name, field),
                other => panic!("{s:?}: {other:?}"),
            }
            // Never panics, even when invalid.
            let _ = s.lr(0.1, u64::MAX);
        }
    }

    #[test]
    fn round_trips() {
        assert_round_trip(
            &StepLr {
                step_size: 7,
                gamma: 0.5,
            },
            0.1,
            50,
        );
    }
}
