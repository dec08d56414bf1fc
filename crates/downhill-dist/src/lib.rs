//! Data-parallel training for `downhill`: every rank holds the whole model and computes
//! gradients on its share of the batch; the optimizer state is sharded (ZeRO-1), each rank
//! keeping and stepping only its block of the parameters.
//!
//! # Layering
//!
//! ```text
//! command line (downhill-cli, feature `mpi`)
//!   → adapters: this crate (sharding, the step across ranks), downhill-candle, downhill-cuda
//!     → core library (downhill: rules, optimizers, checkpoints)
//!       → kernels (the fused CPU step, the CUDA step)
//! ```
//!
//! All communication goes through the object-safe [`Collective`] trait (reduce-scatter,
//! all-gather, all-reduce, broadcast, and agreement before a step), so the training code does
//! not know the transport. Implementations:
//!
//! - [`Threads`]: N ranks as N threads of one process, for tests and examples; needs nothing.
//! - `mpi::Mpi` (cargo feature `mpi`, off by default so that the default build needs no MPI
//!   installed): processes started by `mpiexec`, over MPICH through the `mpi` crate.
//! - NCCL (cudarc's `nccl` feature) would be a second implementation for gradients and
//!   parameters that stay on the GPU; the trait's buffers are host slices today, and a device
//!   variant would take device buffers with the same semantics.
//!
//! Sums are deterministic run to run; lengths are checked and wrong ones are typed errors
//! ([`CommError`]); a rank that fails ends the collective on every rank with an error that
//! names it (see [`comm`]).

pub mod comm;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod reference;
pub mod sharded;
pub mod threads;

pub use comm::{Collective, CommError};
pub use sharded::ShardedOptimizer;
pub use threads::Threads;
