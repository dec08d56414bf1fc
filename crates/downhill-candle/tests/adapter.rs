//! The candle adapter steps exactly as the core does, and refuses what it cannot step.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use downhill::registry::{self, Setup};
use downhill_candle::{Config, DownhillOptimizer};
use serde_json::json;

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|j| (((j * 7919 + seed * 104_729) % 2001) as f32 / 1000.0) - 1.0)
        .collect()
}

/// A small model: loss = Σ_i (w_i · x_i)² over a few variables of odd sizes.
fn vars(shapes: &[usize]) -> Vec<Var> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, &n)| Var::from_vec(values(n, i), n, &Device::Cpu).unwrap())
        .collect()
}

fn loss(vars: &[Var]) -> Tensor {
    let mut total = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for (i, v) in vars.iter().enumerate() {
        let x = Tensor::from_vec(
            values(v.elem_count(), 100 + i),
            v.elem_count(),
            &Device::Cpu,
        )
        .unwrap();
        total = (total
            + (v.as_tensor() * x)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
    }
    total
}

#[test]
fn steps_match_the_core_optimizer_bit_for_bit() {
    let shapes = [1, 7, 33, 1000, 20_001];
    for (name, options) in [
        ("adamw", json!({"lr": 0.01})),
        (
            "sgd",
            json!({"lr": 0.01, "momentum": 0.9, "nesterov": true}),
        ),
        ("swats", json!({"lr": 0.01, "switch_eps": 1.0})),
        (
            "lookahead",
            json!({"k": 2, "inner": {"optimizer": "radam", "lr": 0.01}}),
        ),
    ] {
        let vs = vars(&shapes);
        let mut opt =
            DownhillOptimizer::new(vs.clone(), Config::new(name, options.clone())).unwrap();
        // The core optimizer, fed the same gradients as plain slices.
        let infos = opt.params().to_vec();
        let mut core = registry::build::<f32>(name, &options, infos, &Setup::default()).unwrap();
        let mut mirror: Vec<Vec<f32>> = vs
            .iter()
            .map(|v| v.as_tensor().to_vec1().unwrap())
            .collect();
        for _ in 0..5 {
            let grads = loss(&vs).backward().unwrap();
            let gs: Vec<Vec<f32>> = vs
                .iter()
                .map(|v| grads.get(v.as_tensor()).unwrap().to_vec1().unwrap())
                .collect();
            opt.step(&grads).unwrap();
            let mut ps: Vec<&mut [f32]> = mirror.iter_mut().map(|p| &mut p[..]).collect();
            let gsl: Vec<&[f32]> = gs.iter().map(|g| &g[..]).collect();
            core.step(&mut ps, &gsl).unwrap();
        }
        for (v, m) in vs.iter().zip(&mirror) {
            assert_eq!(&v.as_tensor().to_vec1::<f32>().unwrap(), m, "{name}");
        }
        assert!(opt.state_dict() == core.state_dict(), "{name}: state");
    }
}

#[test]
fn many_variables_step_together() {
    let shapes: Vec<usize> = (0..3000).map(|i| 1 + i % 17).collect();
    let vs = vars(&shapes);
    let before: Vec<Vec<f32>> = vs
        .iter()
        .map(|v| v.as_tensor().to_vec1().unwrap())
        .collect();
    let mut opt = DownhillOptimizer::new(vs.clone(), Config::adamw(0.01)).unwrap();
    opt.backward_step(&loss(&vs)).unwrap();
    let moved = vs
        .iter()
        .zip(&before)
        .filter(|(v, b)| v.as_tensor().to_vec1::<f32>().unwrap() != **b)
        .count();
    assert_eq!(moved, 3000);
}

#[test]
fn varmap_names_key_the_state() {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let layer = candle_nn::linear(4, 3, vb.pp("fc")).unwrap();
    let mut opt = DownhillOptimizer::from_varmap(&varmap, Config::adamw(0.01)).unwrap();
    let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    let y = candle_nn::Module::forward(&layer, &x)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    opt.backward_step(&y).unwrap();
    let keys: Vec<String> = opt.state_dict().tensors.keys().cloned().collect();
    assert!(keys.iter().any(|k| k == "g0.fc.weight.m"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "g0.fc.bias.v"), "{keys:?}");
    // learning rate get/set through candle's trait
    opt.set_learning_rate(0.5);
    assert_eq!(opt.learning_rate(), 0.5);
    opt.set_learning_rate(-1.0); // refused
    assert_eq!(opt.learning_rate(), 0.5);
}

#[test]
fn unsupported_variables_are_errors() {
    let f16 = Var::zeros(3, DType::F16, &Device::Cpu).unwrap();
    let e = DownhillOptimizer::new(vec![f16], Config::adamw(0.01))
        .err()
        .unwrap();
    assert!(e.to_string().contains("F16"), "{e}");
    let a = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let b = Var::zeros(3, DType::F64, &Device::Cpu).unwrap();
    assert!(DownhillOptimizer::new(vec![a.clone(), b], Config::adamw(0.01)).is_err());
    assert!(DownhillOptimizer::new(vec![a.clone(), a.clone()], Config::adamw(0.01)).is_err());
    assert!(DownhillOptimizer::new(vec![a], Config::new("adamz", json!({}))).is_err());
}

/// As PyTorch: a variable the loss does not reach is skipped — no weight decay, no
/// momentum, its step count unchanged — where a zero gradient would decay it.
#[test]
fn a_variable_without_gradient_is_skipped() {
    let used = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
    let unused = Var::new(&[5.0f32], &Device::Cpu).unwrap();
    let mut opt = DownhillOptimizer::new(
        vec![used.clone(), unused.clone()],
        Config::new(
            "sgd",
            json!({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.5}),
        ),
    )
    .unwrap();
    opt.backward_step(&unused.as_tensor().sum_all().unwrap())
        .unwrap();
    opt.backward_step(&used.as_tensor().sum_all().unwrap())
        .unwrap();
    let close = |v: &Var, want: &[f32]| {
        let got = v.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{got:?} != {want:?}"
        );
    };
    // One step with gradient 1: 5 − 0.1·(1 + 0.5·5) = 4.65; the second step skipped it.
    close(&unused, &[4.65]);
    // Skipped on the first step, then g = 1 + 0.5·p.
    close(&used, &[0.85, 1.8]);
}

/// Values and state of an optimizer's variables, to show that a refused step changed nothing.
fn snapshot(vs: &[Var], opt: &DownhillOptimizer) -> (Vec<Vec<f32>>, downhill::StateDict) {
    let values = vs
        .iter()
        .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    (values, opt.state_dict())
}

/// Gradients of the right shape for `vs`, all `x`.
fn grads_of(vs: &[Var], x: f32) -> candle_core::backprop::GradStore {
    let mut grads = candle_core::backprop::GradStore::default();
    for v in vs {
        let g = (v.as_tensor().ones_like().unwrap() * f64::from(x)).unwrap();
        grads.insert(v.as_tensor(), g);
    }
    grads
}

#[test]
fn refused_steps_name_the_variable_and_change_nothing() {
    let w = Var::from_vec(values(6, 1), (2, 3), &Device::Cpu).unwrap();
    let b = Var::from_vec(values(3, 2), 3, &Device::Cpu).unwrap();
    let vs = vec![w.clone(), b.clone()];
    let mut opt = DownhillOptimizer::with_names(
        vec![
            ("fc.weight".into(), w.clone()),
            ("fc.bias".into(), b.clone()),
        ],
        Config::adamw(0.1),
    )
    .unwrap();
    opt.try_step(&grads_of(&vs, 0.5)).unwrap();
    let before = snapshot(&vs, &opt);
    let refuse = |opt: &mut DownhillOptimizer, grads, what: &str| {
        let e = opt.try_step(&grads).unwrap_err();
        assert!(e.to_string().contains("fc.weight"), "{what}: {e}");
        // Through candle's trait too.
        let e = opt.step(&grads).unwrap_err();
        assert!(e.to_string().contains("fc.weight"), "{what}: {e}");
        e
    };
    // Not contiguous: the transpose of a (3, 2) tensor.
    let mut grads = grads_of(&vs, 0.5);
    let t = Tensor::ones((3, 2), DType::F32, &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    grads.insert(w.as_tensor(), t);
    refuse(&mut opt, grads, "non-contiguous");
    assert!(matches!(
        opt.try_step(&{
            let mut g = grads_of(&vs, 0.5);
            g.insert(
                w.as_tensor(),
                Tensor::ones((3, 2), DType::F32, &Device::Cpu)
                    .unwrap()
                    .t()
                    .unwrap(),
            );
            g
        }),
        Err(downhill_candle::Error::NotContiguous { .. })
    ));
    // Wrong element type.
    let mut grads = grads_of(&vs, 0.5);
    grads.insert(
        w.as_tensor(),
        Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap(),
    );
    let e = refuse(&mut opt, grads, "dtype");
    assert!(e.to_string().contains("F64"), "{e}");
    // Wrong shape.
    let mut grads = grads_of(&vs, 0.5);
    grads.insert(
        w.as_tensor(),
        Tensor::ones((3, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    refuse(&mut opt, grads, "shape");
    // Non-finite (the core's refusal).
    let mut grads = grads_of(&vs, 0.5);
    grads.insert(
        w.as_tensor(),
        Tensor::from_vec(
            vec![0.0f32, 1.0, f32::NAN, 0.0, 0.0, 0.0],
            (2, 3),
            &Device::Cpu,
        )
        .unwrap(),
    );
    let e = opt.try_step(&grads).unwrap_err();
    assert!(
        matches!(
            e,
            downhill_candle::Error::Core(downhill::Error::NonFiniteGradient { .. })
        ),
        "{e}"
    );
    assert!(
        snapshot(&vs, &opt) == before,
        "a refused step changed something"
    );
    assert_eq!(opt.steps_taken(), 1);
    // And the optimizer still steps.
    opt.try_step(&grads_of(&vs, 0.5)).unwrap();
    assert_eq!(opt.steps_taken(), 2);
}

#[test]
fn skipped_steps_are_reported() {
    let vs = vars(&[4, 5]);
    let config = Config {
        setup: Setup {
            non_finite: downhill::NonFinite::Skip,
            ..Setup::default()
        },
        ..Config::adamw(0.1)
    };
    let mut opt = DownhillOptimizer::new(vs.clone(), config).unwrap();
    let before = snapshot(&vs, &opt);
    let outcome = opt.try_step(&grads_of(&vs, f32::INFINITY)).unwrap();
    assert_eq!(outcome, downhill::StepOutcome::Skipped);
    // The variables and moments are unchanged; only the skip is counted.
    let after = snapshot(&vs, &opt);
    assert_eq!(after.0, before.0);
    assert!(after.1.tensors == before.1.tensors);
    assert_eq!(after.1.meta["skipped"], "1");
    let outcome = opt.try_step(&grads_of(&vs, 1.0)).unwrap();
    assert_eq!(outcome, downhill::StepOutcome::Applied);
}

#[test]
fn a_gradient_sharing_a_variables_storage_is_refused_not_deadlocked() {
    let vs = vars(&[3, 4]);
    let mut opt = DownhillOptimizer::new(vs.clone(), Config::sgd_momentum(0.1)).unwrap();
    let before = snapshot(&vs, &opt);
    // "The gradient of ½|w|² is w": the variable's own tensor (same storage).
    let mut grads = grads_of(&vs, 1.0);
    grads.insert(vs[1].as_tensor(), vs[1].as_detached_tensor());
    let e = opt.try_step(&grads).unwrap_err();
    assert!(
        matches!(e, downhill_candle::Error::AliasedGradient { ref name } if name == "var1"),
        "{e}"
    );
    // Another variable's storage.
    let mut grads = grads_of(&vs, 1.0);
    grads.insert(
        vs[0].as_tensor(),
        vs[1].as_tensor().narrow(0, 0, 3).unwrap(),
    );
    let e = opt.try_step(&grads).unwrap_err();
    assert!(
        matches!(e, downhill_candle::Error::AliasedGradient { ref name } if name == "var0"),
        "{e}"
    );
    assert!(snapshot(&vs, &opt) == before);
    // A copy is fine.
    let mut grads = grads_of(&vs, 1.0);
    grads.insert(vs[1].as_tensor(), vs[1].as_tensor().copy().unwrap());
    opt.try_step(&grads).unwrap();
}

/// Enough variables for several lock-holding threads (one per 1 024 variables, where the
/// machine has the cores): bit-identical to the core, refusals from any range, zero
/// gradients in every range.
#[test]
fn many_variables_on_several_lockers_match_the_core() {
    let shapes: Vec<usize> = (0..5000).map(|i| 1 + i % 13).collect();
    let vs = vars(&shapes);
    let options = json!({"lr": 0.01, "weight_decay": 0.1});
    let mut opt =
        DownhillOptimizer::new(vs.clone(), Config::new("adamw", options.clone())).unwrap();
    let mut core =
        registry::build::<f32>("adamw", &options, opt.params().to_vec(), &Setup::default())
            .unwrap();
    let mut mirror: Vec<Vec<f32>> = vs
        .iter()
        .map(|v| v.as_tensor().to_vec1().unwrap())
        .collect();
    for step in 0..3 {
        let mut grads = candle_core::backprop::GradStore::default();
        let mut gs = Vec::new();
        for (i, v) in vs.iter().enumerate() {
            // Every 7th variable (from both ends of the list) has no gradient: skipped.
            let g = if i % 7 == step {
                None
            } else {
                let g = values(v.elem_count(), i + 10 * step);
                let t = Tensor::from_vec(g.clone(), v.elem_count(), &Device::Cpu).unwrap();
                grads.insert(v.as_tensor(), t);
                Some(g)
            };
            gs.push(g);
        }
        opt.step(&grads).unwrap();
        let mut ps: Vec<&mut [f32]> = mirror.iter_mut().map(|p| &mut p[..]).collect();
        let gsl: Vec<Option<&[f32]>> = gs.iter().map(|g| g.as_deref()).collect();
        core.step_some(&mut ps, &gsl).unwrap();
    }
    for (v, m) in vs.iter().zip(&mirror) {
        assert_eq!(&v.as_tensor().to_vec1::<f32>().unwrap(), m);
    }
    assert!(opt.state_dict() == core.state_dict());
    // A refusal near the end (another locker than the first) and near the start.
    for bad in [4990, 3] {
        let before = snapshot(&vs, &opt);
        let mut grads = grads_of(&vs, 0.5);
        let n = vs[bad].elem_count();
        grads.insert(
            vs[bad].as_tensor(),
            Tensor::zeros(n + 1, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = opt.try_step(&grads).unwrap_err();
        assert!(
            matches!(e, downhill_candle::Error::GradientShape { ref name, .. } if *name == format!("var{bad}")),
            "{e}"
        );
        assert!(snapshot(&vs, &opt) == before);
    }
    opt.try_step(&grads_of(&vs, 0.5)).unwrap();
}

#[test]
fn the_caller_needs_no_stack_for_many_variables() {
    // 20 000 variables stepped from a thread with a 256 KiB stack.
    let shapes: Vec<usize> = vec![2; 20_000];
    let vs = vars(&shapes);
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut opt = DownhillOptimizer::new(vs.clone(), Config::sgd_momentum(0.1)).unwrap();
            for _ in 0..2 {
                opt.step(&grads_of(&vs, 1.0)).unwrap();
            }
            drop(opt);
            // Every lock is released: the variables can be written.
            vs[0]
                .set(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())
                .unwrap();
            vs[19_999].as_tensor().to_vec1::<f32>().unwrap()
        })
        .unwrap();
    let last = handle.join().unwrap();
    assert!(last.iter().all(|x| x.is_finite()));
}

#[test]
fn f64_variables_step_like_the_core() {
    let vs: Vec<Var> = [5usize, 9]
        .iter()
        .map(|&n| {
            Var::from_vec(
                values(n, n)
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect::<Vec<f64>>(),
                n,
                &Device::Cpu,
            )
            .unwrap()
        })
        .collect();
    let options = json!({"lr": 0.05, "momentum": 0.9});
    let mut opt = DownhillOptimizer::new(vs.clone(), Config::new("sgd", options.clone())).unwrap();
    let mut core =
        registry::build::<f64>("sgd", &options, opt.params().to_vec(), &Setup::default()).unwrap();
    let mut mirror: Vec<Vec<f64>> = vs
        .iter()
        .map(|v| v.as_tensor().to_vec1().unwrap())
        .collect();
    for _ in 0..3 {
        let loss = vs
            .iter()
            .map(|v| v.as_tensor().sqr().unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        let gs: Vec<Vec<f64>> = vs
            .iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().to_vec1().unwrap())
            .collect();
        opt.step(&grads).unwrap();
        let mut ps: Vec<&mut [f64]> = mirror.iter_mut().map(|p| &mut p[..]).collect();
        let gsl: Vec<&[f64]> = gs.iter().map(|g| &g[..]).collect();
        core.step(&mut ps, &gsl).unwrap();
    }
    for (v, m) in vs.iter().zip(&mirror) {
        assert_eq!(&v.as_tensor().to_vec1::<f64>().unwrap(), m);
    }
}

#[test]
fn the_optimizer_can_move_between_threads() {
    fn send<T: Send>(_: &T) {}
    let vs = vars(&[3]);
    let mut opt = DownhillOptimizer::new(vs.clone(), Config::sgd_momentum(0.1)).unwrap();
    opt.step(&grads_of(&vs, 1.0)).unwrap();
    send(&opt);
    let opt = std::thread::spawn(move || {
        let mut opt = opt;
        opt.step(&grads_of(&vs, 1.0)).unwrap();
        opt
    })
    .join()
    .unwrap();
    assert_eq!(opt.steps_taken(), 2);
}

#[test]
fn parameter_groups_select_variables_by_name() {
    use downhill_candle::Select;
    let dev = Device::Cpu;
    let w = Var::new(&[1.0f32, 2.0], &dev).unwrap();
    let b = Var::new(&[3.0f32], &dev).unwrap();
    // Weight decay for the weight only: with zero gradients, only the weight shrinks.
    let config = Config::new("sgd", json!({"lr": 0.1, "weight_decay": 0.5}))
        .group(json!({"weight_decay": 0.0}), Select::Suffix(".bias".into()));
    let mut opt = DownhillOptimizer::with_names(
        vec![
            ("layer.bias".into(), b.clone()),
            ("layer.weight".into(), w.clone()),
        ],
        config,
    )
    .unwrap();
    // Zero gradients that exist (candle prunes `x · 0` from the graph: no gradient at all,
    // and a variable without gradient is skipped).
    let zero = |v: &Var| {
        let s = v.as_tensor().sum_all().unwrap();
        (&s - &s).unwrap()
    };
    let loss = zero(&w).add(&zero(&b)).unwrap();
    opt.backward_step(&loss).unwrap();
    assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), vec![0.95, 1.9]);
    assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap(), vec![3.0]);
}

/// The Muon recipe through candle: Muon on the matrix, AdamW on the bias (a group naming its
/// own optimizer), the same bits as the core's two-algorithm optimizer.
#[test]
fn muon_with_adamw_on_the_rest_matches_the_core() {
    use downhill_candle::Select;
    let dev = Device::Cpu;
    let w = Var::from_vec(values(12, 1), (3, 4), &dev).unwrap();
    let b = Var::from_vec(values(4, 2), 4, &dev).unwrap();
    let adamw = json!({"optimizer": "adamw", "lr": 1e-2});
    let config = Config::new("muon", json!({"lr": 0.02}))
        .group(adamw.clone(), Select::Suffix(".bias".into()));
    let mut opt = DownhillOptimizer::with_names(
        vec![("l.weight".into(), w.clone()), ("l.bias".into(), b.clone())],
        config,
    )
    .unwrap();
    let infos = opt.params().to_vec();
    let mut core = registry::build_groups::<f32>(
        "muon",
        &json!({"lr": 0.02}),
        vec![
            registry::GroupSpec {
                options: json!({}),
                params: vec![infos[0].clone()],
            },
            registry::GroupSpec {
                options: adamw,
                params: vec![infos[1].clone()],
            },
        ],
        &Setup::default(),
    )
    .unwrap();
    let mut mirror = [values(12, 1), values(4, 2)];
    for step in 0..3 {
        let (gw, gb) = (values(12, 10 + step), values(4, 20 + step));
        let mut grads = candle_core::backprop::GradStore::default();
        grads.insert(
            w.as_tensor(),
            Tensor::from_vec(gw.clone(), (3, 4), &dev).unwrap(),
        );
        grads.insert(
            b.as_tensor(),
            Tensor::from_vec(gb.clone(), 4, &dev).unwrap(),
        );
        opt.step(&grads).unwrap();
        let (m0, m1) = mirror.split_at_mut(1);
        core.step(&mut [&mut m0[0][..], &mut m1[0][..]], &[&gw[..], &gb[..]])
            .unwrap();
    }
    assert_eq!(
        w.as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        mirror[0]
    );
    assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap(), mirror[1]);
    assert!(opt.state_dict() == core.state_dict());
}

/// Schedule-free AdamW is evaluated at its average x: `at_eval_point` swaps it in for the
/// closure and puts the training point y back; other optimizers just run the closure.
#[test]
fn the_evaluation_point_is_swapped_in_and_back() {
    let vs = vars(&[5, 3]);
    let mut opt = DownhillOptimizer::new(
        vs.clone(),
        Config::new("schedule_free_adamw", json!({"lr": 0.05})),
    )
    .unwrap();
    assert!(opt.has_eval_point());
    for _ in 0..4 {
        opt.backward_step(&loss(&vs)).unwrap();
    }
    let read = |vs: &[Var]| -> Vec<Vec<f32>> {
        vs.iter()
            .map(|v| v.as_tensor().to_vec1().unwrap())
            .collect()
    };
    let y = read(&vs);
    let seen = opt.at_eval_point(|| read(&vs)).unwrap();
    assert_ne!(seen, y, "the evaluation point is the average, not y");
    assert_eq!(read(&vs), y, "y is back after the closure");
    let plain = DownhillOptimizer::new(vs.clone(), Config::adamw(0.01)).unwrap();
    assert!(!plain.has_eval_point());
    assert_eq!(plain.at_eval_point(|| read(&vs)).unwrap(), y);
}
