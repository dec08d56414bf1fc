//! Exponential decay: multiply the learning rate by `gamma` every step.
//!
//! $$\eta_t = \eta_{\text{base}} \cdot \gamma^{t}$$
//!
//! PyTorch: `torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)`.
//! `gamma` is required (no default). JSON form: `{"kind": "exponential", "gamma": 0.9}`.

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::{error::check, Result};

/// Multiply the learning rate by `gamma` every step (PyTorch's `ExponentialLR`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exponential {
    /// Multiplicative decay factor per step (finite, `> 0`).
    pub gamma: f64,
}

impl Exponential {
    /// Decay by `gamma` every step.
    pub fn new(gamma: f64) -> Self {
        Self { gamma }
    }
}

impl Schedule for Exponential {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        super::scale(base_lr, self.gamma.powf(step as f64))
    }

    fn validate(&self) -> Result<()> {
        check::positive("exponential", "gamma", self.gamma)
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("exponential", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::Error;

    #[test]
    fn decays_geometrically() {
        let s = Exponential::new(0.9);
        assert!(s.validate().is_ok());
        assert_eq!(s.lr(0.1, 0), 0.1);
        assert!(close(s.lr(0.1, 1), 0.09, 1e-15));
        assert!(close(s.lr(0.1, 29), 0.1 * 0.9f64.powi(29), 1e-15));
        for t in 0..200 {
            assert!(s.lr(0.1, t + 1) < s.lr(0.1, t) || s.lr(0.1, t) == 0.0);
        }
        assert_eq!(s.lr(0.1, u64::MAX), 0.0);
        assert_finite_everywhere(&s, 0.1);
    }

    #[test]
    fn gamma_one_is_constant_and_growth_never_nan() {
        let s = Exponential::new(1.0);
        assert_eq!(s.lr(0.1, u64::MAX), 0.1);
        let g = Exponential::new(1.5);
        assert!(g.validate().is_ok());
        assert_eq!(g.lr(0.0, u64::MAX), 0.0);
        assert!(!g.lr(0.1, u64::MAX).is_nan());
    }

    #[test]
    fn invalid_gamma_is_refused() {
        for gamma in [0.0, -0.9, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            match Exponential::new(gamma).validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "exponential",
                    name: "gamma",
                    ..
                }) => {}
                other => panic!("gamma {gamma}: {other:?}"),
            }
        }
    }

    #[test]
    fn round_trips() {
        assert_round_trip(&Exponential::new(0.9), 0.1, 50);
    }
}
