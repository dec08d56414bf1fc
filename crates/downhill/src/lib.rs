//! # downhill
//!
//! Gradient-descent optimizers that match PyTorch step for step: SGD (momentum, Nesterov),
//! SGDW, Adagrad, RMSProp, Adam (AMSGrad), AdamW, NAdam, RAdam, Adamax, Adadelta, SWATS and
//! Lookahead, over `f32` or `f64` parameters, with parameter groups, learning-rate schedules,
//! gradient clipping and checkpoints.
//!
//! Each algorithm is one [`Rule`](optim::Rule): its hyperparameters (PyTorch's names and
//! defaults) and its element-wise update, written once. A [`RuleOptimizer`] runs a rule over
//! named parameter tensors, wiring the stages of a step in one place: gradient → `maximize`
//! → clipping → weight decay → update rule with the scheduled learning rate.
//!
//! ```
//! use std::sync::Arc;
//! use downhill::{optim::adam::Adam, schedule, Clip, Optimizer, ParamInfo, RuleOptimizer};
//!
//! // Least squares: fit w, b so that w·x + b ≈ y on four points of y = 2x − 1.
//! let xs = [0.0, 1.0, 2.0, 3.0];
//! let ys = [-1.0, 1.0, 3.0, 5.0];
//! let params = vec![ParamInfo::new("w", [1]), ParamInfo::new("b", [1])];
//! let adamw = Adam { lr: 0.1, weight_decay: 0.0, ..Adam::adamw() };
//! let cosine = schedule::from_json(&serde_json::json!({"kind": "cosine", "t_max": 500}))?;
//! let mut opt = RuleOptimizer::<f64, _>::new(adamw, params)?
//!     .with_schedule(cosine)?
//!     .with_clip(Clip { max_norm: Some(10.0), max_value: None })?;
//! let (mut w, mut b) = (vec![0.0], vec![0.0]);
//! for _ in 0..500 {
//!     let (mut gw, mut gb) = (0.0, 0.0);
//!     for (x, y) in xs.iter().zip(ys) {
//!         let r = w[0] * x + b[0] - y;
//!         gw += 2.0 * r * x / 4.0;
//!         gb += 2.0 * r / 4.0;
//!     }
//!     opt.step(&mut [&mut w[..], &mut b[..]], &[&[gw][..], &[gb][..]])?;
//! }
//! assert!((w[0] - 2.0).abs() < 1e-3 && (b[0] + 1.0).abs() < 1e-3);
//! # Ok::<(), downhill::Error>(())
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
pub mod clip;
mod error;
pub mod kernel;
pub mod multi;
pub mod noise;
pub mod normal;
pub mod optim;
mod optimizer;
pub mod precision;
pub mod reference;
pub mod schedule;
pub mod shard;
pub mod state;
pub mod test_functions;

pub use clip::Clip;
pub use error::{Error, Result};
pub use kernel::{DType, Float};
pub use noise::GradientNoise;
pub use optim::lookahead::Lookahead;
pub use optim::registry;
pub use optimizer::{
    check_tensor_counts, Admit, LoadedState, NonFinite, Optimizer, ParamGroup, ParamInfo,
    RuleOptimizer, StepOutcome, StepPlanner,
};
pub use precision::{StatePrecision, StateStorage};
pub use state::StateDict;
