//! `downhill compare` end to end: the run directory, determinism, update modes, IDX data,
//! configuration files and errors.

mod common;
use common::downhill;

use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("downhill-compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run a comparison into `out` and return its stdout.
fn compare(out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "compare",
        "-q",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = downhill(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    stdout
}

/// metrics.csv without the wall-time column (the only one that may differ between runs).
fn metrics_without_time(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let time = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "wall_time_s")
        .unwrap();
    text.lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(time);
            cells.join(",")
        })
        .collect()
}

#[test]
fn writes_the_run_directory_and_judges_claims() {
    let dir = scratch("files");
    let stdout = compare(
        &dir,
        &[
            "--epochs",
            "3",
            "--optimizers",
            "sgd-momentum,adagrad,rmsprop,adam,radam,swats",
            "--hidden",
            "16",
        ],
    );
    for f in [
        "metrics.csv",
        "metrics.json",
        "train_loss.png",
        "train_loss.svg",
        "test_accuracy.png",
        "test_accuracy.svg",
        "gap.png",
        "gap.svg",
        "report.html",
        "config.toml",
        "early_updates.csv",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // Header + 6 optimizers × (epoch 0 + 3 epochs).
    assert_eq!(metrics_without_time(&dir).len(), 1 + 6 * 4);
    assert!(
        stdout.contains("Does this run bear out the lecture?"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("\n  [").count(), 6, "{stdout}");
    for label in ["sgd-momentum", "adagrad", "swats"] {
        assert!(stdout.contains(label), "{stdout}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("[[optimizers]]"));
}

/// `--optimizers state-precision` runs AdamW with f32, bf16 and 8-bit state, and the report
/// says how much state each held: on the digits' 64-64-10 MLP only the 64×64 matrix has the
/// 4096 elements that 8-bit state needs; the other 714 parameters keep f32 state.
#[test]
fn the_state_precision_preset_reports_state_memory() {
    let dir = scratch("state-precision");
    let stdout = compare(&dir, &["--epochs", "1", "--optimizers", "state-precision"]);
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (bytes, per_param) = (column("state_bytes"), column("state_bytes_per_param"));
    let params = 64 * 64 + 64 + 64 * 10 + 10;
    for (label, expected) in [
        ("adamw", 8 * params),
        ("adamw-bf16", 4 * params),
        (
            "adamw-8bit",
            2 * (4096 + 4096 / 256 * 4) + 8 * (params - 4096),
        ),
    ] {
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|c| c[0] == label)
            .collect();
        assert_eq!(rows.len(), 2, "{label}: {text}");
        for r in rows {
            assert_eq!(r[bytes], expected.to_string(), "{label}");
            let per: f64 = r[per_param].parse().unwrap();
            assert!(
                (per - expected as f64 / params as f64).abs() < 1e-9,
                "{label}: {per}"
            );
        }
    }
    // 14032 bytes, 2.92 per parameter: above 2.03 for the small tensors' f32 state.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("adamw-8bit "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[words.len() - 3..], ["13.7", "KiB", "2.92"], "{line}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
    assert!(json["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["optimizer"] == "adamw-bf16" && r["state_bytes"] == 4 * params));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("state B/param") && html.contains(">37.6 KiB<"));
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let args = [
        "--epochs",
        "2",
        "--optimizers",
        "adam,sgd",
        "--hidden",
        "8",
        "--dropout",
        "0.3",
        "--gradient-noise",
    ];
    let (a, b, c) = (scratch("seed-a"), scratch("seed-b"), scratch("seed-c"));
    compare(&a, &args);
    compare(&b, &args);
    compare(&c, &[&args[..], &["--seed", "1"]].concat());
    assert_eq!(metrics_without_time(&a), metrics_without_time(&b));
    assert_ne!(metrics_without_time(&a), metrics_without_time(&c));
}

#[test]
fn every_optimizer_starts_from_the_same_weights() {
    let dir = scratch("same-start");
    compare(
        &dir,
        &[
            "--epochs",
            "1",
            "--optimizers",
            "sgd,adam,nadam",
            "--hidden",
            "8",
        ],
    );
    // Epoch-0 rows: train loss, test loss, accuracies and gap (columns 3..8) agree.
    let epoch0: Vec<Vec<String>> = metrics_without_time(&dir)[1..]
        .iter()
        .map(|r| r.split(',').map(String::from).collect::<Vec<_>>())
        .filter(|c| c[2] == "0")
        .map(|c| c[3..8].to_vec())
        .collect();
    assert_eq!(epoch0.len(), 3);
    assert!(epoch0.iter().all(|r| *r == epoch0[0]), "{epoch0:?}");
}

#[test]
fn online_and_offline_modes_count_updates() {
    let dir = scratch("modes");
    compare(
        &dir,
        &[
            "--dataset",
            "breast-cancer",
            "--hidden",
            "none",
            "--epochs",
            "2",
            "--batch",
            "online",
            "--optimizers",
            "sgd",
            "--no-shuffle",
        ],
    );
    let early = std::fs::read_to_string(dir.join("early_updates.csv")).unwrap();
    // On-line: one update per example, so the first 100 updates are all recorded.
    assert_eq!(early.lines().count(), 1 + 100);
    let dir = scratch("offline");
    compare(
        &dir,
        &[
            "--dataset",
            "breast-cancer",
            "--hidden",
            "none",
            "--epochs",
            "3",
            "--batch",
            "offline",
            "--optimizers",
            "sgd",
        ],
    );
    let early = std::fs::read_to_string(dir.join("early_updates.csv")).unwrap();
    // Off-line: one update per epoch.
    assert_eq!(early.lines().count(), 1 + 3);
}

/// An IDX file: `magic` type byte 0x08 (u8), the dimensions, the bytes.
fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn trains_on_idx_files_from_a_directory() {
    let data = scratch("idx-data");
    let image = |i: usize| -> Vec<u8> { (0..16).map(|p| ((i * 7 + p * 13) % 256) as u8).collect() };
    for (prefix, n) in [("train", 40usize), ("t10k", 12)] {
        let pixels: Vec<u8> = (0..n).flat_map(image).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx(
            &data.join(format!("{prefix}-images-idx3-ubyte")),
            &[n as u32, 4, 4],
            &pixels,
        );
        write_idx(
            &data.join(format!("{prefix}-labels-idx1-ubyte")),
            &[n as u32],
            &labels,
        );
    }
    let dir = scratch("idx-run");
    let stdout = compare(
        &dir,
        &[
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            data.to_str().unwrap(),
            "--epochs",
            "2",
            "--batch",
            "8",
            "--optimizers",
            "adam",
        ],
    );
    assert!(stdout.contains("fashion-mnist"), "{stdout}");
    assert_eq!(metrics_without_time(&dir).len(), 1 + 3);
}

#[test]
fn a_config_file_reproduces_the_run() {
    let first = scratch("config-first");
    compare(
        &first,
        &[
            "--epochs",
            "2",
            "--optimizers",
            "nesterov",
            "--set",
            "nesterov.lr=0.02",
        ],
    );
    let config = first.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("lr = 0.02"), "{text}");
    let second = scratch("config-second");
    compare(&second, &["--config", config.to_str().unwrap()]);
    assert_eq!(metrics_without_time(&first), metrics_without_time(&second));
}

#[test]
fn bad_input_is_a_clear_error_with_status_2() {
    let dir = scratch("errors");
    let missing = dir.join("nothing-here");
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "epochs = \"many\"\n").unwrap();
    for (args, expect) in [
        (vec!["--dataset", "cifar"], "cifar"),
        (
            vec![
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                missing.to_str().unwrap(),
            ],
            "apt-get install dataset-fashion-mnist",
        ),
        (vec!["--optimizers", "adamm"], "unknown optimizer 'adamm'"),
        (vec!["--set", "adam.lr=-1"], "lr"),
        (vec!["--epochs", "0"], "epochs"),
        (vec!["--config", bad_toml.to_str().unwrap()], "bad.toml"),
        (vec!["--hidden", "64,x"], "hidden width 'x'"),
    ] {
        let mut all = vec!["compare", "-q", "--out", dir.to_str().unwrap()];
        all.extend(args);
        let (code, stdout, stderr) = downhill(&all);
        assert_eq!(code, 2, "{all:?}: {stdout}{stderr}");
        assert!(stderr.contains(expect), "{all:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn print_config_shows_the_defaults() {
    let (code, stdout, _) = downhill(&["compare", "--print-config"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("dataset = \"digits\""), "{stdout}");
    assert_eq!(stdout.matches("[[optimizers]]").count(), 12, "{stdout}");
}

/// A run that diverges stops with a message naming the optimizer, the update and the
/// learning rate; the other runs of the comparison go on.
#[test]
fn a_diverging_run_stops_and_the_others_go_on() {
    let dir = scratch("diverge");
    let stdout = compare(
        &dir,
        &[
            "--epochs",
            "2",
            "--optimizers",
            "sgd,adam",
            "--set",
            "sgd.lr=1e6",
        ],
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("sgd (seed 0) stopped in epoch 1"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("at update "), "{line}");
    assert!(line.contains("learning rate 1000000"), "{line}");
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("adam,0,2,")),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(|l| l.starts_with("sgd,0,2,")),
        "{metrics}"
    );
}

/// The same seed gives the same bits at 1, 2 and 3 threads: candle's products, dropout,
/// gradient noise and every optimizer's step (a model wide enough that the products and the
/// step run in parallel).
#[test]
fn thread_count_does_not_change_a_run() {
    let runs: Vec<Vec<String>> = ["1", "2", "3"]
        .iter()
        .map(|threads| {
            let dir = scratch(&format!("threads-{threads}"));
            let (code, stdout, stderr) = downhill(&[
                "compare",
                "-q",
                "--out",
                dir.to_str().unwrap(),
                "--threads",
                threads,
                "--epochs",
                "2",
                "--batch",
                "256",
                "--hidden",
                "512,512",
                "--dropout",
                "0.2",
                "--gradient-noise",
                "--optimizers",
                "sgd-momentum,adam,swats,lookahead-adam",
            ]);
            assert_eq!(code, 0, "{stdout}\n{stderr}");
            metrics_without_time(&dir)
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
}
