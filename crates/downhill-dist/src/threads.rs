//! [`Threads`]: N ranks as N threads of one process, sharing memory. For tests and examples
//! of data-parallel code without MPI; it runs the same [`Collective`] calls.
//!
//! Each call is one round: every rank leaves a copy of its contribution in a shared slot and
//! waits on a condition variable; the last rank to arrive closes the round and wakes the
//! others, and each rank computes its own result from all contributions, summing in rank
//! order (rank 0 + rank 1 + …), so results are the same bits every run and on every rank.
//!
//! A rank that panics, or drops its handle, marks the group failed (from `Drop`, which runs
//! while a panic unwinds): ranks waiting in a call, and every later call, return
//! [`CommError::RankFailed`] naming it, instead of waiting forever. No timeouts.

use crate::comm::{blocks, check_len, volume, Collective, CommError};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// One rank of an in-process group; see the [module docs](self). Create the handles with
/// [`Threads::group`], or run a closure on every rank with [`Threads::run`]. Dropping a handle
/// means the rank left: later collectives of the other ranks return
/// [`CommError::RankFailed`].
pub struct Threads {
    rank: usize,
    shared: Arc<Shared>,
    /// Serializes calls made through this handle from several threads.
    calls: Mutex<()>,
    sent: AtomicU64,
}

struct Shared {
    size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Rounds closed so far.
    round: u64,
    /// This round's contributions, by rank.
    slots: Vec<Option<Contribution>>,
    arrived: usize,
    /// The last closed round's contributions, by rank.
    done: Arc<Vec<Contribution>>,
    /// The first rank that failed, and how.
    failed: Option<(usize, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    ReduceScatterF32,
    ReduceScatterF64,
    AllGatherF32,
    AllGatherF64,
    AllReduceF64,
    AllAgree,
    Broadcast { root: usize },
    AllGatherBytes,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::ReduceScatterF32 => "reduce_scatter_sum_f32",
            Op::ReduceScatterF64 => "reduce_scatter_sum_f64",
            Op::AllGatherF32 => "all_gather_f32",
            Op::AllGatherF64 => "all_gather_f64",
            Op::AllReduceF64 => "all_reduce_sum_f64",
            Op::AllAgree => "all_agree",
            Op::Broadcast { .. } => "broadcast_bytes",
            Op::AllGatherBytes => "all_gather_bytes",
        }
    }

    fn describe(self) -> String {
        match self {
            Op::Broadcast { root } => format!("broadcast_bytes with root {root}"),
            op => op.name().to_string(),
        }
    }
}

enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<u8>),
    Flag(bool),
    Nothing,
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::Bytes(v) => v.len(),
            Data::Flag(_) => 1,
            Data::Nothing => 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Data::Bytes(v) => v,
            _ => &[],
        }
    }
}

struct Contribution {
    op: Op,
    data: Data,
}

/// The element types of the numeric collectives.
trait Element: Copy + std::ops::Add<Output = Self> + 'static {
    fn wrap(values: &[Self]) -> Data;
    fn view(data: &Data) -> &[Self];
}

impl Element for f32 {
    fn wrap(values: &[f32]) -> Data {
        Data::F32(values.to_vec())
    }
    fn view(data: &Data) -> &[f32] {
        match data {
            Data::F32(v) => v,
            _ => &[],
        }
    }
}

impl Element for f64 {
    fn wrap(values: &[f64]) -> Data {
        Data::F64(values.to_vec())
    }
    fn view(data: &Data) -> &[f64] {
        match data {
            Data::F64(v) => v,
            _ => &[],
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; should it, the state is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Threads {
    /// One handle per rank of a new group of `n`, in rank order. Each handle is `Send`: move
    /// it to its rank's thread. `n == 0` gives none.
    pub fn group(n: usize) -> Vec<Threads> {
        let shared = Arc::new(Shared {
            size: n,
            state: Mutex::new(State {
                round: 0,
                slots: (0..n).map(|_| None).collect(),
                arrived: 0,
                done: Arc::new(Vec::new()),
                failed: None,
            }),
            changed: Condvar::new(),
        });
        (0..n)
            .map(|rank| Threads {
                rank,
                shared: Arc::clone(&shared),
                calls: Mutex::new(()),
                sent: AtomicU64::new(0),
            })
            .collect()
    }

    /// Runs `f` on `n` threads, one per rank (named `rank 0`, `rank 1`, …), each with its own
    /// handle, and returns the results in rank order.
    ///
    /// # Panics
    ///
    /// When a rank panics, after every thread has ended (the others are not left waiting:
    /// their calls return [`CommError::RankFailed`]): with `rank R panicked: <message>`, R
    /// being the rank that failed first.
    pub fn run<T, F>(n: usize, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(Threads) -> T + Sync,
    {
        let handles = Threads::group(n);
        let shared = handles.first().map(|h| Arc::clone(&h.shared));
        let f = &f;
        let outcomes: Vec<std::thread::Result<T>> = std::thread::scope(|s| {
            let threads: Vec<_> = handles
                .into_iter()
                .map(|comm| {
                    std::thread::Builder::new()
                        .name(format!("rank {}", comm.rank))
                        .spawn_scoped(s, move || f(comm))
                        .unwrap_or_else(|e| panic!("Threads::run: cannot spawn a thread: {e}"))
                })
                .collect();
            threads.into_iter().map(|t| t.join()).collect()
        });
        let panicked: Vec<usize> = (0..n).filter(|&r| outcomes[r].is_err()).collect();
        if let Some(&lowest) = panicked.first() {
            let first = shared
                .and_then(|s| lock(&s.state).failed.map(|(rank, _)| rank))
                .filter(|r| panicked.contains(r))
                .unwrap_or(lowest);
            let message = match &outcomes[first] {
                Err(payload) => panic_message(payload.as_ref()),
                Ok(_) => String::new(),
            };
            let others: Vec<usize> = panicked.into_iter().filter(|&r| r != first).collect();
            if others.is_empty() {
                panic!("rank {first} panicked: {message}");
            }
            panic!("rank {first} panicked: {message} (then ranks {others:?} panicked too)");
        }
        outcomes.into_iter().filter_map(Result::ok).collect()
    }

    fn record(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One round: leaves `data` for the others, waits for theirs, and checks that every rank
    /// made the same call (and, where `same_len`, with the same length).
    fn exchange(
        &self,
        op: Op,
        data: Data,
        same_len: bool,
    ) -> Result<Arc<Vec<Contribution>>, CommError> {
        let shared = &*self.shared;
        let all = {
            let mut st = lock(&shared.state);
            if let Some((rank, message)) = st.failed {
                return Err(failed(rank, message));
            }
            let my_round = st.round;
            st.slots[self.rank] = Some(Contribution { op, data });
            st.arrived += 1;
            if st.arrived == shared.size {
                let all: Vec<Contribution> = st.slots.iter_mut().filter_map(Option::take).collect();
                st.done = Arc::new(all);
                st.round += 1;
                st.arrived = 0;
                shared.changed.notify_all();
                Arc::clone(&st.done)
            } else {
                loop {
                    st = shared
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                    if st.round != my_round {
                        break Arc::clone(&st.done);
                    }
                    if let Some((rank, message)) = st.failed {
                        return Err(failed(rank, message));
                    }
                }
            }
        };
        let first = &all[0];
        for (rank, c) in all.iter().enumerate().skip(1) {
            if c.op != first.op {
                return Err(CommError::Mismatch {
                    op: op.name(),
                    rank,
                    detail: format!(
                        "it called {}, rank 0 {}",
                        c.op.describe(),
                        first.op.describe()
                    ),
                });
            }
            if same_len && c.data.len() != first.data.len() {
                return Err(CommError::Mismatch {
                    op: op.name(),
                    rank,
                    detail: format!(
                        "it passed {} elements, rank 0 {}",
                        c.data.len(),
                        first.data.len()
                    ),
                });
            }
        }
        Ok(all)
    }

    fn reduce_scatter<T: Element>(
        &self,
        op: Op,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), CommError> {
        let _serial = lock(&self.calls);
        let n = blocks(op.name(), "recv", self.size(), recv.len())?;
        check_len(op.name(), "send", n, send.len())?;
        let all = self.exchange(op, T::wrap(send), true)?;
        let m = recv.len();
        let start = self.rank * m;
        for (i, out) in recv.iter_mut().enumerate() {
            let mut sum = T::view(&all[0].data)[start + i];
            for c in &all[1..] {
                sum = sum + T::view(&c.data)[start + i];
            }
            *out = sum;
        }
        self.record(volume::scatter_or_gather(
            self.size(),
            n,
            std::mem::size_of::<T>(),
        ));
        Ok(())
    }

    fn all_gather<T: Element>(&self, op: Op, send: &[T], recv: &mut [T]) -> Result<(), CommError> {
        let _serial = lock(&self.calls);
        let n = blocks(op.name(), "send", self.size(), send.len())?;
        check_len(op.name(), "recv", n, recv.len())?;
        let all = self.exchange(op, T::wrap(send), true)?;
        if !send.is_empty() {
            for (block, c) in recv.chunks_exact_mut(send.len()).zip(all.iter()) {
                block.copy_from_slice(T::view(&c.data));
            }
        }
        self.record(volume::scatter_or_gather(
            self.size(),
            n,
            std::mem::size_of::<T>(),
        ));
        Ok(())
    }
}

fn failed(rank: usize, message: &str) -> CommError {
    CommError::RankFailed {
        rank,
        message: message.to_string(),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        if st.failed.is_none() {
            let how = if std::thread::panicking() {
                "panicked"
            } else {
                "left the group (its handle was dropped)"
            };
            st.failed = Some((self.rank, how));
        }
        self.shared.changed.notify_all();
    }
}

impl fmt::Debug for Threads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threads")
            .field("rank", &self.rank)
            .field("size", &self.shared.size)
            .finish()
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        self.reduce_scatter(Op::ReduceScatterF32, send, recv)
    }

    fn reduce_scatter_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<(), CommError> {
        self.reduce_scatter(Op::ReduceScatterF64, send, recv)
    }

    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<(), CommError> {
        self.all_gather(Op::AllGatherF32, send, recv)
    }

    fn all_gather_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<(), CommError> {
        self.all_gather(Op::AllGatherF64, send, recv)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CommError> {
        let _serial = lock(&self.calls);
        let all = self.exchange(Op::AllReduceF64, f64::wrap(values), true)?;
        for (i, out) in values.iter_mut().enumerate() {
            let mut sum = f64::view(&all[0].data)[i];
            for c in &all[1..] {
                sum += f64::view(&c.data)[i];
            }
            *out = sum;
        }
        self.record(volume::all_reduce(self.size(), values.len(), 8));
        Ok(())
    }

    fn all_agree(&self, ok: bool) -> Result<bool, CommError> {
        let _serial = lock(&self.calls);
        let all = self.exchange(Op::AllAgree, Data::Flag(ok), false)?;
        self.record(volume::all_reduce(self.size(), 1, 1));
        Ok(all.iter().all(|c| matches!(c.data, Data::Flag(true))))
    }

    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<(), CommError> {
        let _serial = lock(&self.calls);
        let op = Op::Broadcast { root };
        if root >= self.size() {
            return Err(CommError::Root {
                op: op.name(),
                root,
                size: self.size(),
            });
        }
        let data = if self.rank == root {
            Data::Bytes(bytes.clone())
        } else {
            Data::Nothing
        };
        let all = self.exchange(op, data, false)?;
        let from_root = all[root].data.bytes();
        if self.rank != root {
            bytes.clear();
            bytes.extend_from_slice(from_root);
        }
        self.record(volume::broadcast(self.size(), from_root.len()));
        Ok(())
    }

    fn all_gather_bytes(&self, send: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        let _serial = lock(&self.calls);
        let all = self.exchange(Op::AllGatherBytes, Data::Bytes(send.to_vec()), false)?;
        let out: Vec<Vec<u8>> = all.iter().map(|c| c.data.bytes().to_vec()).collect();
        let total = out.iter().map(Vec::len).sum();
        self.record(volume::all_gather_bytes(self.size(), total));
        Ok(out)
    }

    fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on a thread and fails the test if it has not returned within 30 s, instead of
    /// hanging the test run.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(v)) => {
                let _ = worker.join();
                v
            }
            Ok(Err(payload)) => std::panic::resume_unwind(payload),
            Err(_) => panic!("hung: no result within 30 s"),
        }
    }

    const SIZES: [usize; 3] = [1, 2, 3];

    #[test]
    fn reduce_scatter_sums_each_block_on_its_rank() {
        for n in SIZES {
            let out = Threads::run(n, |c| {
                let r = c.rank() as f32;
                // rank r sends (r+1)·(j+1) at position j
                let send32: Vec<f32> = (0..3 * n).map(|j| (r + 1.0) * (j as f32 + 1.0)).collect();
                let send64: Vec<f64> = send32.iter().map(|&v| f64::from(v) * 0.5).collect();
                let mut recv32 = vec![0f32; 3];
                let mut recv64 = vec![0f64; 3];
                c.reduce_scatter_sum_f32(&send32, &mut recv32).unwrap();
                c.reduce_scatter_sum_f64(&send64, &mut recv64).unwrap();
                (recv32, recv64)
            });
            let ranks_sum = (n * (n + 1) / 2) as f32;
            for (r, (recv32, recv64)) in out.iter().enumerate() {
                let want: Vec<f32> = (0..3)
                    .map(|i| ranks_sum * (3.0 * r as f32 + i as f32 + 1.0))
                    .collect();
                assert_eq!(recv32, &want, "{n} ranks, rank {r}");
                let want64: Vec<f64> = want.iter().map(|&v| f64::from(v) * 0.5).collect();
                assert_eq!(recv64, &want64, "{n} ranks, rank {r}");
            }
        }
    }

    #[test]
    fn all_gather_places_blocks_in_rank_order() {
        for n in SIZES {
            let out = Threads::run(n, |c| {
                let r = c.rank();
                let send: Vec<f32> = (0..2).map(|i| (10 * r + i) as f32).collect();
                let mut recv32 = vec![-1f32; 2 * n];
                c.all_gather_f32(&send, &mut recv32).unwrap();
                let send64: Vec<f64> = send.iter().map(|&v| f64::from(v) + 0.25).collect();
                let mut recv64 = vec![-1f64; 2 * n];
                c.all_gather_f64(&send64, &mut recv64).unwrap();
                // empty blocks are fine
                c.all_gather_f32(&[], &mut []).unwrap();
                (recv32, recv64)
            });
            let want: Vec<f32> = (0..n)
                .flat_map(|r| (0..2).map(move |i| (10 * r + i) as f32))
                .collect();
            let want64: Vec<f64> = want.iter().map(|&v| f64::from(v) + 0.25).collect();
            for (recv32, recv64) in &out {
                assert_eq!(recv32, &want);
                assert_eq!(recv64, &want64);
            }
        }
    }

    #[test]
    fn all_reduce_and_all_agree() {
        for n in SIZES {
            let out = Threads::run(n, |c| {
                let r = c.rank() as f64;
                let mut v = vec![r + 1.0, 0.5 * r, -2.0];
                c.all_reduce_sum_f64(&mut v).unwrap();
                let all_true = c.all_agree(true).unwrap();
                let last_false = c.all_agree(c.rank() + 1 != c.size()).unwrap();
                (v, all_true, last_false)
            });
            let s = (n * (n - 1) / 2) as f64;
            for (v, all_true, last_false) in out {
                assert_eq!(v, vec![s + n as f64, 0.5 * s, -2.0 * n as f64]);
                assert!(all_true);
                assert!(!last_false);
            }
        }
    }

    #[test]
    fn sums_are_in_rank_order_and_the_same_bits_everywhere() {
        // Values whose sum depends on the order: rank order gives ((a0 + a1) + a2).
        let vals = [1.0e16, 1.0, -1.0e16];
        let out = Threads::run(3, |c| {
            let mut v = vec![vals[c.rank()]];
            c.all_reduce_sum_f64(&mut v).unwrap();
            let mut recv = vec![0f64; 1];
            c.reduce_scatter_sum_f64(&[vals[c.rank()]; 3], &mut recv)
                .unwrap();
            (v[0].to_bits(), recv[0].to_bits())
        });
        let want = ((vals[0] + vals[1]) + vals[2]).to_bits();
        for (a, b) in out {
            assert_eq!((a, b), (want, want));
        }
    }

    #[test]
    fn broadcast_and_all_gather_bytes_with_lengths_that_differ() {
        for n in SIZES {
            for root in 0..n {
                let out = Threads::run(n, move |c| {
                    let mut b = if c.rank() == root {
                        format!("from root {root}").into_bytes()
                    } else {
                        vec![7; c.rank() * 5]
                    };
                    c.broadcast_bytes(root, &mut b).unwrap();
                    let mut empty = Vec::new();
                    if c.rank() != root {
                        empty = vec![1, 2, 3];
                    }
                    c.broadcast_bytes(root, &mut empty).unwrap();
                    let gathered = c.all_gather_bytes(&vec![c.rank() as u8; c.rank()]).unwrap();
                    (b, empty, gathered)
                });
                for (b, empty, gathered) in out {
                    assert_eq!(b, format!("from root {root}").into_bytes());
                    assert!(empty.is_empty());
                    let want: Vec<Vec<u8>> = (0..n).map(|r| vec![r as u8; r]).collect();
                    assert_eq!(gathered, want);
                }
            }
        }
    }

    #[test]
    fn bytes_sent_follows_the_convention() {
        let out = Threads::run(3, |c| {
            let mut recv = vec![0f32; 2];
            c.reduce_scatter_sum_f32(&[1.0; 6], &mut recv).unwrap(); // 2/3 of 24 = 16
            let mut all = vec![0f64; 6];
            c.all_gather_f64(&[1.0; 2], &mut all).unwrap(); // 2/3 of 48 = 32
            let mut v = vec![1.0; 3];
            c.all_reduce_sum_f64(&mut v).unwrap(); // 4/3 of 24 = 32
            let mut b = b"abcd".to_vec();
            c.broadcast_bytes(1, &mut b).unwrap(); // 2/3 of 12 = 8
            c.all_gather_bytes(&[0; 2]).unwrap(); // 2·8 + 2/3 of 6 = 20
            c.bytes_sent()
        });
        assert_eq!(out, vec![16 + 32 + 32 + 8 + 20; 3]);
        assert_eq!(
            Threads::run(1, |c| {
                let mut v = vec![1.0; 3];
                c.all_reduce_sum_f64(&mut v).unwrap();
                c.bytes_sent()
            }),
            vec![0]
        );
    }

    #[test]
    fn wrong_lengths_are_typed_errors_and_the_group_goes_on() {
        let out = Threads::run(2, |c| {
            let mut recv = vec![0f32; 2];
            let e1 = c.reduce_scatter_sum_f32(&[1.0; 3], &mut recv).unwrap_err();
            let mut recv64 = vec![0f64; 3];
            let e2 = c.all_gather_f64(&[1.0; 2], &mut recv64).unwrap_err();
            let e3 = c.broadcast_bytes(2, &mut vec![]).unwrap_err();
            // nothing was sent: the group still works
            c.reduce_scatter_sum_f32(&[1.0; 4], &mut recv).unwrap();
            (e1, e2, e3, recv, c.bytes_sent())
        });
        for (e1, e2, e3, recv, sent) in out {
            assert_eq!(
                e1,
                CommError::Length {
                    op: "reduce_scatter_sum_f32",
                    buffer: "send",
                    expected: 4,
                    got: 3
                }
            );
            assert_eq!(
                e2.to_string(),
                "all_gather_f64: `recv` has 3 elements, expected 4"
            );
            assert_eq!(
                e3.to_string(),
                "broadcast_bytes: root 2 is not a rank of this group of 2"
            );
            assert_eq!(recv, vec![2.0, 2.0]);
            assert_eq!(sent, 8);
        }
    }

    #[test]
    fn ranks_that_disagree_all_get_a_mismatch() {
        let out = within(|| {
            Threads::run(3, |c| {
                let n = if c.rank() == 2 { 2 } else { 1 };
                let mut v = vec![1.0; n];
                let e1 = c.all_reduce_sum_f64(&mut v).unwrap_err();
                let e2 = if c.rank() == 1 {
                    c.all_agree(true).unwrap_err()
                } else {
                    c.broadcast_bytes(0, &mut vec![1]).unwrap_err()
                };
                let e3 = c.broadcast_bytes(c.rank(), &mut vec![]).unwrap_err();
                // and the group still works
                let agreed = c.all_agree(true).unwrap();
                (e1, e2, e3, agreed)
            })
        });
        for (e1, e2, e3, agreed) in out {
            assert_eq!(
                e1.to_string(),
                "all_reduce_sum_f64: rank 2 disagrees: it passed 2 elements, rank 0 1"
            );
            assert!(
                e2.to_string().contains(
                    "rank 1 disagrees: it called all_agree, rank 0 broadcast_bytes with root 0"
                ),
                "{e2}"
            );
            assert!(
                e3.to_string()
                    .contains("rank 1 disagrees: it called broadcast_bytes with root 1"),
                "{e3}"
            );
            assert!(agreed);
        }
    }

    #[test]
    fn a_panicking_rank_fails_the_others_instead_of_hanging() {
        for n in [2, 3] {
            let (tx, rx) = mpsc::channel();
            let tx = Mutex::new(tx);
            let outcome = within(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Threads::run(n, |c| {
                        if c.rank() == 1 {
                            panic!("rank one gives up");
                        }
                        let mut v = vec![1.0];
                        let e = c.all_reduce_sum_f64(&mut v).unwrap_err();
                        // and every later call fails at once
                        let e2 = c.all_agree(true).unwrap_err();
                        lock(&tx).send((c.rank(), e, e2)).unwrap();
                    })
                }))
            });
            let payload = outcome.expect_err("run must propagate the panic");
            assert_eq!(
                panic_message(payload.as_ref()),
                "rank 1 panicked: rank one gives up"
            );
            let mut got: Vec<_> = rx.try_iter().collect();
            got.sort_by_key(|g| g.0);
            assert_eq!(got.len(), n - 1);
            for (_, e, e2) in got {
                let want = CommError::RankFailed {
                    rank: 1,
                    message: "panicked".into(),
                };
                assert_eq!(e, want);
                assert_eq!(e2, want);
            }
        }
    }

    #[test]
    #[should_panic(expected = "rank 2 panicked: boom (then ranks [0, 1] panicked too)")]
    fn run_names_the_rank_that_panicked_first() {
        Threads::run(3, |c| {
            if c.rank() == 2 {
                panic!("boom");
            }
            // the others panic on the error, after rank 2
            c.all_agree(true).unwrap();
        });
    }

    #[test]
    fn a_dropped_handle_fails_the_others() {
        let errors = within(|| {
            let mut group = Threads::group(3);
            let c2 = group.pop().unwrap();
            let c1 = group.pop().unwrap();
            let c0 = group.pop().unwrap();
            std::thread::scope(|s| {
                let a = s.spawn(move || c0.all_gather_bytes(b"x").unwrap_err());
                let b = s.spawn(move || c1.all_gather_bytes(b"y").unwrap_err());
                std::thread::sleep(Duration::from_millis(50));
                drop(c2);
                (a.join().unwrap(), b.join().unwrap())
            })
        });
        let want = CommError::RankFailed {
            rank: 2,
            message: "left the group (its handle was dropped)".into(),
        };
        assert_eq!(errors, (want.clone(), want));
    }

    #[test]
    fn handles_are_send_and_sync_and_calls_through_one_handle_serialize() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Threads>();
        assert!(format!("{:?}", Threads::group(2)[1]).contains("rank: 1, size: 2"));
        // two threads of rank 0 share its handle; rank 1 answers both calls
        let sums = within(|| {
            let mut group = Threads::group(2);
            let c1 = group.pop().unwrap();
            let c0 = group.pop().unwrap();
            std::thread::scope(|s| {
                let c0 = &c0;
                let x = s.spawn(move || {
                    let mut v = vec![1.0];
                    c0.all_reduce_sum_f64(&mut v).map(|_| v[0])
                });
                let y = s.spawn(move || {
                    let mut v = vec![1.0];
                    c0.all_reduce_sum_f64(&mut v).map(|_| v[0])
                });
                for _ in 0..2 {
                    let mut v = vec![10.0];
                    c1.all_reduce_sum_f64(&mut v).unwrap();
                }
                (x.join().unwrap().unwrap(), y.join().unwrap().unwrap())
            })
        });
        assert_eq!(sums, (11.0, 11.0));
    }

    #[test]
    fn empty_group() {
        assert!(Threads::group(0).is_empty());
        assert!(Threads::run(0, |c| c.rank()).is_empty());
    }

    #[test]
    fn works_through_dyn_collective() {
        fn total(c: &dyn Collective, x: f64) -> f64 {
            let mut v = [x];
            c.all_reduce_sum_f64(&mut v).unwrap();
            v[0]
        }
        assert_eq!(
            Threads::run(3, |c| total(&c, c.rank() as f64)),
            vec![3.0; 3]
        );
    }
}
