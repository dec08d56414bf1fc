//! downhill's optimizers for candle: a [`candle_nn::Optimizer`] over [`Var`]s that updates
//! the variables in place through downhill's fused step.
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use downhill_candle::{Config, DownhillOptimizer};
//!
//! let w = Var::new(&[3.0f32, -2.0], &Device::Cpu)?;
//! let mut opt = DownhillOptimizer::new(vec![w.clone()], Config::adamw(0.1))?;
//! for _ in 0..100 {
//!     let loss = w.as_tensor().sqr()?.sum_all()?; // |w|²
//!     opt.backward_step(&loss)?;
//! }
//! assert!(w.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()? < 0.1);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! # How the step works
//! Every gradient's storage is read-locked and every parameter's write-locked (candle's
//! in-place op hook, nested so that all locks are held together, on threads of the
//! optimizer's own), and downhill's one fused pass runs over all of them at once, on the
//! calling thread: no copy of parameters or gradients, the optimizer's state in downhill.
//! Variables must be contiguous `f32` or `f64` tensors on the CPU; anything else is an error
//! naming the variable ([`Error`]), never a silent slow path, and every check runs before
//! anything is written. A variable without a gradient (not used by the loss) is skipped, as
//! PyTorch skips it: no weight decay, no momentum, its step count unchanged
//! ([`downhill::Optimizer::step_some`]).
//!
//! # Checkpoints
//! [`DownhillOptimizer::save`] writes the state as a downhill checkpoint (safetensors with a
//! CRC, written crash-safely), keyed by the variables' names — a `VarMap`'s names with
//! [`DownhillOptimizer::from_varmap`] — so [`DownhillOptimizer::load`] restores it into an
//! optimizer whatever order its variables were created or listed in.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, OnceLock, RwLock};

use candle_core::{backprop::GradStore, DType, Var};
use downhill::registry::{self, Setup};
use downhill::{Optimizer as _, ParamInfo, StateDict, StepOutcome};
use serde_json::{json, Value};

mod error;
mod locker;

pub use error::{Error, Result};
use locker::{check_device_dtype, storage_addr, AddrSet, Elem, Lockers, Vars};

/// Which optimizer and how: a registry name with PyTorch-style options, plus the schedule,
/// clipping and non-finite policy around it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Registry name (`"adamw"`, `"sgd"`, `"lookahead"`, …; see `downhill::registry::NAMES`).
    pub optimizer: String,
    /// Hyperparameters under PyTorch's names.
    pub options: Value,
    /// Schedule, clipping, non-finite policy, gradient noise.
    pub setup: Setup,
    /// Further parameter groups (PyTorch's `param_groups`): a variable goes to the first
    /// group that selects it, with `options` over the base ones; the rest form group 0.
    pub groups: Vec<Group>,
}

/// A parameter group: which variables, and the options that differ for them.
#[derive(Clone, Debug)]
pub struct Group {
    /// Hyperparameters overriding [`Config::options`] (`{"weight_decay": 0.0}`).
    pub options: Value,
    /// The variables it takes.
    pub select: Select,
}

/// Which variables a [`Group`] takes, by name.
#[derive(Clone, Debug)]
pub enum Select {
    /// Exactly these names.
    Names(Vec<String>),
    /// Names ending with this (`".bias"`).
    Suffix(String),
}

impl Select {
    fn takes(&self, name: &str) -> bool {
        match self {
            Select::Names(names) => names.iter().any(|n| n == name),
            Select::Suffix(suffix) => name.ends_with(suffix.as_str()),
        }
    }
}

impl Config {
    /// Optimizer `name` with `options`.
    pub fn new(name: &str, options: Value) -> Self {
        Config {
            optimizer: name.to_string(),
            options,
            setup: Setup::default(),
            groups: Vec::new(),
        }
    }

    /// Add a parameter group: the variables `select` takes get `options` over the base
    /// options (e.g. no weight decay for biases and norms).
    pub fn group(mut self, options: Value, select: Select) -> Self {
        self.groups.push(Group { options, select });
        self
    }
    /// AdamW with PyTorch's defaults and learning rate `lr`.
    pub fn adamw(lr: f64) -> Self {
        Self::new("adamw", json!({ "lr": lr }))
    }
    /// SGD with momentum 0.9 and learning rate `lr`.
    pub fn sgd_momentum(lr: f64) -> Self {
        Self::new("sgd", json!({ "lr": lr, "momentum": 0.9 }))
    }
}

enum Inner {
    F32(Box<dyn downhill::Optimizer<f32>>),
    F64(Box<dyn downhill::Optimizer<f64>>),
}

/// The metadata key under which checkpoints of this crate list their variables.
const VARIABLES_KEY: &str = "candle_variables";

/// Builds the core optimizer of `f32` variables from (registry name, options, groups,
/// setup): see [`DownhillOptimizer::with_names_built_by`].
pub type BuildF32<'a> = dyn Fn(
        &str,
        &serde_json::Value,
        Vec<registry::GroupSpec>,
        &registry::Setup,
    ) -> downhill::Result<Box<dyn downhill::Optimizer<f32>>>
    + 'a;

/// A downhill optimizer over candle variables; see the [crate docs](crate).
pub struct DownhillOptimizer {
    /// The threads holding the locks during a step (started on the first). Declared first:
    /// dropped (and joined) before anything else.
    lockers: Option<Lockers>,
    vars: Arc<Vars>,
    infos: Vec<ParamInfo>,
    inner: Inner,
}

impl std::fmt::Debug for DownhillOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner: &dyn std::fmt::Debug = match &self.inner {
            Inner::F32(o) => o,
            Inner::F64(o) => o,
        };
        f.debug_struct("DownhillOptimizer")
            .field("variables", &self.vars.names)
            .field("dtype", &self.vars.dtype)
            .field("optimizer", inner)
            .finish_non_exhaustive()
    }
}

impl DownhillOptimizer {
    /// An optimizer over named variables (the names key the saved state; use
    /// [`DownhillOptimizer::from_varmap`] for a `VarMap`).
    pub fn with_names(vars: Vec<(String, Var)>, config: Config) -> candle_core::Result<Self> {
        Ok(Self::build(vars, config, None)?)
    }

    /// [`with_names`](DownhillOptimizer::with_names), for `f32` variables, with the core
    /// optimizer built by `build` from the registry name, options, groups and setup that
    /// [`downhill::registry::build_groups`] would get (another executor of the same
    /// configuration: `downhill-dist`'s sharded optimizer).
    pub fn with_names_built_by(
        vars: Vec<(String, Var)>,
        config: Config,
        build: &BuildF32<'_>,
    ) -> candle_core::Result<Self> {
        Ok(Self::build(vars, config, Some(build))?)
    }

    fn build(
        named: Vec<(String, Var)>,
        config: Config,
        build_f32: Option<&BuildF32<'_>>,
    ) -> Result<Self> {
        // Variables in group order (group 0: those no group selects), so that the core's
        // groups are contiguous runs of them.
        let group_of = |name: &str| {
            config
                .groups
                .iter()
                .position(|g| g.select.takes(name))
                .map_or(0, |k| k + 1)
        };
        let mut named = named;
        named.sort_by_key(|(name, _)| group_of(name));
        let dtype = named.first().map_or(DType::F32, |(_, v)| v.dtype());
        let n = named.len();
        let mut infos = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut spans = Vec::with_capacity(n);
        let mut bases = Vec::with_capacity(n);
        let mut storages = AddrSet::default();
        let (mut shapes, mut shape_at) = (Vec::new(), vec![0]);
        let mut seen = HashSet::with_capacity(n);
        for (name, v) in &named {
            let t = v.as_tensor();
            check_device_dtype(name, "variable", t, dtype)?;
            if !seen.insert(t.id()) {
                return Err(Error::Duplicate { name: name.clone() });
            }
            let (start, end) =
                t.layout()
                    .contiguous_offsets()
                    .ok_or_else(|| Error::NotContiguous {
                        name: name.clone(),
                        what: "variable",
                    })?;
            let addr = storage_addr(&t.storage_and_layout().0);
            if let Some(a) = addr {
                // Two variables over one storage (views of one tensor) would be locked twice.
                if !storages.insert(a) {
                    return Err(Error::Duplicate { name: name.clone() });
                }
            }
            bases.push(AtomicUsize::new(addr.unwrap_or(0)));
            shapes.extend_from_slice(t.dims());
            shape_at.push(shapes.len());
            ids.push(t.id());
            spans.push(start..end);
            infos.push(ParamInfo::new(name.clone(), t.dims().to_vec()));
        }
        let mut specs: Vec<registry::GroupSpec> = (0..=config.groups.len())
            .map(|k| registry::GroupSpec {
                options: if k == 0 {
                    json!({})
                } else {
                    config.groups[k - 1].options.clone()
                },
                params: Vec::new(),
            })
            .collect();
        for info in &infos {
            specs[group_of(&info.name)].params.push(info.clone());
        }
        // A group that selects nothing is dropped (the core refuses empty groups).
        specs.retain(|g| !g.params.is_empty());
        let inner = match (dtype, build_f32) {
            (DType::F32, Some(build)) => Inner::F32(build(
                &config.optimizer,
                &config.options,
                specs,
                &config.setup,
            )?),
            (DType::F32, None) => Inner::F32(registry::build_groups::<f32>(
                &config.optimizer,
                &config.options,
                specs,
                &config.setup,
            )?),
            (_, Some(_)) => {
                return Err(downhill::Error::Setup(
                    "a custom builder takes f32 variables only".into(),
                )
                .into())
            }
            _ => Inner::F64(registry::build_groups::<f64>(
                &config.optimizer,
                &config.options,
                specs,
                &config.setup,
            )?),
        };
        let vars = Vars {
            names: infos.iter().map(|i| i.name.clone()).collect(),
            vars: named.into_iter().map(|(_, v)| v).collect(),
            ids,
            spans,
            shapes,
            shape_at,
            dtype,
            zeros: (0..n).map(|_| OnceLock::new()).collect(),
            missing: (0..n).map(|_| AtomicBool::new(false)).collect(),
            bases,
            storages: RwLock::new(AddrSet::default()),
            moved: AtomicBool::new(false),
            lowest: AtomicUsize::new(usize::MAX),
            highest: AtomicUsize::new(0),
            lock_at: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        };
        vars.set_bounds(&storages);
        if let Ok(mut s) = vars.storages.write() {
            *s = storages;
        }
        Ok(DownhillOptimizer {
            lockers: None,
            vars: Arc::new(vars),
            infos,
            inner,
        })
    }

    /// An optimizer over every variable of a `VarMap`, keyed by its names.
    pub fn from_varmap(varmap: &candle_nn::VarMap, config: Config) -> candle_core::Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        drop(data);
        Self::with_names(vars, config)
    }

    /// The core optimizer's state (moments, step counts, …), keyed by variable name.
    pub fn state_dict(&self) -> StateDict {
        match &self.inner {
            Inner::F32(o) => o.state_dict(),
            Inner::F64(o) => o.state_dict(),
        }
    }

    /// Restore a state saved by [`DownhillOptimizer::state_dict`] (matched by name). On error
    /// nothing changes.
    pub fn load_state_dict(&mut self, state: &StateDict) -> candle_core::Result<()> {
        Ok(self.load_state(state)?)
    }

    /// The parameters as the core optimizer knows them.
    pub fn params(&self) -> &[ParamInfo] {
        &self.infos
    }

    /// Whether the model should be evaluated at another point than the variables hold
    /// (schedule-free methods: see [`DownhillOptimizer::at_eval_point`]).
    pub fn has_eval_point(&self) -> bool {
        match &self.inner {
            Inner::F32(o) => o.has_eval_point(),
            Inner::F64(o) => o.has_eval_point(),
        }
    }

    /// Run `f` with the variables at the optimizer's evaluation point (schedule-free
    /// methods: the average `x`; the variables hold `y`, where gradients are taken), then put
    /// the training point back, also when `f` fails. For other optimizers `f` just runs.
    pub fn at_eval_point<R>(&self, f: impl FnOnce() -> R) -> candle_core::Result<R> {
        if !self.has_eval_point() {
            return Ok(f());
        }
        let saved: Vec<candle_core::Tensor> = self
            .vars
            .vars
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        let points = match &self.inner {
            Inner::F32(o) => eval_tensors::<f32>(&**o, &saved)?,
            Inner::F64(o) => eval_tensors::<f64>(&**o, &saved)?,
        };
        for (v, x) in self.vars.vars.iter().zip(&points) {
            if let Err(e) = v.set(x) {
                self.restore(&saved);
                return Err(e);
            }
        }
        let out = f();
        self.restore(&saved);
        Ok(out)
    }

    /// Put back the variables' values from `saved` (best effort: the values exist and fit).
    fn restore(&self, saved: &[candle_core::Tensor]) {
        for (v, s) in self.vars.vars.iter().zip(saved) {
            let _ = v.set(s);
        }
    }

    /// Bytes of optimizer state per parameter, as the core optimizer holds it (AdamW: 8 with
    /// `f32` state, 4 with `bf16`, 2 + 8/256 with `8bit` — but tensors under `min_8bit_size`
    /// keep `f32` state, so a model with small tensors holds more); see
    /// [`downhill::Optimizer::state_bytes_per_param`].
    pub fn state_bytes_per_param(&self) -> f64 {
        match &self.inner {
            Inner::F32(o) => o.state_bytes_per_param(),
            Inner::F64(o) => o.state_bytes_per_param(),
        }
    }

    /// Bytes of optimizer state in all: [`DownhillOptimizer::state_bytes_per_param`] times
    /// the number of parameters (the per-element buffers, 8-bit codes with their absmax, and
    /// per-tensor state such as Adafactor's factors; not the shared 8-bit code maps).
    pub fn state_bytes(&self) -> u64 {
        let params: usize = self.infos.iter().map(ParamInfo::len).sum();
        (self.state_bytes_per_param() * params as f64).round() as u64
    }

    /// Steps applied so far.
    pub fn steps_taken(&self) -> u64 {
        match &self.inner {
            Inner::F32(o) => o.steps_taken(),
            Inner::F64(o) => o.steps_taken(),
        }
    }

    /// Save the optimizer's state to `path` as a downhill checkpoint (safetensors with a
    /// CRC), its entries keyed by the variables' names, with the list of variables and their
    /// shapes. The write is crash-safe (temporary file, flush, rename): if it fails, a
    /// previous file at `path` is left intact.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut state = self.state_dict();
        state
            .meta
            .insert(VARIABLES_KEY.into(), self.variables_json());
        Ok(downhill::checkpoint::save_state(path.as_ref(), &state)?)
    }

    /// Load a state saved by [`DownhillOptimizer::save`] (or by downhill's
    /// `checkpoint::save`). Variables are matched by name, not position, so this optimizer
    /// may list them in any order. A checkpoint that lacks one of its variables, holds one it
    /// does not have, or gives one another shape is an error ([`Error::MissingVariables`],
    /// [`Error::UnexpectedVariables`], [`Error::ShapeMismatch`]); so is a corrupt or
    /// truncated file, or the state of another optimizer or element type. On any error the
    /// optimizer is unchanged.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let mut state = downhill::checkpoint::load_state(path.as_ref())?;
        if let Some(list) = state.meta.remove(VARIABLES_KEY) {
            self.check_variables(&list)?;
        }
        self.load_state(&state)
    }

    fn load_state(&mut self, state: &StateDict) -> Result<()> {
        match &mut self.inner {
            Inner::F32(o) => o.load_state_dict(state),
            Inner::F64(o) => o.load_state_dict(state),
        }
        .map_err(Error::Core)
    }

    /// `[[name, [shape…]], …]` of the variables.
    fn variables_json(&self) -> String {
        let list: Vec<Value> = self
            .infos
            .iter()
            .map(|p| json!([p.name, p.shape]))
            .collect();
        Value::from(list).to_string()
    }

    /// Compare a checkpoint's list of variables with ours, by name.
    fn check_variables(&self, list: &str) -> Result<()> {
        let bad = |why: &str| {
            Error::Core(downhill::Error::State(format!(
                "corrupt checkpoint: metadata '{VARIABLES_KEY}' {why}"
            )))
        };
        let parsed: Vec<(String, Vec<usize>)> =
            serde_json::from_str(list).map_err(|e| bad(&e.to_string()))?;
        let mut saved = std::collections::BTreeMap::new();
        for (name, shape) in parsed {
            if saved.insert(name, shape).is_some() {
                return Err(bad("names a variable twice"));
            }
        }
        let mut missing = Vec::new();
        for p in &self.infos {
            match saved.remove(&p.name) {
                None => missing.push(p.name.clone()),
                Some(shape) if shape != p.shape => {
                    return Err(Error::ShapeMismatch {
                        name: p.name.clone(),
                        saved: shape,
                        expected: p.shape.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        if !missing.is_empty() {
            return Err(Error::MissingVariables { names: missing });
        }
        if !saved.is_empty() {
            return Err(Error::UnexpectedVariables {
                names: saved.into_keys().collect(),
            });
        }
        Ok(())
    }

    /// One step from the gradients in `grads`, with typed errors and the step's outcome
    /// ([`StepOutcome::Skipped`] under [`downhill::NonFinite::Skip`]); what
    /// [`candle_nn::Optimizer::step`] runs. A variable without a gradient (not reached by
    /// the loss) is skipped, as PyTorch skips it: unchanged, its state unchanged.
    ///
    /// Every check (each gradient's device, element type, shape and layout; the core's
    /// non-finite scan) runs before anything is written: a refused step leaves the variables
    /// and the optimizer's state unchanged.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<StepOutcome> {
        if self.vars.vars.is_empty() {
            return Ok(StepOutcome::Applied);
        }
        let lockers = match &mut self.lockers {
            Some(l) => l,
            None => self.lockers.insert(Lockers::start(Arc::clone(&self.vars))?),
        };
        match &mut self.inner {
            Inner::F32(o) => step_with::<f32>(lockers, o.as_mut(), grads),
            Inner::F64(o) => step_with::<f64>(lockers, o.as_mut(), grads),
        }
    }
}

/// The evaluation point of every variable, from their values `values`.
fn eval_tensors<T: Elem + candle_core::WithDType>(
    opt: &dyn downhill::Optimizer<T>,
    values: &[candle_core::Tensor],
) -> candle_core::Result<Vec<candle_core::Tensor>> {
    let params: Vec<Vec<T>> = values
        .iter()
        .map(|t| t.flatten_all()?.to_vec1::<T>())
        .collect::<candle_core::Result<_>>()?;
    let mut out: Vec<Vec<T>> = params.clone();
    {
        let ps: Vec<&[T]> = params.iter().map(|p| &p[..]).collect();
        let mut os: Vec<&mut [T]> = out.iter_mut().map(|o| &mut o[..]).collect();
        opt.eval_params(&ps, &mut os)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    }
    out.into_iter()
        .zip(values)
        .map(|(o, t)| candle_core::Tensor::from_vec(o, t.shape(), t.device()))
        .collect()
}

fn step_with<T: Elem>(
    lockers: &mut Lockers,
    opt: &mut dyn downhill::Optimizer<T>,
    grads: &GradStore,
) -> Result<StepOutcome> {
    Ok(
        lockers.with_locked::<T, _>(grads, |params, grads, missing| match missing {
            None => opt.step(params, grads),
            Some(missing) => {
                let grads: Vec<Option<&[T]>> = grads
                    .iter()
                    .zip(missing)
                    .map(|(g, &m)| (!m).then_some(*g))
                    .collect();
                opt.step_some(params, &grads)
            }
        })??,
    )
}

impl candle_nn::Optimizer for DownhillOptimizer {
    type Config = Config;

    fn new(vars: Vec<Var>, config: Config) -> candle_core::Result<Self> {
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("var{i}"), v))
            .collect();
        Self::with_names(named, config)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.try_step(grads)?;
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        match &self.inner {
            Inner::F32(o) => o.lr(0),
            Inner::F64(o) => o.lr(0),
        }
        .unwrap_or(0.0)
    }

    fn set_learning_rate(&mut self, lr: f64) {
        // Every group; an invalid lr (negative, NaN) is refused and leaves it unchanged.
        let n = match &self.inner {
            Inner::F32(o) => o.num_groups(),
            Inner::F64(o) => o.num_groups(),
        };
        for g in 0..n {
            let _ = match &mut self.inner {
                Inner::F32(o) => o.set_lr(g, lr),
                Inner::F64(o) => o.set_lr(g, lr),
            };
        }
    }
}
