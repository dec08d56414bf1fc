//! Property tests over random shapes, tensor counts, groups and hyperparameters.

use downhill::registry::{self, GroupSpec, Setup};
use downhill::{clip, Clip, Optimizer, ParamInfo};
use proptest::prelude::*;
use serde_json::json;

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
        .map(|(i, &n)| ParamInfo::new(format!("t{i}"), [n]))
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
