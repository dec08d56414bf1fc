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

#[test]
fn a_variable_without_gradient_steps_with_zero() {
    let used = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
    let unused = Var::new(&[5.0f32], &Device::Cpu).unwrap();
    let mut opt = DownhillOptimizer::new(
        vec![used.clone(), unused.clone()],
        Config::new("sgd", json!({"lr": 0.1})),
    )
    .unwrap();
    opt.backward_step(&used.as_tensor().sum_all().unwrap())
        .unwrap();
    assert_eq!(unused.as_tensor().to_vec1::<f32>().unwrap(), vec![5.0]);
    assert_eq!(used.as_tensor().to_vec1::<f32>().unwrap(), vec![0.9, 1.9]);
}
