//! Linear ramp of the learning-rate factor from `start_factor` to `end_factor` (warm-up).
//!
//! $$\eta_t = \eta_{\text{base}}\left(s + (e - s)\,\frac{\min(t, T)}{T}\right)$$
//!
//! with $s$ = `start_factor`, $e$ = `end_factor` and $T$ = `total_iters`; after $T$ steps the
//! factor stays at $e$.
//!
//! PyTorch: `torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1/3, end_factor=1.0,
//! total_iters=5)`, in its closed form (PyTorch's recursive form agrees to rounding).
//! Defaults: `start_factor = 1/3`, `end_factor = 1`, `total_iters = 5`.
//! JSON form: `{"kind": "linear", "start_factor": 0.1, "end_factor": 1.0, "total_iters": 10}`.

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::{error::ensure, Result};

fn default_start_factor() -> f64 {
    1.0 / 3.0
}

fn default_end_factor() -> f64 {
    1.0
}

fn default_total_iters() -> u64 {
    5
}

/// Ramp the learning-rate factor linearly over `total_iters` steps (PyTorch's `LinearLR`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// The factor at step 0, in `(0, 1]` (default `1/3`).
    #[serde(default = "default_start_factor")]
    pub start_factor: f64,
    /// The factor from step `total_iters` on, in `[0, 1]` (default `1`).
    #[serde(default = "default_end_factor")]
    pub end_factor: f64,
    /// Steps of the ramp (at least 1; default `5`).
    #[serde(default = "default_total_iters")]
    pub total_iters: u64,
}

impl Default for Linear {
    /// PyTorch's defaults: `start_factor = 1/3`, `end_factor = 1`, `total_iters = 5`.
    fn default() -> Self {
        Self {
            start_factor: default_start_factor(),
            end_factor: default_end_factor(),
            total_iters: default_total_iters(),
        }
    }
}

impl Linear {
    /// A warm-up from `start_factor · base` to the base rate over `total_iters` steps.
    pub fn warmup(start_factor: f64, total_iters: u64) -> Self {
        Self {
            start_factor,
            end_factor: 1.0,
            total_iters,
        }
    }
}

impl Schedule for Linear {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        if self.total_iters == 0 {
            // Refused by `validate`; keep it finite anyway.
            return base_lr * self.end_factor;
        }
        let t = step.min(self.total_iters) as f64;
        let total = self.total_iters as f64;
        base_lr * (self.start_factor + (self.end_factor - self.start_factor) * t / total)
    }

    fn validate(&self) -> Result<()> {
        let (s, e) = (self.start_factor, self.end_factor);
        ensure(
            s > 0.0 && s <= 1.0,
            "linear",
            "start_factor",
            s,
            "must be in (0, 1]",
        )?;
        ensure(
            (0.0..=1.0).contains(&e),
            "linear",
            "end_factor",
            e,
            "must be in [0, 1]",
        )?;
        ensure(
            self.total_iters > 0,
            "linear",
            "total_iters",
            self.total_iters as f64,
            "must be >= 1",
        )
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("linear", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::Error;

    #[test]
    fn ramps_then_holds() {
        let s = Linear {
            start_factor: 0.1,
            end_factor: 1.0,
            total_iters: 10,
        };
        assert!(s.validate().is_ok());
        assert!(close(s.lr(0.1, 0), 0.01, 1e-15));
        assert!(close(s.lr(0.1, 1), 0.019, 1e-15));
        assert!(close(s.lr(0.1, 10), 0.1, 1e-15));
        for t in 0..10 {
            assert!(s.lr(0.1, t + 1) > s.lr(0.1, t));
        }
        // Continuous at the end of the ramp and flat after it.
        for t in [10, 11, 1000, u64::MAX] {
            assert_eq!(s.lr(0.1, t), s.lr(0.1, 10));
        }
        assert_finite_everywhere(&s, 0.1);
    }

    #[test]
    fn ramps_down_too() {
        let s = Linear {
            start_factor: 1.0,
            end_factor: 0.0,
            total_iters: 4,
        };
        assert!(s.validate().is_ok());
        assert_eq!(s.lr(2.0, 0), 2.0);
        assert_eq!(s.lr(2.0, 2), 1.0);
        assert_eq!(s.lr(2.0, 4), 0.0);
        assert_eq!(s.lr(2.0, 5), 0.0);
    }

    #[test]
    fn defaults_are_pytorchs() {
        let d = Linear::default();
        assert_eq!(
            (d.start_factor, d.end_factor, d.total_iters),
            (1.0 / 3.0, 1.0, 5)
        );
        let parsed = crate::schedule::from_json(&serde_json::json!({"kind": "linear"})).unwrap();
        assert_eq!(parsed.to_json(), d.to_json());
        assert_eq!(Linear::warmup(0.5, 3).lr(1.0, 3), 1.0);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = [
            (0.0, 1.0, 5, "start_factor"),
            (-0.1, 1.0, 5, "start_factor"),
            (1.5, 1.0, 5, "start_factor"),
            (f64::NAN, 1.0, 5, "start_factor"),
            (0.5, -0.1, 5, "end_factor"),
            (0.5, 1.1, 5, "end_factor"),
            (0.5, f64::NAN, 5, "end_factor"),
            (0.5, 1.0, 0, "total_iters"),
        ];
        for (start_factor, end_factor, total_iters, field) in bad {
            let s = Linear {
                start_factor,
                end_factor,
                total_iters,
            };
            match s.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "linear",
                    name,
                    ..
                }) => assert_eq!(name, field),
                other => panic!("{s:?}: {other:?}"),
            }
            let _ = s.lr(0.1, u64::MAX);
        }
        let zero = Linear {
            total_iters: 0,
            ..Linear::default()
        };
        assert!(zero.lr(0.1, 0).is_finite());
    }

    #[test]
    fn round_trips() {
        assert_round_trip(&Linear::warmup(0.1, 10), 0.1, 30);
    }
}
