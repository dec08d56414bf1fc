//! The algorithms. Each file holds one update rule: its hyperparameters (PyTorch's names and
//! defaults), its per-tensor scalars, and its element-wise math, written once over [`Lane`].
//!
//! A [`Rule`] knows nothing about gradient clipping, weight decay, `maximize`, schedules or
//! parameter groups: [`RuleOptimizer`](crate::RuleOptimizer) wires those around it, in one place.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::kernel::lowbit::QuantMap;
use crate::kernel::Lane;
use crate::precision::StatePrecision;
use crate::Result;

pub mod adabelief;
pub mod adadelta;
pub mod adafactor;
pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod adan;
pub mod ademamix;
pub mod adopt;
pub mod asgd;
pub mod lamb;
pub mod lion;
pub mod lookahead;
pub mod muon;
pub mod nadam;
pub mod novograd;
pub mod prodigy;
pub mod radam;
pub mod registry;
pub mod rmsprop;
pub mod rprop;
pub mod schedule_free_adamw;
pub mod sgd;
pub mod swats;
pub mod yogi;

/// The most per-element state buffers any rule keeps.
pub const MAX_BUFFERS: usize = 4;

/// The hyperparameters every rule has, under PyTorch's names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    /// Learning rate (before any schedule).
    pub lr: f64,
    /// Weight-decay coefficient.
    pub weight_decay: f64,
    /// `true`: decoupled decay `p <- p·(1 − lr·weight_decay)` before the update (AdamW, SGDW);
    /// `false`: L2 penalty `g <- g + weight_decay·p` before the rule (PyTorch's `weight_decay`).
    pub decoupled_weight_decay: bool,
    /// Ascend instead of descend (the gradient is negated first).
    pub maximize: bool,
}

impl Hyper {
    /// The shared hyperparameters of a rule that applies decoupled weight decay itself, where
    /// its reference does (inside the update: optax's rules), so the prelude must not:
    /// with `decoupled_weight_decay` the prelude sees no decay; without it, the L2 penalty
    /// `g ← g + λθ` (PyTorch's form).
    pub fn decay_in_rule(lr: f64, weight_decay: f64, decoupled: bool, maximize: bool) -> Hyper {
        Hyper {
            lr,
            weight_decay: if decoupled { 0.0 } else { weight_decay },
            decoupled_weight_decay: false,
            maximize,
        }
    }
}

/// Implements [`Rule::hyper`] and [`Rule::set_lr`] for a rule whose fields have PyTorch's
/// names: `lr`, `weight_decay`, `decoupled_weight_decay`, `maximize`.
macro_rules! torch_hyper {
    () => {
        fn hyper(&self) -> $crate::optim::Hyper {
            $crate::optim::Hyper {
                lr: self.lr,
                weight_decay: self.weight_decay,
                decoupled_weight_decay: self.decoupled_weight_decay,
                maximize: self.maximize,
            }
        }

        fn set_lr(&mut self, lr: f64) {
            self.lr = lr;
        }
    };
}
pub(crate) use torch_hyper;

/// Per-tensor scalar state of a rule (step count, SWATS' phase, …). Field names become
/// checkpoint keys, so renaming one changes the checkpoint format.
pub trait TensorScalars: Default + Clone + Debug + PartialEq + Send + Sync + 'static {
    /// The field names, in the order of [`TensorScalars::to_values`].
    const FIELDS: &'static [&'static str];
    /// The fields as numbers.
    fn to_values(&self) -> Vec<f64>;
    /// Rebuild from [`TensorScalars::to_values`]' output; refuses values that cannot occur.
    fn from_values(values: &[f64]) -> Result<Self>;
}

/// The per-tensor scalar state of most rules: the number of steps taken (PyTorch's `step`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepCount {
    /// Steps taken on this tensor.
    pub step: u64,
}

impl TensorScalars for StepCount {
    const FIELDS: &'static [&'static str] = &["step"];
    fn to_values(&self) -> Vec<f64> {
        vec![self.step as f64]
    }
    fn from_values(values: &[f64]) -> Result<Self> {
        Ok(StepCount {
            step: count_from_f64("step", values[0])?,
        })
    }
}

/// Refuse a checkpoint's scalars for `optimizer` unless there is one value per field.
pub(crate) fn expect_scalars(optimizer: &str, fields: &[&str], values: &[f64]) -> Result<()> {
    if values.len() == fields.len() {
        Ok(())
    } else {
        Err(crate::Error::State(format!(
            "{optimizer}: expected {} scalars, got {}",
            fields.len(),
            values.len()
        )))
    }
}

/// A non-negative integer stored as `f64` in a checkpoint.
pub(crate) fn count_from_f64(field: &str, x: f64) -> Result<u64> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 9.0e15 {
        Ok(x as u64)
    } else {
        Err(crate::Error::State(format!(
            "field '{field}' must be a non-negative integer, found {x}"
        )))
    }
}

/// One optimization algorithm's update rule.
///
/// The value of an implementing type is its configuration (hyperparameters with PyTorch's
/// names; `Default` gives PyTorch's defaults). [`RuleOptimizer`](crate::RuleOptimizer) calls, for
/// every tensor of a step: [`begin`](Rule::begin) once, [`update`](Rule::update) for every
/// element, then [`end`](Rule::end) with the sums of the two reductions `update` produced.
pub trait Rule: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// The registry name, e.g. `"adam"`.
    const NAME: &'static str;
    /// Per-tensor scalar state kept across steps.
    type Scalars: TensorScalars;
    /// Per-tensor, per-step constants of the element rule (bias corrections, step sizes).
    type Coef: Copy + Debug + Send + Sync;

    /// Refuse invalid hyperparameters.
    fn validate(&self) -> Result<()>;
    /// The shared hyperparameters.
    fn hyper(&self) -> Hyper;
    /// Change the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// Names of the per-element state buffers this configuration keeps (checkpoint keys), in
    /// the order `update` sees them. At most [`MAX_BUFFERS`].
    fn buffers(&self) -> &'static [&'static str];
    /// Initial value of buffer `k` (0 unless the algorithm says otherwise).
    fn buffer_init(&self, _k: usize) -> f64 {
        0.0
    }
    /// Advance `scalars` by one step and compute this step's constants, with `lr` the
    /// learning rate in force (after any schedule).
    fn begin(&self, scalars: &mut Self::Scalars, lr: f64) -> Self::Coef;
    /// The update of one element (or one vector of elements): `p` and `g` after the prelude
    /// (maximize, clipping, weight decay), `s` the state buffers (read and written in place),
    /// `red` two running sums the rule may accumulate. Returns the new parameter.
    /// Mark it (and `measure`) `#[inline(always)]`: it must be compiled into the SIMD kernel
    /// with the kernel's target features (out of line, every vector operation is a call:
    /// Prodigy's reading pass ran 9× slower so).
    fn update<L: Lane>(c: &Self::Coef, p: L, g: L, s: &mut [L; MAX_BUFFERS], red: &mut [L; 2])
        -> L;
    /// [`begin`](Rule::begin) for state stored at `precision`. With `bf16` or `8bit` state the
    /// reference is bitsandbytes, whose kernels order some operations differently from
    /// PyTorch's: a rule with a bitsandbytes counterpart computes constants here that make
    /// `update` follow that order (see [`crate::precision`]). By default, `begin`.
    fn begin_for(
        &self,
        scalars: &mut Self::Scalars,
        lr: f64,
        precision: StatePrecision,
    ) -> Self::Coef {
        let _ = precision;
        self.begin(scalars, lr)
    }
    /// [`hyper`](Rule::hyper) for state stored at `precision` (bitsandbytes decays Adam's
    /// parameters decoupled, for instance). By default, `hyper`.
    fn hyper_for(&self, precision: StatePrecision) -> Hyper {
        let _ = precision;
        self.hyper()
    }
    /// The 256-entry map buffer `k` uses when stored in 8 bits: [`QuantMap::Unsigned`] for
    /// the second moment of a rule with a first moment (Adam's `v`), [`QuantMap::Signed`] for
    /// the rest, as bitsandbytes chooses (the default: signed).
    fn quant_map(&self, k: usize) -> QuantMap {
        let _ = k;
        QuantMap::Signed
    }
    /// Finish the step of one tensor, given the sums of `red`.
    fn end(&self, _scalars: &mut Self::Scalars, _red: [f64; 2]) {}

    /// Whether the update needs sums over the tensor (or its group) first: LAMB's norms of
    /// the parameter and of the Adam direction, NovoGrad's ‖g‖², Prodigy's ⟨g, θ₀ − θ⟩. Then a
    /// step runs a reading pass ([`measure`](Rule::measure), part of the same parallel SIMD
    /// kernel, writing nothing) and hands its sums to [`absorb`](Rule::absorb) before the
    /// update pass.
    const MEASURES: bool = false;
    /// The reading pass over one element (or vector): accumulate into `red` what
    /// [`absorb`](Rule::absorb) needs. Sees `p`, `g` and the buffers exactly as
    /// [`update`](Rule::update) will (after the prelude), and must not change them.
    #[inline(always)]
    fn measure<L: Lane>(_c: &Self::Coef, _p: L, _g: L, _s: &[L; MAX_BUFFERS], _red: &mut [L; 2]) {}
    /// Values the reading pass reads per element (counted as memory traffic): by default the
    /// parameter, the gradient and every buffer; a rule whose `measure` uses fewer says so
    /// (the kernel does not load what `measure` does not use).
    fn measure_reads(&self) -> usize {
        2 + self.buffers().len()
    }
    /// Take the reading pass's sums before the update: `tensor` over this tensor's elements,
    /// `group` over every tensor of its parameter group (summed in parameter order). May
    /// change the tensor's scalars (Prodigy's estimate) and this step's constants.
    fn absorb(
        &self,
        _scalars: &mut Self::Scalars,
        _coef: &mut Self::Coef,
        _tensor: [f64; 2],
        _group: [f64; 2],
    ) {
    }

    /// Whether the rule works on whole tensors between the prelude and its element pass
    /// (Muon's Newton–Schulz iteration, Adafactor's factored statistics). Then a step copies
    /// the gradients through the prelude (maximize, clipping, noise, L2 penalty), hands each
    /// tensor's copy to [`transform`](Rule::transform), and the element pass takes what it
    /// left there as its gradient (with only decoupled decay still to apply to `p`).
    const TRANSFORMS: bool = false;
    /// Refuse a parameter this rule cannot step (Muon: not a matrix). Called at construction.
    fn check_param(&self, _info: &crate::ParamInfo) -> Result<()> {
        Ok(())
    }
    /// State a tensor keeps that is not one value per element (Adafactor's row and column
    /// statistics): `(name, shape)` for a parameter of shape `shape`, initialized to zero.
    fn tensor_state(&self, _shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }
    /// The whole-tensor stage of one tensor (only when [`TRANSFORMS`](Rule::TRANSFORMS)).
    fn transform<F: crate::kernel::Float>(&self, _c: &mut Self::Coef, _t: Whole<'_, F>) {}

    /// Whether the model should be evaluated at another point than the parameters, which
    /// hold the point gradients are taken at (schedule-free methods: the average `x`, where
    /// the parameters hold `y`). Then [`eval_point`](Rule::eval_point) computes it.
    const EVAL_POINT: bool = false;
    /// Write into `out` the evaluation point of one tensor from its parameter `p`, its
    /// buffers and its scalars (only when [`EVAL_POINT`](Rule::EVAL_POINT)).
    fn eval_point<F: crate::kernel::Float>(
        &self,
        _scalars: &Self::Scalars,
        _p: &[F],
        _buffers: &[Vec<F>],
        _out: &mut [F],
    ) {
    }
}

/// One tensor as [`Rule::transform`] sees it.
#[derive(Debug)]
pub struct Whole<'a, F> {
    /// The parameter's shape.
    pub shape: &'a [usize],
    /// The parameter (before this step's decoupled decay).
    pub p: &'a [F],
    /// In: the gradient after the prelude. Out: what the element pass takes as gradient.
    pub g: &'a mut [F],
    /// The per-element state buffers, in [`Rule::buffers`] order.
    pub buffers: &'a mut [Vec<F>],
    /// The tensor state of [`Rule::tensor_state`], in its order.
    pub tensor_state: &'a mut [Vec<F>],
}
