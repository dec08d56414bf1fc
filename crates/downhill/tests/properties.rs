//! Property tests over random shapes, tensor counts, groups and hyperparameters.

use downhill::registry::{self, GroupSpec, Setup};
use downhill::{clip, Clip, Optimizer, ParamInfo};
use proptest::prelude::*;
use serde_json::json;

/// The shape of a tensor of `n` elements for optimizer `name`: a vector, except for Muon,
/// which takes matrices (wide, one row, or empty).
fn shape_for(name: &str, n: usize) -> Vec<usize> {
    match (name, n) {
        ("muon", 0) => vec![0, 3],
        ("muon", n) if n % 3 == 0 => vec![3, n / 3],
        ("muon", n) => vec![1, n],
        (_, n) => vec![n],
    }
}

fn run(
    name: &str,
    lens: &[usize],
    split: usize,
    steps: usize,
    lr: f64,
    threads: usize,
    clip_norm: Option<f64>,
) -> (Vec<Vec<f32>>, downhill::StateDict) {
    let infos: Vec<ParamInfo> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| ParamInfo::new(format!("t{i}"), shape_for(name, n)))
        .collect();
    let split = split.min(infos.len());
    let options = if name == "lookahead" {
        json!({"k": 2, "inner": {"optimizer": "adam", "lr": lr}})
    } else {
        json!({"lr": lr})
    };
    let mut groups = vec![GroupSpec {
        options: json!({}),
        params: infos[..split].to_vec(),
    }];
    if split < infos.len() {
        let second = if name == "lookahead" {
            json!({})
        } else {
            json!({"weight_decay": 0.1})
        };
        groups.push(GroupSpec {
            options: second,
            params: infos[split..].to_vec(),
        });
    }
    let setup = Setup {
        clip: Clip {
            max_norm: clip_norm,
            max_value: None,
        },
        ..Setup::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut opt = registry::build_groups::<f32>(name, &options, groups, &setup).unwrap();
        let mut p: Vec<Vec<f32>> = lens
            .iter()
            .map(|&n| (0..n).map(|j| ((j % 7) as f32 - 3.0) / 3.0).collect())
            .collect();
        for s in 0..steps {
            let g: Vec<Vec<f32>> = lens
                .iter()
                .map(|&n| {
                    (0..n)
                        .map(|j| (((j * 31 + s * 17) % 13) as f32 - 6.0) / 6.0)
                        .collect()
                })
                .collect();
            let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|t| &mut t[..]).collect();
            let gs: Vec<&[f32]> = g.iter().map(|t| &t[..]).collect();
            opt.step(&mut ps, &gs).unwrap();
        }
        (p, opt.state_dict())
    })
}

fn optimizer() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(registry::NAMES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any thread count gives the same bits, with groups and norm clipping.
    #[test]
    fn threads_do_not_change_results(
        name in optimizer(),
        lens in proptest::collection::vec(0usize..40_000, 1..12),
        split in 0usize..12,
        threads in 2usize..5,
    ) {
        let one = run(name, &lens, split, 3, 0.01, 1, Some(1.0));
        let many = run(name, &lens, split, 3, 0.01, threads, Some(1.0));
        prop_assert!(one.0 == many.0, "{} params differ at {} threads", name, threads);
        prop_assert!(one.1 == many.1, "{} state differs at {} threads", name, threads);
    }

    /// `lr = 0` leaves every parameter as it was, whatever the shapes and groups (the second
    /// group has decoupled-or-L2 weight decay, also scaled by lr or multiplied into a zero step).
    #[test]
    fn zero_learning_rate_is_identity(
        name in optimizer(),
        lens in proptest::collection::vec(0usize..5_000, 1..8),
        split in 0usize..8,
    ) {
        // Rprop's `lr` is only its first step size; later steps are at least `step_sizes.0`.
        prop_assume!(name != "rprop");
        let start = run(name, &lens, split, 0, 0.0, 2, None).0;
        let after = run(name, &lens, split, 4, 0.0, 2, None).0;
        prop_assert_eq!(start, after);
    }

    /// Clipping by norm never increases the global norm, and leaves small gradients alone.
    #[test]
    fn clipping_never_increases_the_norm(
        g in proptest::collection::vec(-1e3f64..1e3, 1..2_000),
        max_norm in 1e-3f64..1e3,
    ) {
        let norm = clip::global_norm::<f64>(&[&g]);
        let coef = clip::clip_coef(max_norm, norm);
        prop_assert!(coef <= 1.0);
        prop_assert!(norm * coef <= max_norm.max(norm) * (1.0 + 1e-12));
        if norm + 1e-6 <= max_norm {
            prop_assert_eq!(coef, 1.0);
        }
    }
}

/// `options` for optimizer `name` with `extra` merged in (into the inner optimizer's for
/// Lookahead).
fn options_for(name: &str, lr: f64, extra: serde_json::Value) -> serde_json::Value {
    let mut own = json!({"lr": lr});
    if let (Some(o), Some(e)) = (own.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    if name == "lookahead" {
        let mut inner = own;
        inner["optimizer"] = json!("adam");
        json!({"k": 3, "inner": inner})
    } else {
        own
    }
}

/// Deterministic pseudo-random gradients in [-1, 1] for step `s`, seeded by `seed`.
fn grads<F: downhill::Float>(lens: &[usize], s: usize, seed: u64) -> Vec<Vec<F>> {
    lens.iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n)
                .map(|j| {
                    let mut h = seed ^ ((t as u64) << 40) ^ ((s as u64) << 20) ^ j as u64;
                    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    h ^= h >> 29;
                    F::from_f64((h % 20_001) as f64 / 10_000.0 - 1.0)
                })
                .collect()
        })
        .collect()
}

/// Parameters after `steps` steps of `name` with `options` from a fixed start, with the
/// gradients `grad(step)`; and the state.
fn walk<F: downhill::Float>(
    name: &str,
    options: &serde_json::Value,
    lens: &[usize],
    steps: usize,
    grad: impl Fn(usize) -> Vec<Vec<F>>,
) -> (Vec<Vec<F>>, downhill::StateDict) {
    let infos: Vec<ParamInfo> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| ParamInfo::new(format!("t{i}"), shape_for(name, n)))
        .collect();
    let mut opt = registry::build::<F>(name, options, infos, &Setup::default()).unwrap();
    let mut p: Vec<Vec<F>> = lens
        .iter()
        .map(|&n| {
            (0..n)
                .map(|j| F::from_f64(((j % 11) as f64 - 5.0) / 5.0))
                .collect()
        })
        .collect();
    for s in 0..steps {
        let g = grad(s);
        let mut ps: Vec<&mut [F]> = p.iter_mut().map(|t| &mut t[..]).collect();
        let gs: Vec<&[F]> = g.iter().map(|t| &t[..]).collect();
        opt.step(&mut ps, &gs).unwrap();
    }
    (p, opt.state_dict())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A zero gradient, with no weight decay and no history in the moments, moves nothing.
    #[test]
    fn zero_gradient_without_decay_moves_nothing(
        name in optimizer(),
        lens in proptest::collection::vec(0usize..3_000, 1..6),
        lr in 1e-4f64..1.0,
    ) {
        // (Yogi starts its moments at `initial_accumulator_value`, as optax: no history
        // only when that is 0.)
        // ASGD's `lambd` shrinks the parameters every step, as in PyTorch.
        let extra = match name {
            "yogi" => json!({"weight_decay": 0.0, "initial_accumulator_value": 0.0}),
            "asgd" => json!({"weight_decay": 0.0, "lambd": 0.0}),
            _ => json!({"weight_decay": 0.0}),
        };
        let options = options_for(name, lr, extra);
        let zeros = |_| lens.iter().map(|&n| vec![0.0f64; n]).collect::<Vec<_>>();
        let start = walk::<f64>(name, &options, &lens, 0, zeros).0;
        let after = walk::<f64>(name, &options, &lens, 5, zeros).0;
        prop_assert_eq!(start, after);
    }

    /// `maximize` on g takes exactly the steps of minimizing on −g.
    #[test]
    fn maximize_is_minimizing_the_negated_gradient(
        name in optimizer(),
        lens in proptest::collection::vec(0usize..3_000, 1..6),
        lr in 1e-4f64..0.1,
        seed in any::<u64>(),
    ) {
        let up = options_for(name, lr, json!({"maximize": true}));
        let down = options_for(name, lr, json!({}));
        let g = |s| grads::<f64>(&lens, s, seed);
        let negated = |s| {
            grads::<f64>(&lens, s, seed)
                .into_iter()
                .map(|t| t.into_iter().map(|x| -x).collect())
                .collect()
        };
        let a = walk::<f64>(name, &up, &lens, 4, g).0;
        let b = walk::<f64>(name, &down, &lens, 4, negated).0;
        prop_assert_eq!(a, b);
    }

    /// The same steps in `f32` and `f64` agree to `f32` precision.
    #[test]
    fn f32_and_f64_agree(
        name in optimizer(),
        lens in proptest::collection::vec(1usize..2_000, 1..5),
        lr in 1e-4f64..0.05,
        seed in any::<u64>(),
    ) {
        let options = options_for(name, lr, json!({}));
        let single = walk::<f32>(name, &options, &lens, 5, |s| grads::<f32>(&lens, s, seed)).0;
        let double = walk::<f64>(name, &options, &lens, 5, |s| grads::<f64>(&lens, s, seed)).0;
        for (a, b) in single.iter().flatten().zip(double.iter().flatten()) {
            let err = (f64::from(*a) - b).abs();
            prop_assert!(err <= 1e-4 * b.abs().max(1.0), "{}: {} vs {}", name, a, b);
        }
    }

    /// A refused step (a NaN in a gradient, or a gradient of the wrong length) leaves the
    /// parameters and the whole state as they were, and the next good step goes on as if it
    /// had never been tried.
    #[test]
    fn a_refused_step_changes_nothing(
        name in optimizer(),
        lens in proptest::collection::vec(1usize..2_000, 1..5),
        bad_tensor in 0usize..5,
        seed in any::<u64>(),
    ) {
        let options = options_for(name, 0.01, json!({}));
        let infos: Vec<ParamInfo> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| ParamInfo::new(format!("t{i}"), shape_for(name, n)))
            .collect();
        let mut opt = registry::build::<f64>(name, &options, infos, &Setup::default()).unwrap();
        let mut p: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.5; n]).collect();
        let good = |s| grads::<f64>(&lens, s, seed);
        let step = |opt: &mut Box<dyn Optimizer<f64>>, p: &mut Vec<Vec<f64>>, g: &[Vec<f64>]| {
            let mut ps: Vec<&mut [f64]> = p.iter_mut().map(|t| &mut t[..]).collect();
            let gs: Vec<&[f64]> = g.iter().map(|t| &t[..]).collect();
            opt.step(&mut ps, &gs)
        };
        step(&mut opt, &mut p, &good(0)).unwrap();
        let (p_before, state_before) = (p.clone(), opt.state_dict());
        let k = bad_tensor % lens.len();
        let mut nan = good(1);
        nan[k][lens[k] / 2] = f64::NAN;
        let mut short = good(1);
        short[k].pop();
        for bad in [nan, short] {
            prop_assert!(step(&mut opt, &mut p, &bad).is_err());
            prop_assert!(p == p_before, "{}: parameters changed", name);
            prop_assert!(opt.state_dict() == state_before, "{}: state changed", name);
        }
        // Then the same as an optimizer that never saw the bad steps.
        step(&mut opt, &mut p, &good(1)).unwrap();
        let infos: Vec<ParamInfo> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| ParamInfo::new(format!("t{i}"), shape_for(name, n)))
            .collect();
        let mut clean = registry::build::<f64>(name, &options, infos, &Setup::default()).unwrap();
        let mut q: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.5; n]).collect();
        step(&mut clean, &mut q, &good(0)).unwrap();
        step(&mut clean, &mut q, &good(1)).unwrap();
        prop_assert!(p == q, "{}: parameters differ from a clean run", name);
        prop_assert!(opt.state_dict() == clean.state_dict(), "{}: state differs", name);
    }
}
