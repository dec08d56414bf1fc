//! Schedules one after another, switching at milestones (e.g. a warm-up, then a decay).
//!
//! With milestones $m_1 < m_2 < \dots < m_{n-1}$, schedules $S_0, \dots, S_{n-1}$ and
//! $m_0 = 0$: for $m_i \le t < m_{i+1}$,
//!
//! $$\eta_t = S_i(\eta_{\text{base}},\ t - m_i)$$
//!
//! so each schedule starts from its own step 0 when it takes over, and all of them use the
//! group's base learning rate.
//!
//! PyTorch: `torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones)`, which
//! restarts the scheduler taking over with `scheduler.step(0)` (its closed form at step 0).
//! Validation is stricter than PyTorch's: there must be exactly one milestone fewer than
//! schedules, and the milestones must be strictly increasing and at least 1 (a milestone of 0
//! makes PyTorch's bookkeeping inconsistent). No defaults.
//! JSON form: `{"kind": "sequential", "milestones": [5], "schedules": [{"kind": "linear", …},
//! {"kind": "cosine", …}]}`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::Schedule;
use crate::{error::ensure, Result};

/// Schedules one after another, switching at `milestones` (PyTorch's `SequentialLR`).
#[derive(Clone, Debug)]
pub struct Sequential {
    /// The schedules, in order (at least one).
    pub schedules: Vec<Arc<dyn Schedule>>,
    /// The steps at which schedule `i + 1` takes over from schedule `i` (strictly increasing,
    /// `>= 1`, one fewer than `schedules`).
    pub milestones: Vec<u64>,
}

/// The JSON form, before the schedules inside are parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SequentialJson {
    schedules: Vec<Value>,
    milestones: Vec<u64>,
}

impl Sequential {
    /// `schedules` switched at `milestones`.
    pub fn new(schedules: Vec<Arc<dyn Schedule>>, milestones: Vec<u64>) -> Self {
        Self {
            schedules,
            milestones,
        }
    }

    /// Parse the parameters (`schedules`, `milestones`) of the JSON form; the schedules inside
    /// are parsed (and validated) by `from_json`, one level deeper.
    pub(crate) fn from_json_params(params: Value, depth: usize) -> Result<Self> {
        let raw: SequentialJson = super::parse("sequential", params)?;
        let schedules = raw
            .schedules
            .iter()
            .map(|s| super::from_json_at_depth(s, depth + 1))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::new(schedules, raw.milestones))
    }

    /// The schedule in force at `step` and the step it sees (`step` minus its milestone).
    fn active(&self, step: u64) -> Option<(&dyn Schedule, u64)> {
        // PyTorch's `bisect_right(milestones, step)`.
        let index = self.milestones.iter().take_while(|&&m| m <= step).count();
        let offset = match index {
            0 => 0,
            i => self.milestones[i - 1],
        };
        // With invalid (unvalidated) lengths, fall back on the last schedule.
        let schedule = self.schedules.get(index).or(self.schedules.last())?;
        Some((schedule.as_ref(), step.saturating_sub(offset)))
    }
}

impl Schedule for Sequential {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        match self.active(step) {
            Some((schedule, local)) => schedule.lr(base_lr, local),
            None => base_lr,
        }
    }

    fn validate(&self) -> Result<()> {
        ensure(
            !self.schedules.is_empty(),
            "sequential",
            "schedules",
            0.0,
            "must hold at least one schedule",
        )?;
        ensure(
            self.milestones.len() + 1 == self.schedules.len(),
            "sequential",
            "milestones",
            self.milestones.len() as f64,
            "must number one fewer than the schedules",
        )?;
        let mut previous = 0;
        for &m in &self.milestones {
            ensure(
                m > previous,
                "sequential",
                "milestones",
                m as f64,
                "must be >= 1 and strictly increasing",
            )?;
            previous = m;
        }
        self.schedules.iter().try_for_each(|s| s.validate())
    }

    fn to_json(&self) -> Option<Value> {
        let schedules = self
            .schedules
            .iter()
            .map(|s| s.to_json())
            .collect::<Option<Vec<_>>>()?;
        Some(serde_json::json!({
            "kind": "sequential",
            "milestones": self.milestones,
            "schedules": schedules,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip, close};
    use crate::schedule::{Constant, Cosine, Custom, Exponential, Linear, StepLr};
    use crate::Error;

    fn warmup_then_cosine() -> Sequential {
        Sequential::new(
            vec![
                Arc::new(Linear {
                    start_factor: 0.01,
                    end_factor: 1.0,
                    total_iters: 5,
                }),
                Arc::new(Cosine::new(25)),
            ],
            vec![5],
        )
    }

    #[test]
    fn switches_at_milestones_with_local_steps() {
        let s = warmup_then_cosine();
        assert!(s.validate().is_ok());
        assert!(close(s.lr(0.1, 0), 0.001, 1e-14));
        assert!(close(s.lr(0.1, 1), 0.0208, 1e-14));
        // Continuous at the join: the warm-up ends at the base rate, the cosine starts there.
        assert!(close(s.lr(0.1, 4), 0.1 * (0.01 + 0.99 * 0.8), 1e-14));
        assert_eq!(s.lr(0.1, 5), 0.1);
        for t in 0..5 {
            assert!(s.lr(0.1, t + 1) > s.lr(0.1, t));
        }
        for t in 5..30 {
            assert!(s.lr(0.1, t + 1) < s.lr(0.1, t));
        }
        assert!(close(s.lr(0.1, 29), Cosine::new(25).lr(0.1, 24), 0.0));
        assert!(s.lr(0.1, 30).abs() < 1e-15);
        assert_finite_everywhere(&s, 0.1);
    }

    #[test]
    fn three_stages() {
        let s = Sequential::new(
            vec![
                Arc::new(Constant::new()),
                Arc::new(StepLr::new(2)),
                Arc::new(Exponential::new(0.5)),
            ],
            vec![3, 7],
        );
        assert!(s.validate().is_ok());
        let want = [1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 1.0, 0.5, 0.25];
        for (t, w) in want.iter().enumerate() {
            assert!(close(s.lr(1.0, t as u64), *w, 1e-15), "step {t}");
        }
        assert_round_trip(&s, 1.0, 20);
    }

    #[test]
    fn invalid_setups_are_refused() {
        let c = || -> Arc<dyn Schedule> { Arc::new(Constant::new()) };
        let bad = [
            Sequential::new(vec![], vec![]),
            Sequential::new(vec![c(), c()], vec![]),
            Sequential::new(vec![c()], vec![3]),
            Sequential::new(vec![c(), c()], vec![0]),
            Sequential::new(vec![c(), c(), c()], vec![4, 4]),
            Sequential::new(vec![c(), c(), c()], vec![5, 4]),
            Sequential::new(vec![c(), Arc::new(Exponential::new(-1.0))], vec![3]),
        ];
        for s in &bad {
            assert!(
                matches!(s.validate(), Err(Error::InvalidHyperparameter { .. })),
                "{s:?}"
            );
            // Never panics, even unvalidated.
            for t in [0, 3, 4, 5, 100, u64::MAX] {
                let _ = s.lr(0.1, t);
            }
        }
        assert_eq!(Sequential::new(vec![], vec![1, 2]).lr(0.3, 5), 0.3);
    }

    #[test]
    fn json_form_and_closures() {
        let json = warmup_then_cosine().to_json().unwrap();
        assert_eq!(json["kind"], "sequential");
        assert_eq!(json["milestones"], serde_json::json!([5]));
        assert_eq!(json["schedules"][1]["kind"], "cosine");
        assert_round_trip(&warmup_then_cosine(), 0.1, 40);
        // A closure inside makes the whole schedule unserializable.
        let with_closure = Sequential::new(
            vec![
                Arc::new(Constant::new()),
                Arc::new(Custom::new("f", |b, _| b)),
            ],
            vec![2],
        );
        assert!(with_closure.validate().is_ok());
        assert_eq!(with_closure.to_json(), None);
    }
}
