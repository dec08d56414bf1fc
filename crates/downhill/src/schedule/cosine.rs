//! Cosine annealing from the base learning rate down to `eta_min` over `t_max` steps.
//!
//! $$\eta_t = \eta_{\min} + \frac{(\eta_{\text{base}} - \eta_{\min})\left(1 + \cos\frac{\pi t}{T_{\max}}\right)}{2}$$
//!
//! PyTorch: `torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max, eta_min=0.0)`, in
//! its closed form (PyTorch's recursive form agrees to rounding). As in PyTorch, past `t_max`
//! the cosine goes on: the rate climbs back to the base at `2·t_max`, and so on with period
//! `2·t_max` (use [`Sequential`](super::Sequential) to hold it instead).
//! Defaults: `eta_min = 0`; `t_max` is required.
//! JSON form: `{"kind": "cosine", "t_max": 20, "eta_min": 0.001}`.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::{error::check, error::ensure, Result};

/// Cosine annealing to `eta_min` over `t_max` steps (PyTorch's `CosineAnnealingLR`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosine {
    /// Steps of the half cosine from the base rate down to `eta_min` (at least 1).
    pub t_max: u64,
    /// The minimum learning rate (finite, `>= 0`; default `0`).
    #[serde(default)]
    pub eta_min: f64,
}

impl Cosine {
    /// Anneal to `eta_min = 0` over `t_max` steps.
    pub fn new(t_max: u64) -> Self {
        Self {
            t_max,
            eta_min: 0.0,
        }
    }
}

/// `η_min + (base − η_min)(1 + cos(π·t/period))/2`, PyTorch's order of operations, with `t`
/// reduced modulo `2·period` first (the cosine's period) so huge steps keep full precision.
pub(crate) fn cosine_anneal(base_lr: f64, eta_min: f64, t: u64, period: u64) -> f64 {
    let period = period.max(1);
    let t = match period.checked_mul(2) {
        Some(full) => t % full,
        None => t,
    };
    eta_min + (base_lr - eta_min) * (1.0 + (PI * t as f64 / period as f64).cos()) / 2.0
}

impl Schedule for Cosine {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        cosine_anneal(base_lr, self.eta_min, step, self.t_max)
    }

    fn validate(&self) -> Result<()> {
        ensure(
            self.t_max > 0,
            "cosine",
            "t_max",
            self.t_max as f64,
            "must be >= 1",
        )?;
        check::non_negative("cosine", "eta_min", self.eta_min)
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("cosine", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::Error;

    #[test]
    fn anneals_from_base_to_eta_min() {
        let s = Cosine {
            t_max: 20,
            eta_min: 0.001,
        };
        assert!(s.validate().is_ok());
        assert_eq!(s.lr(0.1, 0), 0.1);
        assert!(close(s.lr(0.1, 10), 0.0505, 1e-14));
        assert!(close(s.lr(0.1, 20), 0.001, 1e-12));
        // Monotone down to t_max, then back up (PyTorch's periodic continuation).
        for t in 0..20 {
            assert!(s.lr(0.1, t + 1) < s.lr(0.1, t));
        }
        for t in 20..40 {
            assert!(s.lr(0.1, t + 1) > s.lr(0.1, t));
        }
        assert!(close(s.lr(0.1, 40), 0.1, 1e-14));
        assert!(close(s.lr(0.1, 33), s.lr(0.1, 7), 1e-14));
        assert_finite_everywhere(&s, 0.1);
    }

    #[test]
    fn huge_steps_stay_periodic_and_in_range() {
        let s = Cosine::new(7);
        // u64::MAX = 2^64 - 1 ≡ 15 (mod 14).
        assert_eq!(s.lr(1.0, u64::MAX), s.lr(1.0, u64::MAX % 14));
        for t in [u64::MAX, u64::MAX - 1, 1 << 63] {
            let lr = s.lr(1.0, t);
            assert!((0.0..=1.0).contains(&lr));
        }
        // A period whose double overflows is still fine.
        let wide = Cosine::new(u64::MAX);
        assert!(wide.validate().is_ok());
        assert!(close(wide.lr(1.0, 0), 1.0, 0.0));
        assert!(wide.lr(1.0, u64::MAX).abs() < 1e-12);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = [
            (0, 0.0, "t_max"),
            (10, -0.1, "eta_min"),
            (10, f64::NAN, "eta_min"),
            (10, f64::INFINITY, "eta_min"),
        ];
        for (t_max, eta_min, field) in bad {
            let s = Cosine { t_max, eta_min };
            match s.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "cosine",
                    name,
                    ..
                }) => assert_eq!(name, field),
                other => panic!("{s:?}: {other:?}"),
            }
            let _ = s.lr(0.1, u64::MAX);
        }
        // t_max = 0 must not give NaN even though it is refused.
        assert!(Cosine::new(0).lr(0.1, 5).is_finite());
    }

    #[test]
    fn round_trips() {
        assert_round_trip(
            &Cosine {
                t_max: 20,
                eta_min: 0.001,
            },
            0.1,
            50,
        );
    }
}
