//! Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).
//!
//! The steps are cut into cycles of lengths $T_0, T_0 m, T_0 m^2, \dots$ ($m$ = `t_mult`).
//! With $T_i$ the length of the cycle that step $t$ falls in and $T_{\text{cur}}$ the step's
//! position inside it ($0 \le T_{\text{cur}} < T_i$):
//!
//! $$\eta_t = \eta_{\min} + \frac{(\eta_{\text{base}} - \eta_{\min})\left(1 + \cos\frac{\pi T_{\text{cur}}}{T_i}\right)}{2}$$
//!
//! so the rate restarts at the base at the first step of each cycle.
//!
//! PyTorch: `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0, T_mult=1,
//! eta_min=0.0)` stepped with `scheduler.step()` (no epoch argument) after every optimizer
//! step; $T_{\text{cur}}$ and $T_i$ are computed with integers exactly as PyTorch counts them.
//! Defaults: `t_mult = 1`, `eta_min = 0`; `t_0` is required.
//! JSON form: `{"kind": "cosine_warm_restarts", "t_0": 5, "t_mult": 2, "eta_min": 0.0}`.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::{error::check, error::ensure, Result};

fn default_t_mult() -> u64 {
    1
}

/// Cosine annealing restarted every cycle, cycles growing by `t_mult`
/// (PyTorch's `CosineAnnealingWarmRestarts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineWarmRestarts {
    /// Length of the first cycle in steps (at least 1).
    pub t_0: u64,
    /// Each cycle is `t_mult` times as long as the one before (at least 1; default `1`).
    #[serde(default = "default_t_mult")]
    pub t_mult: u64,
    /// The minimum learning rate (finite, `>= 0`; default `0`).
    #[serde(default)]
    pub eta_min: f64,
}

impl CosineWarmRestarts {
    /// Restarts every `t_0` steps, annealing to 0.
    pub fn new(t_0: u64) -> Self {
        Self {
            t_0,
            t_mult: default_t_mult(),
            eta_min: 0.0,
        }
    }

    /// `(T_cur, T_i)` for `step`: the position inside the current cycle and its length.
    pub fn position(&self, step: u64) -> (u64, u64) {
        // `max(1)` only matters for invalid zeros (refused by `validate`).
        let t_0 = self.t_0.max(1);
        if self.t_mult <= 1 {
            return (step % t_0, t_0);
        }
        // Cycles at least double, so this runs at most 64 times.
        let (mut cur, mut t_i) = (step, t_0);
        while cur >= t_i {
            cur -= t_i;
            t_i = t_i.saturating_mul(self.t_mult);
        }
        (cur, t_i)
    }
}

impl Schedule for CosineWarmRestarts {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        let (t_cur, t_i) = self.position(step);
        self.eta_min
            + (base_lr - self.eta_min) * (1.0 + (PI * t_cur as f64 / t_i as f64).cos()) / 2.0
    }

    fn validate(&self) -> Result<()> {
        ensure(
            self.t_0 > 0,
            "cosine_warm_restarts",
            "t_0",
            self.t_0 as f64,
            "must be >= 1",
        )?;
        ensure(
            self.t_mult > 0,
            "cosine_warm_restarts",
            "t_mult",
            self.t_mult as f64,
            "must be >= 1",
        )?;
        check::non_negative("cosine_warm_restarts", "eta_min", self.eta_min)
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("cosine_warm_restarts", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::Error;

    /// PyTorch's own bookkeeping: one increment, at most one restart per step.
    fn torch_position(t_0: u64, t_mult: u64, step: u64) -> (u64, u64) {
        let (mut cur, mut t_i) = (0, t_0);
        for _ in 0..step {
            cur += 1;
            if cur >= t_i {
                cur -= t_i;
                t_i *= t_mult;
            }
        }
        (cur, t_i)
    }

    #[test]
    fn cycles_match_pytorchs_counting() {
        for (t_0, t_mult) in [(5, 2), (1, 1), (1, 2), (3, 1), (4, 3), (2, 10)] {
            let s = CosineWarmRestarts {
                t_0,
                t_mult,
                eta_min: 0.0,
            };
            for step in 0..300 {
                assert_eq!(
                    s.position(step),
                    torch_position(t_0, t_mult, step),
                    "{s:?} {step}"
                );
            }
        }
    }

    #[test]
    fn restarts_at_cycle_boundaries() {
        let s = CosineWarmRestarts {
            t_0: 5,
            t_mult: 2,
            eta_min: 0.01,
        };
        assert!(s.validate().is_ok());
        // Cycles: [0, 5), [5, 15), [15, 35), ...
        for start in [0, 5, 15, 35, 75] {
            assert_eq!(s.lr(0.1, start), 0.1, "restart at {start}");
        }
        for (start, end) in [(0, 5), (5, 15), (15, 35)] {
            for t in start..end - 1 {
                assert!(s.lr(0.1, t + 1) < s.lr(0.1, t));
            }
            // The last step of a cycle is still above eta_min; the cosine would reach it one
            // step later, where the restart happens instead.
            assert!(s.lr(0.1, end - 1) > 0.01);
        }
        assert!(close(s.lr(0.1, 10), 0.01 + 0.09 * 0.5, 1e-14));
        assert_finite_everywhere(&s, 0.1);
    }

    #[test]
    fn huge_steps_are_fast_and_finite() {
        for t_mult in [1, 2, 3, u64::MAX] {
            let s = CosineWarmRestarts {
                t_0: 7,
                t_mult,
                eta_min: 0.0,
            };
            for step in [u64::MAX, u64::MAX - 1, 1 << 63] {
                let (cur, t_i) = s.position(step);
                assert!(cur < t_i);
                let lr = s.lr(1.0, step);
                assert!((0.0..=1.0).contains(&lr));
            }
        }
        let one = CosineWarmRestarts::new(u64::MAX);
        assert_eq!(one.position(u64::MAX), (0, u64::MAX));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = [
            (0, 1, 0.0, "t_0"),
            (5, 0, 0.0, "t_mult"),
            (5, 1, -0.1, "eta_min"),
            (5, 1, f64::NAN, "eta_min"),
        ];
        for (t_0, t_mult, eta_min, field) in bad {
            let s = CosineWarmRestarts {
                t_0,
                t_mult,
                eta_min,
            };
            match s.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "cosine_warm_restarts",
                    name,
                    ..
                }) => assert_eq!(name, field),
                other => panic!("{s:?}: {other:?}"),
            }
            for t in [0, 1, 7, u64::MAX] {
                let _ = s.lr(0.1, t);
            }
        }
    }

    #[test]
    fn defaults_and_round_trip() {
        let parsed = crate::schedule::from_json(
            &serde_json::json!({"kind": "cosine_warm_restarts", "t_0": 10}),
        )
        .unwrap();
        assert_eq!(parsed.to_json(), CosineWarmRestarts::new(10).to_json());
        assert_round_trip(
            &CosineWarmRestarts {
                t_0: 5,
                t_mult: 2,
                eta_min: 0.001,
            },
            0.1,
            100,
        );
    }
}
