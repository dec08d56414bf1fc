//! The optimizer interface, and [`RuleOptimizer`]: the one place a step is wired together.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use crate::clip::{clip_coef, Clip};
use crate::kernel::lowbit::BLOCK;
use crate::kernel::{self, Float, PackedView, Plan, Prelude, RawSlice, TensorViews, CHUNK};
use crate::optim::{Rule, TensorScalars, MAX_BUFFERS};
use crate::precision::{buffer_bytes, PackedBuffer, StatePrecision, StateStorage};
use crate::schedule::Schedule;
use crate::shard::{Shard, ShardLayout};
use crate::state::{StateDict, StateTensor, TensorData, FORMAT_VERSION};
use crate::{Error, GradientNoise, Result};

/// A parameter tensor as the optimizer knows it: a stable name (the checkpoint key) and a
/// shape (row-major; the optimizer sees it flattened).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Unique name, e.g. `"fc1.weight"`.
    pub name: String,
    /// Shape; the tensor holds the product of its dimensions.
    pub shape: Vec<usize>,
}

impl ParamInfo {
    /// A named parameter of the given shape.
    pub fn new(name: impl Into<String>, shape: impl Into<Vec<usize>>) -> Self {
        ParamInfo {
            name: name.into(),
            shape: shape.into(),
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The parameters were updated.
    Applied,
    /// A gradient was not finite and the policy is [`NonFinite::Skip`]: nothing changed and the
    /// skip was counted.
    Skipped,
}

/// What to do with a gradient that holds NaN or an infinity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Refuse the step with [`Error::NonFiniteGradient`] (the default).
    #[default]
    Refuse,
    /// Leave everything unchanged, count the skip ([`Optimizer::steps_skipped`]) and return
    /// [`StepOutcome::Skipped`] (what mixed-precision loss scaling needs).
    Skip,
    /// Do not look: NaN and infinities flow into the parameters and state, as in PyTorch.
    /// Saves one read of the gradients per step (unless clipping by norm, which reads them
    /// anyway); for when the caller has already checked the loss or the gradients.
    Unchecked,
}

/// The interface every optimizer implements, object-safe so a `Box<dyn Optimizer<F>>` can be
/// chosen at run time (see [`crate::registry`]).
///
/// Tensors are passed in the order of [`Optimizer::params`]. A step that returns `Err`
/// changes nothing.
pub trait Optimizer<F: Float>: Send + Debug {
    /// The algorithm's name (`"adam"`, `"lookahead"`), as saved in checkpoints.
    fn name(&self) -> String;
    /// The parameters, in the order `step` takes them.
    fn params(&self) -> &[ParamInfo];
    /// Take one step: update `params` in place from `grads`.
    fn step(&mut self, params: &mut [&mut [F]], grads: &[&[F]]) -> Result<StepOutcome>;
    /// Take one step in which some parameters may have no gradient (`None`: not used by this
    /// step's loss — a frozen layer, an idle head, one side of a GAN). Those are skipped as
    /// PyTorch skips a parameter whose `.grad` is `None`: not read, not decayed, their state
    /// and step count unchanged, left out of clipping's global norm. The step itself is still
    /// counted (the schedule moves on).
    fn step_some(&mut self, params: &mut [&mut [F]], grads: &[Option<&[F]>])
        -> Result<StepOutcome>;
    /// Whether the model should be evaluated at another point than its parameters
    /// (schedule-free methods, whose parameters hold the point gradients are taken at):
    /// then [`eval_params`](Optimizer::eval_params) gives it.
    fn has_eval_point(&self) -> bool {
        false
    }
    /// Write into `out` the point to evaluate the model at, for parameters `params`: the
    /// parameters themselves, except for schedule-free methods (their average `x`). `params`
    /// and `out` have the optimizer's shapes.
    fn eval_params(&self, params: &[&[F]], out: &mut [&mut [F]]) -> Result<()> {
        check_eval_shapes(self.params(), params, out)?;
        for (o, p) in out.iter_mut().zip(params) {
            o.copy_from_slice(p);
        }
        Ok(())
    }
    /// Steps applied so far (the schedule's position).
    fn steps_taken(&self) -> u64;
    /// Steps skipped because of non-finite gradients.
    fn steps_skipped(&self) -> u64;
    /// Number of parameter groups.
    fn num_groups(&self) -> usize;
    /// The learning rate the next step will use in `group` (base rate after the schedule).
    fn lr(&self, group: usize) -> Result<f64>;
    /// Set the base learning rate of `group` (the schedule, if any, scales from it).
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()>;
    /// The whole state: buffers, per-tensor scalars, step counts, configuration.
    fn state_dict(&self) -> StateDict;
    /// Restore a state from [`Optimizer::state_dict`]. On error nothing is changed.
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()>;
    /// Bytes of per-element optimizer state per parameter (`m`, `v`, … ; Adam in `f32`: 8).
    fn state_bytes_per_param(&self) -> f64;
    /// Whether a step is streams over elements only (no whole-tensor work such as Muon's
    /// matrix products or Adafactor's statistics): what a memory roofline describes.
    fn element_wise(&self) -> bool {
        true
    }
    /// Bytes a step must move per parameter: read the parameter, its gradient and every state
    /// buffer; write the parameter and every state buffer (AdamW in `f32`: 28). Periodic work
    /// (Lookahead's synchronization) is amortized over its period.
    fn traffic_per_param(&self) -> f64;
    /// When this optimizer keeps one rank's share of a sharded state ([`crate::shard`]):
    /// which elements every rank owns. Its `step` then takes whole parameters but only this
    /// rank's elements of each gradient, and updates only those parameter elements.
    fn shard_layout(&self) -> Option<&ShardLayout> {
        None
    }
}

impl<F: Float, O: Optimizer<F> + ?Sized> Optimizer<F> for Box<O> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn params(&self) -> &[ParamInfo] {
        (**self).params()
    }
    fn step(&mut self, params: &mut [&mut [F]], grads: &[&[F]]) -> Result<StepOutcome> {
        (**self).step(params, grads)
    }
    fn step_some(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[Option<&[F]>],
    ) -> Result<StepOutcome> {
        (**self).step_some(params, grads)
    }
    fn has_eval_point(&self) -> bool {
        (**self).has_eval_point()
    }
    fn eval_params(&self, params: &[&[F]], out: &mut [&mut [F]]) -> Result<()> {
        (**self).eval_params(params, out)
    }
    fn steps_taken(&self) -> u64 {
        (**self).steps_taken()
    }
    fn steps_skipped(&self) -> u64 {
        (**self).steps_skipped()
    }
    fn num_groups(&self) -> usize {
        (**self).num_groups()
    }
    fn lr(&self, group: usize) -> Result<f64> {
        (**self).lr(group)
    }
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        (**self).set_lr(group, lr)
    }
    fn state_dict(&self) -> StateDict {
        (**self).state_dict()
    }
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        (**self).load_state_dict(state)
    }
    fn state_bytes_per_param(&self) -> f64 {
        (**self).state_bytes_per_param()
    }
    fn traffic_per_param(&self) -> f64 {
        (**self).traffic_per_param()
    }
    fn element_wise(&self) -> bool {
        (**self).element_wise()
    }
    fn shard_layout(&self) -> Option<&ShardLayout> {
        (**self).shard_layout()
    }
}

/// Check that a step was given `params` parameter and `grads` gradient tensors for an
/// optimizer of `expected` (for any executor: host slices or device buffers).
pub fn check_tensor_counts(expected: usize, params: usize, grads: usize) -> Result<()> {
    for (what, got) in [("params", params), ("grads", grads)] {
        if got != expected {
            return Err(Error::TensorCount {
                what,
                expected,
                got,
            });
        }
    }
    Ok(())
}

/// The error naming the first non-finite element of `grads` (a tensor without gradient this
/// step passes an empty slice).
pub(crate) fn non_finite_error<F: Float>(infos: &[ParamInfo], grads: &[&[F]]) -> Error {
    non_finite_error_in(infos, None, grads)
}

/// [`non_finite_error`] for gradients that are elements `owned[t]` of their tensors (a
/// sharded optimizer's share; `None`: whole tensors). A rank may hold none of the non-finite
/// elements: another rank names them.
pub(crate) fn non_finite_error_in<F: Float>(
    infos: &[ParamInfo],
    owned: Option<&[Range<usize>]>,
    grads: &[&[F]],
) -> Error {
    for (t, (info, g)) in infos.iter().zip(grads).enumerate() {
        if let Some(i) = g.iter().position(|x| !x.is_finite()) {
            return Error::NonFiniteGradient {
                param: info.name.clone(),
                index: i + owned.map_or(0, |o| o[t].start),
                value: g[i].to_f64(),
            };
        }
    }
    Error::NonFiniteGradient {
        param: match owned {
            Some(_) => "(owned by another rank)".into(),
            None => String::new(),
        },
        index: 0,
        value: f64::NAN,
    }
}

/// Check that `params` and `out` of [`Optimizer::eval_params`] have the shapes of `infos`.
pub(crate) fn check_eval_shapes<F: Float>(
    infos: &[ParamInfo],
    params: &[&[F]],
    out: &[&mut [F]],
) -> Result<()> {
    check_tensor_counts(infos.len(), params.len(), out.len())?;
    for ((info, p), o) in infos.iter().zip(params).zip(out) {
        for (what, got) in [("params", p.len()), ("out", o.len())] {
            if got != info.len() {
                return Err(Error::LengthMismatch {
                    what,
                    param: info.name.clone(),
                    expected: info.len(),
                    got,
                });
            }
        }
    }
    Ok(())
}

/// Check that `params` and `grads` match `infos` in count and lengths (the gradients of
/// tensors that are not `active` are not looked at).
pub(crate) fn check_shapes<F: Float>(
    infos: &[ParamInfo],
    params: &[&mut [F]],
    grads: &[&[F]],
    active: Option<&[bool]>,
) -> Result<()> {
    check_tensor_counts(infos.len(), params.len(), grads.len())?;
    for (t, ((info, p), g)) in infos.iter().zip(params).zip(grads).enumerate() {
        let g_len = if active.is_none_or(|a| a[t]) {
            g.len()
        } else {
            info.len()
        };
        for (what, got) in [("params", p.len()), ("grads", g_len)] {
            if got != info.len() {
                return Err(Error::LengthMismatch {
                    what,
                    param: info.name.clone(),
                    expected: info.len(),
                    got,
                });
            }
        }
    }
    Ok(())
}

/// [`check_shapes`] for a sharded optimizer: whole parameters, and the gradients of the
/// elements `owned` of each.
pub(crate) fn check_shard_shapes<F: Float>(
    infos: &[ParamInfo],
    owned: &[Range<usize>],
    params: &[&mut [F]],
    grads: &[&[F]],
    active: Option<&[bool]>,
) -> Result<()> {
    check_tensor_counts(infos.len(), params.len(), grads.len())?;
    for (t, ((info, p), g)) in infos.iter().zip(params).zip(grads).enumerate() {
        let g_ok = active.is_some_and(|a| !a[t]) || g.len() == owned[t].len();
        for (what, expected, got) in [
            ("params", info.len(), p.len()),
            ("grads (this rank's share)", owned[t].len(), g.len()),
        ] {
            if got != expected && (what == "params" || !g_ok) {
                return Err(Error::LengthMismatch {
                    what,
                    param: info.name.clone(),
                    expected,
                    got,
                });
            }
        }
    }
    Ok(())
}

/// The learning rate of `rule` at step `steps` under `schedule`.
fn scheduled<R: Rule>(schedule: &Option<Arc<dyn Schedule>>, steps: u64, rule: &R) -> f64 {
    let base = rule.hyper().lr;
    match schedule {
        Some(s) => s.lr(base, steps),
        None => base,
    }
}

/// A group of parameters sharing one configuration (PyTorch's parameter group): the usual
/// case is a second group without weight decay for biases and norms.
#[derive(Clone, Debug)]
pub struct ParamGroup<R> {
    /// The group's hyperparameters.
    pub rule: R,
    /// Its parameters.
    pub params: Vec<ParamInfo>,
    /// How its state buffers are stored (`f32` by default; `bf16`, `8bit`:
    /// [`crate::precision`]).
    pub state: StateStorage,
}

impl<R> ParamGroup<R> {
    /// A group with `f32` state.
    pub fn new(rule: R, params: Vec<ParamInfo>) -> Self {
        ParamGroup {
            rule,
            params,
            state: StateStorage::default(),
        }
    }
}

/// One state buffer as an executor hands it to a checkpoint, or gets it from one.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferData<F> {
    /// In the parameters' type.
    Full(Vec<F>),
    /// In fewer bits.
    Packed(PackedBuffer),
}

/// What a step does after the gradients were scanned ([`StepPlanner::admit`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admit {
    /// Go on, scaling the gradients by this (global-norm clipping), if any.
    Step {
        /// The clipping coefficient.
        grad_scale: Option<f64>,
    },
    /// Skip the step: a gradient is not finite and the policy is [`NonFinite::Skip`] (the
    /// skip is counted).
    Skip,
    /// Refuse the step: a gradient is not finite and the policy is [`NonFinite::Refuse`].
    Refuse,
}

/// Everything of a rule optimizer's step but the element-wise pass: the groups'
/// hyperparameters, each tensor's scalars (step counts, SWATS' phase), the schedule, clipping,
/// gradient noise, the policy for non-finite gradients, the step counts and the state's
/// layout in checkpoints.
///
/// [`RuleOptimizer`] runs its element pass on the CPU with state in host memory; another
/// executor (the GPU one of `downhill-cuda`) keeps the tensors and state elsewhere and drives
/// the same planner, so both step, schedule and checkpoint alike. A step with a planner:
/// [`scan`](StepPlanner::scan) says what the gradients' scan must find; [`admit`](StepPlanner::admit)
/// decides from it; [`prepare`](StepPlanner::prepare) computes each group's [`Prelude`] and each
/// tensor's constants ([`Rule::begin`]); the executor runs `prelude → rule` on every element;
/// [`finish`](StepPlanner::finish) ends the step with the rule's reductions.
#[derive(Clone, Debug)]
pub struct StepPlanner<R: Rule> {
    rules: Vec<R>,
    /// How each group stores its state.
    storage: Vec<StateStorage>,
    params: Vec<ParamInfo>,
    /// The group of each tensor.
    groups: Vec<usize>,
    /// The scalar state of each tensor.
    scalars: Vec<R::Scalars>,
    schedule: Option<Arc<dyn Schedule>>,
    clip: Clip,
    noise: Option<GradientNoise>,
    non_finite: NonFinite,
    steps: u64,
    skipped: u64,
    /// This step's prelude per group and constants per tensor (kept to avoid allocating).
    pres: Vec<Prelude>,
    coefs: Vec<R::Coef>,
    /// For each tensor, the first tensor of its run: tensors of one run share their constants
    /// this step (same group, same scalars).
    runs: Vec<usize>,
    /// Which tensors take part in this step (have a gradient).
    active: Vec<bool>,
    /// The reading pass's sums per tensor and per group (kept to avoid allocating).
    tensor_sums: Vec<[f64; 2]>,
    group_sums: Vec<[f64; 2]>,
    /// This rank's share, when the state is sharded ([`crate::shard`]).
    shard: Option<Shard>,
    /// This rank's range of each tensor, when the state is sharded: its state buffers hold
    /// those elements only (set by the executor, which knows the plan).
    owned: Option<Vec<Range<usize>>>,
}

/// A checkpoint read and checked against a planner, not yet applied
/// ([`StepPlanner::read_state`]).
#[derive(Debug)]
pub struct LoadedState<F, R: Rule> {
    rules: Vec<R>,
    scalars: Vec<R::Scalars>,
    steps: u64,
    skipped: u64,
    /// Each tensor's state buffers, in [`Rule::buffers`] order (none for a tensor whose state
    /// is stored in fewer bits).
    pub buffers: Vec<Vec<Vec<F>>>,
    /// Each tensor's state buffers stored in fewer bits (none for the others).
    pub packed: Vec<Vec<PackedBuffer>>,
    /// Each tensor's [tensor state](Rule::tensor_state), in its order.
    pub tensor_state: Vec<Vec<Vec<F>>>,
}

/// State buffer `key` of a tensor of `shape` as a checkpoint stores it: in the parameters'
/// type, as 8-bit codes with their absmax (`{key}.absmax`, named into `known`), or as
/// bfloat16. Refuses a wrong shape or length, and absmax that are not finite and
/// non-negative.
fn read_buffer<F: Float>(
    sd: &StateDict,
    key: &str,
    shape: &[usize],
    map: crate::kernel::lowbit::QuantMap,
    known: &mut std::collections::HashSet<String>,
) -> Result<BufferData<F>> {
    let t = sd
        .tensors
        .get(key)
        .ok_or_else(|| Error::State(format!("'{key}' is missing")))?;
    let n: usize = shape.iter().product();
    let check_len = |len: usize| {
        if t.shape != shape || len != n {
            return Err(Error::State(format!(
                "'{key}' has shape {:?} and {len} elements, the parameter has shape {shape:?}",
                t.shape
            )));
        }
        Ok(())
    };
    match &t.data {
        TensorData::U8(codes) => {
            check_len(codes.len())?;
            let akey = format!("{key}.absmax");
            let blocks = n.div_ceil(BLOCK);
            let absmax = match sd.tensors.get(&akey) {
                Some(StateTensor {
                    shape: s,
                    data: TensorData::F32(a),
                }) if s.as_slice() == [blocks] && a.len() == blocks => a,
                Some(other) => {
                    return Err(Error::State(format!(
                        "'{akey}' must hold {blocks} f32 (one per block of {BLOCK}), found {} \
                         of shape {:?}",
                        other.data.type_name(),
                        other.shape
                    )))
                }
                None => return Err(Error::State(format!("'{akey}' is missing"))),
            };
            if let Some((i, a)) = absmax
                .iter()
                .enumerate()
                .find(|(_, a)| !(a.is_finite() && **a >= 0.0))
            {
                return Err(Error::State(format!(
                    "'{akey}'[{i}] = {a}: an absmax must be finite and non-negative"
                )));
            }
            known.insert(akey);
            Ok(BufferData::Packed(PackedBuffer::Q8 {
                codes: codes.clone(),
                absmax: absmax.clone(),
                map,
            }))
        }
        TensorData::Bf16(bits) => {
            check_len(bits.len())?;
            Ok(BufferData::Packed(PackedBuffer::Bf16(bits.clone())))
        }
        _ => Ok(BufferData::Full(sd.buffer::<F>(key, shape)?.to_vec())),
    }
}

/// A buffer read from a checkpoint, stored as this optimizer stores it: as it is when the
/// precisions agree, else converted (decoded, rounded to `f32`, encoded; only when the
/// checkpoint asks for it: [`StateDict::convert_state_precision`]).
fn convert_buffer<F: Float>(
    stored: BufferData<F>,
    precision: StatePrecision,
    map: crate::kernel::lowbit::QuantMap,
) -> BufferData<F> {
    match (stored, precision) {
        (BufferData::Full(v), StatePrecision::F32) => BufferData::Full(v),
        (BufferData::Full(v), p) => {
            let x: Vec<f32> = v.iter().map(|x| x.to_f64() as f32).collect();
            BufferData::Packed(PackedBuffer::encode(&x, p, map))
        }
        (BufferData::Packed(b), StatePrecision::F32) => BufferData::Full(
            b.decode()
                .into_iter()
                .map(|x| F::from_f64(f64::from(x)))
                .collect(),
        ),
        (BufferData::Packed(b @ PackedBuffer::Bf16(_)), StatePrecision::Bf16) => {
            BufferData::Packed(b)
        }
        (BufferData::Packed(b @ PackedBuffer::Q8 { .. }), StatePrecision::Bit8) => {
            BufferData::Packed(b)
        }
        (BufferData::Packed(b), p) => BufferData::Packed(PackedBuffer::encode(&b.decode(), p, map)),
    }
}

impl<R: Rule> StepPlanner<R> {
    /// Several parameter groups, each with its own hyperparameters. Every parameter belongs
    /// to exactly one group; names must be unique.
    pub fn with_groups(groups: Vec<ParamGroup<R>>) -> Result<Self> {
        if groups.is_empty() {
            return Err(Error::Setup("no parameter groups".into()));
        }
        let mut rules = Vec::with_capacity(groups.len());
        let mut storage = Vec::with_capacity(groups.len());
        let mut params = Vec::new();
        let mut tensor_groups = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (gi, group) in groups.into_iter().enumerate() {
            group.rule.validate()?;
            let nbuf = group.rule.buffers().len();
            if nbuf > MAX_BUFFERS {
                return Err(Error::Setup(format!(
                    "{} keeps {nbuf} buffers, more than {MAX_BUFFERS}",
                    R::NAME
                )));
            }
            group.state.validate()?;
            if group.state.state_precision.is_low()
                && (R::MEASURES || R::TRANSFORMS || R::EVAL_POINT)
            {
                return Err(Error::Options {
                    what: R::NAME.into(),
                    message: format!(
                        "state_precision {} is for element-wise rules; {} reads its state \
                         outside the update (a reading pass, whole-tensor work or an \
                         evaluation point)",
                        group.state.state_precision,
                        R::NAME
                    ),
                });
            }
            for info in group.params {
                group.rule.check_param(&info)?;
                if info.name.is_empty() || info.name.contains(char::is_whitespace) {
                    return Err(Error::Setup(format!(
                        "parameter name '{}' must be non-empty, without spaces",
                        info.name
                    )));
                }
                if !names.insert(info.name.clone()) {
                    return Err(Error::Setup(format!(
                        "parameter '{}' is listed twice",
                        info.name
                    )));
                }
                info.shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| {
                        Error::Setup(format!(
                            "shape {:?} of '{}' overflows",
                            info.shape, info.name
                        ))
                    })?;
                tensor_groups.push(gi);
                params.push(info);
            }
            rules.push(group.rule);
            storage.push(group.state);
        }
        let n = params.len();
        Ok(StepPlanner {
            pres: Vec::with_capacity(rules.len()),
            coefs: Vec::with_capacity(n),
            runs: Vec::with_capacity(n),
            rules,
            storage,
            params,
            groups: tensor_groups,
            scalars: vec![R::Scalars::default(); n],
            active: vec![true; n],
            tensor_sums: Vec::with_capacity(n),
            group_sums: Vec::new(),
            shard: None,
            owned: None,
            schedule: None,
            clip: Clip::default(),
            noise: None,
            non_finite: NonFinite::Refuse,
            steps: 0,
            skipped: 0,
        })
    }

    /// Use a learning-rate schedule (applies to every group, from its base rate).
    pub fn set_schedule(&mut self, schedule: Arc<dyn Schedule>) -> Result<()> {
        schedule.validate()?;
        self.schedule = Some(schedule);
        Ok(())
    }

    /// Clip gradients before every step.
    pub fn set_clip(&mut self, clip: Clip) -> Result<()> {
        clip.validate()?;
        self.clip = clip;
        Ok(())
    }

    /// Add annealed Gaussian noise to every gradient, after clipping.
    pub fn set_noise(&mut self, noise: GradientNoise) -> Result<()> {
        noise.validate()?;
        self.noise = Some(noise);
        Ok(())
    }

    /// Choose what happens on a non-finite gradient.
    pub fn set_non_finite(&mut self, policy: NonFinite) {
        self.non_finite = policy;
    }

    /// Keep and update only this rank's share of the state ([`crate::shard`]); a rule with
    /// whole-tensor work ([`Rule::TRANSFORMS`]) gets whole tensors.
    pub fn set_shard(&mut self, shard: Shard) -> Result<()> {
        shard.validate()?;
        self.shard = Some(shard);
        Ok(())
    }

    /// This rank's share, when the state is sharded.
    pub fn shard(&self) -> Option<&Shard> {
        self.shard.as_ref()
    }

    /// Record this rank's range of each tensor (the executor's plan decides them).
    pub fn set_owned(&mut self, owned: Vec<Range<usize>>) {
        self.owned = Some(owned);
    }

    /// This rank's range of each tensor, when the state is sharded.
    pub fn owned(&self) -> Option<&[Range<usize>]> {
        self.owned.as_deref()
    }

    /// The parameters.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The configuration of `group`.
    pub fn rule(&self, group: usize) -> Option<&R> {
        self.rules.get(group)
    }

    /// The group of parameter `index`.
    pub fn group_of(&self, index: usize) -> usize {
        self.groups[index]
    }

    /// How `group` stores its state.
    pub fn storage(&self, group: usize) -> Option<&StateStorage> {
        self.storage.get(group)
    }

    /// The precision parameter `index`'s state buffers are stored in.
    pub fn precision(&self, index: usize) -> StatePrecision {
        self.storage[self.groups[index]].precision_for(self.params[index].len())
    }

    /// Whether any tensor's state is stored in fewer bits.
    pub fn has_low_precision(&self) -> bool {
        (0..self.params.len()).any(|t| self.precision(t).is_low())
    }

    /// The per-tensor scalar state of parameter `index`.
    pub fn scalars(&self, index: usize) -> Option<&R::Scalars> {
        self.scalars.get(index)
    }

    /// Every tensor's scalar state.
    pub fn all_scalars(&self) -> &[R::Scalars] {
        &self.scalars
    }

    /// Put back the scalars from before a [`prepare`](StepPlanner::prepare) whose element
    /// pass could not run (an executor's failure), so the step never happened.
    pub fn restore_scalars(&mut self, scalars: Vec<R::Scalars>) {
        if scalars.len() == self.scalars.len() {
            self.scalars = scalars;
        }
    }

    /// The state buffers parameter `index` keeps, with their initial values.
    pub fn buffer_inits(&self, index: usize) -> Vec<f64> {
        let rule = &self.rules[self.groups[index]];
        (0..rule.buffers().len())
            .map(|k| rule.buffer_init(k))
            .collect()
    }

    /// The [tensor state](Rule::tensor_state) parameter `index` keeps: names and shapes.
    pub fn tensor_state_shapes(&self, index: usize) -> Vec<(&'static str, Vec<usize>)> {
        self.rules[self.groups[index]].tensor_state(&self.params[index].shape)
    }

    /// After the gradients went through the prelude into a copy ([`Rule::TRANSFORMS`]): leave
    /// only the decoupled decay in this step's preludes, so the element pass does not apply
    /// `maximize`, clipping or the L2 penalty again.
    pub fn strip_gradient_preludes(&mut self) {
        for pre in &mut self.pres {
            *pre = Prelude {
                decay_factor: pre.decay_factor,
                ..Prelude::default()
            };
        }
    }

    /// Hand the reading pass's sums to the rules ([`Rule::absorb`]): `sums(t)` is tensor
    /// `t`'s; a group's are added in parameter order. Every tensor then has constants of its
    /// own ([`runs`](StepPlanner::runs) says so).
    pub fn absorb(&mut self, sums: impl Fn(usize) -> [f64; 2]) {
        self.tensor_sums.clear();
        self.tensor_sums.extend((0..self.params.len()).map(sums));
        self.group_sums.clear();
        self.group_sums.resize(self.rules.len(), [0.0; 2]);
        for (t, s) in self.tensor_sums.iter().enumerate() {
            if self.active[t] {
                let g = &mut self.group_sums[self.groups[t]];
                g[0] += s[0];
                g[1] += s[1];
            }
        }
        for t in (0..self.params.len()).filter(|&t| self.active[t]) {
            let g = self.groups[t];
            self.rules[g].absorb(
                &mut self.scalars[t],
                &mut self.coefs[t],
                self.tensor_sums[t],
                self.group_sums[g],
            );
            self.runs[t] = t;
        }
    }

    /// The whole-tensor stage of every tensor ([`Rule::transform`]), tensors in parallel:
    /// `work[t]` holds tensor `t`'s gradient after the prelude, and on return what the
    /// element pass takes as its gradient.
    pub fn transform<F: Float>(
        &mut self,
        params: &[&mut [F]],
        work: &mut [Vec<F>],
        buffers: &mut [Vec<Vec<F>>],
        tensor_state: &mut [Vec<Vec<F>>],
    ) {
        let (rules, groups, infos, active) =
            (&self.rules, &self.groups, &self.params, &self.active);
        let owned = self.owned.as_deref();
        kernel::par_tensors(
            &mut self.coefs,
            work,
            buffers,
            tensor_state,
            |t, coef, g, bufs, ts| {
                // Sharded: each rank runs the tensors it owns (whole, for these rules).
                let mine = owned.is_none_or(|o| o[t].len() == infos[t].len());
                if !active[t] || !mine {
                    return;
                }
                rules[groups[t]].transform(
                    coef,
                    crate::optim::Whole {
                        shape: &infos[t].shape,
                        p: &*params[t],
                        g,
                        buffers: bufs,
                        tensor_state: ts,
                    },
                );
            },
        );
        // Every tensor's constants are its own now.
        for (t, run) in self.runs.iter_mut().enumerate() {
            *run = t;
        }
    }

    /// Which tensors take part in the next step (those with a gradient; `None`: all). A
    /// tensor left out keeps its scalars, is not handed to the rule's stages, and is left out
    /// of the group sums.
    pub fn set_active(&mut self, active: Option<&[bool]>) {
        match active {
            Some(a) if a.len() == self.active.len() => self.active.copy_from_slice(a),
            _ => self.active.fill(true),
        }
    }

    /// Which tensors take part in this step.
    pub fn active(&self) -> &[bool] {
        &self.active
    }

    /// The gradient noise, if any.
    pub fn noise(&self) -> Option<GradientNoise> {
        self.noise
    }

    /// The clipping.
    pub fn clip(&self) -> Clip {
        self.clip
    }

    /// What the scan of the gradients before a step must compute: `(check for NaN/inf, sum
    /// of squares)`; neither means no scan.
    pub fn scan(&self) -> (bool, bool) {
        (
            self.non_finite != NonFinite::Unchecked,
            self.clip.max_norm.is_some(),
        )
    }

    /// Decide the step from the scan: `finite` (every gradient element is) and the sum of
    /// the squares of all gradient elements (used when clipping by norm). Counts a skip.
    pub fn admit(&mut self, finite: bool, sum_squares: f64) -> Admit {
        if self.non_finite != NonFinite::Unchecked && !finite {
            if self.non_finite == NonFinite::Skip {
                self.skipped += 1;
                return Admit::Skip;
            }
            return Admit::Refuse;
        }
        Admit::Step {
            grad_scale: self
                .clip
                .max_norm
                .map(|max_norm| clip_coef(max_norm, sum_squares.sqrt())),
        }
    }

    /// The error naming the first non-finite element of `grads` (for [`Admit::Refuse`]).
    pub fn non_finite_error<F: Float>(&self, grads: &[&[F]]) -> Error {
        non_finite_error(&self.params, grads)
    }

    /// Compute this step's prelude per group (clipping scale, `maximize`, weight decay with
    /// the scheduled learning rate) and constants per tensor ([`Rule::begin`]), advancing the
    /// tensors' scalars. `clip` says whether the prelude clips (by `grad_scale` and the
    /// clipping value); an executor that clipped already, while adding noise, says no.
    pub fn prepare(&mut self, grad_scale: Option<f64>, clip: bool) {
        let (grad_scale, clip_value) = if clip {
            (grad_scale, self.clip.max_value)
        } else {
            (None, None)
        };
        self.pres.clear();
        let (schedule, steps) = (&self.schedule, self.steps);
        let storage = &self.storage;
        self.pres
            .extend(self.rules.iter().zip(storage).map(|(rule, st)| {
                let lr = scheduled(schedule, steps, rule);
                let h = rule.hyper_for(st.state_precision);
                let decay = h.weight_decay != 0.0;
                Prelude {
                    maximize: h.maximize,
                    grad_scale,
                    clip_value,
                    l2: if decay && !h.decoupled_weight_decay {
                        h.weight_decay
                    } else {
                        0.0
                    },
                    decay_factor: (decay && h.decoupled_weight_decay)
                        .then_some(1.0 - lr * h.weight_decay),
                }
            }));
        // `begin` is a pure function of (rule, scalars, lr), so neighbours in one group with
        // equal scalars (the usual case) share one result.
        self.coefs.clear();
        self.runs.clear();
        // (group, scalars before, scalars after, constants, first tensor) of the last run.
        type Memo<S, C> = Option<(usize, S, S, C, usize)>;
        let mut last: Memo<R::Scalars, R::Coef> = None;
        for (t, (scalars, &group)) in self.scalars.iter_mut().zip(&self.groups).enumerate() {
            if !self.active[t] {
                // No gradient: the scalars stay; constants are computed on a copy only to
                // keep one per tensor.
                let rule = &self.rules[group];
                let lr = scheduled(schedule, steps, rule);
                let precision = self.storage[group].state_precision;
                self.coefs
                    .push(rule.begin_for(&mut scalars.clone(), lr, precision));
                self.runs.push(t);
                last = None;
                continue;
            }
            match &last {
                Some((g, before, after, coef, first)) if *g == group && before == scalars => {
                    *scalars = after.clone();
                    self.coefs.push(*coef);
                    self.runs.push(*first);
                }
                _ => {
                    let rule = &self.rules[group];
                    let lr = scheduled(schedule, steps, rule);
                    let before = scalars.clone();
                    let coef = rule.begin_for(scalars, lr, self.storage[group].state_precision);
                    self.coefs.push(coef);
                    self.runs.push(t);
                    last = Some((group, before, scalars.clone(), coef, t));
                }
            }
        }
    }

    /// This step's prelude per group (after [`prepare`](StepPlanner::prepare)).
    pub fn preludes(&self) -> &[Prelude] {
        &self.pres
    }

    /// This step's constants per tensor (after [`prepare`](StepPlanner::prepare)).
    pub fn coefs(&self) -> &[R::Coef] {
        &self.coefs
    }

    /// For each tensor, the first tensor whose constants it shares this step (itself when
    /// its constants were computed for it; after [`prepare`](StepPlanner::prepare)).
    pub fn runs(&self) -> &[usize] {
        &self.runs
    }

    /// End the step: each tensor's rule sees the sums of its two reductions (`sums(t)`),
    /// and the step is counted.
    pub fn finish(&mut self, sums: impl Fn(usize) -> [f64; 2]) {
        for (t, scalars) in self.scalars.iter_mut().enumerate() {
            if self.active[t] {
                self.rules[self.groups[t]].end(scalars, sums(t));
            }
        }
        self.steps += 1;
    }

    /// Steps applied so far.
    pub fn steps_taken(&self) -> u64 {
        self.steps
    }

    /// Steps skipped.
    pub fn steps_skipped(&self) -> u64 {
        self.skipped
    }

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.rules.len()
    }

    /// The learning rate the next step will use in `group`.
    pub fn lr(&self, group: usize) -> Result<f64> {
        match self.rules.get(group) {
            Some(rule) => Ok(scheduled(&self.schedule, self.steps, rule)),
            None => Err(Error::Setup(format!(
                "group {group} does not exist ({} groups)",
                self.rules.len()
            ))),
        }
    }

    /// Set the base learning rate of `group`.
    pub fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        let n = self.rules.len();
        let rule = self
            .rules
            .get_mut(group)
            .ok_or_else(|| Error::Setup(format!("group {group} does not exist ({n} groups)")))?;
        let mut changed = rule.clone();
        changed.set_lr(lr);
        changed.validate()?;
        *rule = changed;
        Ok(())
    }

    fn key(&self, index: usize, field: &str) -> String {
        format!(
            "g{}.{}.{field}",
            self.groups[index], self.params[index].name
        )
    }

    /// The whole state, with `buffer(t, k)` giving state buffer `k` of tensor `t` (for rules
    /// without [tensor state](Rule::tensor_state)).
    pub fn state_dict<F: Float>(&self, buffer: impl FnMut(usize, usize) -> Vec<F>) -> StateDict {
        self.state_dict_with(buffer, |_, _| Vec::new())
    }

    /// The whole state, with `buffer(t, k)` giving state buffer `k` of tensor `t` and
    /// `tensor_state(t, k)` its tensor state `k`.
    pub fn state_dict_with<F: Float>(
        &self,
        mut buffer: impl FnMut(usize, usize) -> Vec<F>,
        tensor_state: impl FnMut(usize, usize) -> Vec<F>,
    ) -> StateDict {
        self.state_dict_stored(|t, k| BufferData::Full(buffer(t, k)), tensor_state)
    }

    /// The whole state, with `buffer(t, k)` giving state buffer `k` of tensor `t` as it is
    /// stored (in fewer bits: its codes and absmax, or its bfloat16 bits, as they are) and
    /// `tensor_state(t, k)` its tensor state `k`.
    pub fn state_dict_stored<F: Float>(
        &self,
        mut buffer: impl FnMut(usize, usize) -> BufferData<F>,
        mut tensor_state: impl FnMut(usize, usize) -> Vec<F>,
    ) -> StateDict {
        let mut sd = StateDict::default();
        let config: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(serde_json::Value::Null))
            .collect();
        sd.meta
            .insert("format_version".into(), FORMAT_VERSION.to_string());
        sd.meta.insert("optimizer".into(), R::NAME.into());
        sd.meta.insert("dtype".into(), F::DTYPE.name().into());
        sd.meta
            .insert("groups".into(), serde_json::Value::from(config).to_string());
        sd.meta.insert("step".into(), self.steps.to_string());
        sd.meta.insert("skipped".into(), self.skipped.to_string());
        if let Some(s) = self.schedule.as_ref().and_then(|s| s.to_json()) {
            sd.meta.insert("schedule".into(), s.to_string());
        }
        if self.storage.iter().any(|s| s.state_precision.is_low()) {
            let storage = serde_json::to_value(&self.storage).unwrap_or(serde_json::Value::Null);
            sd.meta.insert("state_storage".into(), storage.to_string());
        }
        let mut pieces = serde_json::Map::new();
        for (g, rule) in self.rules.iter().enumerate() {
            sd.tensors
                .insert(format!("g{g}.lr"), StateTensor::scalar(rule.hyper().lr));
        }
        for (t, scalars) in self.scalars.iter().enumerate() {
            let rule = &self.rules[self.groups[t]];
            for (k, name) in rule.buffers().iter().enumerate() {
                let (key, full) = (self.key(t, name), &self.params[t].shape);
                let owned = self.owned.as_ref().map(|o| o[t].clone());
                let shape = match &owned {
                    Some(r) => vec![r.len()],
                    None => full.clone(),
                };
                let data = buffer(t, k);
                if let Some(r) = owned {
                    crate::shard::record_piece(&mut pieces, &key, r.clone(), full);
                    if matches!(data, BufferData::Packed(PackedBuffer::Q8 { .. })) {
                        let blocks = r.start / BLOCK..r.end.div_ceil(BLOCK);
                        let all = [self.params[t].len().div_ceil(BLOCK)];
                        crate::shard::record_piece(
                            &mut pieces,
                            &format!("{key}.absmax"),
                            blocks,
                            &all,
                        );
                    }
                }
                match data {
                    BufferData::Full(v) => {
                        sd.tensors.insert(key, StateTensor::buffer(&shape, v));
                    }
                    BufferData::Packed(b) => b.insert_into(&mut sd, key, &shape),
                }
            }
            for (k, (name, shape)) in self.tensor_state_shapes(t).iter().enumerate() {
                let (key, v) = (self.key(t, name), tensor_state(t, k));
                if self.owned.is_some() {
                    // Sharded: all of it on the tensor's owner, none elsewhere.
                    crate::shard::record_piece(&mut pieces, &key, 0..v.len(), shape);
                    sd.tensors.insert(key, StateTensor::buffer(&[v.len()], v));
                } else {
                    sd.tensors.insert(key, StateTensor::buffer(shape, v));
                }
            }
            for (name, x) in R::Scalars::FIELDS.iter().zip(scalars.to_values()) {
                sd.tensors.insert(self.key(t, name), StateTensor::scalar(x));
            }
        }
        if let Some(shard) = &self.shard {
            crate::shard::mark_shard(&mut sd, shard.rank, shard.ranks, pieces);
        }
        sd
    }

    /// Read and check a state from [`state_dict`](StepPlanner::state_dict) without changing
    /// anything; [`apply_state`](StepPlanner::apply_state) then takes it.
    pub fn read_state<F: Float>(&self, sd: &StateDict) -> Result<LoadedState<F, R>> {
        sd.expect(R::NAME, F::DTYPE)?;
        if crate::shard::is_shard(sd) {
            return Err(Error::State(
                "this is one rank's shard of a sharded optimizer's state: put the shards of \
                 every rank together first (downhill::shard::consolidate)"
                    .into(),
            ));
        }
        let steps = sd.meta_u64("step")?;
        let skipped = sd.meta_u64("skipped")?;
        let mut known = std::collections::HashSet::new();
        let mut rules = self.rules.clone();
        for (g, rule) in rules.iter_mut().enumerate() {
            let key = format!("g{g}.lr");
            rule.set_lr(sd.scalar(&key)?);
            rule.validate()?;
            known.insert(key);
        }
        let mut scalars = Vec::with_capacity(self.scalars.len());
        let mut buffers = Vec::with_capacity(self.scalars.len());
        let mut packed = Vec::with_capacity(self.scalars.len());
        let mut tensor_state = Vec::with_capacity(self.scalars.len());
        for t in 0..self.params.len() {
            let shape = &self.params[t].shape;
            let rule = &rules[self.groups[t]];
            let mut bufs = Vec::with_capacity(rule.buffers().len());
            let mut low = Vec::new();
            let precision = self.precision(t);
            for (k, name) in rule.buffers().iter().enumerate() {
                let key = self.key(t, name);
                let stored = read_buffer::<F>(sd, &key, shape, rule.quant_map(k), &mut known)?;
                let held = match &stored {
                    BufferData::Full(_) => StatePrecision::F32,
                    BufferData::Packed(PackedBuffer::Bf16(_)) => StatePrecision::Bf16,
                    BufferData::Packed(PackedBuffer::Q8 { .. }) => StatePrecision::Bit8,
                };
                if held != precision && !sd.converts_state_precision() {
                    return Err(Error::State(format!(
                        "'{key}' is stored in {held}, this optimizer keeps it in {precision}: \
                         convert it on load with StateDict::convert_state_precision"
                    )));
                }
                match convert_buffer(stored, precision, rule.quant_map(k)) {
                    BufferData::Full(v) => bufs.push(v),
                    BufferData::Packed(b) => low.push(b),
                }
                known.insert(key);
            }
            packed.push(low);
            let mut state = Vec::new();
            for (name, shape) in rule.tensor_state(shape) {
                let key = self.key(t, name);
                state.push(sd.buffer::<F>(&key, &shape)?.to_vec());
                known.insert(key);
            }
            tensor_state.push(state);
            let mut values = Vec::with_capacity(R::Scalars::FIELDS.len());
            for name in R::Scalars::FIELDS {
                let key = self.key(t, name);
                values.push(sd.scalar(&key)?);
                known.insert(key);
            }
            scalars.push(R::Scalars::from_values(&values)?);
            buffers.push(bufs);
        }
        sd.reject_unknown_keys(|k| known.contains(k))?;
        Ok(LoadedState {
            rules,
            scalars,
            steps,
            skipped,
            buffers,
            packed,
            tensor_state,
        })
    }

    /// Take a state read by [`read_state`](StepPlanner::read_state); returns its buffers (in
    /// the parameters' type, and in fewer bits), for the executor to keep.
    pub fn apply_state<F>(
        &mut self,
        state: LoadedState<F, R>,
    ) -> (Vec<Vec<Vec<F>>>, Vec<Vec<PackedBuffer>>) {
        self.rules = state.rules;
        self.scalars = state.scalars;
        self.steps = state.steps;
        self.skipped = state.skipped;
        (state.buffers, state.packed)
    }

    /// The mean over all elements of `f(rule, tensor)`, a per-element quantity of each
    /// tensor.
    fn mean_per_element(&self, f: impl Fn(&R, usize) -> f64) -> f64 {
        let total: usize = self.params.iter().map(ParamInfo::len).sum();
        if total == 0 {
            return 0.0;
        }
        let sum: f64 = (0..self.params.len())
            .map(|t| f(&self.rules[self.groups[t]], t) * self.params[t].len() as f64)
            .sum();
        sum / total as f64
    }

    /// Bytes per element of tensor `t`'s state buffers, as stored (`elem`: bytes of the
    /// parameters' type).
    fn buffer_bytes_per_element(&self, rule: &R, t: usize, elem: usize) -> f64 {
        let n = self.params[t].len();
        if n == 0 {
            return 0.0;
        }
        rule.buffers().len() as f64 * buffer_bytes(self.precision(t), n, elem) / n as f64
    }

    /// Bytes of state per parameter, for elements of `elem` bytes: the per-element buffers
    /// and the [tensor state](Rule::tensor_state) (Adafactor's rows and columns).
    pub fn state_bytes_per_param(&self, elem: usize) -> f64 {
        let total: usize = self.params.iter().map(ParamInfo::len).sum();
        if let Some(owned) = &self.owned {
            // Sharded: this rank's buffers, per parameter of the whole model.
            let bytes: f64 = (owned.iter().enumerate())
                .map(|(t, r)| {
                    let nbuf = self.rules[self.groups[t]].buffers().len();
                    let whole: usize = if r.len() == self.params[t].len() {
                        (self.tensor_state_shapes(t).iter())
                            .map(|(_, s)| s.iter().product::<usize>())
                            .sum()
                    } else {
                        0
                    };
                    nbuf as f64 * buffer_bytes(self.precision(t), r.len(), elem)
                        + (whole * elem) as f64
                })
                .sum();
            return if total == 0 {
                0.0
            } else {
                bytes / total as f64
            };
        }
        let tensor_state: usize = (0..self.params.len())
            .flat_map(|t| self.tensor_state_shapes(t))
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        let extra = if total == 0 {
            0.0
        } else {
            (elem * tensor_state) as f64 / total as f64
        };
        self.mean_per_element(|r, t| self.buffer_bytes_per_element(r, t, elem)) + extra
    }

    /// Bytes a step moves per parameter, for elements of `elem` bytes: the update pass reads
    /// the parameter, the gradient and every buffer and writes the parameter and every
    /// buffer; a reading pass ([`Rule::MEASURES`]) reads what it uses once more
    /// ([`Rule::measure_reads`]); a whole-tensor stage ([`Rule::TRANSFORMS`]) adds the copy of the
    /// gradient through the prelude (read the parameter and the gradient, write the copy; its
    /// own work on the copy is not counted).
    pub fn traffic_per_param(&self, elem: usize) -> f64 {
        let transform = if R::TRANSFORMS { 3 } else { 0 };
        self.mean_per_element(|r, t| {
            let measure = if R::MEASURES { r.measure_reads() } else { 0 };
            (elem * (3 + measure + transform)) as f64
                + 2.0 * self.buffer_bytes_per_element(r, t, elem)
        })
    }
}

/// An optimizer driven by an element-wise [`Rule`], over parameter groups, with gradient
/// clipping, a learning-rate schedule and a policy for non-finite gradients, stepping tensors
/// in host memory.
///
/// A step runs, for each tensor, in this order:
/// gradient → `maximize` sign → clipping (global norm, value) → L2 penalty or decoupled decay
/// → the rule's update with the scheduled learning rate. All of it is one fused pass per
/// element (see [`crate::kernel`]); the rest is the [`StepPlanner`]'s.
///
/// ```
/// use downhill::{optim::adam::Adam, Optimizer, ParamInfo, RuleOptimizer};
/// let mut opt = RuleOptimizer::<f64, _>::new(
///     Adam { lr: 0.1, ..Default::default() },
///     vec![ParamInfo::new("x", [2])],
/// )?;
/// let mut x = vec![1.0, -2.0];
/// for _ in 0..200 {
///     let g: Vec<f64> = x.iter().map(|v| 2.0 * v).collect(); // ∇ of |x|²
///     opt.step(&mut [&mut x[..]], &[&g[..]])?;
/// }
/// assert!(x.iter().all(|v| v.abs() < 1e-2));
/// # Ok::<(), downhill::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RuleOptimizer<F: Float, R: Rule> {
    planner: StepPlanner<R>,
    /// Each tensor's state buffers (none where they are stored in fewer bits).
    buffers: Vec<Vec<Vec<F>>>,
    /// Each tensor's state buffers stored in fewer bits (none for the others).
    packed: Vec<Vec<PackedBuffer>>,
    /// Each tensor's [tensor state](Rule::tensor_state).
    tensor_state: Vec<Vec<Vec<F>>>,
    /// How the elements split into chunks (fixed at construction; when sharded, the whole
    /// plan restricted to this rank's segments).
    plan: Plan,
    /// Which elements each rank owns, when the state is sharded.
    layout: Option<ShardLayout>,
    /// Per-step scratch, kept to avoid allocating in `step`.
    scratch: Scratch<F>,
}

#[derive(Clone, Debug)]
struct Scratch<F> {
    views: Vec<TensorViews<F>>,
    /// One pair of partial sums per segment of the plan.
    partials: Vec<[f64; 2]>,
    /// Clipped gradients plus noise, when gradient noise is on.
    noisy: Vec<Vec<F>>,
    /// The gradients through the prelude, for a rule's whole-tensor stage
    /// ([`Rule::TRANSFORMS`]).
    work: Vec<Vec<F>>,
    /// Sharded: the first element of each tensor this rank owns (for the noise).
    starts: Vec<usize>,
}

impl<F: Float, R: Rule> RuleOptimizer<F, R> {
    /// One group of parameters with one configuration.
    pub fn new(rule: R, params: Vec<ParamInfo>) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(rule, params)])
    }

    /// Several parameter groups, each with its own hyperparameters. Every parameter belongs
    /// to exactly one group; names must be unique.
    pub fn with_groups(groups: Vec<ParamGroup<R>>) -> Result<Self> {
        Ok(Self::from_planner(StepPlanner::with_groups(groups)?))
    }

    /// Step with `planner` (configured: schedule, clipping, policy, noise), state allocated
    /// now.
    pub fn from_planner(mut planner: StepPlanner<R>) -> Self {
        let lens: Vec<usize> = planner.params.iter().map(ParamInfo::len).collect();
        let full = |t: usize| !planner.precision(t).is_low();
        let chunk = planner.shard.as_ref().map_or(CHUNK, |s| s.chunk);
        let mut plan = Plan::aligned(&lens, chunk, |t| if full(t) { 1 } else { BLOCK });
        let layout = planner.shard.as_ref().map(|s| {
            let layout = ShardLayout::new(&plan, lens.len(), s.ranks, s.rank, R::TRANSFORMS);
            plan = plan.restrict(layout.segments(s.rank));
            (layout.owned(s.rank).to_vec(), layout)
        });
        let layout = layout.map(|(owned, layout)| {
            planner.set_owned(owned);
            layout
        });
        // The elements whose state this optimizer keeps: all, or this rank's.
        let held = |t: usize| match &planner.owned {
            Some(o) => o[t].len(),
            None => lens[t],
        };
        let full = |t: usize| !planner.precision(t).is_low();
        let buffers = (0..planner.params.len())
            .map(|t| {
                let n = held(t);
                let inits = planner.buffer_inits(t);
                let inits = if full(t) { inits } else { Vec::new() };
                inits.into_iter().map(|x| vec![F::from_f64(x); n]).collect()
            })
            .collect();
        let packed = (0..planner.params.len())
            .map(|t| {
                if full(t) {
                    return Vec::new();
                }
                let n = held(t);
                let rule = &planner.rules[planner.groups[t]];
                let p = planner.precision(t);
                (planner.buffer_inits(t).into_iter().enumerate())
                    .map(|(k, x)| PackedBuffer::encode(&vec![x as f32; n], p, rule.quant_map(k)))
                    .collect()
            })
            .collect();
        // Sharded, a tensor's whole-tensor state lives on the rank that owns the tensor.
        let tensor_state = (0..planner.params.len())
            .map(|t| {
                planner
                    .tensor_state_shapes(t)
                    .into_iter()
                    .map(|(_, shape)| {
                        let n = if held(t) == lens[t] {
                            shape.iter().product()
                        } else {
                            0
                        };
                        vec![F::from_f64(0.0); n]
                    })
                    .collect()
            })
            .collect();
        let work = if R::TRANSFORMS {
            (0..lens.len())
                .map(|t| vec![F::from_f64(0.0); held(t)])
                .collect()
        } else {
            Vec::new()
        };
        let mut opt = RuleOptimizer {
            scratch: Scratch {
                views: Vec::with_capacity(lens.len()),
                partials: vec![[0.0; 2]; plan.num_segments()],
                noisy: Vec::new(),
                work,
                starts: (planner.owned.iter().flatten()).map(|r| r.start).collect(),
            },
            planner,
            buffers,
            packed,
            tensor_state,
            plan,
            layout,
        };
        opt.reserve_noisy();
        opt
    }

    /// Room for the noisy gradients, when the planner adds noise.
    fn reserve_noisy(&mut self) {
        if self.planner.noise().is_some() {
            self.scratch.noisy = self
                .planner
                .params
                .iter()
                .map(|p| Vec::with_capacity(p.len()))
                .collect();
        }
    }

    /// Use a learning-rate schedule (applies to every group, from its base rate).
    pub fn with_schedule(mut self, schedule: Arc<dyn Schedule>) -> Result<Self> {
        self.planner.set_schedule(schedule)?;
        Ok(self)
    }

    /// Clip gradients before every step.
    pub fn with_clip(mut self, clip: Clip) -> Result<Self> {
        self.planner.set_clip(clip)?;
        Ok(self)
    }

    /// Add annealed Gaussian noise to every gradient, after clipping
    /// ([`GradientNoise`]).
    pub fn with_noise(mut self, noise: GradientNoise) -> Result<Self> {
        self.planner.set_noise(noise)?;
        self.reserve_noisy();
        Ok(self)
    }

    /// Choose what happens on a non-finite gradient.
    pub fn with_non_finite(mut self, policy: NonFinite) -> Self {
        self.planner.set_non_finite(policy);
        self
    }

    /// The configuration of `group`.
    pub fn rule(&self, group: usize) -> Option<&R> {
        self.planner.rule(group)
    }

    /// The per-tensor scalar state of parameter `index` (step count, …).
    pub fn scalars(&self, index: usize) -> Option<&R::Scalars> {
        self.planner.scalars(index)
    }

    /// State buffer `buffer` (in [`Rule::buffers`] order) of parameter `index` (`None` when
    /// it is stored in fewer bits: [`packed_buffer`](RuleOptimizer::packed_buffer)).
    pub fn buffer(&self, index: usize, buffer: usize) -> Option<&[F]> {
        self.buffers.get(index)?.get(buffer).map(Vec::as_slice)
    }

    /// State buffer `buffer` of parameter `index` when it is stored in fewer bits.
    pub fn packed_buffer(&self, index: usize, buffer: usize) -> Option<&PackedBuffer> {
        self.packed.get(index)?.get(buffer)
    }

    /// Tensor state `k` (in [`Rule::tensor_state`] order) of parameter `index`.
    pub fn tensor_state(&self, index: usize, k: usize) -> Option<&[F]> {
        self.tensor_state.get(index)?.get(k).map(Vec::as_slice)
    }

    /// The host half of the step: what else a step does.
    pub fn planner(&self) -> &StepPlanner<R> {
        &self.planner
    }

    /// Gradients: one read to find NaN/inf and, when clipping by norm, their global norm
    /// (none when neither is wanted).
    /// Sharded, each rank scans its segments and the partials are summed over ranks first.
    fn scan_gradients(&mut self, grads: &[&[F]]) -> Result<Option<kernel::GradScan>> {
        let (check, norm) = self.planner.scan();
        if !(check || norm) {
            return Ok(None);
        }
        self.clear_partials();
        let partials = RawSlice::new(&mut self.scratch.partials);
        let owned = self.planner.owned.as_deref().unwrap_or(&[]);
        let scan = kernel::scan_grads_from(
            &self.plan,
            grads,
            owned,
            self.planner.active(),
            norm,
            partials,
        );
        if self.layout.is_none() {
            return Ok(Some(scan));
        }
        self.sum_partials()?;
        Ok(Some(kernel::scan_totals(&self.scratch.partials)))
    }

    /// Sharded: zero every segment's partials, so the segments of other ranks add nothing.
    fn clear_partials(&mut self) {
        if self.layout.is_some() {
            self.scratch.partials.fill([0.0; 2]);
        }
    }

    /// Sharded: sum the per-segment partials over ranks. Each segment's are nonzero on the
    /// one rank that owns it, so each rank then holds exactly the partials one process
    /// computes, and adds them up in the same order.
    fn sum_partials(&mut self) -> Result<()> {
        match self.planner.shard() {
            Some(shard) => shard.sums.sum(self.scratch.partials.as_flattened_mut()),
            None => Ok(()),
        }
    }

    /// The rule after the prelude, in the order of [`Rule`]'s stages: the whole-tensor stage
    /// (with the gradients copied through the prelude first), the reading pass and its sums,
    /// then the update pass.
    fn run_rule<G: AsRef<[F]>>(&mut self, params: &mut [&mut [F]], grads: &[G]) -> Result<()> {
        if R::TRANSFORMS {
            let mut work = std::mem::take(&mut self.scratch.work);
            self.element_pass(params, grads, Pass::PreludeInto(&mut work));
            self.planner.strip_gradient_preludes();
            self.planner
                .transform(params, &mut work, &mut self.buffers, &mut self.tensor_state);
            let done = self.measure_and_update(params, &work);
            self.scratch.work = work;
            done
        } else {
            self.measure_and_update(params, grads)
        }
    }

    fn measure_and_update<G: AsRef<[F]>>(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[G],
    ) -> Result<()> {
        if R::MEASURES {
            self.clear_partials();
            self.element_pass(params, grads, Pass::Measure);
            self.sum_partials()?;
            let (plan, partials) = (&self.plan, &self.scratch.partials);
            self.planner.absorb(|t| sum_segments(plan, partials, t));
        }
        self.clear_partials();
        self.element_pass(params, grads, Pass::Update);
        Ok(())
    }

    /// One pass over every element of every tensor (the kernel).
    fn element_pass<G: AsRef<[F]>>(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[G],
        pass: Pass<'_, F>,
    ) {
        let owned = self.planner.owned.as_deref();
        let Scratch {
            views, partials, ..
        } = &mut self.scratch;
        views.clear();
        for (t, (((bufs, low), p), g)) in self
            .buffers
            .iter_mut()
            .zip(self.packed.iter_mut())
            .zip(params.iter_mut())
            .zip(grads)
            .enumerate()
        {
            let origin = owned.map_or(0, |o| o[t].start);
            let mut view = TensorViews {
                p: RawSlice::new(p),
                g: RawSlice::read_only_at(g.as_ref(), origin),
                nbuf: bufs.len().max(low.len()),
                group: self.planner.groups[t],
                active: self.planner.active[t],
                ..TensorViews::default()
            };
            for (slot, buf) in view.bufs.iter_mut().zip(bufs) {
                *slot = RawSlice::at(buf, origin);
            }
            if !low.is_empty() {
                let mut packed = [PackedView::None; MAX_BUFFERS];
                for (slot, buf) in packed.iter_mut().zip(low.iter_mut()) {
                    *slot = match buf {
                        PackedBuffer::Bf16(bits) => PackedView::Bf16(RawSlice::at(bits, origin)),
                        PackedBuffer::Q8 { codes, absmax, map } => PackedView::Q8 {
                            codes: RawSlice::at(codes, origin),
                            absmax: RawSlice::at(absmax, origin / BLOCK),
                            book: map.codebook(),
                        },
                    };
                }
                view.packed = Some(packed);
            }
            views.push(view);
        }
        let (plan, coefs, pres) = (&self.plan, self.planner.coefs(), self.planner.preludes());
        let partials = RawSlice::new(partials);
        // SAFETY: the views point into `params` (exclusively borrowed), `grads` (read only)
        // and this optimizer's buffers (or the copy `work`), all alive for the call, with the
        // plan's lengths (`check_shapes` ran first); distinct tensors never share memory
        // (`&mut` borrows).
        unsafe {
            match pass {
                Pass::Update => kernel::update_all::<F, R>(plan, views, coefs, pres, partials),
                Pass::Measure => kernel::measure_all::<F, R>(plan, views, coefs, pres, partials),
                Pass::PreludeInto(work) => {
                    for (v, w) in views.iter_mut().zip(work.iter_mut()) {
                        v.bufs[0] = RawSlice::new(w);
                    }
                    kernel::prelude_grads(plan, views, pres)
                }
            }
        };
        views.clear();
    }

    /// A step over the tensors marked `active` (all when `None`); the others have no gradient.
    fn step_masked(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[&[F]],
        active: Option<&[bool]>,
    ) -> Result<StepOutcome> {
        // Everything that can refuse the step runs before anything is written.
        match self.planner.owned() {
            None => check_shapes(self.planner.params(), params, grads, active)?,
            Some(owned) => check_shard_shapes(self.planner.params(), owned, params, grads, active)?,
        }
        self.planner.set_active(active);
        let scan = self.scan_gradients(grads)?;
        let (finite, sum_squares) = scan.map_or((true, 0.0), |s| (s.finite, s.sum_squares));
        let grad_scale = match self.planner.admit(finite, sum_squares) {
            Admit::Step { grad_scale } => grad_scale,
            Admit::Skip => return Ok(StepOutcome::Skipped),
            Admit::Refuse => return Err(self.non_finite_error(grads)),
        };
        match self.planner.noise() {
            None => {
                self.planner.prepare(grad_scale, true);
                self.run_rule(params, grads)?;
            }
            Some(noise) => {
                // Clipping is applied while the noisy copy is made, not again in the pass.
                let mut noisy = std::mem::take(&mut self.scratch.noisy);
                noise.apply_from(
                    self.planner.steps,
                    grads,
                    &self.scratch.starts,
                    grad_scale,
                    self.planner.clip.max_value,
                    &mut noisy,
                );
                self.planner.prepare(None, false);
                let done = self.run_rule(params, &noisy);
                self.scratch.noisy = noisy;
                done?;
            }
        }
        self.finish_tensors()?;
        Ok(StepOutcome::Applied)
    }

    /// The error naming the first non-finite gradient element this rank holds (sharded, it
    /// may hold none: another rank names it).
    fn non_finite_error(&self, grads: &[&[F]]) -> Error {
        non_finite_error_in(self.planner.params(), self.planner.owned(), grads)
    }

    /// Per tensor, the sums of the rule's reductions (SWATS' dot products) over the tensor's
    /// segments in plan order (sharded: summed over ranks first).
    fn finish_tensors(&mut self) -> Result<()> {
        self.sum_partials()?;
        let (plan, partials) = (&self.plan, &self.scratch.partials);
        self.planner.finish(|t| sum_segments(plan, partials, t));
        Ok(())
    }
}

/// What [`RuleOptimizer::element_pass`] runs.
enum Pass<'a, F> {
    /// [`Rule::update`].
    Update,
    /// [`Rule::measure`].
    Measure,
    /// The prelude's gradient side, into these copies.
    PreludeInto(&'a mut [Vec<F>]),
}

/// Tensor `t`'s two sums over its segments, in plan order.
fn sum_segments(plan: &Plan, partials: &[[f64; 2]], t: usize) -> [f64; 2] {
    let mut red = [0.0; 2];
    for p in &partials[plan.tensor_segments(t)] {
        red[0] += p[0];
        red[1] += p[1];
    }
    red
}

impl<F: Float, R: Rule> Optimizer<F> for RuleOptimizer<F, R> {
    fn name(&self) -> String {
        R::NAME.to_string()
    }

    fn params(&self) -> &[ParamInfo] {
        self.planner.params()
    }

    fn step(&mut self, params: &mut [&mut [F]], grads: &[&[F]]) -> Result<StepOutcome> {
        self.step_masked(params, grads, None)
    }

    fn step_some(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[Option<&[F]>],
    ) -> Result<StepOutcome> {
        let active: Vec<bool> = grads.iter().map(Option::is_some).collect();
        let grads: Vec<&[F]> = grads.iter().map(|g| g.unwrap_or(&[])).collect();
        self.step_masked(params, &grads, Some(&active))
    }

    fn has_eval_point(&self) -> bool {
        R::EVAL_POINT
    }

    fn element_wise(&self) -> bool {
        !R::TRANSFORMS
    }

    fn eval_params(&self, params: &[&[F]], out: &mut [&mut [F]]) -> Result<()> {
        check_eval_shapes(self.planner.params(), params, out)?;
        for (t, (o, p)) in out.iter_mut().zip(params).enumerate() {
            if R::EVAL_POINT {
                let rule = &self.planner.rules[self.planner.groups[t]];
                // Sharded: this rank's elements (the others' come by an all-gather).
                let r = self.planner.owned().map_or(0..p.len(), |o| o[t].clone());
                o.copy_from_slice(p);
                let (p, o) = (&p[r.clone()], &mut o[r]);
                rule.eval_point(&self.planner.scalars[t], p, &self.buffers[t], o);
            } else {
                o.copy_from_slice(p);
            }
        }
        Ok(())
    }

    fn steps_taken(&self) -> u64 {
        self.planner.steps_taken()
    }

    fn steps_skipped(&self) -> u64 {
        self.planner.steps_skipped()
    }

    fn num_groups(&self) -> usize {
        self.planner.num_groups()
    }

    fn lr(&self, group: usize) -> Result<f64> {
        self.planner.lr(group)
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.planner.set_lr(group, lr)
    }

    fn state_dict(&self) -> StateDict {
        self.planner.state_dict_stored(
            |t, k| match self.packed[t].get(k) {
                Some(b) => BufferData::Packed(b.clone()),
                None => BufferData::Full(self.buffers[t][k].clone()),
            },
            |t, k| self.tensor_state[t][k].clone(),
        )
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let mut state = self.planner.read_state::<F>(sd)?;
        if let Some(owned) = self.planner.owned() {
            // A whole state, cut to this rank's share.
            for (t, range) in owned.iter().enumerate() {
                for b in &mut state.buffers[t] {
                    *b = b[range.clone()].to_vec();
                }
                for b in &mut state.packed[t] {
                    *b = b.slice(range.clone());
                }
                if range.len() < self.planner.params()[t].len() {
                    state.tensor_state[t].iter_mut().for_each(Vec::clear);
                }
            }
        }
        let tensor_state = std::mem::take(&mut state.tensor_state);
        (self.buffers, self.packed) = self.planner.apply_state(state);
        self.tensor_state = tensor_state;
        Ok(())
    }

    fn state_bytes_per_param(&self) -> f64 {
        self.planner.state_bytes_per_param(std::mem::size_of::<F>())
    }

    fn traffic_per_param(&self) -> f64 {
        self.planner.traffic_per_param(std::mem::size_of::<F>())
    }

    fn shard_layout(&self) -> Option<&ShardLayout> {
        self.layout.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::sgd::Sgd;

    fn sgd(lr: f64) -> Sgd {
        Sgd {
            lr,
            ..Default::default()
        }
    }

    #[test]
    fn groups_have_their_own_hyperparameters() {
        let decay = Sgd {
            lr: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = RuleOptimizer::<f64, _>::with_groups(vec![
            ParamGroup::new(decay, vec![ParamInfo::new("w", [2])]),
            ParamGroup::new(sgd(0.1), vec![ParamInfo::new("b", [1])]),
        ])
        .unwrap();
        let (mut w, mut b) = (vec![1.0, 1.0], vec![1.0]);
        opt.step(
            &mut [&mut w[..], &mut b[..]],
            &[&[0.0, 0.0][..], &[0.0][..]],
        )
        .unwrap();
        assert_eq!(w, vec![1.0 - 0.1 * 0.5; 2]); // decayed
        assert_eq!(b, vec![1.0]); // no decay in the second group
        assert_eq!(opt.num_groups(), 2);
        opt.set_lr(1, 0.25).unwrap();
        assert_eq!(opt.lr(1).unwrap(), 0.25);
        assert_eq!(opt.lr(0).unwrap(), 0.1);
        assert!(opt.set_lr(2, 0.1).is_err());
        assert!(opt.lr(2).is_err());
        let e = opt.set_lr(0, -1.0).unwrap_err();
        assert!(matches!(e, Error::InvalidHyperparameter { name: "lr", .. }));
        assert_eq!(opt.lr(0).unwrap(), 0.1);
    }

    #[test]
    fn setup_errors() {
        let dup = RuleOptimizer::<f32, _>::new(
            sgd(0.1),
            vec![ParamInfo::new("w", [2]), ParamInfo::new("w", [3])],
        );
        assert!(matches!(dup, Err(Error::Setup(m)) if m.contains("twice")));
        assert!(RuleOptimizer::<f32, Sgd>::with_groups(vec![]).is_err());
        assert!(RuleOptimizer::<f32, _>::new(sgd(0.1), vec![ParamInfo::new("", [1])]).is_err());
        let huge =
            RuleOptimizer::<f32, _>::new(sgd(0.1), vec![ParamInfo::new("w", [usize::MAX, 2])]);
        assert!(matches!(huge, Err(Error::Setup(_))));
        let nesterov = Sgd {
            nesterov: true,
            ..sgd(0.1)
        };
        assert!(RuleOptimizer::<f32, _>::new(nesterov, vec![ParamInfo::new("w", [1])]).is_err());
        let opt = RuleOptimizer::<f32, _>::new(sgd(0.1), vec![ParamInfo::new("w", [1])]).unwrap();
        assert!(opt
            .with_clip(Clip {
                max_norm: Some(-1.0),
                max_value: None
            })
            .is_err());
    }

    #[test]
    fn gradient_noise_is_seeded_and_zero_noise_changes_nothing() {
        let infos = vec![ParamInfo::new("a", [3])];
        let g = [0.5f32, -1.0, 2.0];
        let run = |noise: Option<GradientNoise>| {
            let mut opt = RuleOptimizer::<f32, _>::new(sgd(0.1), infos.clone()).unwrap();
            if let Some(n) = noise {
                opt = opt.with_noise(n).unwrap();
            }
            let mut p = vec![1.0f32, 2.0, 3.0];
            for _ in 0..3 {
                opt.step(&mut [&mut p[..]], &[&g[..]]).unwrap();
            }
            p
        };
        let quiet = GradientNoise {
            eta: 0.0,
            ..Default::default()
        };
        assert_eq!(run(None), run(Some(quiet)));
        let noisy = |seed| {
            run(Some(GradientNoise {
                seed,
                ..Default::default()
            }))
        };
        assert_eq!(noisy(1), noisy(1));
        assert_ne!(noisy(1), noisy(2));
        assert_ne!(noisy(1), run(None));
    }

    #[test]
    fn clipping_by_value_and_by_norm() {
        let infos = vec![ParamInfo::new("a", [2]), ParamInfo::new("b", [1])];
        let mut by_value = RuleOptimizer::<f64, _>::new(sgd(1.0), infos.clone())
            .unwrap()
            .with_clip(Clip {
                max_norm: None,
                max_value: Some(0.5),
            })
            .unwrap();
        let (mut a, mut b) = (vec![0.0, 0.0], vec![0.0]);
        by_value
            .step(
                &mut [&mut a[..], &mut b[..]],
                &[&[3.0, -0.25][..], &[-4.0][..]],
            )
            .unwrap();
        assert_eq!((a, b), (vec![-0.5, 0.25], vec![0.5]));

        let mut by_norm = RuleOptimizer::<f64, _>::new(sgd(1.0), infos)
            .unwrap()
            .with_clip(Clip {
                max_norm: Some(1.0),
                max_value: None,
            })
            .unwrap();
        let (mut a, mut b) = (vec![0.0, 0.0], vec![0.0]);
        by_norm
            .step(
                &mut [&mut a[..], &mut b[..]],
                &[&[3.0, 0.0][..], &[4.0][..]],
            )
            .unwrap();
        let norm = (a[0] * a[0] + b[0] * b[0]).sqrt();
        assert!(norm <= 1.0 && norm > 0.999_99, "{norm}");
        assert!((a[0] / b[0] - 0.75).abs() < 1e-12);
    }

    #[test]
    fn state_dict_names_every_buffer_by_parameter() {
        let m = Sgd {
            momentum: 0.9,
            ..sgd(0.1)
        };
        let mut opt =
            RuleOptimizer::<f32, _>::new(m, vec![ParamInfo::new("fc.weight", [2, 2])]).unwrap();
        let mut w = [1.0f32; 4];
        opt.step(&mut [&mut w[..]], &[&[1.0f32; 4][..]]).unwrap();
        let sd = opt.state_dict();
        let keys: Vec<&str> = sd.tensors.keys().map(String::as_str).collect();
        assert_eq!(keys, ["g0.fc.weight.m", "g0.fc.weight.step", "g0.lr"]);
        assert_eq!(sd.tensors["g0.fc.weight.m"].shape, vec![2, 2]);
        assert_eq!(sd.meta["optimizer"], "sgd");
        assert_eq!(sd.meta["step"], "1");
    }
}
