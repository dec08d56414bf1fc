//! Lookahead: *k steps forward, one step back* — wraps any optimizer.
//!
//! The inner optimizer moves the fast weights $\theta$; every $k$ inner steps the slow weights
//! $\phi$ (initialized to the parameters at the first step) move a fraction $\alpha$ toward
//! them, and the fast weights restart from there:
//!
//! $$
//! \begin{aligned}
//! \theta_{t} &= \text{inner step}(\theta_{t-1}, g_t)\\
//! \text{if } t \bmod k = 0:\quad \phi &\leftarrow \phi + \alpha\,(\theta_t - \phi),
//! \qquad \theta_t \leftarrow \phi
//! \end{aligned}
//! $$
//!
//! | hyperparameter | default |
//! |---|---|
//! | `k` | 5 |
//! | `alpha` | 0.5 |
//!
//! The inner optimizer's state (moments, step counts) is kept across the reset, as in the
//! paper's Algorithm 1. Schedules, clipping and groups belong to the inner optimizer; the
//! learning rate is the inner one. State: `slow` per parameter, plus the inner state.
//!
//! # References
//! - M. R. Zhang, J. Lucas, G. Hinton, J. Ba, *Lookahead Optimizer: k steps forward, 1 step
//!   back*, NeurIPS 2019, arXiv:1907.08610.
//!
//! # Example
//! ```
//! use downhill::{optim::adam::Adam, optim::lookahead::LookaheadConfig};
//! use downhill::{Lookahead, Optimizer, ParamInfo, RuleOptimizer};
//! let adam = RuleOptimizer::<f64, _>::new(Adam { lr: 0.1, ..Default::default() },
//!                                         vec![ParamInfo::new("x", [1])])?;
//! let mut opt = Lookahead::new(adam, LookaheadConfig { k: 5, alpha: 0.5 })?;
//! let mut x = vec![3.0];
//! for _ in 0..5 {
//!     let g = vec![2.0 * x[0]];
//!     opt.step(&mut [&mut x[..]], &[&g[..]])?;
//! }
//! assert!(x[0] < 3.0);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::ensure;
use crate::kernel::Float;
use crate::optimizer::{check_shapes, Optimizer, ParamInfo, StepOutcome};
use crate::state::{StateDict, StateTensor, FORMAT_VERSION};
use crate::{Error, Result};

/// Lookahead's own hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookaheadConfig {
    /// Inner steps between synchronizations (≥ 1).
    pub k: u64,
    /// Step size of the slow weights toward the fast ones, in [0, 1].
    pub alpha: f64,
}

impl LookaheadConfig {
    /// Refuse `k = 0` and `alpha` outside [0, 1].
    pub fn validate(&self) -> Result<()> {
        ensure(self.k >= 1, "lookahead", "k", self.k as f64, "must be >= 1")?;
        crate::error::check::closed_unit_interval("lookahead", "alpha", self.alpha)
    }
}

impl Default for LookaheadConfig {
    fn default() -> Self {
        LookaheadConfig { k: 5, alpha: 0.5 }
    }
}

/// Lookahead around an inner optimizer `O`; see the [module docs](self).
#[derive(Debug)]
pub struct Lookahead<F: Float, O: Optimizer<F>> {
    inner: O,
    config: LookaheadConfig,
    slow: Vec<Vec<F>>,
    /// Sharded: this rank's range of each tensor, the part of it `slow` holds.
    owned: Option<Vec<std::ops::Range<usize>>>,
    /// Whether `slow` holds the slow weights (set by the first applied step).
    ready: bool,
    /// Inner steps applied.
    count: u64,
}

impl<F: Float, O: Optimizer<F>> Lookahead<F, O> {
    /// Wrap `inner`.
    pub fn new(inner: O, config: LookaheadConfig) -> Result<Self> {
        config.validate()?;
        // Sharded (the inner optimizer keeps one rank's share): slow weights for that share.
        let owned = inner.shard_layout().map(|l| l.mine().to_vec());
        let slow = (inner.params().iter().enumerate())
            .map(|(t, p)| vec![F::from_f64(0.0); owned.as_ref().map_or(p.len(), |o| o[t].len())])
            .collect();
        Ok(Lookahead {
            inner,
            config,
            slow,
            owned,
            ready: false,
            count: 0,
        })
    }

    /// The inner optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The slow weights of parameter `index` (meaningful after the first step).
    pub fn slow(&self, index: usize) -> Option<&[F]> {
        self.slow.get(index).map(Vec::as_slice)
    }
}

/// Lookahead's own state beside the inner optimizer's, as checkpoints keep it (shared with
/// other executors of Lookahead, such as the GPU's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncState {
    /// The hyperparameters.
    pub config: LookaheadConfig,
    /// Inner steps applied.
    pub count: u64,
    /// Whether the slow weights were taken (at the first applied step).
    pub ready: bool,
}

fn slow_key(info: &ParamInfo) -> String {
    format!("lookahead.{}.slow", info.name)
}

impl SyncState {
    /// The checkpoint: the inner one `sd`, renamed, plus this state and the slow weights
    /// (`slow(i)` for parameter `i`).
    pub fn wrap<F: Float>(
        &self,
        mut sd: StateDict,
        params: &[ParamInfo],
        mut slow: impl FnMut(usize) -> Vec<F>,
    ) -> StateDict {
        let inner_name = sd.meta.insert("optimizer".into(), "lookahead".into());
        sd.meta
            .insert("inner_optimizer".into(), inner_name.unwrap_or_default());
        sd.meta
            .insert("format_version".into(), FORMAT_VERSION.to_string());
        sd.meta
            .insert("lookahead_k".into(), self.config.k.to_string());
        sd.meta
            .insert("lookahead_alpha".into(), self.config.alpha.to_string());
        sd.meta
            .insert("lookahead_count".into(), self.count.to_string());
        sd.meta
            .insert("lookahead_ready".into(), self.ready.to_string());
        for (i, info) in params.iter().enumerate() {
            sd.tensors
                .insert(slow_key(info), StateTensor::buffer(&info.shape, slow(i)));
        }
        sd
    }

    /// Read a checkpoint of [`wrap`](SyncState::wrap): the count and readiness (the
    /// configuration is left at its default: it is the optimizer's), the slow weights, and
    /// the inner optimizer's checkpoint.
    pub fn unwrap<F: Float>(
        sd: &StateDict,
        params: &[ParamInfo],
    ) -> Result<(SyncState, Vec<Vec<F>>, StateDict)> {
        sd.expect("lookahead", F::DTYPE)?;
        let count = sd.meta_u64("lookahead_count")?;
        let ready = match sd.meta("lookahead_ready")? {
            "true" => true,
            "false" => false,
            other => {
                return Err(Error::State(format!(
                    "metadata 'lookahead_ready' = '{other}' is not a boolean"
                )))
            }
        };
        let mut slow = Vec::with_capacity(params.len());
        let mut inner_sd = sd.clone();
        for info in params {
            let key = slow_key(info);
            slow.push(sd.buffer::<F>(&key, &info.shape)?.to_vec());
            inner_sd.tensors.remove(&key);
        }
        let inner_name = sd.meta("inner_optimizer")?.to_string();
        inner_sd.meta.insert("optimizer".into(), inner_name);
        let state = SyncState {
            config: LookaheadConfig::default(),
            count,
            ready,
        };
        Ok((state, slow, inner_sd))
    }
}

impl<F: Float, O: Optimizer<F>> Lookahead<F, O> {
    /// The shapes, before the slow weights are touched: sharded, the gradients are the
    /// rank's share (the inner optimizer checks them) and the parameters whole.
    fn check(&self, params: &[&mut [F]], grads: &[&[F]], active: Option<&[bool]>) -> Result<()> {
        if self.owned.is_none() {
            return check_shapes(self.inner.params(), params, grads, active);
        }
        let infos = self.inner.params();
        crate::optimizer::check_tensor_counts(infos.len(), params.len(), grads.len())?;
        for (info, p) in infos.iter().zip(params) {
            if p.len() != info.len() {
                return Err(Error::LengthMismatch {
                    what: "params",
                    param: info.name.clone(),
                    expected: info.len(),
                    got: p.len(),
                });
            }
        }
        Ok(())
    }

    /// A step whose inner step is `inner_step`; the shapes were checked.
    fn step_with(
        &mut self,
        params: &mut [&mut [F]],
        inner_step: impl FnOnce(&mut O, &mut [&mut [F]]) -> Result<StepOutcome>,
    ) -> Result<StepOutcome> {
        if !self.ready {
            for (t, (s, p)) in self.slow.iter_mut().zip(params.iter()).enumerate() {
                s.copy_from_slice(&p[self.owned.as_ref().map_or(0..p.len(), |o| o[t].clone())]);
            }
        }
        let outcome = inner_step(&mut self.inner, params);
        if !matches!(outcome, Ok(StepOutcome::Applied)) {
            if !self.ready {
                // Leave the state as it was before this step: slow weights not yet taken.
                self.slow.iter_mut().for_each(|s| s.fill(F::from_f64(0.0)));
            }
            return outcome;
        }
        self.ready = true;
        self.count += 1;
        if self.count.is_multiple_of(self.config.k) {
            let alpha = F::from_f64(self.config.alpha);
            for (t, (s, p)) in self.slow.iter_mut().zip(params.iter_mut()).enumerate() {
                let range = self.owned.as_ref().map_or(0..p.len(), |o| o[t].clone());
                for (si, pi) in s.iter_mut().zip(p[range].iter_mut()) {
                    *si = *si + alpha * (*pi - *si);
                    *pi = *si;
                }
            }
        }
        Ok(StepOutcome::Applied)
    }
}

impl<F: Float, O: Optimizer<F>> Optimizer<F> for Lookahead<F, O> {
    fn name(&self) -> String {
        "lookahead".into()
    }

    fn params(&self) -> &[ParamInfo] {
        self.inner.params()
    }

    fn step(&mut self, params: &mut [&mut [F]], grads: &[&[F]]) -> Result<StepOutcome> {
        self.check(params, grads, None)?;
        self.step_with(params, |inner, params| inner.step(params, grads))
    }

    /// Parameters without a gradient are skipped by the inner optimizer; the synchronization
    /// every `k` steps still moves every tensor's slow weights toward its fast ones.
    fn step_some(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[Option<&[F]>],
    ) -> Result<StepOutcome> {
        let active: Vec<bool> = grads.iter().map(Option::is_some).collect();
        let slices: Vec<&[F]> = grads.iter().map(|g| g.unwrap_or(&[])).collect();
        self.check(params, &slices, Some(&active))?;
        self.step_with(params, |inner, params| inner.step_some(params, grads))
    }

    fn has_eval_point(&self) -> bool {
        self.inner.has_eval_point()
    }

    fn shard_layout(&self) -> Option<&crate::shard::ShardLayout> {
        self.inner.shard_layout()
    }

    fn element_wise(&self) -> bool {
        self.inner.element_wise()
    }

    fn eval_params(&self, params: &[&[F]], out: &mut [&mut [F]]) -> Result<()> {
        self.inner.eval_params(params, out)
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

    fn state_dict(&self) -> StateDict {
        let state = SyncState {
            config: self.config,
            count: self.count,
            ready: self.ready,
        };
        let mut sd = state.wrap(self.inner.state_dict(), self.inner.params(), |i| {
            self.slow[i].clone()
        });
        if let Some(owned) = &self.owned {
            // A shard: this rank's piece of each slow buffer.
            for ((info, range), slow) in self.inner.params().iter().zip(owned).zip(&self.slow) {
                let key = slow_key(info);
                sd.tensors.insert(
                    key.clone(),
                    StateTensor::buffer(&[range.len()], slow.clone()),
                );
                crate::shard::add_piece(&mut sd, &key, range.clone(), &info.shape);
            }
        }
        sd
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let (state, mut slow, inner_sd) = SyncState::unwrap::<F>(sd, self.inner.params())?;
        self.inner.load_state_dict(&inner_sd)?;
        if let Some(owned) = &self.owned {
            for (s, range) in slow.iter_mut().zip(owned) {
                *s = s[range.clone()].to_vec();
            }
        }
        self.slow = slow;
        self.count = state.count;
        self.ready = state.ready;
        Ok(())
    }

    fn state_bytes_per_param(&self) -> f64 {
        self.inner.state_bytes_per_param() + std::mem::size_of::<F>() as f64
    }

    fn traffic_per_param(&self) -> f64 {
        // Every k steps: read p and slow, write p and slow.
        let sync = 4.0 * std::mem::size_of::<F>() as f64 / self.config.k as f64;
        self.inner.traffic_per_param() + sync
    }
}
