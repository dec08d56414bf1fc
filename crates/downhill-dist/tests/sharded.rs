//! The sharded optimizer against one process, with ranks as threads ([`Threads`]): the same
//! bits for every rule it shards, at 1, 2 and 3 ranks; identical parameters on every rank;
//! checkpoints that put together to the single-process state and load into any number of
//! ranks; bad input refused on every rank.

use std::sync::Arc;

use downhill::registry::{self, GroupSpec, Setup};
use downhill::{Clip, Error, GradientNoise, NonFinite, Optimizer, ParamInfo, StateDict};
use downhill_dist::sharded::{load_consolidated, ShardedOptimizer};
use downhill_dist::{Collective, Threads};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Several tensors, two of them over one chunk (16 Ki elements), so that ranks own several
/// segments and cut tensors.
fn params() -> Vec<ParamInfo> {
    vec![
        ParamInfo::new("embed", [300, 70]),
        ParamInfo::new("bias", [7]),
        ParamInfo::new("hidden", [128, 160]),
        ParamInfo::new("out", [5000]),
    ]
}

/// The parameters `name` takes: Muon takes matrices only.
fn params_for(name: &str) -> Vec<ParamInfo> {
    let mut all = params();
    if name == "muon" {
        all.retain(|p| p.shape.len() == 2);
    }
    all
}

fn groups(params: &[ParamInfo]) -> Vec<GroupSpec> {
    if params.len() < 4 {
        return vec![GroupSpec {
            options: json!({}),
            params: params.to_vec(),
        }];
    }
    vec![
        GroupSpec {
            options: json!({}),
            params: params[..3].to_vec(),
        },
        GroupSpec {
            options: json!({"weight_decay": 0.0}),
            params: params[3..].to_vec(),
        },
    ]
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Rank `rank`'s gradients at step `step`.
fn grads(params: &[ParamInfo], rank: usize, step: usize) -> Vec<Vec<f32>> {
    params
        .iter()
        .enumerate()
        .map(|(t, p)| random(p.len(), 1000 * step as u64 + 100 * rank as u64 + t as u64))
        .collect()
}

/// The mean over `ranks` ranks of the gradients, summed in rank order as [`Threads`] does.
fn mean_grads(params: &[ParamInfo], ranks: usize, step: usize) -> Vec<Vec<f32>> {
    let mut acc = grads(params, 0, step);
    for r in 1..ranks {
        for (a, g) in acc.iter_mut().zip(grads(params, r, step)) {
            for (x, y) in a.iter_mut().zip(g) {
                *x += y;
            }
        }
    }
    for a in &mut acc {
        for x in a.iter_mut() {
            *x /= ranks as f32;
        }
    }
    acc
}

fn initial(params: &[ParamInfo]) -> Vec<Vec<f32>> {
    params
        .iter()
        .enumerate()
        .map(|(t, p)| random(p.len(), 7 + t as u64))
        .collect()
}

fn step(opt: &mut dyn Optimizer<f32>, p: &mut [Vec<f32>], g: &[Vec<f32>]) -> downhill::Result<()> {
    let mut ps: Vec<&mut [f32]> = p.iter_mut().map(Vec::as_mut_slice).collect();
    let gs: Vec<&[f32]> = g.iter().map(Vec::as_slice).collect();
    opt.step(&mut ps, &gs).map(|_| ())
}

const STEPS: usize = 4;

/// One process fed the mean gradients: its parameters after each step and its final state.
fn single(
    name: &str,
    options: &Value,
    setup: &Setup,
    ranks: usize,
) -> (Vec<Vec<Vec<f32>>>, StateDict) {
    let infos = params_for(name);
    let mut opt = registry::build_groups::<f32>(name, options, groups(&infos), setup).unwrap();
    let mut p = initial(&infos);
    let mut after = Vec::new();
    for s in 0..STEPS {
        step(&mut *opt, &mut p, &mean_grads(&infos, ranks, s)).unwrap();
        after.push(p.clone());
    }
    (after, opt.state_dict())
}

/// The same on `ranks` threads with sharded state: each rank's parameters after each step,
/// and the consolidated state.
fn sharded(
    name: &str,
    options: &Value,
    setup: &Setup,
    ranks: usize,
) -> Vec<(Vec<Vec<Vec<f32>>>, StateDict)> {
    Threads::run(ranks, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let rank = comm.rank();
        let infos = params_for(name);
        let mut opt =
            ShardedOptimizer::<f32>::new(name, options, groups(&infos), setup, comm).unwrap();
        let mut p = initial(&infos);
        let mut after = Vec::new();
        for s in 0..STEPS {
            step(&mut opt, &mut p, &grads(&infos, rank, s)).unwrap();
            after.push(p.clone());
        }
        (after, opt.consolidated_state_dict().unwrap())
    })
}

/// Every rule the registry builds: all can be sharded.
fn shardable() -> Vec<&'static str> {
    registry::NAMES.to_vec()
}

/// The options `name` is tested with (Lookahead needs its inner optimizer; k = 2 so that
/// the slow weights move within the test's steps).
fn options_for(name: &str) -> Value {
    match name {
        "lookahead" => json!({"k": 2, "inner": {"optimizer": "adamw"}}),
        _ => json!({}),
    }
}

fn assert_same_bits(name: &str, ranks: usize, options: &Value, setup: &Setup) {
    let (want, want_state) = single(name, options, setup, ranks);
    for (rank, (got, state)) in sharded(name, options, setup, ranks).into_iter().enumerate() {
        for (s, (g, w)) in got.iter().zip(&want).enumerate() {
            for ((gt, wt), info) in g.iter().zip(w).zip(params_for(name)) {
                let same = gt.iter().zip(wt).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{name} {options}, {ranks} ranks: rank {rank}'s '{}' differs after step {s}",
                    info.name
                );
            }
        }
        assert!(
            state == want_state,
            "{name} {options}, {ranks} ranks: rank {rank}'s consolidated state differs"
        );
    }
}

#[test]
fn every_shardable_rule_gives_the_single_process_bits_at_1_2_and_3_ranks() {
    let setup = Setup::default();
    for name in shardable() {
        for ranks in 1..=3 {
            assert_same_bits(name, ranks, &options_for(name), &setup);
        }
    }
}

#[test]
fn clipping_noise_maximize_decay_schedules_and_state_precisions_give_the_same_bits() {
    let setup = Setup {
        clip: Clip {
            max_norm: Some(50.0),
            max_value: Some(0.9),
        },
        noise: Some(GradientNoise {
            seed: 3,
            ..GradientNoise::default()
        }),
        schedule: Some(
            downhill::schedule::from_json(&json!({"kind": "cosine", "t_max": 10})).unwrap(),
        ),
        non_finite: NonFinite::Skip,
        shard: None,
    };
    let adamw = json!({"lr": 0.01, "weight_decay": 0.1, "maximize": true});
    for ranks in [2, 3] {
        assert_same_bits("adamw", ranks, &adamw, &setup);
        for precision in ["bf16", "8bit"] {
            let opts = json!({"lr": 0.01, "state_precision": precision});
            assert_same_bits("adamw", ranks, &opts, &Setup::default());
            assert_same_bits("lion", ranks, &opts, &Setup::default());
        }
        assert_same_bits(
            "sgd",
            ranks,
            &json!({"lr": 0.1, "momentum": 0.9, "nesterov": true}),
            &setup,
        );
    }
}

#[test]
fn a_checkpoint_of_two_ranks_loads_into_three_ranks_and_into_one_process() {
    let dir = std::env::temp_dir().join(format!("downhill-dist-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stem = dir.join("adamw");
    let options = json!({"lr": 0.01, "state_precision": "8bit"});
    let setup = Setup::default();
    // Two ranks take two steps and save.
    Threads::run(2, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let rank = comm.rank();
        let infos = params();
        let mut opt =
            ShardedOptimizer::<f32>::new("adamw", &options, groups(&infos), &setup, comm).unwrap();
        let mut p = initial(&infos);
        for s in 0..2 {
            step(&mut opt, &mut p, &grads(&infos, rank, s)).unwrap();
        }
        opt.save_shard(&stem).unwrap();
    });
    // One process, from the consolidated checkpoint, equals one that ran all along.
    let whole = load_consolidated(&stem, 2).unwrap();
    let infos = params();
    let mut reference =
        registry::build_groups::<f32>("adamw", &options, groups(&infos), &setup).unwrap();
    let mut p = initial(&infos);
    for s in 0..2 {
        step(&mut *reference, &mut p, &mean_grads(&infos, 2, s)).unwrap();
    }
    assert!(
        whole == reference.state_dict(),
        "the consolidated checkpoint differs"
    );
    let mut one = registry::build_groups::<f32>("adamw", &options, groups(&infos), &setup).unwrap();
    one.load_state_dict(&whole).unwrap();
    // Three ranks load it and go on with the mean of three ranks' gradients.
    let got = Threads::run(3, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let rank = comm.rank();
        let infos = params();
        let mut opt =
            ShardedOptimizer::<f32>::new("adamw", &options, groups(&infos), &setup, comm).unwrap();
        opt.load_shards(&stem, 2).unwrap();
        let mut q = p.clone();
        step(&mut opt, &mut q, &grads(&infos, rank, 2)).unwrap();
        (q, opt.consolidated_state_dict().unwrap())
    });
    let mut q = p.clone();
    step(&mut *one, &mut q, &mean_grads(&infos, 3, 2)).unwrap();
    for (rank, (got_p, got_state)) in got.into_iter().enumerate() {
        assert!(got_p == q, "rank {rank}'s parameters differ after resuming");
        assert!(
            got_state == one.state_dict(),
            "rank {rank}'s state differs after resuming"
        );
    }
    // A truncated shard, then a missing one, is refused on every rank, naming the file;
    // nothing changes.
    let refused_naming = |file: &str| {
        let errors = Threads::run(2, |comm| {
            let comm: Arc<dyn Collective> = Arc::new(comm);
            let infos = params();
            let mut opt =
                ShardedOptimizer::<f32>::new("adamw", &options, groups(&infos), &setup, comm)
                    .unwrap();
            let before = opt.state_dict();
            let e = opt.load_shards(&stem, 2).unwrap_err();
            assert!(opt.state_dict() == before);
            e.to_string()
        });
        for e in errors {
            assert!(e.contains(file), "{e}");
        }
    };
    let first = downhill_dist::sharded::shard_path(&stem, 0, 2);
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() / 2]).unwrap();
    refused_naming("rank0-of-2");
    std::fs::write(&first, &bytes).unwrap();
    std::fs::remove_file(downhill_dist::sharded::shard_path(&stem, 1, 2)).unwrap();
    refused_naming("rank1-of-2");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ranks_with_other_parameters_or_configurations_are_refused_before_the_first_step() {
    let errors = Threads::run(3, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let mut infos = params();
        if comm.rank() == 2 {
            infos[1] = ParamInfo::new("bias", [8]);
        }
        ShardedOptimizer::<f32>::new("adam", &json!({}), groups(&infos), &Setup::default(), comm)
            .unwrap_err()
    });
    for e in errors {
        assert!(
            matches!(&e, Error::Setup(m) if m.contains("rank 2") && m.contains("parameters")),
            "{e}"
        );
    }
    let errors = Threads::run(2, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let lr = if comm.rank() == 1 { 0.1 } else { 0.01 };
        let infos = params();
        ShardedOptimizer::<f32>::new(
            "adam",
            &json!({"lr": lr}),
            groups(&infos),
            &Setup::default(),
            comm,
        )
        .unwrap_err()
    });
    for e in errors {
        assert!(
            matches!(&e, Error::Setup(m) if m.contains("rank 1") && m.contains("configuration")),
            "{e}"
        );
    }
}

/// Parameters by tensor.
type Tensors = Vec<Vec<f32>>;

/// Muon on the matrices, AdamW on the rest (several algorithms in one optimizer): one
/// process's parameters and state, and each rank's.
fn several(setup: &Setup, ranks: usize) -> (Tensors, Vec<Tensors>, StateDict, Vec<StateDict>) {
    let infos = params();
    let groups = || {
        vec![
            GroupSpec {
                options: json!({}),
                params: vec![infos[0].clone(), infos[2].clone()],
            },
            GroupSpec {
                options: json!({"optimizer": "adamw", "lr": 0.003}),
                params: vec![infos[1].clone(), infos[3].clone()],
            },
        ]
    };
    // The whole's tensors in group order.
    let order = [0, 2, 1, 3];
    let ordered: Vec<ParamInfo> = order.iter().map(|&t| infos[t].clone()).collect();
    let g = |rank: usize, s: usize| -> Vec<Vec<f32>> {
        let all = grads(&infos, rank, s);
        order.iter().map(|&t| all[t].clone()).collect()
    };
    let init: Vec<Vec<f32>> = {
        let all = initial(&infos);
        order.iter().map(|&t| all[t].clone()).collect()
    };
    let mut single = registry::build_groups::<f32>("muon", &json!({}), groups(), setup).unwrap();
    let mut want = init.clone();
    for s in 0..3 {
        let mut mean = g(0, s);
        for r in 1..ranks {
            for (a, b) in mean.iter_mut().zip(g(r, s)) {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            }
        }
        mean.iter_mut().flatten().for_each(|x| *x /= ranks as f32);
        step(&mut *single, &mut want, &mean).unwrap();
    }
    assert_eq!(single.params(), &ordered[..]);
    let got = Threads::run(ranks, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let rank = comm.rank();
        let mut opt =
            ShardedOptimizer::<f32>::new("muon", &json!({}), groups(), setup, comm).unwrap();
        let mut p = init.clone();
        for s in 0..3 {
            step(&mut opt, &mut p, &g(rank, s)).unwrap();
        }
        (p, opt.consolidated_state_dict().unwrap())
    });
    let (ps, states) = got.into_iter().unzip();
    (want.into_iter().collect(), ps, single.state_dict(), states)
}

#[test]
fn several_algorithms_in_one_optimizer_are_sharded_part_by_part() {
    for ranks in 1..=3 {
        let (want, got, want_state, states) = several(&Setup::default(), ranks);
        for (rank, (p, state)) in got.iter().zip(&states).enumerate() {
            assert!(*p == want, "{ranks} ranks: rank {rank}'s parameters differ");
            assert!(
                *state == want_state,
                "{ranks} ranks: rank {rank}'s state differs"
            );
        }
    }
    // Clipping by norm sums the ranks' partial norms in rank order: the same on every rank,
    // within rounding of one process's.
    let setup = Setup {
        clip: Clip {
            max_norm: Some(20.0),
            max_value: None,
        },
        noise: Some(GradientNoise::default()),
        ..Setup::default()
    };
    let (want, got, _, _) = several(&setup, 3);
    for (rank, p) in got.iter().enumerate() {
        assert!(
            *p == got[0],
            "rank {rank}'s parameters differ from rank 0's"
        );
        let worst = p
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "rank {rank}: {worst:e} from one process");
    }
}

#[test]
fn a_non_finite_gradient_on_one_rank_refuses_the_step_on_every_rank_and_changes_nothing() {
    let results = Threads::run(2, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let rank = comm.rank();
        let infos = params();
        let mut opt = ShardedOptimizer::<f32>::new(
            "adamw",
            &json!({}),
            groups(&infos),
            &Setup::default(),
            comm,
        )
        .unwrap();
        let mut p = initial(&infos);
        step(&mut opt, &mut p, &grads(&infos, rank, 0)).unwrap();
        let (before_p, before_state) = (p.clone(), opt.state_dict());
        let mut g = grads(&infos, rank, 1);
        if rank == 1 {
            g[0][12_345] = f32::NAN;
        }
        let e = step(&mut opt, &mut p, &g).unwrap_err();
        assert!(p == before_p && opt.state_dict() == before_state);
        // A wrong length on one rank is refused everywhere too.
        let mut g = grads(&infos, rank, 1);
        if rank == 0 {
            g[1].push(0.0);
        }
        let e2 = step(&mut opt, &mut p, &g).unwrap_err();
        assert!(p == before_p && opt.state_dict() == before_state);
        (e, e2)
    });
    for (e, e2) in &results {
        assert!(matches!(e, Error::NonFiniteGradient { .. }), "{e}");
        assert!(
            matches!(e2, Error::LengthMismatch { .. } | Error::Setup(_)),
            "{e2}"
        );
    }
    // The rank that owns the element names it.
    assert!(results.iter().any(|(e, _)| matches!(e, Error::NonFiniteGradient { param, index: 12_345, .. } if param == "embed")));
}

#[test]
fn whole_tensor_rules_put_each_tensor_on_one_rank() {
    for name in ["muon", "adafactor"] {
        let layouts = Threads::run(3, |comm| {
            let comm: Arc<dyn Collective> = Arc::new(comm);
            let infos = params_for(name);
            let opt = ShardedOptimizer::<f32>::new(
                name,
                &json!({}),
                groups(&infos),
                &Setup::default(),
                comm,
            )
            .unwrap();
            opt.layout().clone()
        });
        let infos = params_for(name);
        for (t, info) in infos.iter().enumerate() {
            let owners = (0..3)
                .filter(|&r| !layouts[0].owned(r)[t].is_empty())
                .count();
            assert_eq!(owners, 1, "{name}: '{}'", info.name);
        }
    }
}

#[test]
fn the_evaluation_point_of_schedule_free_adamw_is_gathered_from_every_rank() {
    let infos = params();
    let setup = Setup::default();
    let mut single =
        registry::build_groups::<f32>("schedule_free_adamw", &json!({}), groups(&infos), &setup)
            .unwrap();
    let mut p = initial(&infos);
    for s in 0..3 {
        step(&mut *single, &mut p, &mean_grads(&infos, 2, s)).unwrap();
    }
    let mut want: Vec<Vec<f32>> = p.iter().map(|t| vec![0.0; t.len()]).collect();
    {
        let ps: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
        let mut outs: Vec<&mut [f32]> = want.iter_mut().map(Vec::as_mut_slice).collect();
        single.eval_params(&ps, &mut outs).unwrap();
    }
    let got = Threads::run(2, |comm| {
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let rank = comm.rank();
        let mut opt = ShardedOptimizer::<f32>::new(
            "schedule_free_adamw",
            &json!({}),
            groups(&infos),
            &setup,
            comm,
        )
        .unwrap();
        let mut p = initial(&infos);
        for s in 0..3 {
            step(&mut opt, &mut p, &grads(&infos, rank, s)).unwrap();
        }
        let mut out: Vec<Vec<f32>> = p.iter().map(|t| vec![0.0; t.len()]).collect();
        let ps: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
        let mut outs: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        assert!(opt.has_eval_point());
        opt.eval_params(&ps, &mut outs).unwrap();
        out
    });
    for (rank, out) in got.iter().enumerate() {
        assert!(*out == want, "rank {rank}'s evaluation point differs");
    }
}

mod randomized {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random matrices (some over a chunk, so ranks cut tensors), groups, rules, rank
        /// counts and clipping: the sharded steps give one process's bits on every rank.
        #[test]
        fn random_models_rules_and_ranks_give_the_single_process_bits(
            dims in prop::collection::vec((1usize..180, 1usize..200), 1..5),
            rule in 0..registry::NAMES.len(),
            ranks in 1usize..4,
            split in 0usize..5,
            clip in prop::option::of(0.5f64..50.0),
        ) {
            let name = registry::NAMES[rule];
            let infos: Vec<ParamInfo> = dims
                .iter()
                .enumerate()
                .map(|(i, &(r, c))| ParamInfo::new(format!("t{i}"), [r, c]))
                .collect();
            let cut = split.min(infos.len() - 1);
            let mut groups = vec![GroupSpec { options: json!({}), params: infos[..=cut].to_vec() }];
            if cut + 1 < infos.len() {
                groups.push(GroupSpec {
                    options: json!({"weight_decay": 0.05}),
                    params: infos[cut + 1..].to_vec(),
                });
            }
            let options = options_for(name);
            let setup = Setup {
                clip: Clip { max_norm: clip, max_value: None },
                ..Setup::default()
            };
            let init: Vec<Vec<f32>> =
                infos.iter().enumerate().map(|(t, p)| random(p.len(), 7 + t as u64)).collect();
            let mine = |rank: usize, s: usize| -> Vec<Vec<f32>> {
                infos
                    .iter()
                    .enumerate()
                    .map(|(t, p)| random(p.len(), (1000 * s + 100 * rank + t) as u64))
                    .collect()
            };
            let mut single = registry::build_groups::<f32>(name, &options, groups.clone(), &setup).unwrap();
            let mut want = init.clone();
            for s in 0..3 {
                let mut mean = mine(0, s);
                for r in 1..ranks {
                    for (a, g) in mean.iter_mut().zip(mine(r, s)) {
                        a.iter_mut().zip(g).for_each(|(x, y)| *x += y);
                    }
                }
                mean.iter_mut().flatten().for_each(|x| *x /= ranks as f32);
                step(&mut *single, &mut want, &mean).unwrap();
            }
            let got = Threads::run(ranks, |comm| {
                let comm: Arc<dyn Collective> = Arc::new(comm);
                let rank = comm.rank();
                let mut opt =
                    ShardedOptimizer::<f32>::new(name, &options, groups.clone(), &setup, comm).unwrap();
                let mut p = init.clone();
                for s in 0..3 {
                    step(&mut opt, &mut p, &mine(rank, s)).unwrap();
                }
                p
            });
            for (rank, p) in got.iter().enumerate() {
                let same = p.iter().flatten().zip(want.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits());
                prop_assert!(same, "{} over {:?} on {} ranks: rank {} differs", name, dims, ranks, rank);
            }
        }
    }
}
