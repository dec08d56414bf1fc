//! Reference cases: trajectories recorded from PyTorch (and, for SGDW, Lookahead and SWATS,
//! from implementations written from the papers), and their replay.
//!
//! One loader and one tolerance table serve both `cargo test` and `downhill verify`. The
//! format is described in `tests/reference/FORMAT.md`: a case starts from `init`, feeds each
//! step's `grads`, and must then hold that step's `params`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

mod lowbit;
pub use lowbit::StoredState;

use crate::kernel::{DType, Float};
use crate::optim::registry::{self, Setup};
use crate::optimizer::{Optimizer, ParamInfo};
use crate::StateDict;
use crate::{schedule, Clip};

/// One reference case, as stored.
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    /// `<optimizer>/<variant>`.
    pub name: String,
    /// What produced the expected values.
    #[serde(default)]
    pub source: String,
    /// The registry name of the optimizer.
    pub optimizer: String,
    /// Hyperparameters under the producing library's names (PyTorch's, or optax's for cases
    /// whose `source` is optax: see [`options`]).
    pub options: Value,
    /// A learning-rate schedule in its JSON form, or null.
    pub schedule: Option<Value>,
    /// Global-norm clipping before each step, or null.
    pub clip_grad_norm: Option<f64>,
    /// `"f32"` or `"f64"`.
    pub dtype: String,
    /// Shape of every parameter tensor.
    pub shapes: Vec<Vec<usize>>,
    /// Initial parameters, one flat list per tensor.
    pub init: Vec<Vec<f64>>,
    /// The steps.
    pub steps: Vec<CaseStep>,
    /// SWATS only: per tensor, the step at which the reference switched to SGD.
    #[serde(default)]
    pub switched_at_step: Option<Vec<Option<u64>>>,
    /// State stored in fewer bits (`"8bit-blockwise"` or `"bf16"`; the `lowbit` cases):
    /// then each step records the state and the case is replayed teacher-forced.
    #[serde(default)]
    pub state_precision: Option<String>,
    /// Elements per 8-bit block.
    #[serde(default)]
    pub block_size: Option<usize>,
    /// Tensors with fewer elements keep `f32` state under 8 bits.
    #[serde(default)]
    pub min_8bit_size: Option<usize>,
    /// The 8-bit maps the case used: `signed` and `unsigned`, 256 entries each.
    #[serde(default)]
    pub quantization_maps: Option<BTreeMap<String, Vec<f64>>>,
}

/// One step of a case.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseStep {
    /// The learning rate in force for this step.
    pub lr: f64,
    /// The gradient fed, one flat list per tensor.
    pub grads: Vec<Vec<f64>>,
    /// The parameters after the step.
    pub params: Vec<Vec<f64>>,
    /// The state after the step, per tensor and buffer name, as stored (`lowbit` cases).
    #[serde(default)]
    pub state: Option<Vec<BTreeMap<String, StoredState>>>,
}

/// Options that optax names differently from downhill (which follows PyTorch's convention),
/// per optimizer: `(optax name, downhill name)`.
const OPTAX_RENAMES: &[(&str, &str, &str)] = &[
    ("prodigy", "estim_lr0", "d0"),
    ("prodigy", "estim_lr_coef", "d_coef"),
];

/// Defaults of bitsandbytes' optimizers that differ from downhill's (whose Lion is optax's):
/// `(optimizer, option, bitsandbytes' default)`.
const BNB_DEFAULTS: &[(&str, &str, f64)] = &[("lion", "weight_decay", 0.0)];

/// The case's options under downhill's names. PyTorch cases are taken as they are; for
/// optax cases (`source` starting with "optax") `learning_rate` becomes `lr`, `b1`, `b2` and
/// `b3` become `betas` (absent ones take the optimizer's defaults), and the renames of
/// `OPTAX_RENAMES` apply. Everything else keeps its name. Cases of state in fewer bits
/// (bitsandbytes' algorithm) get bitsandbytes' defaults for what they leave out
/// (`BNB_DEFAULTS`).
pub fn options(case: &Case) -> Result<Value, String> {
    let Some(given) = case.options.as_object() else {
        return Err(format!("options: expected an object, got {}", case.options));
    };
    if case.state_precision.is_some() {
        // bitsandbytes' defaults where they are not downhill's.
        let mut out = given.clone();
        for (opt, key, value) in BNB_DEFAULTS {
            if case.optimizer == *opt && !out.contains_key(*key) {
                out.insert((*key).into(), Value::from(*value));
            }
        }
        return Ok(Value::Object(out));
    }
    if !case.source.starts_with("optax") {
        return Ok(case.options.clone());
    }
    let mut out = serde_json::Map::new();
    let mut betas: Vec<(usize, Value)> = Vec::new();
    for (k, v) in given {
        let beta = ["b1", "b2", "b3"].iter().position(|b| b == k);
        let renamed = OPTAX_RENAMES
            .iter()
            .find(|(opt, from, _)| *opt == case.optimizer && from == k)
            .map(|(_, _, to)| *to);
        match (k.as_str(), beta, renamed) {
            (_, Some(i), _) => betas.push((i, v.clone())),
            ("learning_rate", _, _) => {
                out.insert("lr".into(), v.clone());
            }
            (_, _, Some(to)) => {
                out.insert(to.into(), v.clone());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if !betas.is_empty() {
        let defaults = registry::defaults(&case.optimizer).map_err(|e| e.to_string())?;
        let mut full = match defaults.get("betas") {
            Some(Value::Array(b)) => b.clone(),
            _ => {
                return Err(format!(
                    "options: '{}' has no betas for b1/b2/b3",
                    case.optimizer
                ))
            }
        };
        for (i, v) in betas {
            match full.get_mut(i) {
                Some(slot) => *slot = v,
                None => return Err(format!("options: '{}' has no b{}", case.optimizer, i + 1)),
            }
        }
        out.insert("betas".into(), Value::Array(full));
    }
    Ok(Value::Object(out))
}

/// The largest relative error a case of this element type may show.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-9,
        DType::F32 => 1e-4,
    }
}

/// The result of replaying a case.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The case's name.
    pub name: String,
    /// The element type it ran in.
    pub dtype: DType,
    /// Steps replayed.
    pub steps: usize,
    /// Worst relative error over all steps: `max |ours − ref| / max(1, max |ref|)`.
    pub worst: f64,
    /// The step (1-based) where it occurred.
    pub worst_step: usize,
    /// The threshold for the case's element type.
    pub threshold: f64,
    /// Mismatches other than parameter values (SWATS switching step, stored state).
    pub notes: Vec<String>,
    /// What else the replay found that is not a failure (8-bit codes at a midpoint).
    pub info: Vec<String>,
}

impl Replay {
    /// Within tolerance and no other mismatch.
    pub fn passed(&self) -> bool {
        self.worst <= self.threshold && self.notes.is_empty()
    }
}

/// Parse a case from JSON text and check it is complete and consistent.
pub fn parse(text: &str) -> Result<Case, String> {
    let case: Case = serde_json::from_str(text).map_err(|e| e.to_string())?;
    check(&case)?;
    Ok(case)
}

fn dtype_of(case: &Case) -> Result<DType, String> {
    match case.dtype.as_str() {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        other => Err(format!(
            "dtype: expected \"f32\" or \"f64\", got \"{other}\""
        )),
    }
}

fn check_lists(what: &str, shapes: &[Vec<usize>], lists: &[Vec<f64>]) -> Result<(), String> {
    if lists.len() != shapes.len() {
        return Err(format!(
            "{what}: {} tensors, but shapes lists {}",
            lists.len(),
            shapes.len()
        ));
    }
    for (i, (shape, list)) in shapes.iter().zip(lists).enumerate() {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("shapes[{i}] = {shape:?} overflows"))?;
        if list.len() != n {
            return Err(format!(
                "{what}[{i}]: {} values, but shape {shape:?} holds {n}",
                list.len()
            ));
        }
        if let Some(j) = list.iter().position(|x| !x.is_finite()) {
            return Err(format!("{what}[{i}][{j}] is not finite ({})", list[j]));
        }
    }
    Ok(())
}

fn check(case: &Case) -> Result<(), String> {
    dtype_of(case)?;
    if case.shapes.is_empty() {
        return Err("shapes: no tensors".into());
    }
    if case.steps.is_empty() {
        return Err("steps: no steps".into());
    }
    check_lists("init", &case.shapes, &case.init)?;
    for (i, s) in case.steps.iter().enumerate() {
        check_lists(&format!("steps[{i}].grads"), &case.shapes, &s.grads)?;
        check_lists(&format!("steps[{i}].params"), &case.shapes, &s.params)?;
        if !s.lr.is_finite() {
            return Err(format!("steps[{i}].lr is not finite"));
        }
    }
    if let Some(c) = case.clip_grad_norm {
        if !c.is_finite() {
            return Err("clip_grad_norm is not finite".into());
        }
    }
    if let Some(sw) = &case.switched_at_step {
        if sw.len() != case.shapes.len() {
            return Err(format!(
                "switched_at_step: {} entries for {} tensors",
                sw.len(),
                case.shapes.len()
            ));
        }
    }
    Ok(())
}

/// What runs a case's optimizer: one step with the case's gradients, after which `params`
/// holds the new parameters; and the state at the end.
pub trait Stepper<F: Float> {
    /// Take a step.
    fn step(&mut self, params: &mut [Vec<F>], grads: &[Vec<F>]) -> Result<(), String>;
    /// The optimizer's whole state.
    fn state_dict(&self) -> Result<StateDict, String>;
    /// Replace the optimizer's state by a whole state (the teacher-forced replay of the
    /// low-precision cases).
    fn load_state_dict(&mut self, _state: &StateDict) -> Result<(), String> {
        Err(format!("{UNSUPPORTED}loading a state"))
    }
}

/// How an [`Executor`]'s error starts when it cannot run the case's optimizer at all (the
/// GPU and Muon's matrix products): the case is skipped, with the rest of the message as the
/// reason, not failed ([`unsupported`]).
pub const UNSUPPORTED: &str = "unsupported here: ";

/// The reason, when a replay's error says the executor does not run the case's optimizer
/// ([`UNSUPPORTED`]).
pub fn unsupported(error: &str) -> Option<&str> {
    error.strip_prefix(UNSUPPORTED)
}

/// Where a case is replayed: builds its optimizer (`name`, `options`, parameters, setup)
/// starting from parameters `init`, for each element type. An executor that does not run
/// the optimizer at all says so with an error starting with [`UNSUPPORTED`].
pub trait Executor {
    /// The optimizer in `f32`.
    fn f32(&self, build: Build<'_>, init: &[Vec<f32>]) -> Result<Box<dyn Stepper<f32>>, String>;
    /// The optimizer in `f64`.
    fn f64(&self, build: Build<'_>, init: &[Vec<f64>]) -> Result<Box<dyn Stepper<f64>>, String>;
    /// Whether it replays the cases whose state is stored in fewer bits (teacher-forced,
    /// through [`Stepper::load_state_dict`]).
    fn replays_low_precision_state(&self) -> bool {
        false
    }
}

/// What a case asks to build.
#[derive(Clone, Copy, Debug)]
pub struct Build<'a> {
    /// The registry name.
    pub name: &'a str,
    /// Its options.
    pub options: &'a serde_json::Value,
    /// The parameters.
    pub params: &'a [ParamInfo],
    /// Schedule and clipping.
    pub setup: &'a Setup,
}

/// The CPU: [`registry::build`] over host vectors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl<F: Float> Stepper<F> for Box<dyn Optimizer<F>> {
    fn step(&mut self, params: &mut [Vec<F>], grads: &[Vec<F>]) -> Result<(), String> {
        let mut ps: Vec<&mut [F]> = params.iter_mut().map(|p| &mut p[..]).collect();
        let gs: Vec<&[F]> = grads.iter().map(|g| &g[..]).collect();
        Optimizer::step(&mut **self, &mut ps, &gs)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn state_dict(&self) -> Result<StateDict, String> {
        Ok(Optimizer::state_dict(&**self))
    }
    fn load_state_dict(&mut self, state: &StateDict) -> Result<(), String> {
        Optimizer::load_state_dict(&mut **self, state).map_err(|e| e.to_string())
    }
}

fn cpu<F: Float>(b: Build<'_>) -> Result<Box<dyn Stepper<F>>, String> {
    let opt = registry::build::<F>(b.name, b.options, b.params.to_vec(), b.setup)
        .map_err(|e| e.to_string())?;
    Ok(Box::new(opt))
}

impl Executor for Cpu {
    fn f32(&self, b: Build<'_>, _: &[Vec<f32>]) -> Result<Box<dyn Stepper<f32>>, String> {
        cpu(b)
    }
    fn f64(&self, b: Build<'_>, _: &[Vec<f64>]) -> Result<Box<dyn Stepper<f64>>, String> {
        cpu(b)
    }
    fn replays_low_precision_state(&self) -> bool {
        true
    }
}

/// Replay a case through downhill. An `Err` means the case could not be replayed (bad
/// hyperparameters, unknown optimizer or schedule, a refused step).
pub fn replay(case: &Case) -> Result<Replay, String> {
    replay_on(case, &Cpu)
}

/// Replay a case on `executor`.
pub fn replay_on<E: Executor>(case: &Case, executor: &E) -> Result<Replay, String> {
    check(case)?;
    if let Some(p) = &case.state_precision {
        if executor.replays_low_precision_state() {
            return lowbit::replay_on(case, executor);
        }
        return Err(format!(
            "state in {p} is replayed on the CPU only (teacher-forced, through checkpoints)"
        ));
    }
    match dtype_of(case)? {
        DType::F32 => replay_as::<f32>(case, |b, init| executor.f32(b, init)),
        DType::F64 => replay_as::<f64>(case, |b, init| executor.f64(b, init)),
    }
}

fn to_float<F: Float>(what: &str, v: &[f64]) -> Result<Vec<F>, String> {
    v.iter()
        .map(|&x| {
            let y = F::from_f64(x);
            if y.is_finite() {
                Ok(y)
            } else {
                Err(format!("{what}: {x} overflows {}", F::DTYPE))
            }
        })
        .collect()
}

/// The case's schedule and clipping.
fn setup_of(case: &Case) -> Result<Setup, String> {
    Ok(Setup {
        schedule: match &case.schedule {
            Some(s) if !s.is_null() => Some(schedule::from_json(s).map_err(|e| e.to_string())?),
            _ => None,
        },
        clip: Clip {
            max_norm: case.clip_grad_norm,
            max_value: None,
        },
        ..Setup::default()
    })
}

/// The case's tensors, named `p0`, `p1`, ….
fn infos_of(case: &Case) -> Vec<ParamInfo> {
    case.shapes
        .iter()
        .enumerate()
        .map(|(i, s)| ParamInfo::new(format!("p{i}"), s.clone()))
        .collect()
}

/// `max |ours − want| / max(1, max |want|)` over every element; +∞ if any is NaN.
fn step_error<F: Float>(ours: &[Vec<F>], want: &[Vec<f64>]) -> f64 {
    let scale = want.iter().flatten().fold(1.0f64, |a, &x| a.max(x.abs()));
    let diff = ours
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(&o, &r)| (o.to_f64() - r).abs())
        .fold(0.0f64, |a, d| {
            if d.is_nan() || a.is_nan() {
                f64::NAN
            } else {
                a.max(d)
            }
        });
    let err = diff / scale;
    if err.is_nan() {
        f64::INFINITY
    } else {
        err
    }
}

fn replay_as<F: Float>(
    case: &Case,
    build: impl FnOnce(Build<'_>, &[Vec<F>]) -> Result<Box<dyn Stepper<F>>, String>,
) -> Result<Replay, String> {
    let setup = setup_of(case)?;
    let infos = infos_of(case);
    let mut params: Vec<Vec<F>> = case
        .init
        .iter()
        .map(|v| to_float("init", v))
        .collect::<Result<_, _>>()?;
    let options = options(case)?;
    let what = Build {
        name: &case.optimizer,
        options: &options,
        params: &infos,
        setup: &setup,
    };
    let mut opt = build(what, &params)?;
    let mut report = Replay {
        name: case.name.clone(),
        dtype: F::DTYPE,
        steps: case.steps.len(),
        worst: 0.0,
        worst_step: 0,
        threshold: tolerance(F::DTYPE),
        notes: Vec::new(),
        info: Vec::new(),
    };
    for (i, s) in case.steps.iter().enumerate() {
        let grads: Vec<Vec<F>> = s
            .grads
            .iter()
            .map(|v| to_float("grads", v))
            .collect::<Result<_, _>>()?;
        opt.step(&mut params, &grads)
            .map_err(|e| format!("step {}: {e}", i + 1))?;
        let err = step_error(&params, &s.params);
        if err > report.worst {
            report.worst = err;
            report.worst_step = i + 1;
        }
    }
    if let Some(expected) = &case.switched_at_step {
        let state = opt.state_dict()?;
        for (i, want) in expected.iter().enumerate() {
            let got = state
                .scalar(&format!("g0.p{i}.switched_at"))
                .ok()
                .filter(|&x| x > 0.0)
                .map(|x| x as u64);
            if got != *want {
                report.notes.push(format!(
                    "tensor {i} switched to SGD at {got:?}, reference at {want:?}"
                ));
            }
        }
    }
    Ok(report)
}
