//! What one comparison run produces: one record per optimizer, seed and epoch.

use serde::{Deserialize, Serialize};

/// The model's state after `epoch` epochs of training with one optimizer and one seed.
///
/// Epoch 0 is the initial model, before any update (the same for every optimizer of a seed).
/// Losses are mean cross-entropy over the whole set, evaluated without dropout at the end of
/// the epoch; `gap` is `test_loss - train_loss`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The run's label (`"adam"`, `"sgd-momentum"`, `"lookahead-adam"`, …).
    pub optimizer: String,
    /// The seed: initial weights, data order, dropout masks and gradient noise.
    pub seed: u64,
    /// Epochs completed.
    pub epoch: usize,
    /// Mean loss over the training set.
    pub train_loss: f64,
    /// Mean loss over the test set.
    pub test_loss: f64,
    /// Fraction of the training set classified correctly, in [0, 1].
    pub train_accuracy: f64,
    /// Fraction of the test set classified correctly, in [0, 1].
    pub test_accuracy: f64,
    /// Generalization gap: `test_loss - train_loss`.
    pub gap: f64,
    /// Learning rate of the first parameter group at the end of the epoch.
    pub lr: f64,
    /// Euclidean norm of the change of all parameters over this epoch (0 at epoch 0).
    pub displacement: f64,
    /// Seconds spent training (updates only, not evaluation), cumulative.
    pub wall_time_s: f64,
    /// Bytes of optimizer state the optimizer holds (moments and other per-parameter
    /// buffers, 8-bit codes with their absmax, per-tensor state; not the parameters or the
    /// gradients).
    pub state_bytes: u64,
    /// `state_bytes` per parameter (AdamW: 8 with `f32` state, 4 with `bf16`, 2.03 with
    /// `8bit` where every tensor has at least `min_8bit_size` elements; smaller tensors keep
    /// `f32` state).
    pub state_bytes_per_param: f64,
}

/// A run that could not finish (diverged, refused a step): kept in the report, not plotted
/// past the epoch it reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFailure {
    /// The run's label.
    pub optimizer: String,
    /// Its seed.
    pub seed: u64,
    /// Epoch during which it stopped.
    pub epoch: usize,
    /// Why.
    pub reason: String,
}

/// The verdict on one of the lecture's claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The claim, as the lecture states it.
    pub claim: String,
    /// `Some(true)`: borne out; `Some(false)`: not borne out; `None`: cannot be judged from
    /// this run (an optimizer it needs was not in the list).
    pub holds: Option<bool>,
    /// The measure used and the numbers it gave.
    pub evidence: String,
}
