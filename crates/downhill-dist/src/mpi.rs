//! [`Mpi`]: the [`Collective`] interface over MPI (cargo feature `mpi`), through the `mpi`
//! crate (rsmpi 0.8) and the system's MPI library (MPICH from Debian: `apt-get install mpich
//! libmpich-dev libclang-dev pkgconf`). Run the program under `mpiexec -n N`; without
//! `mpiexec` it runs as a single rank.
//!
//! # Failures
//!
//! MPI's default error handler (`MPI_ERRORS_ARE_FATAL`) aborts the whole job on an MPI error,
//! and rsmpi relies on it (it does not return MPI's error codes). When a rank exits with a
//! non-zero status, is killed, or aborts, `mpiexec` (MPICH's hydra) ends every other rank,
//! including those waiting in a collective, and exits non-zero itself (with the rank's exit
//! status). For a killed or crashed rank it prints `BAD TERMINATION OF ONE OF YOUR APPLICATION
//! PROCESSES` with the PID and the signal; for [`Mpi::abort`], MPICH prints
//! `application called MPI_Abort(MPI_COMM_WORLD, code) - process R`, but that line races with
//! the killing of the job and is lost now and then. So a rank that gives up prints its reason
//! with its rank (`rank R: …`, in one write: `mpiexec -l` labels each line with its rank),
//! then calls [`Mpi::abort`], which waits a moment for that output to get through.
//!
//! A handle dropped while its thread panics prints `rank R: panicked; aborting the MPI job`
//! and aborts with status 101 (Rust's panic status), so a panicking rank ends the job instead
//! of leaving the others in a collective. A rank must not give up by returning normally (for
//! instance `main` returning an `Err`): dropping the handle finalizes MPI, which waits for the
//! other ranks while they wait for this one, a hang that only `mpiexec`'s timeout
//! (`MPIEXEC_TIMEOUT=seconds`) ends; this is tested.
//!
//! Lengths are checked before anything is sent ([`CommError::Length`]), on this rank only.
//! Whether the ranks' lengths agree is not checked (that would cost a round trip per call):
//! MPI aborts the job where a message does not fit its buffer (a truncation error), and
//! otherwise the results are wrong; keep the calls the same on every rank, as the
//! [`Collective`] contract asks, and use [`Collective::all_agree`] before a step.
//!
//! # Threads
//!
//! MPI is initialized with `MPI_THREAD_SERIALIZED` (MPICH provides it), and every call goes
//! through one mutex, so calls are never concurrent but may come from any thread: that is what
//! makes [`Mpi`] `Send` and `Sync`, as the trait requires.

use crate::comm::{blocks, check_len, volume, Collective, CommError};
use ::mpi::collective::SystemOperation;
use ::mpi::datatype::PartitionMut;
use ::mpi::environment::Universe;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use ::mpi::{Count, Rank, Threading};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How long [`Mpi::abort`] waits for this rank's output to be forwarded before aborting.
const ABORT_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// This process's rank in `MPI_COMM_WORLD`; see the [module docs](self). One per process:
/// MPI can be initialized once.
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    threading: Threading,
    calls: Mutex<()>,
    sent: AtomicU64,
    /// Finalizes MPI when dropped, after `world` (fields drop in order).
    _universe: Universe,
}

// SAFETY: MPI is initialized with at least `MPI_THREAD_SERIALIZED` (checked in `init`), which
// allows MPI calls from any thread as long as no two are concurrent; every MPI call of `Mpi`
// is made while holding `calls` (`rank` and `size` are cached). The communicator handle is an
// integer (MPICH) or a pointer to MPI's own object (Open MPI) that MPI lets any thread use.
unsafe impl Send for Mpi {}
// SAFETY: as for `Send`: shared use goes through the `calls` mutex.
unsafe impl Sync for Mpi {}

impl Mpi {
    /// Initializes MPI (`MPI_Init_thread`, asking for `MPI_THREAD_SERIALIZED`) and returns
    /// this process's handle on the world communicator.
    ///
    /// # Errors
    ///
    /// [`CommError::Init`] when MPI was initialized before in this process (once an `Mpi` has
    /// been created, even after it was dropped: MPI cannot be initialized twice), or when the
    /// library cannot serve calls from several threads.
    pub fn init() -> Result<Mpi, CommError> {
        let (universe, threading) = ::mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                CommError::Init(
                    "MPI is already initialized in this process (it can be initialized only once; keep one Mpi for the whole run)"
                        .into(),
                )
            })?;
        if threading < Threading::Serialized {
            return Err(CommError::Init(format!(
                "the MPI library provides thread level {threading:?}; Mpi needs Serialized"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank(), world.size());
        let (Ok(rank), Ok(size)) = (usize::try_from(rank), usize::try_from(size)) else {
            return Err(CommError::Init(format!(
                "MPI reports rank {rank} of {size}"
            )));
        };
        Ok(Mpi {
            world,
            rank,
            size,
            threading,
            calls: Mutex::new(()),
            sent: AtomicU64::new(0),
            _universe: universe,
        })
    }

    /// Ends the whole job (`MPI_Abort` on the world communicator) with exit status `code`:
    /// every rank is terminated, and `mpiexec` reports this rank and the code. For a rank that
    /// cannot go on; print the reason first.
    pub fn abort(&self, code: i32) -> ! {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // MPI_Abort has mpiexec kill every rank at once, racing with the forwarding of this
        // rank's last output (the reason it was just asked to print): in a test, `mpiexec -l`
        // lost it about one time in five. A moment's wait lets it through.
        std::thread::sleep(ABORT_GRACE);
        self.world.abort(code)
    }

    fn serial(&self) -> MutexGuard<'_, ()> {
        // Nothing panics while the lock is held but MPI, which aborts the job instead.
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    fn reduce_scatter<T: Equivalence>(
        &self,
        op: &'static str,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), CommError> {
        let n = blocks(op, "recv", self.size, recv.len())?;
        check_len(op, "send", n, send.len())?;
        count(op, "send", n)?;
        let _serial = self.serial();
        self.world
            .reduce_scatter_block_into(send, recv, SystemOperation::sum());
        self.record(volume::scatter_or_gather(
            self.size,
            n,
            std::mem::size_of::<T>(),
        ));
        Ok(())
    }

    fn all_gather<T: Equivalence>(
        &self,
        op: &'static str,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), CommError> {
        let n = blocks(op, "send", self.size, send.len())?;
        check_len(op, "recv", n, recv.len())?;
        count(op, "recv", n)?;
        let _serial = self.serial();
        self.world.all_gather_into(send, recv);
        self.record(volume::scatter_or_gather(
            self.size,
            n,
            std::mem::size_of::<T>(),
        ));
        Ok(())
    }
}

/// `len` as an MPI count (32-bit), or an error saying the buffer is too large.
fn count(op: &'static str, buffer: &'static str, len: usize) -> Result<Count, CommError> {
    Count::try_from(len).map_err(|_| {
        CommError::Mpi(format!(
            "{op}: `{buffer}` has {len} elements, more than MPI's count limit {}",
            Count::MAX
        ))
    })
}

impl Drop for Mpi {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // one write, so that `mpiexec -l` labels it as one line
            let line = format!("rank {}: panicked; aborting the MPI job\n", self.rank);
            let _ = std::io::stderr().write_all(line.as_bytes());
            self.abort(101);
        }
    }
}

impl fmt::Debug for Mpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("threading", &self.threading)
            .finish()
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        self.reduce_scatter("reduce_scatter_sum_f32", send, recv)
    }

    fn reduce_scatter_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<(), CommError> {
        self.reduce_scatter("reduce_scatter_sum_f64", send, recv)
    }

    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        self.all_gather("all_gather_f32", send, recv)
    }

    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<(), CommError> {
        self.all_gather("all_gather_f64", send, recv)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CommError> {
        count("all_reduce_sum_f64", "values", values.len())?;
        let send = values.to_vec();
        let _serial = self.serial();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        self.record(volume::all_reduce(self.size, values.len(), 8));
        Ok(())
    }

    fn all_agree(&self, ok: bool) -> Result<bool, CommError> {
        let mine = u8::from(ok);
        let mut all = 0u8;
        let _serial = self.serial();
        self.world
            .all_reduce_into(&mine, &mut all, SystemOperation::min());
        self.record(volume::all_reduce(self.size, 1, 1));
        Ok(all == 1)
    }

    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<(), CommError> {
        const OP: &str = "broadcast_bytes";
        let root_rank = Rank::try_from(root).ok().filter(|_| root < self.size);
        let Some(root_rank) = root_rank else {
            return Err(CommError::Root {
                op: OP,
                root,
                size: self.size,
            });
        };
        let _serial = self.serial();
        let from = self.world.process_at_rank(root_rank);
        let mut len = bytes.len() as u64;
        from.broadcast_into(&mut len);
        // Every rank sees the root's length, so every rank returns the same error.
        let len = usize::try_from(len)
            .map_err(|_| CommError::Mpi(format!("{OP}: {len} bytes do not fit in memory")))?;
        count(OP, "bytes", len)?;
        if self.rank != root {
            bytes.clear();
            bytes.resize(len, 0);
        }
        from.broadcast_into(&mut bytes[..]);
        self.record(volume::broadcast(self.size, len));
        Ok(())
    }

    fn all_gather_bytes(&self, send: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        const OP: &str = "all_gather_bytes";
        let _serial = self.serial();
        let mine = send.len() as u64;
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&mine, &mut lens[..]);
        // Every rank sees every length, so every rank returns the same error.
        let total = lens.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        let total = total
            .and_then(|t| usize::try_from(t).ok())
            .ok_or_else(|| CommError::Mpi(format!("{OP}: the lengths {lens:?} overflow")))?;
        count(OP, "all ranks' bytes", total)?;
        // Each length is at most the total, which fits in a Count.
        let counts: Vec<Count> = lens.iter().map(|&l| l as Count).collect();
        let displs: Vec<Count> = counts
            .iter()
            .scan(0, |at, &c| {
                let d = *at;
                *at += c;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; total];
        {
            let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(send, &mut parts);
        }
        self.record(volume::all_gather_bytes(self.size, total));
        let mut out = Vec::with_capacity(self.size);
        let mut rest = &all[..];
        for &c in &counts {
            let (this, tail) = rest.split_at(c as usize);
            out.push(this.to_vec());
            rest = tail;
        }
        Ok(out)
    }

    fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}
