//! Replays every reference case in `tests/reference/` (recorded from PyTorch 2.11, and for
//! SGDW, Lookahead and SWATS from `paper_optims.py`) through the same loader and tolerance
//! table as `downhill verify`.

use std::path::PathBuf;

fn cases() -> Vec<PathBuf> {
    cases_in("tests/reference")
}

fn cases_in(sub: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/reference exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_reference_case_matches() {
    let files = cases();
    assert!(
        files.len() >= 56,
        "expected the 56 bundled cases, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable case");
        match downhill::reference::parse(&text).and_then(|c| downhill::reference::replay(&c)) {
            Ok(r) if r.passed() => {}
            Ok(r) => failures.push(format!(
                "{}: worst {:.3e} at step {} (limit {:.0e}) {:?}",
                r.name, r.worst, r.worst_step, r.threshold, r.notes
            )),
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

/// Replay every case of `sub`; the failures, and the optimizers not (yet) registered.
fn replay_dir(sub: &str) -> (usize, Vec<String>, std::collections::BTreeSet<String>) {
    let files = cases_in(sub);
    let mut failures = Vec::new();
    let mut missing = std::collections::BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable case");
        let case = downhill::reference::parse(&text).expect("well-formed case");
        if !downhill::registry::NAMES.contains(&case.optimizer.as_str()) {
            missing.insert(case.optimizer.clone());
            continue;
        }
        match downhill::reference::replay(&case) {
            Ok(r) if r.passed() => {}
            Ok(r) => failures.push(format!(
                "{} {}: worst {:.3e} at step {} (limit {:.0e}) {:?}",
                r.name, r.dtype, r.worst, r.worst_step, r.threshold, r.notes
            )),
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    (files.len(), failures, missing)
}

/// The 30 cases of 14 optimizers newer than the lecture (`tests/reference/modern/`, from
/// PyTorch and optax; optax's option names translated by `reference::options`).
#[test]
fn every_modern_case_matches() {
    let (n, failures, missing) = replay_dir("tests/reference/modern");
    assert_eq!(n, 30, "expected the 30 bundled modern cases");
    assert!(
        missing.is_empty(),
        "no optimizer for the cases of {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

/// The same optimizers at other settings (`tests/reference/heldout/`, made by
/// `scripts/heldout/gen.py` with optax and PyTorch): the rules are built, not the cases.
#[test]
fn every_heldout_case_matches() {
    let (n, failures, missing) = replay_dir("tests/reference/heldout");
    assert!(
        n >= 28,
        "expected held-out cases for the 14 newer optimizers, found {n}"
    );
    assert!(
        missing.is_empty(),
        "no optimizer for the cases of {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_registered_optimizer_has_reference_cases() {
    let files: Vec<String> = cases()
        .iter()
        .chain(&cases_in("tests/reference/modern"))
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    for name in downhill::registry::NAMES {
        // aliases are covered by their rule's cases
        if *name == "adamw" || *name == "sgdw" {
            continue;
        }
        assert!(
            files.iter().any(|f| f.starts_with(&format!("{name}__"))),
            "no reference case for '{name}'"
        );
    }
}

/// A perturbed case must fail: the replay is not vacuous.
#[test]
fn a_perturbed_case_fails() {
    let f =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/adam__default__f64.json");
    let mut case = downhill::reference::parse(&std::fs::read_to_string(f).unwrap()).unwrap();
    case.steps[20].params[0][0] += 1e-6;
    let r = downhill::reference::replay(&case).unwrap();
    assert!(!r.passed());
    assert_eq!(r.worst_step, 21);
}

#[test]
fn malformed_cases_are_errors_not_panics() {
    let good = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/sgd__plain__f64.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = v.clone();
        f(&mut c);
        c.to_string()
    };
    let bad = [
        ("not json", "{".to_string()),
        (
            "missing field",
            mutate(&|c| {
                c.as_object_mut().unwrap().remove("init");
            }),
        ),
        (
            "mistyped field",
            mutate(&|c| c["shapes"] = serde_json::json!("3x3")),
        ),
        (
            "unknown optimizer",
            mutate(&|c| c["optimizer"] = serde_json::json!("adamz")),
        ),
        (
            "unknown option",
            mutate(&|c| c["options"]["learning_rate"] = serde_json::json!(0.1)),
        ),
        (
            "invalid hyperparameter",
            mutate(&|c| c["options"]["lr"] = serde_json::json!(-0.1)),
        ),
        (
            "short gradient",
            mutate(&|c| {
                c["steps"][3]["grads"][0].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "unknown schedule",
            mutate(&|c| c["schedule"] = serde_json::json!({"kind": "zigzag"})),
        ),
        (
            "bad dtype",
            mutate(&|c| c["dtype"] = serde_json::json!("f16")),
        ),
        (
            "a shape whose size overflows",
            mutate(&|c| c["shapes"][0] = serde_json::json!([u64::MAX, 4])),
        ),
        (
            "a huge shape over a few values (refused, not allocated)",
            mutate(&|c| c["shapes"][0] = serde_json::json!([1u64 << 40])),
        ),
        (
            "overflowing f32",
            mutate(&|c| {
                c["dtype"] = serde_json::json!("f32");
                c["init"][0][0] = serde_json::json!(1e300);
            }),
        ),
    ];
    for (what, text) in bad {
        let r = downhill::reference::parse(&text).and_then(|c| downhill::reference::replay(&c));
        assert!(r.is_err(), "{what}: expected an error");
    }
}

/// The 10 cases of optimizer state in 8 bits and bf16 (`tests/reference/lowbit/`, whose
/// README is the specification): replayed step by step, teacher-forced, with the stored
/// state (codes, absmax, bf16 bits) compared.
#[test]
fn every_lowbit_case_matches() {
    let (n, failures, missing) = replay_dir("tests/reference/lowbit");
    assert_eq!(n, 10, "expected the 10 lowbit cases");
    assert!(missing.is_empty(), "no optimizer for {missing:?}");
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

/// Low-bit state at other settings (`tests/reference/lowbit/heldout/`, made by
/// `scripts/lowbit/gen.py`, a numpy implementation of the same specification that replays
/// the 10 public cases exactly).
#[test]
fn every_lowbit_heldout_case_matches() {
    let (n, failures, missing) = replay_dir("tests/reference/lowbit/heldout");
    assert!(n >= 13, "expected the 13 held-out lowbit cases, found {n}");
    assert!(missing.is_empty(), "no optimizer for {missing:?}");
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

/// The lowbit replay compares what is stored: a case whose recorded 8-bit codes or bf16
/// values are changed fails, though its parameters are untouched.
#[test]
fn a_perturbed_lowbit_case_fails() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/lowbit");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("readable case");
    let mut case: serde_json::Value =
        serde_json::from_str(&read("adamw__8bit__f32.json")).expect("json");
    let code = &mut case["steps"][3]["state"][0]["m"]["codes"][5];
    *code = serde_json::json!((code.as_u64().expect("a code") + 2) % 256);
    let case = downhill::reference::parse(&case.to_string()).expect("well-formed");
    let r = downhill::reference::replay(&case).expect("replays");
    assert!(!r.passed(), "a changed code went unnoticed");
    assert!(
        r.notes.iter().any(|n| n.contains("code[5]")),
        "{:?}",
        r.notes
    );

    let mut case: serde_json::Value =
        serde_json::from_str(&read("adamw__bf16__f32.json")).expect("json");
    let v = &mut case["steps"][2]["state"][1]["v"]["values"][0];
    let x = v.as_f64().expect("a value") as f32;
    *v = serde_json::json!(f32::from_bits(x.to_bits() + (1 << 16)));
    let case = downhill::reference::parse(&case.to_string()).expect("well-formed");
    let r = downhill::reference::replay(&case).expect("replays");
    assert!(!r.passed(), "a changed bf16 value went unnoticed");
}
