//! Checkpoints of the candle adapter: keyed by variable name, refused when they do not fit,
//! never half-written.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use downhill_candle::{Config, DownhillOptimizer, Error};

/// A fresh directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("downhill-candle-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A VarMap with variables `names` (created in that order), variable `name` of shape
/// `shape(name)` filled from its name, so that two maps built in different orders hold the
/// same values under the same names.
fn varmap(names: &[&str], shape: impl Fn(&str) -> Vec<usize>) -> VarMap {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    for name in names {
        let shape = shape(name);
        let n: usize = shape.iter().product();
        let seed = name.bytes().map(usize::from).sum::<usize>();
        let init: Vec<f32> = (0..n)
            .map(|j| ((j * 31 + seed * 17) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let t = vb
            .get_with_hints(shape.clone(), name, candle_nn::Init::Const(0.0))
            .unwrap();
        let var = map.data().lock().unwrap()[*name].clone();
        var.set(&Tensor::from_vec(init, shape, &Device::Cpu).unwrap())
            .unwrap();
        drop(t);
    }
    map
}

fn shape(name: &str) -> Vec<usize> {
    match name {
        "fc1.weight" => vec![4, 3],
        "fc1.bias" => vec![4],
        "fc2.weight" => vec![2, 4],
        _ => vec![2],
    }
}

const NAMES: [&str; 4] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];

/// loss = Σ_v Σ (v · x)² for a fixed x per variable: gradients that differ per variable.
fn step(map: &VarMap, opt: &mut DownhillOptimizer) {
    let vars = map.data().lock().unwrap().clone();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for (i, name) in names.iter().enumerate() {
        let v = vars[*name].as_tensor();
        let x = (v.ones_like().unwrap() * (1.0 + i as f64)).unwrap();
        let term = (v * x).unwrap().sqr().unwrap().sum_all().unwrap();
        loss = (loss + term).unwrap();
    }
    opt.backward_step(&loss).unwrap();
}

fn values(map: &VarMap) -> Vec<(String, Vec<f32>)> {
    let vars = map.data().lock().unwrap();
    let mut out: Vec<(String, Vec<f32>)> = vars
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_checkpoint_loads_into_variables_created_in_another_order() {
    let dir = scratch("order");
    let path = dir.join("opt.safetensors");
    // Train a: three steps, save.
    let a = varmap(&NAMES, shape);
    let mut opt_a = DownhillOptimizer::from_varmap(&a, Config::adamw(0.05)).unwrap();
    for _ in 0..3 {
        step(&a, &mut opt_a);
    }
    opt_a.save(&path).unwrap();
    // b: the same variables created in the opposite order, set to a's values; load.
    let mut reversed = NAMES;
    reversed.reverse();
    let b = varmap(&reversed, shape);
    for (name, v) in values(&a) {
        let var = b.data().lock().unwrap()[&name].clone();
        var.set(&Tensor::from_vec(v, shape(&name), &Device::Cpu).unwrap())
            .unwrap();
    }
    let mut opt_b = DownhillOptimizer::from_varmap(&b, Config::adamw(0.05)).unwrap();
    opt_b.load(&path).unwrap();
    assert!(opt_b.state_dict() == opt_a.state_dict());
    // Both go on identically.
    for _ in 0..2 {
        step(&a, &mut opt_a);
        step(&b, &mut opt_b);
    }
    assert_eq!(values(&a), values(&b));
    // An optimizer listing the variables in another order (with_names) loads it too: the
    // entries are matched by name.
    let vars = b.data().lock().unwrap().clone();
    let listed: Vec<(String, Var)> = reversed
        .iter()
        .map(|n| (n.to_string(), vars[*n].clone()))
        .collect();
    let mut opt_c = DownhillOptimizer::with_names(listed, Config::adamw(0.05)).unwrap();
    opt_c.load(&path).unwrap();
    assert_eq!(opt_c.steps_taken(), 3);
    let saved = downhill::checkpoint::load_state(&path).unwrap();
    for (key, t) in &opt_c.state_dict().tensors {
        assert!(saved.tensors[key] == *t, "{key}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_for_other_variables_is_refused_and_changes_nothing() {
    let dir = scratch("mismatch");
    let path = dir.join("opt.safetensors");
    let a = varmap(&NAMES, shape);
    let mut opt_a = DownhillOptimizer::from_varmap(&a, Config::adamw(0.05)).unwrap();
    step(&a, &mut opt_a);
    opt_a.save(&path).unwrap();

    let target = varmap(&NAMES, shape);
    let mut opt = DownhillOptimizer::from_varmap(&target, Config::adamw(0.05)).unwrap();
    step(&target, &mut opt);
    step(&target, &mut opt);
    let before = opt.state_dict();

    // The checkpoint lacks a variable of ours.
    let extra = varmap(&[&NAMES[..], &["head.bias"]].concat(), shape);
    let mut opt_extra = DownhillOptimizer::from_varmap(&extra, Config::adamw(0.05)).unwrap();
    match opt_extra.load(&path) {
        Err(Error::MissingVariables { names }) => assert_eq!(names, ["head.bias"]),
        other => panic!("{other:?}"),
    }
    // The checkpoint holds a variable we do not have.
    let fewer = varmap(&NAMES[..3], shape);
    let mut opt_fewer = DownhillOptimizer::from_varmap(&fewer, Config::adamw(0.05)).unwrap();
    let e = opt_fewer.load(&path).unwrap_err();
    assert!(
        matches!(&e, Error::UnexpectedVariables { names } if names == &["fc2.bias"]),
        "{e}"
    );
    assert!(e.to_string().contains("fc2.bias"));
    // A variable of another shape.
    let other = varmap(&NAMES, |n| if n == "fc1.bias" { vec![5] } else { shape(n) });
    let mut opt_other = DownhillOptimizer::from_varmap(&other, Config::adamw(0.05)).unwrap();
    match opt_other.load(&path) {
        Err(Error::ShapeMismatch {
            name,
            saved,
            expected,
        }) => {
            assert_eq!(name, "fc1.bias");
            assert_eq!(saved, [4]);
            assert_eq!(expected, [5]);
        }
        other => panic!("{other:?}"),
    }
    // Another optimizer's state.
    let mut sgd = DownhillOptimizer::from_varmap(&target, Config::sgd_momentum(0.1)).unwrap();
    assert!(matches!(sgd.load(&path), Err(Error::Core(_))));
    // And ours, refused nothing, is untouched by all of the above; then it loads.
    assert!(opt.state_dict() == before);
    opt.load(&path).unwrap();
    assert!(opt.state_dict() == opt_a.state_dict());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_or_truncated_checkpoint_is_refused_and_changes_nothing() {
    let dir = scratch("corrupt");
    let path = dir.join("opt.safetensors");
    let map = varmap(&NAMES, shape);
    let mut opt = DownhillOptimizer::from_varmap(&map, Config::adamw(0.05)).unwrap();
    step(&map, &mut opt);
    opt.save(&path).unwrap();
    step(&map, &mut opt);
    let before = opt.state_dict();
    let bytes = std::fs::read(&path).unwrap();

    // A flipped bit in the tensor data (past the header).
    let mut flipped = bytes.clone();
    let at = flipped.len() - 5;
    flipped[at] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let e = opt.load(&path).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    assert!(opt.state_dict() == before);

    // Truncated.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = opt.load(&path).unwrap_err();
    assert!(e.to_string().contains("corrupt or truncated"), "{e}");
    assert!(opt.state_dict() == before);

    // Missing.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        opt.load(&path),
        Err(Error::Core(downhill::Error::Io { .. }))
    ));
    assert!(opt.state_dict() == before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() {
    let dir = scratch("failed-save");
    let path = dir.join("opt.safetensors");
    let map = varmap(&NAMES, shape);
    let mut opt = DownhillOptimizer::from_varmap(&map, Config::adamw(0.05)).unwrap();
    step(&map, &mut opt);
    opt.save(&path).unwrap();
    let old = std::fs::read(&path).unwrap();
    step(&map, &mut opt);

    // Into a directory that does not exist.
    let e = opt
        .save(dir.join("missing").join("opt.safetensors"))
        .unwrap_err();
    assert!(matches!(e, Error::Core(downhill::Error::Io { .. })), "{e}");
    // Over the old file, with the temporary file impossible to create (a directory in its
    // way): the error comes before the rename, the old file stays whole.
    let blocker = dir.join(format!(".opt.safetensors.tmp-{}", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    let e = opt.save(&path).unwrap_err();
    assert!(matches!(e, Error::Core(downhill::Error::Io { .. })), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), old);
    // It still loads (into a fresh optimizer, at the step it was saved).
    let mut fresh = DownhillOptimizer::from_varmap(&map, Config::adamw(0.05)).unwrap();
    fresh.load(&path).unwrap();
    assert_eq!(fresh.steps_taken(), 1);
    // Once the way is clear, the save replaces it.
    std::fs::remove_dir(&blocker).unwrap();
    opt.save(&path).unwrap();
    fresh.load(&path).unwrap();
    assert_eq!(fresh.steps_taken(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_learning_rate_survives_a_round_trip() {
    let dir = scratch("lr");
    let path = dir.join("opt.safetensors");
    let map = varmap(&NAMES, shape);
    let mut opt = DownhillOptimizer::from_varmap(&map, Config::sgd_momentum(0.1)).unwrap();
    step(&map, &mut opt);
    opt.set_learning_rate(0.025);
    opt.save(&path).unwrap();
    let mut fresh = DownhillOptimizer::from_varmap(&map, Config::sgd_momentum(0.1)).unwrap();
    fresh.load(&path).unwrap();
    assert_eq!(fresh.learning_rate(), 0.025);
    let _ = std::fs::remove_dir_all(&dir);
}
