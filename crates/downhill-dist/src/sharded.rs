//! [`ShardedOptimizer`]: any optimizer the registry builds, with its state sharded over the
//! ranks of a [`Collective`] (ZeRO stage 1).
//!
//! A step, on every rank, with the rank's own gradients of the whole model:
//!
//! 1. agree: every rank checks its tensors and all ranks learn whether all are fine, so a
//!    refused step is refused everywhere and no rank waits for the others;
//! 2. reduce-scatter: the gradients, packed rank block by rank block (each block the elements
//!    that rank owns, padded to the largest block), are summed over ranks, each rank
//!    receiving its block, and divided by the number of ranks: the mean gradient;
//! 3. the shard's step: the core optimizer, built with a [`Shard`], updates the rank's
//!    elements from its state (a fraction `1/N` of the whole); reductions it needs (the
//!    gradients' norm and finiteness, per-tensor and per-group sums) are summed over ranks
//!    partial by partial, so they are the single-process bits ([`downhill::shard`]);
//! 4. all-gather: each rank's updated elements go to every rank, so all ranks hold the same
//!    parameters after the step.
//!
//! Ownership is by whole segments of the single-process step's plan, so every rule, with
//! clipping, noise, `maximize`, schedules, groups, the non-finite policy and every state
//! precision, gives the bits one process gives when fed the same mean gradient. Rules whose
//! update needs whole tensors (Muon, Adafactor) get whole tensors: each rank owns a run of
//! tensors and runs their whole-tensor stage. Schedule-free AdamW's evaluation point is
//! computed by each rank for its elements and all-gathered; Lookahead's slow weights are
//! sharded with the rest. Several algorithms in one optimizer are sharded part by part; only
//! the whole's clipping norm is then added rank by rank (deterministic, within rounding of
//! one process's).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use downhill::checkpoint;
use downhill::kernel::{Float, CHUNK};
use downhill::registry::{self, GroupSpec, Setup};
use downhill::shard::{self, Shard, ShardLayout, ShardSums};
use downhill::{Error, Optimizer, ParamInfo, Result, StateDict, StepOutcome};
use serde_json::Value;

use crate::comm::{Collective, CommError};

/// A communication failure as the core library's error.
fn comm_error(e: CommError) -> Error {
    Error::Communication(e.to_string())
}

/// The sums a sharded core optimizer asks for, over a [`Collective`].
#[derive(Debug)]
struct CollectiveSums(Arc<dyn Collective>);

impl ShardSums for CollectiveSums {
    fn sum(&self, values: &mut [f64]) -> Result<()> {
        self.0.all_reduce_sum_f64(values).map_err(comm_error)
    }
}

/// The element types a sharded step can send: `f32` and `f64`.
pub trait Element: Float {
    /// [`Collective::reduce_scatter_sum_f32`] for this type.
    fn reduce_scatter(c: &dyn Collective, send: &[Self], recv: &mut [Self]) -> Result<()>;
    /// [`Collective::all_gather_f32`] for this type.
    fn all_gather(c: &dyn Collective, send: &[Self], recv: &mut [Self]) -> Result<()>;
}

impl Element for f32 {
    fn reduce_scatter(c: &dyn Collective, send: &[f32], recv: &mut [f32]) -> Result<()> {
        c.reduce_scatter_sum_f32(send, recv).map_err(comm_error)
    }
    fn all_gather(c: &dyn Collective, send: &[f32], recv: &mut [f32]) -> Result<()> {
        c.all_gather_f32(send, recv).map_err(comm_error)
    }
}

impl Element for f64 {
    fn reduce_scatter(c: &dyn Collective, send: &[f64], recv: &mut [f64]) -> Result<()> {
        c.reduce_scatter_sum_f64(send, recv).map_err(comm_error)
    }
    fn all_gather(c: &dyn Collective, send: &[f64], recv: &mut [f64]) -> Result<()> {
        c.all_gather_f64(send, recv).map_err(comm_error)
    }
}

/// How the ranks' gradients combine into the gradient the optimizer steps with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Their mean (the default, as PyTorch's DistributedDataParallel): each rank's gradient
    /// is the mean over its share of the batch, the shares are equal.
    #[default]
    Mean,
    /// Their sum: each rank's gradient is its share of the batch's gradient (its examples'
    /// losses divided by the whole batch's size), right for shares of unequal sizes.
    Sum,
}

/// Where a sharded step spends its time, summed over the steps so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// Steps timed.
    pub steps: u64,
    /// Agreeing, packing the gradients and the reduce-scatter.
    pub reduce_scatter: Duration,
    /// The shard's step (with its sums over ranks).
    pub shard_step: Duration,
    /// Packing the parameters, the all-gather and unpacking.
    pub all_gather: Duration,
}

/// An optimizer whose state is sharded over the ranks of a [`Collective`]: see the [module
/// docs](self). It is an [`Optimizer`]: `step` takes this rank's gradients of the whole
/// model and leaves every rank with the same parameters.
#[derive(Debug)]
pub struct ShardedOptimizer<F: Element> {
    inner: Box<dyn Optimizer<F>>,
    comm: Arc<dyn Collective>,
    layout: ShardLayout,
    /// Every rank's block, packed: the reduce-scatter's input and the all-gather's output.
    flat: Vec<F>,
    /// This rank's block.
    block: Vec<F>,
    times: StepTimes,
    reduction: Reduction,
}

/// What every rank must agree on before the first step: (parameters, configuration).
fn fingerprint(
    name: &str,
    options: &Value,
    groups: &[GroupSpec],
    setup: &Setup,
) -> (String, String) {
    let params: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.params)
        .map(|p| format!("{}{:?}", p.name, p.shape))
        .collect();
    let group_options: Vec<String> = groups.iter().map(|g| g.options.to_string()).collect();
    let config = format!(
        "{name} {options} groups {group_options:?} sizes {:?} schedule {:?} clip {:?} \
         non-finite {:?} noise {:?}",
        groups.iter().map(|g| g.params.len()).collect::<Vec<_>>(),
        setup.schedule.as_ref().and_then(|s| s.to_json()),
        setup.clip,
        setup.non_finite,
        setup.noise,
    );
    (params.join(" "), config)
}

impl<F: Element> ShardedOptimizer<F> {
    /// Optimizer `name` with `options` over `groups`, as [`registry::build_groups`] builds
    /// it, with its state sharded over `comm`'s ranks. Every rank must call this with the same
    /// parameters (names, shapes, order) and configuration: a rank whose differ is named in
    /// the typed error every rank returns, before any step.
    pub fn new(
        name: &str,
        options: &Value,
        groups: Vec<GroupSpec>,
        setup: &Setup,
        comm: Arc<dyn Collective>,
    ) -> Result<Self> {
        Self::with_chunk(name, options, groups, setup, comm, CHUNK)
    }

    /// [`new`](ShardedOptimizer::new) with ownership by segments of at most `chunk`
    /// elements: [`CHUNK`] (the default) gives the single-process bits; a smaller one splits
    /// small tensors over the ranks too (the reductions then add in another order), which the
    /// replay of the small reference cases uses.
    pub fn with_chunk(
        name: &str,
        options: &Value,
        groups: Vec<GroupSpec>,
        setup: &Setup,
        comm: Arc<dyn Collective>,
        chunk: usize,
    ) -> Result<Self> {
        let (params, config) = fingerprint(name, options, &groups, setup);
        for (what, mine) in [
            ("parameters (names, shapes, order)", params),
            ("optimizer configuration", config),
        ] {
            let all = comm.all_gather_bytes(mine.as_bytes()).map_err(comm_error)?;
            if let Some(r) = all.iter().position(|b| *b != all[0]) {
                return Err(Error::Setup(format!(
                    "rank {r}'s {what} differ from rank 0's: every rank must build the same \
                     optimizer over the same parameters"
                )));
            }
        }
        let shard = Shard {
            rank: comm.rank(),
            ranks: comm.size(),
            chunk,
            sums: Arc::new(CollectiveSums(Arc::clone(&comm))),
        };
        let setup = Setup {
            shard: Some(shard),
            ..setup.clone()
        };
        // Every rank builds the same thing, so every rank fails alike.
        let inner = registry::build_groups::<F>(name, options, groups, &setup)?;
        let layout = inner
            .shard_layout()
            .cloned()
            .ok_or_else(|| Error::Setup(format!("{name} did not build a sharded optimizer")))?;
        let block = layout.block();
        Ok(ShardedOptimizer {
            flat: vec![F::from_f64(0.0); block * comm.size()],
            block: vec![F::from_f64(0.0); block],
            inner,
            comm,
            layout,
            times: StepTimes::default(),
            reduction: Reduction::Mean,
        })
    }

    /// Combine the ranks' gradients by `reduction` (every rank must choose the same).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Which elements each rank owns.
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    /// The collective the ranks talk through.
    pub fn comm(&self) -> &dyn Collective {
        &*self.comm
    }

    /// Where the steps so far spent their time.
    pub fn times(&self) -> StepTimes {
        self.times
    }

    /// Bytes of optimizer state this rank keeps.
    pub fn state_bytes(&self) -> f64 {
        let total: usize = self.inner.params().iter().map(ParamInfo::len).sum();
        self.inner.state_bytes_per_param() * total as f64
    }

    /// This rank's shard of the state (as [`Optimizer::state_dict`]).
    pub fn shard_state_dict(&self) -> StateDict {
        self.inner.state_dict()
    }

    /// The whole state, put together from every rank's shard: on every rank, bit for bit
    /// what one process stepping the same mean gradients would save.
    pub fn consolidated_state_dict(&self) -> Result<StateDict> {
        let mine = checkpoint::to_bytes(&self.inner.state_dict())?;
        let all = self.comm.all_gather_bytes(&mine).map_err(comm_error)?;
        let shards = all
            .iter()
            .map(|b| checkpoint::from_bytes(b))
            .collect::<Result<Vec<_>>>()?;
        shard::consolidate(&shards)
    }

    /// Write this rank's shard to [`shard_path`]`(stem, rank, ranks)` (atomically, as every
    /// checkpoint: a failed save leaves the previous file intact).
    pub fn save_shard(&self, stem: &Path) -> Result<PathBuf> {
        let path = shard_path(stem, self.comm.rank(), self.comm.size());
        checkpoint::save_state(&path, &self.inner.state_dict())?;
        Ok(path)
    }

    /// Load the checkpoint of `ranks` shards at `stem` (written by [`save_shard`] on `ranks`
    /// ranks, any number): every rank reads every shard, puts them together and takes its
    /// share. A missing, truncated or corrupt shard file, or shards that do not fit together,
    /// are refused on every rank, with an error naming the file, and nothing changes.
    ///
    /// [`save_shard`]: ShardedOptimizer::save_shard
    pub fn load_shards(&mut self, stem: &Path, ranks: usize) -> Result<()> {
        let local = load_consolidated(stem, ranks);
        let ok = self.comm.all_agree(local.is_ok()).map_err(comm_error)?;
        let sd = match (local, ok) {
            (Err(e), _) => return Err(e),
            (Ok(_), false) => {
                return Err(Error::State(format!(
                    "another rank could not read the checkpoint {}: nothing loaded",
                    stem.display()
                )))
            }
            (Ok(sd), true) => sd,
        };
        self.load_agreed(&sd)
    }

    /// Load `sd` on every rank, or on none.
    fn load_agreed(&mut self, sd: &StateDict) -> Result<()> {
        let before = self.inner.state_dict();
        let local = self.inner.load_state_dict(sd);
        let ok = self.comm.all_agree(local.is_ok()).map_err(comm_error)?;
        match (local, ok) {
            (Err(e), _) => Err(e),
            (Ok(()), false) => {
                self.inner.load_state_dict(&before)?;
                Err(Error::State(
                    "another rank refused the state: nothing loaded".into(),
                ))
            }
            (Ok(()), true) => Ok(()),
        }
    }

    /// Check this rank's tensors and agree with the others: `Err` on every rank unless every
    /// rank's are fine.
    fn agree(&self, params: &[&mut [F]], grads: &[Option<&[F]>]) -> Result<()> {
        let infos = self.inner.params();
        let local =
            downhill::check_tensor_counts(infos.len(), params.len(), grads.len()).and_then(|()| {
                for ((info, p), g) in infos.iter().zip(params).zip(grads) {
                    let g_len = g.map_or(info.len(), <[F]>::len);
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
            });
        // Which tensors have gradients must agree too.
        let mask: Vec<u8> = grads.iter().map(|g| u8::from(g.is_some())).collect();
        let ok = self.comm.all_agree(local.is_ok()).map_err(comm_error)?;
        local?;
        if !ok {
            return Err(Error::Setup(
                "another rank's tensors do not match its optimizer: step refused on every rank"
                    .into(),
            ));
        }
        let masks = self.comm.all_gather_bytes(&mask).map_err(comm_error)?;
        if let Some(r) = masks.iter().position(|m| *m != masks[0]) {
            return Err(Error::Setup(format!(
                "rank {r} has gradients for other tensors than rank 0: step refused on every rank"
            )));
        }
        Ok(())
    }

    fn step_inner(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[Option<&[F]>],
    ) -> Result<StepOutcome> {
        let start = Instant::now();
        self.agree(params, grads)?;
        let (ranks, rank) = (self.comm.size(), self.comm.rank());
        let n = self.block.len();
        for r in 0..ranks {
            let mut at = r * n;
            for (g, range) in grads.iter().zip(self.layout.owned(r)) {
                let dst = &mut self.flat[at..at + range.len()];
                match g {
                    Some(g) => dst.copy_from_slice(&g[range.clone()]),
                    None => dst.fill(F::from_f64(0.0)),
                }
                at += range.len();
            }
        }
        F::reduce_scatter(&*self.comm, &self.flat, &mut self.block)?;
        if self.reduction == Reduction::Mean {
            let scale = F::from_f64(ranks as f64);
            for x in &mut self.block[..self.layout.elements(rank)] {
                *x = *x / scale;
            }
        }
        let mid = Instant::now();
        let owned = self.layout.owned(rank);
        let mut mine: Vec<Option<&[F]>> = Vec::with_capacity(owned.len());
        let mut at = 0;
        for (g, range) in grads.iter().zip(owned) {
            mine.push(g.map(|_| &self.block[at..at + range.len()]));
            at += range.len();
        }
        let outcome = if mine.iter().all(Option::is_some) {
            let all: Vec<&[F]> = mine.iter().map(|g| g.unwrap_or(&[])).collect();
            self.inner.step(params, &all)
        } else {
            self.inner.step_some(params, &mine)
        };
        let stepped = Instant::now();
        self.times.steps += 1;
        self.times.reduce_scatter += mid - start;
        self.times.shard_step += stepped - mid;
        if outcome? == StepOutcome::Skipped {
            return Ok(StepOutcome::Skipped);
        }
        all_gather_owned(
            &*self.comm,
            &self.layout,
            params,
            &mut self.block,
            &mut self.flat,
        )?;
        self.times.all_gather += stepped.elapsed();
        Ok(StepOutcome::Applied)
    }
}

/// Send this rank's elements of `tensors` to every rank and take theirs: packed into `block`
/// (this rank's, padded), all-gathered into `flat` (every rank's block in rank order),
/// unpacked into the others' ranges.
fn all_gather_owned<F: Element>(
    comm: &dyn Collective,
    layout: &ShardLayout,
    tensors: &mut [&mut [F]],
    block: &mut [F],
    flat: &mut [F],
) -> Result<()> {
    let (rank, n) = (comm.rank(), block.len());
    let mut at = 0;
    for (t, range) in tensors.iter().zip(layout.owned(rank)) {
        block[at..at + range.len()].copy_from_slice(&t[range.clone()]);
        at += range.len();
    }
    F::all_gather(comm, block, flat)?;
    for r in (0..comm.size()).filter(|&r| r != rank) {
        let mut at = r * n;
        for (t, range) in tensors.iter_mut().zip(layout.owned(r)) {
            t[range.clone()].copy_from_slice(&flat[at..at + range.len()]);
            at += range.len();
        }
    }
    Ok(())
}

/// The file of rank `rank`'s shard of a checkpoint of `ranks` shards at `stem`:
/// `{stem}.rank{rank}-of-{ranks}.safetensors`.
pub fn shard_path(stem: &Path, rank: usize, ranks: usize) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(format!(".rank{rank}-of-{ranks}.safetensors"));
    PathBuf::from(name)
}

/// Read the `ranks` shard files at `stem` and put them together into the whole state (what
/// one process loads: [`Optimizer::load_state_dict`]). Errors name the file.
pub fn load_consolidated(stem: &Path, ranks: usize) -> Result<StateDict> {
    let shards = (0..ranks)
        .map(|r| {
            let path = shard_path(stem, r, ranks);
            checkpoint::load_state(&path).map_err(|e| match e {
                e @ Error::Io { .. } => e,
                e => Error::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    shard::consolidate(&shards).map_err(|e| Error::Io {
        path: format!("{} (shards 0..{ranks})", stem.display()),
        message: e.to_string(),
    })
}

impl<F: Element> Optimizer<F> for ShardedOptimizer<F> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn params(&self) -> &[ParamInfo] {
        self.inner.params()
    }
    fn step(&mut self, params: &mut [&mut [F]], grads: &[&[F]]) -> Result<StepOutcome> {
        let grads: Vec<Option<&[F]>> = grads.iter().map(|g| Some(*g)).collect();
        self.step_inner(params, &grads)
    }
    fn step_some(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[Option<&[F]>],
    ) -> Result<StepOutcome> {
        self.step_inner(params, grads)
    }
    fn has_eval_point(&self) -> bool {
        self.inner.has_eval_point()
    }
    /// Each rank computes its elements of the evaluation point; an all-gather completes it
    /// (every rank must call).
    fn eval_params(&self, params: &[&[F]], out: &mut [&mut [F]]) -> Result<()> {
        let agreed = self.inner.eval_params(params, out);
        let ok = self.comm.all_agree(agreed.is_ok()).map_err(comm_error)?;
        agreed?;
        if !ok {
            return Err(Error::Setup(
                "another rank's tensors do not match its optimizer".into(),
            ));
        }
        if !self.inner.has_eval_point() {
            return Ok(());
        }
        let mut block = vec![F::from_f64(0.0); self.block.len()];
        let mut flat = vec![F::from_f64(0.0); self.flat.len()];
        all_gather_owned(&*self.comm, &self.layout, out, &mut block, &mut flat)
    }
    fn steps_taken(&self) -> u64 {
        self.inner.steps_taken()
    }
    fn steps_skipped(&self) -> u64 {
        self.inner.steps_skipped()
    }
    fn num_groups(&self) -> usize {
        self.inner.num_groups()
    }
    fn lr(&self, group: usize) -> Result<f64> {
        self.inner.lr(group)
    }
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.inner.set_lr(group, lr)
    }
    /// This rank's shard (see [`ShardedOptimizer::consolidated_state_dict`] for the whole).
    fn state_dict(&self) -> StateDict {
        self.inner.state_dict()
    }
    /// Load a whole state (one process's, or shards put together): each rank takes its share.
    /// Every rank must call it; unless every rank can load, none does.
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        self.load_agreed(state)
    }
    fn state_bytes_per_param(&self) -> f64 {
        self.inner.state_bytes_per_param()
    }
    fn element_wise(&self) -> bool {
        self.inner.element_wise()
    }
    fn traffic_per_param(&self) -> f64 {
        self.inner.traffic_per_param()
    }
}
