//! Runs every collective of `downhill_dist::mpi::Mpi` on known values and checks the results
//! on every rank: `mpiexec -n 3 target/release/examples/collectives`. A mismatch prints
//! `rank R: ...` and aborts the job with status 1; success prints, from rank 0,
//! `collectives: N ranks ok, ...` and a checksum of sums whose bits depend on the order of
//! addition (the same every run).
//!
//! To test failures, `DOWNHILL_DIST_FAIL_RANK=R` makes rank R fail after the checks while the
//! others enter one more collective, in the way `DOWNHILL_DIST_FAIL_MODE` says: `exit` (exit
//! status 3, the default), `abort` (`Mpi::abort(3)`), `panic`, `crash` (SIGABRT), `kill`
//! (SIGKILL), or `return` (returns from `main` normally: a hang that only `MPIEXEC_TIMEOUT`
//! ends, see `downhill_dist::mpi`).

use downhill_dist::mpi::Mpi;
use downhill_dist::{Collective, CommError};
use std::io::Write;

/// Prints `line` to stderr in one write, so that `mpiexec -l` labels it as one line.
fn say(line: String) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn main() {
    let comm = match Mpi::init() {
        Ok(c) => c,
        Err(e) => {
            say(format!("collectives: {e}"));
            std::process::exit(2);
        }
    };
    let (r, n) = (comm.rank(), comm.size());
    let fail = |what: String| -> ! {
        say(format!("rank {r}: {what}"));
        comm.abort(1)
    };
    let ok = |what: &str, res: Result<(), CommError>| {
        if let Err(e) = res {
            fail(format!("{what}: {e}"));
        }
    };
    let mut expected_sent = 0u64;
    let share = |total: u64| (n as u64 - 1) * total / n as u64;

    match Mpi::init() {
        Err(CommError::Init(_)) => {}
        other => fail(format!("a second Mpi::init gave {other:?}")),
    }

    // Reduce-scatter, small and large (MPICH picks another algorithm for large messages):
    // rank q sends (q+1)·(j mod 1000) at position j, so block r sums to n(n+1)/2 · that.
    for m in [3usize, 100_000] {
        let ranks_sum = (n * (n + 1) / 2) as f32;
        let send: Vec<f32> = (0..n * m)
            .map(|j| (r + 1) as f32 * (j % 1000) as f32)
            .collect();
        let mut recv = vec![0f32; m];
        ok(
            "reduce_scatter_sum_f32",
            comm.reduce_scatter_sum_f32(&send, &mut recv),
        );
        expected_sent += share((n * m * 4) as u64);
        for (i, &v) in recv.iter().enumerate() {
            let want = ranks_sum * ((r * m + i) % 1000) as f32;
            if v != want {
                fail(format!(
                    "reduce_scatter_sum_f32 (block {m}): recv[{i}] = {v}, expected {want}"
                ));
            }
        }
        let send64: Vec<f64> = send.iter().map(|&v| f64::from(v) * 0.25).collect();
        let mut recv64 = vec![0f64; m];
        ok(
            "reduce_scatter_sum_f64",
            comm.reduce_scatter_sum_f64(&send64, &mut recv64),
        );
        expected_sent += share((n * m * 8) as u64);
        for (i, &v) in recv64.iter().enumerate() {
            let want = f64::from(ranks_sum) * ((r * m + i) % 1000) as f64 * 0.25;
            if v != want {
                fail(format!(
                    "reduce_scatter_sum_f64 (block {m}): recv[{i}] = {v}, expected {want}"
                ));
            }
        }
    }

    // All-gather: rank q's block is q·10 + i.
    let send: Vec<f32> = (0..4).map(|i| (10 * r + i) as f32).collect();
    let mut recv = vec![-1f32; 4 * n];
    ok("all_gather_f32", comm.all_gather_f32(&send, &mut recv));
    expected_sent += share((4 * n * 4) as u64);
    let want: Vec<f32> = (0..n)
        .flat_map(|q| (0..4).map(move |i| (10 * q + i) as f32))
        .collect();
    if recv != want {
        fail(format!("all_gather_f32: {recv:?}, expected {want:?}"));
    }
    let send64: Vec<f64> = send.iter().map(|&v| f64::from(v) + 0.5).collect();
    let mut recv64 = vec![-1f64; 4 * n];
    ok("all_gather_f64", comm.all_gather_f64(&send64, &mut recv64));
    expected_sent += share((4 * n * 8) as u64);
    let want64: Vec<f64> = want.iter().map(|&v| f64::from(v) + 0.5).collect();
    if recv64 != want64 {
        fail(format!("all_gather_f64: {recv64:?}, expected {want64:?}"));
    }

    // All-reduce.
    let mut v = vec![(r + 1) as f64, 0.5 * r as f64, -2.0];
    ok("all_reduce_sum_f64", comm.all_reduce_sum_f64(&mut v));
    expected_sent += share(2 * 3 * 8);
    let s = (n * (n - 1) / 2) as f64;
    let want = vec![s + n as f64, 0.5 * s, -2.0 * n as f64];
    if v != want {
        fail(format!("all_reduce_sum_f64: {v:?}, expected {want:?}"));
    }

    // Agreement.
    for (mine, want) in [(true, true), (r + 1 != n, false)] {
        match comm.all_agree(mine) {
            Ok(got) if got == want => {}
            other => fail(format!("all_agree({mine}): {other:?}, expected {want}")),
        }
        expected_sent += share(2);
    }

    // Broadcast from every root, lengths differing between ranks; then an empty one.
    for root in 0..n {
        let from_root = format!("from root {root}").into_bytes();
        let mut b = if r == root {
            from_root.clone()
        } else {
            vec![7; 5 * r + 1]
        };
        ok("broadcast_bytes", comm.broadcast_bytes(root, &mut b));
        expected_sent += share(8 + from_root.len() as u64);
        if b != from_root {
            fail(format!("broadcast_bytes from {root}: {b:?}"));
        }
    }
    let mut b = if r == 0 { Vec::new() } else { vec![1, 2, 3] };
    ok("broadcast_bytes (empty)", comm.broadcast_bytes(0, &mut b));
    expected_sent += share(8);
    if !b.is_empty() {
        fail(format!("broadcast_bytes (empty): {b:?}"));
    }

    // All-gather of bytes: rank q sends q bytes of value q (rank 0 none).
    match comm.all_gather_bytes(&vec![r as u8; r]) {
        Ok(all) => {
            let want: Vec<Vec<u8>> = (0..n).map(|q| vec![q as u8; q]).collect();
            if all != want {
                fail(format!("all_gather_bytes: {all:?}, expected {want:?}"));
            }
            expected_sent += share(8 * n as u64) + share((n * (n - 1) / 2) as u64);
        }
        Err(e) => fail(format!("all_gather_bytes: {e}")),
    }

    // Wrong lengths are typed errors on this rank and send nothing (all ranks do the same here).
    let mut short = vec![0f32; 2];
    match comm.reduce_scatter_sum_f32(&vec![0f32; 2 * n + 1], &mut short) {
        Err(CommError::Length { expected, got, .. }) if expected == 2 * n && got == 2 * n + 1 => {}
        other => fail(format!(
            "reduce_scatter_sum_f32 with a wrong length: {other:?}"
        )),
    }
    match comm.all_gather_f64(&[1.0], &mut [0.0; 0]) {
        Err(CommError::Length { .. }) => {}
        other => fail(format!("all_gather_f64 with a wrong length: {other:?}")),
    }
    match comm.broadcast_bytes(n, &mut Vec::new()) {
        Err(CommError::Root { root, size, .. }) if root == n && size == n => {}
        other => fail(format!("broadcast_bytes from root {n}: {other:?}")),
    }

    // Order-dependent sums: every rank gets the same bits (compared through all_gather_bytes),
    // and rank 0 prints their checksum, which must not change between runs.
    let mut awkward: Vec<f64> = (0..64)
        .map(|i| {
            ((r + 1) as f64).sqrt() * 1e-3 * (i + 1) as f64
                + (i as f64) / 3.0
                + 1e16 * ((r + i) % 2) as f64
        })
        .collect();
    ok(
        "all_reduce_sum_f64 (awkward)",
        comm.all_reduce_sum_f64(&mut awkward),
    );
    expected_sent += share(2 * 64 * 8);
    let send32: Vec<f32> = (0..64 * n)
        .map(|j| ((r + 1) as f32).sqrt() * (j as f32 + 0.1).ln())
        .collect();
    let mut block = vec![0f32; 64];
    ok(
        "reduce_scatter_sum_f32 (awkward)",
        comm.reduce_scatter_sum_f32(&send32, &mut block),
    );
    expected_sent += share((64 * n * 4) as u64);
    let mut blocks = vec![0f32; 64 * n];
    ok(
        "all_gather_f32 (awkward)",
        comm.all_gather_f32(&block, &mut blocks),
    );
    expected_sent += share((64 * n * 4) as u64);
    let mut bits: Vec<u8> = awkward.iter().flat_map(|v| v.to_le_bytes()).collect();
    bits.extend(blocks.iter().flat_map(|v| v.to_le_bytes()));
    match comm.all_gather_bytes(&bits) {
        Ok(all) => {
            if let Some(q) = all.iter().position(|b| *b != all[0]) {
                fail(format!(
                    "all-reduce results differ between rank 0 and rank {q}"
                ));
            }
            expected_sent += share(8 * n as u64) + share((bits.len() * n) as u64);
        }
        Err(e) => fail(format!("all_gather_bytes: {e}")),
    }
    let checksum = bits.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });

    if comm.bytes_sent() != expected_sent {
        fail(format!(
            "bytes_sent {} expected {expected_sent}",
            comm.bytes_sent()
        ));
    }

    if let Ok(rank) = std::env::var("DOWNHILL_DIST_FAIL_RANK") {
        if rank.parse() == Ok(r) {
            let mode = std::env::var("DOWNHILL_DIST_FAIL_MODE").unwrap_or_else(|_| "exit".into());
            say(format!("rank {r}: failing on purpose ({mode})"));
            match mode.as_str() {
                "abort" => comm.abort(3),
                "panic" => panic!("rank {r}: panicking on purpose"),
                "crash" => std::process::abort(),
                "kill" => {
                    let me = std::process::id().to_string();
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &me])
                        .status();
                    std::thread::sleep(std::time::Duration::from_secs(60));
                    std::process::exit(4)
                }
                // Returns normally: the handle finalizes MPI, which waits for the others, who
                // wait in the collective below; only mpiexec's timeout ends this job.
                "return" => return,
                _ => std::process::exit(3),
            }
        }
    }

    // The others wait here for the failed rank; mpiexec must end them.
    match comm.all_agree(true) {
        Ok(true) => {}
        other => fail(format!("final all_agree: {other:?}")),
    }
    if r == 0 {
        println!(
            "collectives: {n} ranks ok, bytes_sent {}, checksum {checksum:016x}",
            comm.bytes_sent()
        );
    }
}
