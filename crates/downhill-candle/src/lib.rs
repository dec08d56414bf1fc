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
//! Every parameter's storage is write-locked (candle's in-place op hook, nested so that all
//! locks are held together), every gradient's read-locked, and downhill's one fused pass runs
//! over all of them at once: no copy of parameters or gradients, the optimizer's state in
//! downhill. Variables must be contiguous `f32` or `f64` tensors on the CPU; anything else is
//! an error naming the variable, never a silent slow path. A variable without a gradient (not
//! used by the loss) steps with a zero gradient — unlike PyTorch, which skips it, so weight
//! decay and momentum still move it.

use std::sync::Mutex;

use candle_core::{backprop::GradStore, CpuStorage, DType, Device, Layout, Storage, Tensor, Var};
use downhill::registry::{self, Setup};
use downhill::{Optimizer as _, ParamInfo, StateDict};
use serde_json::{json, Value};

/// Which optimizer and how: a registry name with PyTorch-style options, plus the schedule,
/// clipping and non-finite policy around it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Registry name (`"adamw"`, `"sgd"`, `"lookahead"`, …; see `downhill::registry::NAMES`).
    pub optimizer: String,
    /// Hyperparameters under PyTorch's names.
    pub options: Value,
    /// Schedule, clipping, non-finite policy.
    pub setup: Setup,
}

impl Config {
    /// Optimizer `name` with `options`.
    pub fn new(name: &str, options: Value) -> Self {
        Config {
            optimizer: name.to_string(),
            options,
            setup: Setup::default(),
        }
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

/// A downhill optimizer over candle variables; see the [crate docs](crate).
pub struct DownhillOptimizer {
    vars: Vec<Var>,
    infos: Vec<ParamInfo>,
    inner: Inner,
    /// Zero gradients for variables the loss did not reach (allocated on first need).
    zeros: Vec<Option<Tensor>>,
}

fn err(msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(msg.to_string())
}

impl DownhillOptimizer {
    /// An optimizer over named variables (the names key the saved state; use
    /// [`DownhillOptimizer::from_varmap`] for a `VarMap`).
    pub fn with_names(vars: Vec<(String, Var)>, config: Config) -> candle_core::Result<Self> {
        let dtype = vars.first().map_or(DType::F32, |(_, v)| v.dtype());
        let mut infos = Vec::with_capacity(vars.len());
        let mut ids = std::collections::HashSet::new();
        for (name, v) in &vars {
            check_var(name, v.as_tensor(), dtype)?;
            if !ids.insert(v.as_tensor().id()) {
                return Err(err(format!("downhill: variable '{name}' is listed twice")));
            }
            infos.push(ParamInfo::new(name.clone(), v.dims().to_vec()));
        }
        let inner = match dtype {
            DType::F32 => Inner::F32(
                registry::build::<f32>(
                    &config.optimizer,
                    &config.options,
                    infos.clone(),
                    &config.setup,
                )
                .map_err(err)?,
            ),
            _ => Inner::F64(
                registry::build::<f64>(
                    &config.optimizer,
                    &config.options,
                    infos.clone(),
                    &config.setup,
                )
                .map_err(err)?,
            ),
        };
        let n = vars.len();
        Ok(DownhillOptimizer {
            vars: vars.into_iter().map(|(_, v)| v).collect(),
            infos,
            inner,
            zeros: vec![None; n],
        })
    }

    /// An optimizer over every variable of a `VarMap`, keyed by its names.
    pub fn from_varmap(varmap: &candle_nn::VarMap, config: Config) -> candle_core::Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| err("VarMap lock poisoned"))?;
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

    /// Restore a state saved by [`DownhillOptimizer::state_dict`] (matched by name).
    pub fn load_state_dict(&mut self, state: &StateDict) -> candle_core::Result<()> {
        match &mut self.inner {
            Inner::F32(o) => o.load_state_dict(state),
            Inner::F64(o) => o.load_state_dict(state),
        }
        .map_err(err)
    }

    /// The parameters as the core optimizer knows them.
    pub fn params(&self) -> &[ParamInfo] {
        &self.infos
    }
}

fn check_var(name: &str, t: &Tensor, dtype: DType) -> candle_core::Result<()> {
    if !matches!(t.device(), Device::Cpu) {
        return Err(err(format!(
            "downhill: variable '{name}' is not on the CPU"
        )));
    }
    if t.dtype() != dtype || !matches!(dtype, DType::F32 | DType::F64) {
        return Err(err(format!(
            "downhill: variable '{name}' is {:?}; all variables must be f32, or all f64",
            t.dtype()
        )));
    }
    if !t.is_contiguous() {
        return Err(err(format!(
            "downhill: variable '{name}' is not contiguous"
        )));
    }
    Ok(())
}

/// The contiguous elements of a CPU storage as a raw slice of `T`.
trait Elem: Sized {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}
impl Elem for f32 {
    fn slice(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}
impl Elem for f64 {
    fn slice(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// The elements of a contiguous layout.
fn range(layout: &Layout, name: &str) -> candle_core::Result<(usize, usize)> {
    layout
        .contiguous_offsets()
        .ok_or_else(|| err(format!("downhill: '{name}' is not contiguous")))
}

/// Holds the write lock of variable `index` (inside candle's in-place hook), records its
/// elements, and recurses to the next; the last level runs the step with every lock held.
struct Nest<'a, T: downhill::Float + Elem> {
    vars: &'a [Var],
    names: &'a [ParamInfo],
    index: usize,
    slices: &'a Mutex<Vec<(usize, usize)>>,
    run: &'a (dyn Fn(&mut [&mut [T]]) -> candle_core::Result<()> + Sync),
}

impl<T: downhill::Float + Elem> candle_core::InplaceOp1 for Nest<'_, T> {
    fn name(&self) -> &'static str {
        "downhill-step"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let name = &self.names[self.index].name;
        let (a, b) = range(layout, name)?;
        let data = T::slice_mut(storage)
            .ok_or_else(|| err(format!("downhill: '{name}' changed dtype")))?;
        let part = data
            .get_mut(a..b)
            .ok_or_else(|| err(format!("downhill: '{name}' layout out of range")))?;
        {
            let mut s = self.slices.lock().map_err(|_| err("poisoned"))?;
            s.push((part.as_mut_ptr() as usize, part.len()));
        }
        if self.index + 1 < self.vars.len() {
            let next = Nest {
                index: self.index + 1,
                ..*self
            };
            return self.vars[self.index + 1].as_tensor().inplace_op1(&next);
        }
        let s = self.slices.lock().map_err(|_| err("poisoned"))?;
        // SAFETY: every pointer was taken from a storage whose write lock is held by an
        // enclosing frame of this recursion (this is the innermost), so all are alive and
        // exclusively ours; distinct variables have distinct storages (checked before).
        let mut params: Vec<&mut [T]> = s
            .iter()
            .map(|&(p, n)| unsafe { std::slice::from_raw_parts_mut(p as *mut T, n) })
            .collect();
        drop(s);
        (self.run)(&mut params)
    }
}

impl DownhillOptimizer {
    fn step_as<T: downhill::Float + Elem>(
        vars: &[Var],
        infos: &[ParamInfo],
        zeros: &mut [Option<Tensor>],
        opt: &mut dyn downhill::Optimizer<T>,
        grads: &GradStore,
    ) -> candle_core::Result<()> {
        // The gradients, read-locked for the whole step.
        let mut grad_tensors = Vec::with_capacity(vars.len());
        for ((v, info), zero) in vars.iter().zip(infos).zip(zeros.iter_mut()) {
            let g = match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => {
                    if zero.is_none() {
                        *zero = Some(v.as_tensor().zeros_like()?);
                    }
                    zero.clone()
                        .ok_or_else(|| err("downhill: no zero gradient"))?
                }
            };
            check_var(&info.name, &g, v.dtype())?;
            if g.dims() != v.dims() {
                return Err(err(format!(
                    "downhill: gradient of '{}' has shape {:?}, the variable {:?}",
                    info.name,
                    g.dims(),
                    v.dims()
                )));
            }
            grad_tensors.push(g);
        }
        let guards: Vec<_> = grad_tensors
            .iter()
            .map(|g| g.storage_and_layout())
            .collect();
        let mut grad_slices: Vec<&[T]> = Vec::with_capacity(guards.len());
        for ((guard, layout), info) in guards.iter().zip(infos) {
            let Storage::Cpu(cpu) = &**guard else {
                return Err(err(format!(
                    "downhill: gradient of '{}' is not on the CPU",
                    info.name
                )));
            };
            let (a, b) = range(layout, &info.name)?;
            let data = T::slice(cpu).and_then(|d| d.get(a..b)).ok_or_else(|| {
                err(format!(
                    "downhill: gradient of '{}' has the wrong dtype",
                    info.name
                ))
            })?;
            grad_slices.push(data);
        }
        let opt = Mutex::new(opt);
        let run = |params: &mut [&mut [T]]| -> candle_core::Result<()> {
            let mut o = opt.lock().map_err(|_| err("poisoned"))?;
            o.step(params, &grad_slices).map(|_| ()).map_err(err)
        };
        let slices = Mutex::new(Vec::with_capacity(vars.len()));
        let nest = Nest::<T> {
            vars,
            names: infos,
            index: 0,
            slices: &slices,
            run: &run,
        };
        // The recursion holds one frame group per variable: run it on a thread with room.
        let stack = (1 << 20) + 16 * 1024 * vars.len();
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("downhill-step".into())
                .stack_size(stack)
                .spawn_scoped(scope, || vars[0].as_tensor().inplace_op1(&nest))
                .map_err(|e| err(format!("downhill: cannot start the step thread: {e}")))?
                .join()
                .map_err(|_| err("downhill: the step panicked"))?
        })
    }
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
        if self.vars.is_empty() {
            return Ok(());
        }
        match &mut self.inner {
            Inner::F32(o) => {
                Self::step_as::<f32>(&self.vars, &self.infos, &mut self.zeros, o.as_mut(), grads)
            }
            Inner::F64(o) => {
                Self::step_as::<f64>(&self.vars, &self.infos, &mut self.zeros, o.as_mut(), grads)
            }
        }
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
