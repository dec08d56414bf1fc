//! Behaviour every optimizer of the registry must show. An optimizer's registry line enrolls
//! it here.

use downhill::registry::{self, Setup};
use downhill::{checkpoint, Error, Float, NonFinite, Optimizer, ParamInfo, StepOutcome};
use serde_json::{json, Value};

/// Options for `name` on top of `extra` (Lookahead puts them on its inner Adam).
fn options(name: &str, extra: Value) -> Value {
    if name == "lookahead" {
        let mut inner = json!({"optimizer": "adam", "lr": 0.01});
        for (k, v) in extra.as_object().unwrap() {
            inner[k] = v.clone();
        }
        json!({"k": 3, "alpha": 0.5, "inner": inner})
    } else {
        extra
    }
}

fn infos() -> Vec<ParamInfo> {
    vec![
        ParamInfo::new("w", [3, 4]),
        ParamInfo::new("b", [4]),
        ParamInfo::new("s", [1]),
    ]
}

fn build<F: Float>(name: &str, extra: Value) -> Box<dyn Optimizer<F>> {
    build_over(name, extra, infos(), &Setup::default())
}

/// Optimizer `name` over `infos`. Muon takes matrices only: it is built as in its recipe,
/// with the other tensors in a group of AdamW (`extra` applies to both), so that these
/// tests run it, and the two-algorithm optimizer, through everything the others go through.
fn build_over<F: Float>(
    name: &str,
    extra: Value,
    infos: Vec<ParamInfo>,
    setup: &Setup,
) -> Box<dyn Optimizer<F>> {
    let built = if name == "muon" {
        let (matrices, rest): (Vec<_>, Vec<_>) =
            infos.into_iter().partition(|i| i.shape.len() == 2);
        let mut adamw = json!({"optimizer": "adamw"});
        for (k, v) in extra.as_object().unwrap() {
            adamw[k] = v.clone();
        }
        let mut groups = vec![registry::GroupSpec {
            options: json!({}),
            params: matrices,
        }];
        if !rest.is_empty() {
            groups.push(registry::GroupSpec {
                options: adamw,
                params: rest,
            });
        }
        registry::build_groups::<F>(name, &extra, groups, setup)
    } else {
        registry::build::<F>(name, &options(name, extra), infos, setup)
    };
    built.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Deterministic pseudo-random numbers in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    fn tensors<F: Float>(&mut self) -> Vec<Vec<F>> {
        infos()
            .iter()
            .map(|i| (0..i.len()).map(|_| F::from_f64(self.next())).collect())
            .collect()
    }
}

fn step<F: Float>(
    opt: &mut dyn Optimizer<F>,
    params: &mut [Vec<F>],
    grads: &[Vec<F>],
) -> downhill::Result<StepOutcome> {
    let mut ps: Vec<&mut [F]> = params.iter_mut().map(|p| &mut p[..]).collect();
    let gs: Vec<&[F]> = grads.iter().map(|g| &g[..]).collect();
    opt.step(&mut ps, &gs)
}

fn run<F: Float>(opt: &mut dyn Optimizer<F>, params: &mut [Vec<F>], rng: &mut Lcg, steps: usize) {
    for _ in 0..steps {
        let g = rng.tensors::<F>();
        step(opt, params, &g).unwrap();
    }
}

#[test]
fn lr_zero_leaves_parameters_unchanged() {
    for name in registry::NAMES {
        // Rprop's `lr` is only its first step size: later steps are at least `step_sizes.0`.
        if *name == "rprop" {
            continue;
        }
        for extra in [
            json!({"lr": 0.0}),
            json!({"lr": 0.0, "weight_decay": 0.1, "decoupled_weight_decay": true}),
        ] {
            // Only the options this optimizer has (not every rule has the L2 form).
            let known = registry::defaults(name).unwrap_or(json!({}));
            let mut extra = extra;
            if *name != "lookahead" {
                extra
                    .as_object_mut()
                    .unwrap()
                    .retain(|k, _| known.get(k).is_some());
            }
            let mut opt = build::<f64>(name, extra.clone());
            let mut rng = Lcg(1);
            let mut p = rng.tensors::<f64>();
            let before = p.clone();
            run(opt.as_mut(), &mut p, &mut rng, 12);
            assert_eq!(p, before, "{name} with {extra}");
        }
    }
}

#[test]
fn every_optimizer_descends_a_quadratic() {
    for name in registry::NAMES {
        // Adadelta's unit-free step needs a larger lr scale to move in a few hundred steps.
        let extra = match *name {
            "adadelta" => json!({}),
            _ => json!({"lr": 0.05}),
        };
        let mut opt = build::<f64>(name, extra);
        let mut p = Lcg(7).tensors::<f64>();
        let loss = |p: &[Vec<f64>]| p.iter().flatten().map(|x| x * x).sum::<f64>();
        let start = loss(&p);
        for _ in 0..300 {
            let g: Vec<Vec<f64>> = p
                .iter()
                .map(|t| t.iter().map(|x| 2.0 * x).collect())
                .collect();
            step(opt.as_mut(), &mut p, &g).unwrap();
        }
        let end = loss(&p);
        assert!(end < 0.5 * start, "{name}: loss {start} -> {end}");
    }
}

#[test]
fn maximize_equals_minimizing_the_negated_gradient() {
    for name in registry::NAMES {
        let mut up = build::<f64>(name, json!({"maximize": true, "weight_decay": 0.01}));
        let mut down = build::<f64>(name, json!({"weight_decay": 0.01}));
        let mut rng = Lcg(3);
        let mut p_up = rng.tensors::<f64>();
        let mut p_down = p_up.clone();
        for _ in 0..10 {
            let g = rng.tensors::<f64>();
            let neg: Vec<Vec<f64>> = g.iter().map(|t| t.iter().map(|x| -x).collect()).collect();
            step(up.as_mut(), &mut p_up, &g).unwrap();
            step(down.as_mut(), &mut p_down, &neg).unwrap();
        }
        assert_eq!(p_up, p_down, "{name}");
    }
}

#[test]
fn f32_and_f64_agree_to_f32_precision() {
    for name in registry::NAMES {
        let mut o32 = build::<f32>(name, json!({"lr": 0.01}));
        let mut o64 = build::<f64>(name, json!({"lr": 0.01}));
        let mut rng = Lcg(11);
        let p0 = rng.tensors::<f64>();
        let mut p32: Vec<Vec<f32>> = p0
            .iter()
            .map(|t| t.iter().map(|&x| x as f32).collect())
            .collect();
        let mut p64: Vec<Vec<f64>> = p32
            .iter()
            .map(|t| t.iter().map(|&x| x as f64).collect())
            .collect();
        for _ in 0..10 {
            let g32 = rng.tensors::<f32>();
            let g64: Vec<Vec<f64>> = g32
                .iter()
                .map(|t| t.iter().map(|&x| x as f64).collect())
                .collect();
            step(o32.as_mut(), &mut p32, &g32).unwrap();
            step(o64.as_mut(), &mut p64, &g64).unwrap();
        }
        for (a, b) in p32.iter().flatten().zip(p64.iter().flatten()) {
            assert!(
                (*a as f64 - b).abs() < 1e-4 * b.abs().max(1.0),
                "{name}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn refused_steps_change_nothing() {
    for name in registry::NAMES {
        let mut opt = build::<f32>(name, json!({"lr": 0.01}));
        let mut rng = Lcg(5);
        let mut p = rng.tensors::<f32>();
        run(opt.as_mut(), &mut p, &mut rng, 4);
        let (p_before, s_before) = (p.clone(), opt.state_dict());

        let mut g = rng.tensors::<f32>();
        g[1][2] = f32::NAN;
        let e = step(opt.as_mut(), &mut p, &g).unwrap_err();
        assert!(
            matches!(e, Error::NonFiniteGradient { ref param, index: 2, .. } if param == "b"),
            "{name}: {e}"
        );
        g[1][2] = f32::INFINITY;
        assert!(step(opt.as_mut(), &mut p, &g).is_err());

        let mut short = rng.tensors::<f32>();
        short[0].pop();
        let e = step(opt.as_mut(), &mut p, &short).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { .. }), "{name}: {e}");
        let e = step(opt.as_mut(), &mut p[..2], &rng.tensors::<f32>()[..2]).unwrap_err();
        assert!(matches!(e, Error::TensorCount { .. }), "{name}: {e}");

        assert_eq!(p, p_before, "{name}");
        assert_eq!(opt.state_dict(), s_before, "{name}");
    }
}

#[test]
fn non_finite_gradients_can_be_skipped_and_counted() {
    for name in registry::NAMES {
        let setup = Setup {
            non_finite: NonFinite::Skip,
            ..Setup::default()
        };
        let mut opt = build_over::<f64>(name, json!({}), infos(), &setup);
        let mut rng = Lcg(9);
        let mut p = rng.tensors::<f64>();
        let before = (p.clone(), opt.state_dict());
        let mut g = rng.tensors::<f64>();
        g[0][0] = f64::NEG_INFINITY;
        assert_eq!(
            step(opt.as_mut(), &mut p, &g).unwrap(),
            StepOutcome::Skipped,
            "{name}"
        );
        assert_eq!(opt.steps_skipped(), 1);
        assert_eq!(opt.steps_taken(), 0);
        assert_eq!(p, before.0, "{name}");
        let mut after = opt.state_dict();
        after.meta.insert("skipped".into(), "0".into());
        assert_eq!(after, before.1, "{name}");
    }
}

/// Stopping, saving, loading into a fresh optimizer and continuing is bit-identical to never
/// stopping — through a checkpoint file.
#[test]
fn checkpoint_round_trip_is_bit_identical() {
    let dir = std::env::temp_dir().join(format!("downhill-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in registry::NAMES {
        let extra = json!({"lr": 0.02, "weight_decay": 0.01});
        let mut straight = build::<f32>(name, extra.clone());
        let mut rng = Lcg(13);
        let p0 = rng.tensors::<f32>();
        let grads: Vec<Vec<Vec<f32>>> = (0..12).map(|_| rng.tensors::<f32>()).collect();
        let mut p_straight = p0.clone();
        for g in &grads {
            step(straight.as_mut(), &mut p_straight, g).unwrap();
        }

        let mut first = build::<f32>(name, extra.clone());
        let mut p = p0.clone();
        for g in &grads[..7] {
            step(first.as_mut(), &mut p, g).unwrap();
        }
        let path = dir.join(format!("{name}.safetensors"));
        checkpoint::save(&path, first.as_ref()).unwrap();
        drop(first);
        let mut resumed = build::<f32>(name, extra.clone());
        checkpoint::load(&path, resumed.as_mut()).unwrap();
        for g in &grads[7..] {
            step(resumed.as_mut(), &mut p, g).unwrap();
        }
        assert_eq!(p, p_straight, "{name}");
        assert_eq!(resumed.state_dict(), straight.state_dict(), "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn state_from_elsewhere_is_refused_and_changes_nothing() {
    let mut rng = Lcg(17);
    let mut adam = build::<f64>("adam", json!({}));
    let mut p = rng.tensors::<f64>();
    run(adam.as_mut(), &mut p, &mut rng, 3);
    let adam_state = adam.state_dict();

    // another optimizer
    let mut sgd = build::<f64>("sgd", json!({"momentum": 0.9}));
    let before = sgd.state_dict();
    let e = sgd.load_state_dict(&adam_state).unwrap_err();
    assert!(e.to_string().contains("'adam'"), "{e}");
    assert_eq!(sgd.state_dict(), before);

    // another element type
    let mut adam32 = build::<f32>("adam", json!({}));
    let e = adam32.load_state_dict(&adam_state).unwrap_err();
    assert!(e.to_string().contains("f64"), "{e}");

    // other shapes
    let mut other = registry::build::<f64>(
        "adam",
        &json!({}),
        vec![
            ParamInfo::new("w", [4, 3]),
            ParamInfo::new("b", [4]),
            ParamInfo::new("s", [1]),
        ],
        &Setup::default(),
    )
    .unwrap();
    let before = other.state_dict();
    let e = other.load_state_dict(&adam_state).unwrap_err();
    assert!(e.to_string().contains("shape"), "{e}");
    assert_eq!(other.state_dict(), before);

    // other parameter names
    let mut renamed = registry::build::<f64>(
        "adam",
        &json!({}),
        vec![
            ParamInfo::new("w", [3, 4]),
            ParamInfo::new("bias", [4]),
            ParamInfo::new("s", [1]),
        ],
        &Setup::default(),
    )
    .unwrap();
    assert!(renamed.load_state_dict(&adam_state).is_err());
}

#[test]
fn corrupt_and_truncated_checkpoints_are_refused() {
    let mut rng = Lcg(19);
    let mut opt = build::<f32>("adam", json!({"amsgrad": true}));
    let mut p = rng.tensors::<f32>();
    run(opt.as_mut(), &mut p, &mut rng, 3);
    let bytes = checkpoint::to_bytes(&opt.state_dict()).unwrap();
    assert_eq!(checkpoint::from_bytes(&bytes).unwrap(), opt.state_dict());
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            checkpoint::from_bytes(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    let e = checkpoint::from_bytes(&flipped).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");

    let dir = std::env::temp_dir().join(format!("downhill-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.safetensors");
    std::fs::write(&path, &flipped).unwrap();
    let before = opt.state_dict();
    let e = checkpoint::load(&path, opt.as_mut()).unwrap_err();
    assert!(e.to_string().contains("state.safetensors"), "{e}");
    assert_eq!(opt.state_dict(), before);
    assert!(checkpoint::load(&dir.join("missing"), opt.as_mut()).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// A parameter with no gradient in a step (`None` to `step_some`) is skipped as PyTorch skips
/// a `.grad` of `None`: unchanged, its state unchanged (no decay, no momentum, its step count
/// as it was), and the other parameters step exactly as if it were not there.
#[test]
fn parameters_without_gradient_are_skipped() {
    let pair = vec![ParamInfo::new("a", [3, 4]), ParamInfo::new("b", [2, 2])];
    for name in registry::NAMES {
        let with_decay = registry::defaults(name)
            .ok()
            .and_then(|d| d.get("weight_decay").cloned())
            .is_some();
        let extra = if with_decay && *name != "lookahead" {
            json!({"weight_decay": 0.1})
        } else {
            json!({})
        };
        let opts = options(name, extra);
        let build = |infos: Vec<ParamInfo>| {
            if *name == "lookahead" {
                registry::build::<f64>(name, &opts, infos, &Setup::default())
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            } else {
                build_over::<f64>(name, opts.clone(), infos, &Setup::default())
            }
        };
        let mut both = build(pair.clone());
        let mut alone = build(pair[..1].to_vec());
        let mut rng = Lcg(7);
        let mut a: Vec<f64> = (0..12).map(|_| rng.next()).collect();
        let mut b: Vec<f64> = (0..4).map(|_| rng.next()).collect();
        let mut a_alone = a.clone();
        for t in 0..5 {
            let ga: Vec<f64> = (0..12).map(|_| rng.next()).collect();
            let gb: Vec<f64> = (0..4).map(|_| rng.next()).collect();
            let b_has_grad = t == 1 || t == 4;
            let b_before = b.clone();
            let state_before = both.state_dict();
            both.step_some(
                &mut [&mut a[..], &mut b[..]],
                &[Some(&ga[..]), b_has_grad.then_some(&gb[..])],
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            alone.step(&mut [&mut a_alone[..]], &[&ga[..]]).unwrap();
            assert_eq!(
                a, a_alone,
                "{name}: step {t}: the other tensor's step changed"
            );
            // Lookahead's synchronization (every 3rd step here) moves every tensor's fast
            // weights to the interpolated slow ones, with a gradient or without.
            let sync = *name == "lookahead" && (t + 1) % 3 == 0;
            if !b_has_grad && !sync {
                assert_eq!(
                    b, b_before,
                    "{name}: step {t}: a tensor without gradient moved"
                );
                let after = both.state_dict();
                for (k, v) in &state_before.tensors {
                    // Lookahead takes its slow weights on its first step, from every tensor.
                    let first_sync = t == 0 && k.ends_with(".slow");
                    if k.contains(".b.") && !first_sync {
                        assert!(
                            after.tensors[k] == *v,
                            "{name}: step {t}: state {k} changed"
                        );
                    }
                }
            } else if !matches!(*name, "lookahead" | "adopt") {
                // (ADOPT's first step only takes the second moment: it does not move.)
                assert_ne!(
                    b, b_before,
                    "{name}: step {t}: a tensor with gradient did not move"
                );
            }
        }
        assert_eq!(both.steps_taken(), 5, "{name}");
    }
}
