//! The 1cycle policy (Smith & Topin 2017): warm up from `max_lr / div_factor` to `max_lr`,
//! then anneal far below the start.
//!
//! With $\eta_0 = \eta_{\max}/\text{div\_factor}$ (initial), $\eta_{\min} =
//! \eta_0/\text{final\_div\_factor}$, $T$ = `total_steps` and $p$ = `pct_start`, the steps are
//! split into phases ending (inclusive, as floats) at
//!
//! * two phases (default): $e_1 = pT - 1$ ($\eta_0 \to \eta_{\max}$), $e_2 = T - 1$
//!   ($\eta_{\max} \to \eta_{\min}$);
//! * `three_phase`: $e_1 = pT - 1$ ($\eta_0 \to \eta_{\max}$), $e_2 = 2pT - 2$
//!   ($\eta_{\max} \to \eta_0$), $e_3 = T - 1$ ($\eta_0 \to \eta_{\min}$).
//!
//! Step $t$ belongs to the first phase with $t \le e_i$ (or to the last phase); with $s$ the
//! previous phase's end ($0$ for the first phase) and $\text{pct} = (t - s)/(e_i - s)$, the
//! learning rate anneals from the phase's start value $a$ to its end value $b$:
//!
//! $$\text{cos:}\quad \eta_t = b + \frac{a - b}{2}\left(1 + \cos(\pi\,\text{pct})\right)
//! \qquad\qquad \text{linear:}\quad \eta_t = (b - a)\,\text{pct} + a$$
//!
//! PyTorch: `torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr, total_steps,
//! pct_start=0.3, anneal_strategy='cos', cycle_momentum=False, div_factor=25.0,
//! final_div_factor=1e4, three_phase=False)`, reproduced operation for operation. Momentum
//! cycling is not included (it is `cycle_momentum=False`). Like PyTorch, the schedule ignores
//! the group's base learning rate and uses `max_lr`.
//!
//! Differences from PyTorch, where PyTorch fails:
//! * PyTorch raises for steps after `total_steps`. Here every such step gets the last phase's
//!   formula at `pct = 1`, i.e. $\eta_{\min}$: the rate stays at the floor after the cycle.
//!   Step `total_steps` itself (one past the cycle, which PyTorch still computes) is given
//!   exactly as PyTorch has it, quirk included: its `pct` exceeds 1, so a cosine has already
//!   turned back up (for 30 steps at `max_lr = 0.1`: about `5.6e-4` against a floor of
//!   `4e-7`) and a linear anneal overshoots below the floor, to a negative rate.
//! * A phase of zero length (e.g. $pT = 1$, so $e_1 = 0$; or `pct_start = 1`) makes PyTorch
//!   divide by zero; here its `pct` is taken as 1 (the phase's end value).
//!
//! Defaults: `pct_start = 0.3`, `anneal_strategy = "cos"`, `div_factor = 25`,
//! `final_div_factor = 1e4`, `three_phase = false`; `max_lr` and `total_steps` are required.
//! JSON form: `{"kind": "one_cycle", "max_lr": 0.1, "total_steps": 30, "pct_start": 0.3,
//! "anneal_strategy": "cos", "div_factor": 25.0, "final_div_factor": 10000.0,
//! "three_phase": false}`.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::{error::check, error::ensure, Result};

/// How [`OneCycle`] moves between a phase's start and end values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnealStrategy {
    /// Half a cosine (`"cos"`, PyTorch's default).
    #[default]
    Cos,
    /// A straight line (`"linear"`).
    Linear,
}

impl AnnealStrategy {
    /// From `start` (at `pct = 0`) to `end` (at `pct = 1`), PyTorch's formulas.
    fn anneal(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            AnnealStrategy::Cos => {
                let cos_out = (PI * pct).cos() + 1.0;
                end + (start - end) / 2.0 * cos_out
            }
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }
}

fn default_pct_start() -> f64 {
    0.3
}

fn default_div_factor() -> f64 {
    25.0
}

fn default_final_div_factor() -> f64 {
    1e4
}

/// The 1cycle learning-rate policy (PyTorch's `OneCycleLR`, learning rate only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneCycle {
    /// The peak learning rate (finite, `> 0`). The group's base learning rate is ignored.
    pub max_lr: f64,
    /// Steps in the cycle (at least 1).
    pub total_steps: u64,
    /// Fraction of the cycle spent increasing the rate, in `[0, 1]` (default `0.3`).
    #[serde(default = "default_pct_start")]
    pub pct_start: f64,
    /// Cosine or linear annealing (default cosine).
    #[serde(default)]
    pub anneal_strategy: AnnealStrategy,
    /// The initial rate is `max_lr / div_factor` (finite, `> 0`; default `25`).
    #[serde(default = "default_div_factor")]
    pub div_factor: f64,
    /// The final rate is `initial / final_div_factor` (finite, `> 0`; default `1e4`).
    #[serde(default = "default_final_div_factor")]
    pub final_div_factor: f64,
    /// Use the three-phase variant (back down to the initial rate, then the final
    /// annihilation) instead of two phases (default `false`).
    #[serde(default)]
    pub three_phase: bool,
}

impl OneCycle {
    /// A cycle peaking at `max_lr` over `total_steps` steps, with PyTorch's other defaults.
    pub fn new(max_lr: f64, total_steps: u64) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: default_pct_start(),
            anneal_strategy: AnnealStrategy::Cos,
            div_factor: default_div_factor(),
            final_div_factor: default_final_div_factor(),
            three_phase: false,
        }
    }

    /// The phases as `(end_step, start_lr, end_lr)`, PyTorch's arithmetic; the count in use.
    fn phases(&self) -> ([(f64, f64, f64); 3], usize) {
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let total = self.total_steps as f64;
        let first_end = self.pct_start * total - 1.0;
        let last_end = total - 1.0;
        if self.three_phase {
            let middle_end = 2.0 * self.pct_start * total - 2.0;
            (
                [
                    (first_end, initial, self.max_lr),
                    (middle_end, self.max_lr, initial),
                    (last_end, initial, min),
                ],
                3,
            )
        } else {
            (
                [
                    (first_end, initial, self.max_lr),
                    (last_end, self.max_lr, min),
                    (0.0, 0.0, 0.0),
                ],
                2,
            )
        }
    }
}

impl Schedule for OneCycle {
    fn lr(&self, _base_lr: f64, step: u64) -> f64 {
        let (phases, count) = self.phases();
        let phases = &phases[..count];
        if step > self.total_steps {
            // PyTorch raises here; stay at the end of the last phase.
            let (_, start, end) = phases[count - 1];
            return self.anneal_strategy.anneal(start, end, 1.0);
        }
        let t = step as f64;
        // The first phase whose end is at or after `t`, else the last; `start_step` is the
        // previous phase's end.
        let mut index = count - 1;
        let mut start_step = 0.0;
        for (i, &(end_step, _, _)) in phases[..count - 1].iter().enumerate() {
            if t <= end_step {
                index = i;
                break;
            }
            start_step = end_step;
        }
        let (end_step, start_lr, end_lr) = phases[index];
        let span = end_step - start_step;
        let pct = if span == 0.0 {
            // PyTorch divides by zero here.
            1.0
        } else {
            (t - start_step) / span
        };
        self.anneal_strategy.anneal(start_lr, end_lr, pct)
    }

    fn validate(&self) -> Result<()> {
        check::positive("one_cycle", "max_lr", self.max_lr)?;
        ensure(
            self.total_steps > 0,
            "one_cycle",
            "total_steps",
            self.total_steps as f64,
            "must be >= 1",
        )?;
        check::closed_unit_interval("one_cycle", "pct_start", self.pct_start)?;
        check::positive("one_cycle", "div_factor", self.div_factor)?;
        check::positive("one_cycle", "final_div_factor", self.final_div_factor)
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("one_cycle", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::Error;

    fn with(total_steps: u64, pct_start: f64, strategy: AnnealStrategy, three: bool) -> OneCycle {
        OneCycle {
            pct_start,
            anneal_strategy: strategy,
            three_phase: three,
            ..OneCycle::new(0.1, total_steps)
        }
    }

    #[test]
    fn two_phase_cos_endpoints_and_shape() {
        let s = OneCycle::new(0.1, 30);
        assert!(s.validate().is_ok());
        // Step 0 is the initial rate, computed PyTorch's way (0.1 + (0.004 − 0.1)).
        assert_eq!(s.lr(0.5, 0), 0.0040000000000000036);
        assert!(close(s.lr(0.5, 0), 0.1 / 25.0, 1e-14));
        // The peak at e1 = 0.3·30 − 1 = 8 (up to rounding of 0.3·30).
        assert!(close(s.lr(0.5, 8), 0.1, 1e-14));
        // The last step of the cycle is the final rate.
        assert_eq!(s.lr(0.5, 29), 0.1 / 25.0 / 1e4);
        for t in 0..8 {
            assert!(s.lr(0.5, t + 1) > s.lr(0.5, t));
        }
        for t in 8..29 {
            assert!(s.lr(0.5, t + 1) < s.lr(0.5, t));
        }
        // Base lr is ignored.
        assert_eq!(s.lr(0.5, 13), s.lr(7.0, 13));
        assert_finite_everywhere(&s, 0.5);
    }

    #[test]
    fn past_the_cycle() {
        let s = OneCycle::new(0.1, 30);
        let min = 0.1 / 25.0 / 1e4;
        // Step total_steps is still PyTorch's: pct = 22/21, past the end of the cosine, so the
        // rate is on its way back up ...
        let at_end = s.lr(0.1, 30);
        let pct: f64 = (30.0 - (0.3 * 30.0 - 1.0)) / (29.0 - (0.3 * 30.0 - 1.0));
        assert!(close(
            at_end,
            min + (0.1 - min) / 2.0 * (1.0 + (PI * pct).cos()),
            1e-14
        ));
        assert!(at_end > 100.0 * min);
        // ... later steps stay at the floor.
        for t in [31, 100, u64::MAX] {
            assert_eq!(s.lr(0.1, t), min);
        }
        // With linear annealing PyTorch's rate at step total_steps overshoots below zero.
        let lin = with(30, 0.3, AnnealStrategy::Linear, false);
        assert!(lin.lr(0.1, 30) < 0.0);
        assert!(close(lin.lr(0.1, 31), min, 1e-9));
        assert!(close(lin.lr(0.1, u64::MAX), min, 1e-9));
    }

    #[test]
    fn linear_anneal() {
        let s = with(11, 0.5, AnnealStrategy::Linear, false);
        assert!(s.validate().is_ok());
        // e1 = 4.5: steps 0..=4 rise linearly, the peak is not hit exactly.
        let initial = 0.1 / 25.0;
        assert_eq!(s.lr(0.0, 0), initial);
        assert!(close(
            s.lr(0.0, 3),
            (0.1 - initial) * (3.0 / 4.5) + initial,
            1e-14
        ));
        // Phase 2 from 4.5 to 10.
        assert!(close(
            s.lr(0.0, 5),
            (initial / 1e4 - 0.1) * (0.5 / 5.5) + 0.1,
            1e-14
        ));
        // (max − min)·1 + … cancels: exact only to rounding of max_lr, as in PyTorch.
        assert!((s.lr(0.0, 10) - initial / 1e4).abs() < 1e-16);
        for t in 0..4 {
            assert!(s.lr(0.0, t + 1) > s.lr(0.0, t));
        }
        // Steps 4 and 5 straddle the peak at 4.5 (step 5 is the higher of the two).
        assert!(s.lr(0.0, 5) > s.lr(0.0, 4));
        for t in 5..10 {
            assert!(s.lr(0.0, t + 1) < s.lr(0.0, t));
        }
    }

    #[test]
    fn three_phase_is_continuous_at_the_joins() {
        for strategy in [AnnealStrategy::Cos, AnnealStrategy::Linear] {
            let s = with(100, 0.25, strategy, true);
            assert!(s.validate().is_ok());
            let initial = 0.1 / 25.0;
            // e1 = 24, e2 = 48, e3 = 99.
            assert!(close(s.lr(0.0, 0), initial, 1e-14));
            assert!(close(s.lr(0.0, 24), 0.1, 1e-14));
            assert!(close(s.lr(0.0, 48), initial, 1e-12));
            assert!(close(s.lr(0.0, 99), initial / 1e4, 1e-9));
            for t in 0..24 {
                assert!(s.lr(0.0, t + 1) > s.lr(0.0, t));
            }
            for t in 24..99 {
                assert!(s.lr(0.0, t + 1) < s.lr(0.0, t));
            }
            // Phase 3's formula at the join agrees with phase 2's end.
            let p3_at_48 = strategy.anneal(initial, initial / 1e4, 0.0);
            assert!(close(p3_at_48, s.lr(0.0, 48), 1e-12));
        }
    }

    #[test]
    fn degenerate_phases_stay_finite() {
        // pct_start · total = 1: phase 1 ends at step 0 (PyTorch: ZeroDivisionError).
        let s = with(10, 0.1, AnnealStrategy::Cos, false);
        assert!(s.validate().is_ok());
        assert_eq!(s.lr(0.0, 0), 0.1);
        // pct_start = 1: the final phase has length zero at step total_steps.
        let s = with(10, 1.0, AnnealStrategy::Cos, false);
        assert!(close(s.lr(0.0, 9), 0.1, 1e-14));
        assert!(s.lr(0.0, 10).is_finite());
        // pct_start = 0 and odd three-phase splits.
        for (pct, three) in [
            (0.0, false),
            (0.0, true),
            (1.0, true),
            (0.55, true),
            (0.1, true),
        ] {
            for strategy in [AnnealStrategy::Cos, AnnealStrategy::Linear] {
                let s = with(10, pct, strategy, three);
                assert!(s.validate().is_ok());
                assert_finite_everywhere(&s, 0.0);
            }
        }
        let one = OneCycle::new(0.1, 1);
        assert_finite_everywhere(&one, 0.0);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let base = OneCycle::new(0.1, 30);
        let bad = [
            (
                OneCycle {
                    max_lr: 0.0,
                    ..base.clone()
                },
                "max_lr",
            ),
            (
                OneCycle {
                    max_lr: f64::NAN,
                    ..base.clone()
                },
                "max_lr",
            ),
            (
                OneCycle {
                    total_steps: 0,
                    ..base.clone()
                },
                "total_steps",
            ),
            (
                OneCycle {
                    pct_start: -0.1,
                    ..base.clone()
                },
                "pct_start",
            ),
            (
                OneCycle {
                    pct_start: 1.1,
                    ..base.clone()
                },
                "pct_start",
            ),
            (
                OneCycle {
                    pct_start: f64::NAN,
                    ..base.clone()
                },
                "pct_start",
            ),
            (
                OneCycle {
                    div_factor: 0.0,
                    ..base.clone()
                },
                "div_factor",
            ),
            (
                OneCycle {
                    div_factor: f64::INFINITY,
                    ..base.clone()
                },
                "div_factor",
            ),
            (
                OneCycle {
                    final_div_factor: -1.0,
                    ..base.clone()
                },
                "final_div_factor",
            ),
        ];
        for (s, field) in bad {
            match s.validate() {
                Err(Error::InvalidHyperparameter {
                    optimizer: "one_cycle",
                    name,
                    ..
                }) => assert_eq!(name, field),
                other => panic!("{s:?}: {other:?}"),
            }
            for t in [0, 1, 29, 30, 31, u64::MAX] {
                let _ = s.lr(0.1, t);
            }
        }
    }

    #[test]
    fn round_trips_and_parses_strategy_names() {
        assert_round_trip(&OneCycle::new(0.1, 30), 0.1, 40);
        assert_round_trip(&with(50, 0.2, AnnealStrategy::Linear, true), 0.1, 60);
        let json = with(50, 0.2, AnnealStrategy::Linear, true)
            .to_json()
            .unwrap();
        assert_eq!(json["anneal_strategy"], "linear");
        assert_eq!(
            OneCycle::new(0.1, 3).to_json().unwrap()["anneal_strategy"],
            "cos"
        );
    }
}
