//! Training one model with one optimizer: an MLP in candle, batches in the lecture's update
//! modes, seeded dropout, and per-epoch evaluation.
//!
//! Everything random comes from ChaCha8 streams keyed by the run's seed and a purpose, so
//! two optimizers with one seed start from the same weights, see the examples in the same
//! order and draw the same dropout masks.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::Optimizer as _;
use downhill_candle::{Config, DownhillOptimizer};
use downhill_data::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::linear::{linear, Fused};
use super::record::EpochRecord;

/// How many examples one update sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// On-line: one example per update.
    Online,
    /// Off-line (full batch): the whole training set per update.
    Offline,
    /// Mini-batches of this many examples (the last one of an epoch may be smaller).
    MiniBatch(usize),
}

impl BatchMode {
    /// Parse `online`, `offline` (or `full`) or a positive batch size.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "online" | "on-line" => Ok(BatchMode::Online),
            "offline" | "off-line" | "full" => Ok(BatchMode::Offline),
            n => match n.parse::<usize>() {
                Ok(0) => Err("batch size must be at least 1".into()),
                Ok(1) => Ok(BatchMode::Online),
                Ok(n) => Ok(BatchMode::MiniBatch(n)),
                Err(_) => Err(format!(
                    "batch '{n}' is neither a size nor 'online' / 'offline'"
                )),
            },
        }
    }

    /// Examples per update for a training set of `n`.
    pub fn size(self, n: usize) -> usize {
        match self {
            BatchMode::Online => 1,
            BatchMode::Offline => n.max(1),
            BatchMode::MiniBatch(b) => b,
        }
    }
}

impl std::fmt::Display for BatchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchMode::Online => f.write_str("online"),
            BatchMode::Offline => f.write_str("offline"),
            BatchMode::MiniBatch(b) => write!(f, "{b}"),
        }
    }
}

/// The hidden layers' nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// tanh(x)
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// x Φ(x) (tanh approximation)
    Gelu,
}

impl Activation {
    /// The layer op's own activation, if it has this one (its derivative follows from its
    /// output); GELU's does not and runs as a separate op.
    fn fused(self) -> Option<Fused> {
        match self {
            Activation::Relu => Some(Fused::Relu),
            Activation::Tanh => Some(Fused::Tanh),
            Activation::Sigmoid => Some(Fused::Sigmoid),
            Activation::Gelu => None,
        }
    }
}

/// The model: fully connected layers `inputs → hidden… → classes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// Hidden layer widths; empty is softmax (logistic) regression.
    pub hidden: Vec<usize>,
    /// Nonlinearity after each hidden layer.
    pub activation: Activation,
    /// Dropout probability after each hidden layer, in [0, 1).
    pub dropout: f64,
}

impl Default for ModelSpec {
    /// One hidden layer of 64 ReLUs, no dropout.
    fn default() -> Self {
        ModelSpec {
            hidden: vec![64],
            activation: Activation::Relu,
            dropout: 0.0,
        }
    }
}

impl ModelSpec {
    /// `64-32-10`-style description for `inputs` and `classes`.
    pub fn describe(&self, inputs: usize, classes: usize) -> String {
        let mut sizes = vec![inputs];
        sizes.extend(&self.hidden);
        sizes.push(classes);
        let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        if self.hidden.is_empty() {
            format!("softmax regression {}", sizes.join("-"))
        } else {
            format!(
                "MLP {} ({:?}, dropout {})",
                sizes.join("-"),
                self.activation,
                self.dropout
            )
            .to_lowercase()
        }
    }
}

/// A multilayer perceptron with PyTorch's `nn.Linear` initialization.
pub struct Mlp {
    /// `(weight [out, in], bias [out])` per layer, named `layer{i}.weight` / `.bias`.
    layers: Vec<(Var, Var)>,
    activation: Activation,
    dropout: f64,
}

impl Mlp {
    /// Weights and biases uniform in ±1/√fan_in (PyTorch's default for `nn.Linear`), drawn
    /// from the `seed`'s initialization stream.
    pub fn new(
        spec: &ModelSpec,
        inputs: usize,
        classes: usize,
        seed: u64,
    ) -> candle_core::Result<Self> {
        let mut rng = stream(seed, Stream::Init);
        let mut sizes = vec![inputs];
        sizes.extend(&spec.hidden);
        sizes.push(classes);
        let mut layers = Vec::new();
        for pair in sizes.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let w = Tensor::from_vec(uniform(fan_in * fan_out), (fan_out, fan_in), &Device::Cpu)?;
            let b = Tensor::from_vec(uniform(fan_out), fan_out, &Device::Cpu)?;
            layers.push((Var::from_tensor(&w)?, Var::from_tensor(&b)?));
        }
        Ok(Mlp {
            layers,
            activation: spec.activation,
            dropout: spec.dropout,
        })
    }

    /// The variables by name, for the optimizer.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, (w, b))| {
                [
                    (format!("layer{i}.weight"), w.clone()),
                    (format!("layer{i}.bias"), b.clone()),
                ]
            })
            .collect()
    }

    /// Logits for `x` `[batch, inputs]`; with `dropout_rng`, training mode (dropout on).
    pub fn forward(
        &self,
        x: &Tensor,
        mut dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            if i == last {
                h = linear(&h, w.as_tensor(), b.as_tensor(), Fused::Identity)?;
            } else {
                h = match self.activation.fused() {
                    Some(act) => linear(&h, w.as_tensor(), b.as_tensor(), act)?,
                    None => linear(&h, w.as_tensor(), b.as_tensor(), Fused::Identity)?.gelu()?,
                };
                if let (Some(rng), true) = (dropout_rng.as_deref_mut(), self.dropout > 0.0) {
                    h = dropout(&h, self.dropout, rng)?;
                }
            }
        }
        Ok(h)
    }

    /// All parameters, flattened and concatenated.
    fn flat(&self) -> candle_core::Result<Vec<f32>> {
        let mut out = Vec::new();
        for (w, b) in &self.layers {
            out.extend(w.as_tensor().flatten_all()?.to_vec1::<f32>()?);
            out.extend(b.as_tensor().to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

/// Inverted dropout: zero each element with probability `p`, scale the rest by 1/(1-p).
/// One 32-bit draw per element: it is dropped when the draw is below `p·2³²`.
fn dropout(h: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
    let keep = (1.0 / (1.0 - p)) as f32;
    let threshold = (p * 4_294_967_296.0) as u64;
    let mut draws = vec![0u32; h.elem_count()];
    rng.fill(&mut draws[..]);
    let mask: Vec<f32> = draws
        .into_iter()
        .map(|u| if u64::from(u) < threshold { 0.0 } else { keep })
        .collect();
    h.mul(&Tensor::from_vec(mask, h.shape(), h.device())?)
}

/// What a random stream is for; each has its own ChaCha8 key.
#[derive(Clone, Copy)]
enum Stream {
    Init = 1,
    Order = 2,
    Dropout = 3,
}

fn stream(seed: u64, purpose: Stream) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8] = purpose as u8;
    ChaCha8Rng::from_seed(key)
}

/// How to train: the same for every optimizer of a comparison.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Examples per update.
    pub batch: BatchMode,
    /// Epochs (passes over the training set).
    pub epochs: usize,
    /// Shuffle the training set at the start of every epoch (otherwise its stored order).
    pub shuffle: bool,
    /// Seed for weights, order, dropout and gradient noise.
    pub seed: u64,
    /// Batch losses recorded from the start of training (for the early-steadiness claim).
    pub early_updates: usize,
}

/// One finished (or stopped) run.
#[derive(Debug, Default)]
pub struct RunResult {
    /// One record per epoch reached, epoch 0 first.
    pub records: Vec<EpochRecord>,
    /// Mini-batch losses of the first updates.
    pub early_losses: Vec<f64>,
    /// Per epoch (from 0), the median per-coordinate step size `lr / (√s + ε)` of optimizers
    /// that scale by a running sum of squares (Adagrad's `sum`, RMSProp's `v`).
    pub effective_lr: Vec<f64>,
    /// For SWATS, per parameter tensor, the update at which it switched from Adam to SGD
    /// (`None`: it did not); empty for other optimizers.
    pub switches: Vec<Option<u64>>,
    /// Why the run stopped early, and in which epoch.
    pub failure: Option<(usize, String)>,
}

/// Examples as tensors, kept on the host for batching.
pub struct Data<'a> {
    set: &'a Dataset,
    x: Tensor,
    y: Tensor,
}

impl<'a> Data<'a> {
    /// Wrap `set`.
    pub fn new(set: &'a Dataset) -> candle_core::Result<Self> {
        let x = Tensor::from_slice(&set.x, (set.len(), set.features), &Device::Cpu)?;
        let y = Tensor::from_slice(&set.y, set.len(), &Device::Cpu)?;
        Ok(Data { set, x, y })
    }

    /// The rows `ids` as `(x, y)` tensors.
    fn batch(&self, ids: &[usize]) -> candle_core::Result<(Tensor, Tensor)> {
        let f = self.set.features;
        let mut x = Vec::with_capacity(ids.len() * f);
        let mut y = Vec::with_capacity(ids.len());
        for &i in ids {
            x.extend_from_slice(&self.set.x[i * f..(i + 1) * f]);
            y.push(self.set.y[i]);
        }
        Ok((
            Tensor::from_vec(x, (ids.len(), f), &Device::Cpu)?,
            Tensor::from_vec(y, ids.len(), &Device::Cpu)?,
        ))
    }

    /// Mean cross-entropy and accuracy of `model` (no dropout), in chunks.
    fn evaluate(&self, model: &Mlp) -> candle_core::Result<(f64, f64)> {
        let n = self.set.len();
        if n == 0 {
            return Ok((f64::NAN, f64::NAN));
        }
        let (mut loss, mut correct) = (0.0f64, 0.0f64);
        let chunk = 4096;
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let (x, y) = (self.x.narrow(0, start, len)?, self.y.narrow(0, start, len)?);
            let logits = model.forward(&x, None)?;
            let l = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
            loss += f64::from(l) * len as f64;
            let hits = logits
                .argmax(D::Minus1)?
                .eq(&y)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            correct += f64::from(hits);
        }
        Ok((loss / n as f64, correct / n as f64))
    }
}

/// Train a fresh model (from `plan.seed`) with `config` and record every epoch.
/// `on_update` is called after each update with the number done in this epoch and the
/// batch loss (for progress display).
///
/// With `ranks` (`compare --ranks N`), data-parallel: every rank holds the model, computes
/// the gradient of its share of each mini-batch (its examples' losses over the batch's size)
/// and the optimizer, its state sharded over the ranks, steps with their sum: the batch's
/// gradient. Every rank evaluates the same parameters.
#[allow(clippy::too_many_arguments)]
pub fn run(
    label: &str,
    spec: &ModelSpec,
    config: Config,
    train: &Data,
    test: &Data,
    plan: &Plan,
    ranks: Option<&dist::Comm>,
    mut on_update: impl FnMut(usize, usize, f64),
) -> candle_core::Result<RunResult> {
    let model = Mlp::new(spec, train.set.features, train.set.classes, plan.seed)?;
    let mut opt = dist::optimizer(model.named_vars(), config, ranks)?;
    let (rank, size) = dist::place(ranks);
    let mut order_rng = stream(plan.seed, Stream::Order);
    // Each rank drops out on its own examples with its own stream (rank 0: one process's).
    let mut dropout_rng = stream(plan.seed ^ ((rank as u64) << 32), Stream::Dropout);
    let n = train.set.len();
    let batch = plan.batch.size(n);
    let mut ids: Vec<usize> = (0..n).collect();
    let mut result = RunResult::default();
    let mut elapsed = 0.0;
    let mut before = model.flat()?;
    let record = |opt: &DownhillOptimizer,
                  epoch: usize,
                  elapsed: f64,
                  lr: f64,
                  displacement: f64|
     -> candle_core::Result<EpochRecord> {
        // Schedule-free methods are evaluated at their average, not where gradients are
        // taken; every other optimizer at its parameters.
        let ((train_loss, train_accuracy), (test_loss, test_accuracy)) =
            opt.at_eval_point(|| -> candle_core::Result<_> {
                Ok((train.evaluate(&model)?, test.evaluate(&model)?))
            })??;
        Ok(EpochRecord {
            optimizer: label.to_string(),
            seed: plan.seed,
            epoch,
            train_loss,
            test_loss,
            train_accuracy,
            test_accuracy,
            gap: test_loss - train_loss,
            lr,
            displacement,
            wall_time_s: elapsed,
            state_bytes: opt.state_bytes(),
            state_bytes_per_param: opt.state_bytes_per_param(),
        })
    };
    result
        .records
        .push(record(&opt, 0, 0.0, opt.learning_rate(), 0.0)?);
    result.effective_lr.extend(effective_lr(&opt));
    for epoch in 1..=plan.epochs {
        if plan.shuffle {
            ids.shuffle(&mut order_rng);
        }
        let start = Instant::now();
        for (k, chunk) in ids.chunks(batch).enumerate() {
            // This rank's share of the batch (all of it in one process). A rank left without
            // examples (a batch smaller than the ranks) adds a zero gradient.
            let (a, b) = (rank * chunk.len() / size, (rank + 1) * chunk.len() / size);
            let mine = if a < b { &chunk[a..b] } else { &chunk[..1] };
            let (x, y) = train.batch(mine)?;
            let logits = model.forward(&x, Some(&mut dropout_rng))?;
            let mut loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            if size > 1 {
                loss = loss.affine((b - a) as f64 / chunk.len() as f64, 0.0)?;
            }
            // The batch's loss: the ranks' shares summed (the same on every rank).
            let value = dist::sum(ranks, f64::from(loss.to_scalar::<f32>()?))?;
            if result.early_losses.len() < plan.early_updates {
                result.early_losses.push(value);
            }
            let update = (epoch - 1) * ids.len().div_ceil(batch) + k + 1;
            if !value.is_finite() {
                result.failure = Some((
                    epoch,
                    format!(
                        "the loss became {value} at update {update} (learning rate {})",
                        opt.learning_rate()
                    ),
                ));
                return Ok(result);
            }
            if let Err(e) = opt.backward_step(&loss) {
                result.failure = Some((
                    epoch,
                    format!(
                        "update {update} (learning rate {}) was refused: {e}",
                        opt.learning_rate()
                    ),
                ));
                return Ok(result);
            }
            on_update(epoch, k + 1, value);
        }
        elapsed += start.elapsed().as_secs_f64();
        let after = model.flat()?;
        let displacement = before
            .iter()
            .zip(&after)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        before = after;
        result.records.push(record(
            &opt,
            epoch,
            elapsed,
            opt.learning_rate(),
            displacement,
        )?);
        result.effective_lr.extend(effective_lr(&opt));
    }
    result.switches = switches(&opt);
    Ok(result)
}

/// What `compare --ranks` needs of `downhill-dist`, and its stand-ins without MPI.
pub mod dist {
    use candle_core::Var;
    use downhill_candle::{Config, DownhillOptimizer};

    /// The ranks of a data-parallel run.
    #[cfg(feature = "mpi")]
    pub type Comm = std::sync::Arc<dyn downhill_dist::Collective>;
    /// Without MPI there are no ranks.
    #[cfg(not(feature = "mpi"))]
    pub type Comm = std::convert::Infallible;

    /// (this rank, the number of ranks): (0, 1) in one process.
    pub fn place(ranks: Option<&Comm>) -> (usize, usize) {
        #[cfg(feature = "mpi")]
        if let Some(c) = ranks {
            return (c.rank(), c.size());
        }
        let _ = ranks;
        (0, 1)
    }

    /// `x` summed over the ranks.
    pub fn sum(ranks: Option<&Comm>, x: f64) -> candle_core::Result<f64> {
        #[cfg(feature = "mpi")]
        if let Some(c) = ranks {
            let mut v = [x];
            c.all_reduce_sum_f64(&mut v)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            return Ok(v[0]);
        }
        let _ = ranks;
        Ok(x)
    }

    /// The optimizer: over the ranks, its state sharded, summing the ranks' gradients.
    pub fn optimizer(
        vars: Vec<(String, Var)>,
        config: Config,
        ranks: Option<&Comm>,
    ) -> candle_core::Result<DownhillOptimizer> {
        #[cfg(feature = "mpi")]
        if let Some(c) = ranks {
            use downhill_dist::sharded::{Reduction, ShardedOptimizer};
            let build = |name: &str,
                         options: &serde_json::Value,
                         groups,
                         setup: &downhill::registry::Setup|
             -> downhill::Result<Box<dyn downhill::Optimizer<f32>>> {
                let opt = ShardedOptimizer::<f32>::new(name, options, groups, setup, c.clone())?;
                Ok(Box::new(opt.with_reduction(Reduction::Sum)))
            };
            return DownhillOptimizer::with_names_built_by(vars, config, &build);
        }
        let _ = ranks;
        DownhillOptimizer::with_names(vars, config)
    }
}

/// For SWATS, each tensor's `switched_at` (0 in the state: it has not switched).
fn switches(opt: &DownhillOptimizer) -> Vec<Option<u64>> {
    let state = opt.state_dict();
    if state.meta.get("optimizer").map(String::as_str) != Some("swats") {
        return Vec::new();
    }
    state
        .tensors
        .keys()
        .filter(|k| k.ends_with(".switched_at"))
        .map(|k| {
            let at = state.scalar(k).unwrap_or(0.0);
            (at > 0.0).then_some(at as u64)
        })
        .collect()
}

/// Median over every coordinate of `lr / (√s + ε)`, where `s` is the running sum (Adagrad)
/// or average (RMSProp) of squared gradients; `None` for other optimizers. The median, not
/// the mean: coordinates that never see a gradient have `s = 0` and a step of `lr / ε`.
fn effective_lr(opt: &DownhillOptimizer) -> Option<f64> {
    let state = opt.state_dict();
    let name = state.meta.get("optimizer")?;
    let buffer = match name.as_str() {
        "adagrad" => ".sum",
        "rmsprop" => ".v",
        _ => return None,
    };
    let groups: serde_json::Value = serde_json::from_str(state.meta.get("groups")?).ok()?;
    let eps = groups.pointer("/0/eps")?.as_f64()?;
    let lr = opt.learning_rate();
    let mut steps: Vec<f64> = Vec::new();
    for (key, t) in &state.tensors {
        if key.ends_with(buffer) {
            if let downhill::state::TensorData::F32(v) = &t.data {
                steps.extend(v.iter().map(|&s| lr / (f64::from(s).sqrt() + eps)));
            }
        }
    }
    if steps.is_empty() {
        return None;
    }
    let mid = steps.len() / 2;
    Some(*steps.select_nth_unstable_by(mid, f64::total_cmp).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_modes_parse() {
        assert_eq!(BatchMode::parse("online"), Ok(BatchMode::Online));
        assert_eq!(BatchMode::parse("1"), Ok(BatchMode::Online));
        assert_eq!(BatchMode::parse("full"), Ok(BatchMode::Offline));
        assert_eq!(BatchMode::parse("32"), Ok(BatchMode::MiniBatch(32)));
        assert!(BatchMode::parse("0").is_err());
        assert!(BatchMode::parse("big").is_err());
        assert_eq!(BatchMode::Offline.size(100), 100);
    }

    #[test]
    fn dropout_zeroes_about_p_and_keeps_the_mean() {
        let h = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
        let mut rng = stream(0, Stream::Dropout);
        let out = dropout(&h, 0.25, &mut rng).unwrap().flatten_all().unwrap();
        let v = out.to_vec1::<f32>().unwrap();
        let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!((zeros - 0.25).abs() < 0.02, "{zeros}");
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let spec = ModelSpec {
            hidden: vec![5],
            activation: Activation::Relu,
            dropout: 0.0,
        };
        let a = Mlp::new(&spec, 4, 3, 1).unwrap().flat().unwrap();
        let b = Mlp::new(&spec, 4, 3, 1).unwrap().flat().unwrap();
        let c = Mlp::new(&spec, 4, 3, 2).unwrap().flat().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 4 * 5 + 5 + 5 * 3 + 3);
        // Layer 0 has fan-in 4: bound 1/2.
        assert!(a[..25].iter().all(|x| x.abs() <= 0.5));
    }
}
