//! The collective interface that data-parallel training talks through, and its error type.
//!
//! [`Collective`] is the few operations that sharded optimizer state (ZeRO-1) needs:
//! reduce-scatter of the gradients, all-gather of the updated parameters, all-reduce of small
//! statistics (norms, losses), agreement before a step, and byte messages for checkpoints and
//! metadata. It is object safe (`&dyn Collective`), so the training code is written once for
//! every transport: [`Threads`](crate::Threads) (in-process, for tests and examples),
//! `mpi::Mpi` (feature `mpi`), and later NCCL for parameters that live on the GPU.
//!
//! # Contract
//!
//! Every rank of the group calls the same collectives in the same order, with the lengths each
//! method documents. A length that is wrong on this rank (checked locally, before anything is
//! sent) is a [`CommError::Length`]; this rank then took no part in the call, so the caller
//! should end the run (return the error and let the rank exit): the other ranks learn of it as
//! [`CommError::RankFailed`] ([`Threads`](crate::Threads)) or by the job being ended (MPI).
//!
//! # Determinism
//!
//! Sums are the same bits run to run for the same inputs and the same number of ranks, and
//! every rank receives the same bits. [`Threads`](crate::Threads) adds in rank order (rank 0 +
//! rank 1 + …); MPI adds in the order its algorithm for that message size and group size
//! fixes, which does not change between runs (it need not be rank order, so `Threads` and MPI
//! may differ in the last bit).
//!
//! # Bytes sent
//!
//! [`Collective::bytes_sent`] counts, for every call, the bytes that all ranks must receive
//! in total divided by the number of ranks (rounded down per call): the average volume each
//! rank sends in a bandwidth-optimal algorithm, whatever the library actually runs. It is the
//! same on every rank, zero with one rank, and counts only calls that succeeded. With `p`
//! ranks, `e` bytes per element:
//!
//! | call | counted |
//! | --- | --- |
//! | reduce-scatter, `send` of `n` elements | `(p-1)·n·e/p` |
//! | all-gather, `recv` of `n` elements | `(p-1)·n·e/p` |
//! | all-reduce of `n` elements | `2·(p-1)·n·e/p` (a reduce-scatter and an all-gather) |
//! | `all_agree` | as an all-reduce of 1 byte |
//! | broadcast of `b` bytes | `(p-1)·(8+b)/p` (an 8-byte length, then the bytes) |
//! | all-gather of bytes, `t` bytes in all | `(p-1)·8` (the lengths) `+ (p-1)·t/p` |

use std::fmt;

/// What went wrong in a collective call. Every variant says which call and which rank or
/// length; none of them leaves a rank waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommError {
    /// A buffer of this rank has the wrong length for the call; nothing was sent.
    #[error("{op}: `{buffer}` has {got} elements, expected {expected}")]
    Length {
        /// The call, e.g. `"all_gather_f32"`.
        op: &'static str,
        /// Which argument: `"send"`, `"recv"`.
        buffer: &'static str,
        /// The length the call needs, from the other argument and the number of ranks.
        expected: usize,
        /// The length passed.
        got: usize,
    },
    /// A root rank that is not in the group; nothing was sent.
    #[error("{op}: root {root} is not a rank of this group of {size}")]
    Root {
        /// The call.
        op: &'static str,
        /// The root passed.
        root: usize,
        /// The number of ranks.
        size: usize,
    },
    /// The ranks called different collectives, or the same one with lengths that disagree.
    /// Every rank of the call gets this error.
    #[error("{op}: rank {rank} disagrees: {detail}")]
    Mismatch {
        /// The call this rank made.
        op: &'static str,
        /// The first rank whose call differs from rank 0's.
        rank: usize,
        /// What differs.
        detail: String,
    },
    /// A message too large for the transport (MPI counts are 32-bit), or another failure
    /// reported by the MPI library.
    #[error("MPI: {0}")]
    Mpi(String),
    /// Another rank failed (panicked, or left the group) before or during this call.
    #[error("rank {rank} failed: {message}")]
    RankFailed {
        /// The rank that failed first.
        rank: usize,
        /// How it failed.
        message: String,
    },
    /// The transport could not be set up.
    #[error("initialization: {0}")]
    Init(String),
}

/// The collective operations that data-parallel training needs; see the [module
/// docs](self) for the contract, determinism and how bytes are counted.
///
/// Object safe: training code takes `&dyn Collective`. Implementations serialize calls made
/// through one handle from several threads; the ranks' call sequences must still match.
pub trait Collective: Send + Sync + fmt::Debug {
    /// This rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Every rank passes `send` of `size() * recv.len()` elements; rank r receives in `recv`
    /// the element-wise sum over ranks of block r (`send[r*recv.len()..(r+1)*recv.len()]`).
    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError>;
    /// [`reduce_scatter_sum_f32`](Self::reduce_scatter_sum_f32) for `f64`.
    fn reduce_scatter_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<(), CommError>;
    /// Every rank passes `send` (same length everywhere); `recv` (`size() * send.len()`)
    /// gets rank 0's block, then rank 1's, …
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError>;
    /// [`all_gather_f32`](Self::all_gather_f32) for `f64`.
    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<(), CommError>;
    /// In place element-wise sum over ranks (same length everywhere).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CommError>;
    /// Logical AND over ranks (used so that every rank agrees before a collective step).
    fn all_agree(&self, ok: bool) -> Result<bool, CommError>;
    /// Root's bytes replace every other rank's `bytes` (lengths may differ; root's are kept).
    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<(), CommError>;
    /// Every rank's bytes (lengths may differ), in rank order, on every rank.
    fn all_gather_bytes(&self, send: &[u8]) -> Result<Vec<Vec<u8>>, CommError>;
    /// Bytes this rank has sent through the collectives so far, by the convention in the
    /// [module docs](self#bytes-sent) (for bench reports).
    fn bytes_sent(&self) -> u64;
}

/// The byte counts of the [module docs](self#bytes-sent), shared by every implementation so
/// that they report the same numbers.
pub(crate) mod volume {
    fn share(ranks: usize, total: u128) -> u64 {
        if ranks <= 1 {
            return 0;
        }
        let v = (ranks as u128 - 1) * total / ranks as u128;
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// Reduce-scatter of a `send` buffer, or all-gather into a `recv` buffer, of `elements`
    /// elements of `element_bytes` bytes.
    pub(crate) fn scatter_or_gather(ranks: usize, elements: usize, element_bytes: usize) -> u64 {
        share(ranks, elements as u128 * element_bytes as u128)
    }

    /// All-reduce of `elements` elements of `element_bytes` bytes.
    pub(crate) fn all_reduce(ranks: usize, elements: usize, element_bytes: usize) -> u64 {
        share(ranks, 2 * elements as u128 * element_bytes as u128)
    }

    /// Broadcast of `bytes` bytes (an 8-byte length first).
    pub(crate) fn broadcast(ranks: usize, bytes: usize) -> u64 {
        share(ranks, 8 + bytes as u128)
    }

    /// All-gather of byte strings of `total` bytes in all (the 8-byte lengths first).
    pub(crate) fn all_gather_bytes(ranks: usize, total: usize) -> u64 {
        scatter_or_gather(ranks, ranks, 8).saturating_add(share(ranks, total as u128))
    }
}

/// `Err(Length)` unless `got == expected`.
pub(crate) fn check_len(
    op: &'static str,
    buffer: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), CommError> {
    if got == expected {
        Ok(())
    } else {
        Err(CommError::Length {
            op,
            buffer,
            expected,
            got,
        })
    }
}

/// `size * block`, or an error naming the block buffer when that does not fit in `usize`.
pub(crate) fn blocks(
    op: &'static str,
    buffer: &'static str,
    size: usize,
    block: usize,
) -> Result<usize, CommError> {
    size.checked_mul(block).ok_or(CommError::Length {
        op,
        buffer,
        expected: usize::MAX / size.max(1),
        got: block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_follow_the_documented_convention() {
        assert_eq!(volume::scatter_or_gather(1, 100, 4), 0);
        assert_eq!(volume::scatter_or_gather(2, 100, 4), 200);
        assert_eq!(volume::scatter_or_gather(3, 9, 8), 48);
        assert_eq!(volume::all_reduce(2, 10, 8), 80);
        assert_eq!(volume::all_reduce(3, 3, 8), 32);
        assert_eq!(volume::broadcast(1, 5), 0);
        assert_eq!(volume::broadcast(2, 6), 7);
        assert_eq!(volume::all_gather_bytes(3, 6), 16 + 4);
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = CommError::Length {
            op: "all_gather_f32",
            buffer: "recv",
            expected: 6,
            got: 5,
        };
        assert_eq!(
            e.to_string(),
            "all_gather_f32: `recv` has 5 elements, expected 6"
        );
        let e = CommError::RankFailed {
            rank: 2,
            message: "panicked".into(),
        };
        assert_eq!(e.to_string(), "rank 2 failed: panicked");
        assert_eq!(
            blocks("x", "recv", 3, usize::MAX).unwrap_err().to_string(),
            format!(
                "x: `recv` has {} elements, expected {}",
                usize::MAX,
                usize::MAX / 3
            )
        );
    }

    #[test]
    fn the_trait_is_object_safe() {
        fn takes(_: Option<&dyn Collective>) {}
        takes(None);
    }
}
