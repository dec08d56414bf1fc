//! The constant schedule: the base learning rate at every step.
//!
//! $$\eta_t = \eta_{\text{base}}$$
//!
//! This is PyTorch with no `lr_scheduler` at all (not `ConstantLR`, which scales the rate by a
//! factor for a number of steps). It has no parameters; JSON form: `{"kind": "constant"}`.

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::Result;

/// The base learning rate at every step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constant {}

impl Constant {
    /// The constant schedule.
    pub fn new() -> Self {
        Self {}
    }
}

impl Schedule for Constant {
    fn lr(&self, base_lr: f64, _step: u64) -> f64 {
        base_lr
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        super::tagged_json("constant", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{assert_finite_everywhere, assert_round_trip};

    #[test]
    fn is_the_base_lr_everywhere() {
        let s = Constant::new();
        assert!(s.validate().is_ok());
        for t in [0, 1, 2, 100, u64::MAX] {
            assert_eq!(s.lr(0.1, t), 0.1);
            assert_eq!(s.lr(3.5, t), 3.5);
        }
        assert_finite_everywhere(&s, 0.1);
    }

    #[test]
    fn round_trips() {
        assert_eq!(
            Constant::new().to_json(),
            Some(serde_json::json!({"kind": "constant"}))
        );
        assert_round_trip(&Constant::new(), 0.1, 10);
    }
}
