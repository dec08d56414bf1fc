//! downhill's optimizers on NVIDIA GPUs.
//!
//! Every optimizer of [`downhill`] (by the registry's names and options, with parameter
//! groups, weight decay, `maximize`, clipping and schedules) steps parameters, gradients and
//! state that live on the GPU ([`GpuOptimizer`]). Checkpoints are the CPU's
//! ([`downhill::StateDict`]), so a run moves between CPU and GPU.
//!
//! # How a step runs
//! The host half is the CPU's own [`downhill::StepPlanner`]: schedule, per-tensor scalars,
//! clipping policy. The element pass is CUDA C generated from the CPU kernel's code: the
//! prelude and the rule's `update` are traced ([`downhill::kernel::trace`]) into a list of
//! operations, each becoming one C statement, compiled by NVRTC on first use without FMA
//! contraction, and cached for the process; the GPU computes what the CPU computes, in the
//! same order. A step is then one launch per group (two while SWATS has tensors in both
//! phases), whatever the number of tensors: a device-side table gives each tensor's
//! addresses, and a table of chunks (at most [`codegen::GPU_CHUNK`] elements of one tensor
//! each) is walked by a grid sized to fill the card, with 16-byte loads. No host round trip
//! beyond a few scalars: the gradient scan (NaN/inf, global norm) returns two numbers, and
//! SWATS' per-tensor dot products come back once per step.
//!
//! Rules with a reading pass (LAMB, NovoGrad, Prodigy) run it first as a kernel of its own
//! ([`downhill::kernel::trace::trace_measure`], storing nothing but per-chunk sums), whose
//! sums come back to the planner before the update. Those sums, and SWATS', are added in
//! another order than on the CPU (a block tree per chunk), so these rules match the CPU to
//! rounding, not bit for bit; the others give the CPU's bits. Muon and Adafactor (whole-tensor
//! work) are refused with [`CudaError::Unsupported`]. [`GpuOptimizer::step_some`] skips
//! parameters without a gradient as the CPU does.
//!
//! # Requirements
//! The crate builds anywhere: the driver (`libcuda.so`) and NVRTC (`libnvrtc.so`) are loaded
//! at run time. Without them, [`Gpu::new`] returns an error that names what is missing.

pub mod codegen;
mod device;
mod error;
mod lookahead;
mod optimizer;
pub mod reference;
pub mod registry;
mod table;

pub use codegen::Tuning;
pub use cudarc;
pub use device::{compile, driver_present, nvrtc_present, Gpu, GpuFloat};
pub use error::{CudaError, Result};
pub use lookahead::CudaLookahead;
pub use optimizer::{CudaRuleOptimizer, GpuOptimizer};
