//! Run under `mpiexec -n N` (`tests/mpi.rs` does, with 1, 2 and 3 ranks): every rule that can
//! be sharded, stepped with its state sharded over the MPI ranks, against one process fed the
//! same mean gradients, which every rank computes for itself. The gradients are multiples of
//! 1/64 below 1, so their sums are exact whatever order MPI adds them in. Checks the same
//! bits after every step on every rank, the consolidated state, and a checkpoint written by
//! every rank and loaded back. Exits 1 (aborting the job) naming the rank and what differed.

use std::sync::Arc;

use downhill::registry::{self, GroupSpec, Setup};
use downhill::{Clip, GradientNoise, Optimizer, ParamInfo};
use downhill_dist::mpi::Mpi;
use downhill_dist::sharded::ShardedOptimizer;
use downhill_dist::Collective;
use serde_json::{json, Value};

fn say(s: String) {
    eprintln!("{s}");
}

fn params() -> Vec<ParamInfo> {
    vec![
        ParamInfo::new("embed", [300, 70]),
        ParamInfo::new("bias", [7]),
        ParamInfo::new("hidden", [128, 160]),
        ParamInfo::new("out", [5000]),
    ]
}

/// A deterministic stream of multiples of 1/64 in (-1, 1), nonzero.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % 127) as i32 - 63;
            (if k == 0 { 1 } else { k }) as f32 / 64.0
        })
        .collect()
}

fn grads(infos: &[ParamInfo], rank: usize, step: usize) -> Vec<Vec<f32>> {
    (infos.iter().enumerate())
        .map(|(t, p)| values(p.len(), (1000 * step + 100 * rank + t) as u64))
        .collect()
}

fn mean_grads(infos: &[ParamInfo], ranks: usize, step: usize) -> Vec<Vec<f32>> {
    let mut acc = grads(infos, 0, step);
    for r in 1..ranks {
        for (a, g) in acc.iter_mut().zip(grads(infos, r, step)) {
            a.iter_mut().zip(g).for_each(|(x, y)| *x += y);
        }
    }
    for a in &mut acc {
        a.iter_mut().for_each(|x| *x /= ranks as f32);
    }
    acc
}

fn step(opt: &mut dyn Optimizer<f32>, p: &mut [Vec<f32>], g: &[Vec<f32>]) -> downhill::Result<()> {
    let mut ps: Vec<&mut [f32]> = p.iter_mut().map(Vec::as_mut_slice).collect();
    let gs: Vec<&[f32]> = g.iter().map(Vec::as_slice).collect();
    opt.step(&mut ps, &gs).map(|_| ())
}

fn main() {
    let comm: Arc<dyn Collective> = match Mpi::init() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            say(format!("sharded: {e}"));
            std::process::exit(2);
        }
    };
    let (rank, ranks) = (comm.rank(), comm.size());
    let fail = |what: String| -> ! {
        say(format!("rank {rank}: {what}"));
        std::process::exit(1)
    };
    let infos = params();
    let groups = || {
        vec![
            GroupSpec {
                options: json!({}),
                params: infos[..3].to_vec(),
            },
            GroupSpec {
                options: json!({"weight_decay": 0.0}),
                params: infos[3..].to_vec(),
            },
        ]
    };
    let full = Setup {
        clip: Clip {
            max_norm: Some(40.0),
            max_value: Some(0.75),
        },
        noise: Some(GradientNoise::default()),
        ..Setup::default()
    };
    let mut runs: Vec<(String, Value, Setup)> = registry::NAMES
        .iter()
        .filter(|n| !["muon", "lookahead"].contains(n))
        .map(|n| (n.to_string(), json!({}), Setup::default()))
        .collect();
    let lookahead = json!({"k": 2, "inner": {"optimizer": "adamw"}});
    runs.push(("lookahead".into(), lookahead, Setup::default()));
    runs.push(("adamw".into(), json!({"maximize": true}), full.clone()));
    runs.push(("lamb".into(), json!({}), full));
    for p in ["bf16", "8bit"] {
        runs.push((
            "adamw".into(),
            json!({"state_precision": p}),
            Setup::default(),
        ));
    }
    let dir = std::env::temp_dir().join(format!("downhill-dist-sharded-{ranks}"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        fail(format!("{}: {e}", dir.display()));
    }
    for (name, options, setup) in &runs {
        let what = format!("{name} {options}");
        let mut single = registry::build_groups::<f32>(name, options, groups(), setup)
            .unwrap_or_else(|e| fail(format!("{what}: {e}")));
        let mut opt = ShardedOptimizer::<f32>::new(name, options, groups(), setup, comm.clone())
            .unwrap_or_else(|e| fail(format!("{what}: {e}")));
        let init: Vec<Vec<f32>> = (infos.iter().enumerate())
            .map(|(t, p)| values(p.len(), 7 + t as u64))
            .collect();
        let (mut want, mut got) = (init.clone(), init);
        for s in 0..3 {
            step(&mut *single, &mut want, &mean_grads(&infos, ranks, s))
                .unwrap_or_else(|e| fail(format!("{what}: single: {e}")));
            step(&mut opt, &mut got, &grads(&infos, rank, s))
                .unwrap_or_else(|e| fail(format!("{what}: sharded: {e}")));
            let same = got.iter().flatten().zip(want.iter().flatten());
            if let Some(i) = same.clone().position(|(a, b)| a.to_bits() != b.to_bits()) {
                fail(format!("{what}: element {i} differs after step {s}"));
            }
        }
        let whole = opt
            .consolidated_state_dict()
            .unwrap_or_else(|e| fail(format!("{what}: consolidate: {e}")));
        if whole != single.state_dict() {
            fail(format!(
                "{what}: the consolidated state differs from one process's"
            ));
        }
        let stem = dir.join(name);
        opt.save_shard(&stem)
            .unwrap_or_else(|e| fail(format!("{what}: save: {e}")));
        if let Err(e) = comm.all_agree(true) {
            fail(format!("{what}: {e}"));
        }
        let mut back = ShardedOptimizer::<f32>::new(name, options, groups(), setup, comm.clone())
            .unwrap_or_else(|e| fail(format!("{what}: {e}")));
        back.load_shards(&stem, ranks)
            .unwrap_or_else(|e| fail(format!("{what}: load: {e}")));
        if back.state_dict() != opt.state_dict() {
            fail(format!(
                "{what}: the checkpoint loads back to another state"
            ));
        }
    }
    if rank == 0 {
        println!(
            "sharded: {} configurations on {ranks} ranks: the single-process bits",
            runs.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
