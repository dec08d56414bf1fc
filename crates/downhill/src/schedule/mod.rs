//! Learning-rate schedules: pure functions of the step count.
//!
//! A schedule maps `(base_lr, step)` to the learning rate in force for step `step` (0-based:
//! the first step uses `step = 0`), like PyTorch's `LRScheduler` with `scheduler.step()` called
//! after every `optimizer.step()`. The step count is the only state; it lives in the optimizer
//! (and so in its checkpoint), so resuming never replays a scheduler.
//!
//! Every schedule is computed in closed form, so `lr` is exact for any step (PyTorch's
//! recursive "chainable" forms agree with it to rounding, well within `1e-12` relative).
//!
//! | `kind` | type | PyTorch |
//! |---|---|---|
//! | `constant` | [`Constant`] | (no scheduler) |
//! | `step` | [`StepLr`] | `StepLR` |
//! | `exponential` | [`Exponential`] | `ExponentialLR` |
//! | `cosine` | [`Cosine`] | `CosineAnnealingLR` |
//! | `linear` | [`Linear`] | `LinearLR` |
//! | `noam` | [`Noam`] | `LambdaLR` with the Transformer lambda |
//! | `one_cycle` | [`OneCycle`] | `OneCycleLR` (learning rate only) |
//! | `cosine_warm_restarts` | [`CosineWarmRestarts`] | `CosineAnnealingWarmRestarts` |
//! | `sequential` | [`Sequential`] | `SequentialLR` |
//! | — | [`Custom`] | `LambdaLR` (any closure; not serializable) |
//!
//! The JSON form is an object with a `kind` and the schedule's parameters under PyTorch's
//! names, e.g. `{"kind": "cosine", "t_max": 20, "eta_min": 0.001}`; omitted parameters take
//! PyTorch's defaults, a `note` key (free text) is ignored, and any other key is refused.

use std::fmt::Debug;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result};

pub mod constant;
pub mod cosine;
pub mod custom;
pub mod exponential;
pub mod linear;
pub mod noam;
pub mod one_cycle;
pub mod restarts;
pub mod sequential;
pub mod step;

pub use constant::Constant;
pub use cosine::Cosine;
pub use custom::Custom;
pub use exponential::Exponential;
pub use linear::Linear;
pub use noam::Noam;
pub use one_cycle::{AnnealStrategy, OneCycle};
pub use restarts::CosineWarmRestarts;
pub use sequential::Sequential;
pub use step::StepLr;

/// A learning-rate schedule.
pub trait Schedule: Debug + Send + Sync {
    /// The learning rate in force at `step` (0-based) for a parameter group whose base
    /// learning rate is `base_lr`.
    fn lr(&self, base_lr: f64, step: u64) -> f64;
    /// Refuse invalid parameters.
    fn validate(&self) -> Result<()>;
    /// The schedule in the reference-case / configuration JSON form (`{"kind": …, …}`), or
    /// `None` for one that cannot be written down (a closure).
    fn to_json(&self) -> Option<serde_json::Value>;
}

/// The `kind` names that [`from_json`] knows.
pub const KINDS: &[&str] = &[
    "constant",
    "step",
    "exponential",
    "cosine",
    "linear",
    "noam",
    "one_cycle",
    "cosine_warm_restarts",
    "sequential",
];

/// How deeply `sequential` schedules may nest in JSON (a guard against stack exhaustion).
const MAX_DEPTH: usize = 32;

/// Parse a schedule from its JSON form (`{"kind": "cosine", "t_max": 20, …}`).
///
/// Unknown kinds give [`Error::Unknown`]; JSON that does not parse (not an object, missing
/// `kind`, unknown key, wrong type, missing parameter) gives [`Error::Options`]; parameters
/// out of range give [`Error::InvalidHyperparameter`] from [`Schedule::validate`].
pub fn from_json(value: &serde_json::Value) -> Result<Arc<dyn Schedule>> {
    from_json_at_depth(value, 0)
}

/// [`from_json`], `depth` levels inside `sequential` schedules.
pub(crate) fn from_json_at_depth(value: &Value, depth: usize) -> Result<Arc<dyn Schedule>> {
    if depth > MAX_DEPTH {
        return Err(options_error(
            "schedule",
            format!("schedules nested more than {MAX_DEPTH} levels deep"),
        ));
    }
    let Some(object) = value.as_object() else {
        return Err(options_error(
            "schedule",
            format!("expected an object with a \"kind\", got {value}"),
        ));
    };
    let kind = match object.get("kind") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(options_error(
                "schedule",
                format!("\"kind\" must be a string, got {other}"),
            ))
        }
        None => return Err(options_error("schedule", "missing field `kind`".into())),
    };
    let mut params = object.clone();
    params.remove("kind");
    params.remove("note");
    let params = Value::Object(params);
    let schedule: Arc<dyn Schedule> = match kind {
        "constant" => Arc::new(parse::<Constant>(kind, params)?),
        "step" => Arc::new(parse::<StepLr>(kind, params)?),
        "exponential" => Arc::new(parse::<Exponential>(kind, params)?),
        "cosine" => Arc::new(parse::<Cosine>(kind, params)?),
        "linear" => Arc::new(parse::<Linear>(kind, params)?),
        "noam" => Arc::new(parse::<Noam>(kind, params)?),
        "one_cycle" => Arc::new(parse::<OneCycle>(kind, params)?),
        "cosine_warm_restarts" => Arc::new(parse::<CosineWarmRestarts>(kind, params)?),
        "sequential" => Arc::new(Sequential::from_json_params(params, depth)?),
        other => {
            return Err(Error::Unknown {
                kind: "schedule",
                name: other.to_string(),
                known: KINDS.join(", "),
            })
        }
    };
    schedule.validate()?;
    Ok(schedule)
}

/// An [`Error::Options`] for the schedule `what`.
pub(crate) fn options_error(what: &str, message: String) -> Error {
    Error::Options {
        what: what.to_string(),
        message,
    }
}

/// Deserialize the parameters (the JSON object without `kind` and `note`) of schedule `kind`.
pub(crate) fn parse<T: DeserializeOwned>(kind: &str, params: Value) -> Result<T> {
    serde_json::from_value(params)
        .map_err(|e| options_error(&format!("schedule '{kind}'"), e.to_string()))
}

/// The JSON form of a serde-serializable schedule: its fields plus `"kind": kind`.
pub(crate) fn tagged_json<T: Serialize>(kind: &str, schedule: &T) -> Option<Value> {
    match serde_json::to_value(schedule).ok()? {
        Value::Object(mut map) => {
            map.insert("kind".into(), Value::String(kind.into()));
            Some(Value::Object(map))
        }
        _ => None,
    }
}

/// `base_lr * factor`, but `0` when `base_lr` is `0` (so that an overflowing factor never
/// turns a zero learning rate into NaN).
pub(crate) fn scale(base_lr: f64, factor: f64) -> f64 {
    if base_lr == 0.0 {
        0.0
    } else {
        base_lr * factor
    }
}

/// Shared helpers for the schedules' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use super::Schedule;

    /// `|a - b| <= tol * max(|b|, tiny)`.
    pub fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(f64::MIN_POSITIVE)
    }

    /// `to_json` → `from_json` gives the same lrs on `0..n` and at a few huge steps.
    pub fn assert_round_trip(s: &dyn Schedule, base_lr: f64, n: u64) {
        let json = s.to_json().expect("serializable");
        let back = super::from_json(&json).expect("round trip parses");
        assert_eq!(back.to_json(), Some(json));
        for t in (0..n).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let (a, b) = (s.lr(base_lr, t), back.lr(base_lr, t));
            assert!(a == b || (a.is_nan() && b.is_nan()), "step {t}: {a} vs {b}");
        }
    }

    /// The lr is finite at a spread of steps, including huge ones.
    pub fn assert_finite_everywhere(s: &dyn Schedule, base_lr: f64) {
        for t in (0..1000).chain([
            1 << 31,
            1 << 32,
            1 << 53,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ]) {
            let lr = s.lr(base_lr, t);
            assert!(lr.is_finite(), "{s:?}: lr({base_lr}, {t}) = {lr}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::close;
    use super::*;
    use serde_json::json;

    /// Every `schedule__*.json` reference case: the lr at each step matches PyTorch's.
    #[test]
    fn matches_pytorch_reference_cases() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("reference directory")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("schedule__") && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        assert!(
            files.len() >= 8,
            "expected the schedule reference cases, found {files:?}"
        );
        for path in &files {
            let text = std::fs::read_to_string(path).expect("readable case");
            let case: Value = serde_json::from_str(&text).expect("valid JSON");
            let base_lr = case["options"]["lr"].as_f64().expect("options.lr");
            let schedule =
                from_json(&case["schedule"]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let steps = case["steps"].as_array().expect("steps");
            assert!(!steps.is_empty());
            for (i, step) in steps.iter().enumerate() {
                let want = step["lr"].as_f64().expect("steps[i].lr");
                let got = schedule.lr(base_lr, i as u64);
                assert!(
                    close(got, want, 1e-12),
                    "{}: step {i}: got {got:e}, torch {want:e} (rel {:e})",
                    path.display(),
                    (got - want).abs() / want.abs()
                );
            }
            // And the parsed schedule round-trips through its JSON form.
            test_util::assert_round_trip(schedule.as_ref(), base_lr, steps.len() as u64 + 5);
        }
    }

    #[test]
    fn every_kind_parses_with_defaults_and_note() {
        let cases = [
            json!({"kind": "constant"}),
            json!({"kind": "step", "step_size": 3}),
            json!({"kind": "exponential", "gamma": 0.5}),
            json!({"kind": "cosine", "t_max": 10}),
            json!({"kind": "linear"}),
            json!({"kind": "noam", "d_model": 512, "warmup_steps": 4000}),
            json!({"kind": "one_cycle", "max_lr": 0.1, "total_steps": 100}),
            json!({"kind": "cosine_warm_restarts", "t_0": 10}),
            json!({"kind": "sequential", "milestones": [], "schedules": [{"kind": "constant"}]}),
        ];
        assert_eq!(cases.len(), KINDS.len());
        for (case, kind) in cases.iter().zip(KINDS) {
            assert_eq!(case["kind"], *kind);
            let s = from_json(case).unwrap_or_else(|e| panic!("{case}: {e}"));
            test_util::assert_round_trip(s.as_ref(), 0.1, 50);
            test_util::assert_finite_everywhere(s.as_ref(), 0.1);
            let mut with_note = case.clone();
            with_note["note"] = json!("free text");
            assert!(from_json(&with_note).is_ok(), "{with_note}");
        }
    }

    #[test]
    fn unknown_kind_is_refused() {
        match from_json(&json!({"kind": "polynomial", "power": 2})) {
            Err(Error::Unknown { kind, name, known }) => {
                assert_eq!(kind, "schedule");
                assert_eq!(name, "polynomial");
                assert!(known.contains("cosine_warm_restarts"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_an_options_error() {
        let bad = [
            json!(null),
            json!(3),
            json!("cosine"),
            json!([{"kind": "constant"}]),
            json!({}),
            json!({"kind": 3}),
            json!({"kind": "constant", "factor": 0.5}),
            json!({"kind": "step"}),
            json!({"kind": "step", "step_size": 3, "gama": 0.5}),
            json!({"kind": "step", "step_size": -3}),
            json!({"kind": "step", "step_size": 2.5}),
            json!({"kind": "step", "step_size": "3"}),
            json!({"kind": "exponential"}),
            json!({"kind": "exponential", "gamma": "0.9"}),
            json!({"kind": "cosine", "t_max": 10, "T_max": 10}),
            json!({"kind": "one_cycle", "max_lr": 0.1, "total_steps": 10, "anneal_strategy": "exp"}),
            json!({"kind": "sequential", "schedules": [{"kind": "constant"}]}),
            json!({"kind": "sequential", "milestones": [], "schedules": [3]}),
            json!({"kind": "sequential", "milestones": [], "schedules": [{"kind": "linear", "x": 1}]}),
        ];
        for case in &bad {
            match from_json(case) {
                Err(Error::Options { .. }) => {}
                other => panic!("{case}: expected an Options error, got {other:?}"),
            }
        }
    }

    #[test]
    fn out_of_range_parameters_are_refused_after_parsing() {
        let bad = [
            json!({"kind": "step", "step_size": 0}),
            json!({"kind": "exponential", "gamma": 0.0}),
            json!({"kind": "cosine", "t_max": 10, "eta_min": -1.0}),
            json!({"kind": "linear", "start_factor": 0.0}),
            json!({"kind": "noam", "d_model": 0, "warmup_steps": 4000}),
            json!({"kind": "one_cycle", "max_lr": 0.1, "total_steps": 10, "pct_start": 1.5}),
            json!({"kind": "cosine_warm_restarts", "t_0": 10, "t_mult": 0}),
            json!({"kind": "sequential", "milestones": [3, 3], "schedules": [
                {"kind": "constant"}, {"kind": "constant"}, {"kind": "constant"}]}),
            json!({"kind": "sequential", "milestones": [3], "schedules": [
                {"kind": "constant"}, {"kind": "step", "step_size": 0}]}),
        ];
        for case in &bad {
            match from_json(case) {
                Err(Error::InvalidHyperparameter { .. }) => {}
                other => panic!("{case}: expected InvalidHyperparameter, got {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut value = json!({"kind": "constant"});
        for _ in 0..200 {
            value = json!({"kind": "sequential", "milestones": [], "schedules": [value]});
        }
        assert!(matches!(from_json(&value), Err(Error::Options { .. })));
    }
}
