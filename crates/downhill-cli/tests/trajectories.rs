//! `downhill trajectories` end to end: the files, the table, the options and errors.

mod common;
use common::downhill;

use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("downhill-traj-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Run `trajectories` into a fresh directory; its stdout and the directory.
fn trajectories(name: &str, extra: &[&str]) -> (String, PathBuf) {
    let dir = scratch(name);
    let mut args = vec!["trajectories", "-q", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = downhill(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    (stdout, dir)
}

/// `(optimizer, step, x, y)` of `function`'s paths in paths.csv.
fn paths(dir: &std::path::Path, function: &str) -> Vec<(String, usize, f64, f64)> {
    let text = std::fs::read_to_string(dir.join("paths.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[0] == function)
        .map(|c| {
            (
                c[1].to_string(),
                c[2].parse().unwrap(),
                c[3].parse().unwrap(),
                c[4].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn defaults_draw_every_function_and_optimizer() {
    let (stdout, dir) = trajectories("defaults", &[]);
    for f in [
        "rosenbrock",
        "beale",
        "himmelblau",
        "saddle",
        "ill-conditioned",
        "rastrigin",
    ] {
        for ext in ["png", "svg"] {
            let path = dir.join(format!("{f}.{ext}"));
            assert!(std::fs::metadata(&path).unwrap().len() > 1000, "{path:?}");
        }
        // One table row per optimizer and function: the lecture's eleven.
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.starts_with(&format!("{f} ")))
                .count(),
            11,
            "{stdout}"
        );
    }
    let svg = std::fs::read_to_string(dir.join("rosenbrock.svg")).unwrap();
    assert!(svg.contains("nesterov") && svg.contains("global minimum"));
    // The page is self-contained: every figure inline, nothing fetched.
    let html = std::fs::read_to_string(dir.join("trajectories.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 6);
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(html.contains("id=\"play\"") && html.contains("type=\"range\""));
    // Every path starts at the function's start.
    let rows = paths(&dir, "beale");
    assert!(rows
        .iter()
        .filter(|r| r.1 == 0)
        .all(|r| (r.2, r.3) == (1.0, 1.5)));
}

#[test]
fn gradient_noise_leaves_the_saddle_ridge() {
    let common = [
        "--functions",
        "saddle",
        "--optimizers",
        "sgd",
        "--start",
        "1.5,0",
        "--steps",
        "1000",
    ];
    let (stdout, dir) = trajectories("ridge", &common);
    assert!(paths(&dir, "saddle").iter().all(|r| r.3 == 0.0));
    assert!(stdout.contains("out of steps"), "{stdout}");
    let mut noisy: Vec<&str> = common.to_vec();
    noisy.extend(["--gradient-noise", "--seed", "3"]);
    let (stdout, dir) = trajectories("ridge-noise", &noisy);
    assert!(paths(&dir, "saddle").iter().any(|r| r.3.abs() > 1.0));
    assert!(stdout.contains("left the plot"), "{stdout}");
}

#[test]
fn a_learning_rate_set_by_hand_replaces_the_defaults() {
    let (stdout, _) = trajectories(
        "lr",
        &[
            "--functions",
            "himmelblau,rastrigin",
            "--optimizers",
            "adam,sgd",
            "--set",
            "adam.lr=0.125",
            "--steps",
            "10",
        ],
    );
    let adam: Vec<&str> = stdout.lines().filter(|l| l.contains(" adam ")).collect();
    assert_eq!(adam.len(), 2);
    assert!(adam.iter().all(|l| l.contains("1.250e-1")), "{stdout}");
    // SGD keeps the per-function defaults, which differ.
    let sgd: Vec<&str> = stdout.lines().filter(|l| l.contains(" sgd ")).collect();
    assert!(
        sgd[0].contains("5.000e-3") && sgd[1].contains("2.000e-3"),
        "{stdout}"
    );
}

#[test]
fn a_schedule_changes_the_walk() {
    let common = [
        "--functions",
        "ill-conditioned",
        "--optimizers",
        "sgd",
        "--steps",
        "50",
    ];
    let (_, plain) = trajectories("constant", &common);
    let mut decayed: Vec<&str> = common.to_vec();
    decayed.extend([
        "--schedule",
        r#"{"kind": "step", "step_size": 10, "gamma": 0.5}"#,
    ]);
    let (_, dir) = trajectories("step-decay", &decayed);
    let (a, b) = (
        paths(&plain, "ill-conditioned"),
        paths(&dir, "ill-conditioned"),
    );
    assert_eq!(a.len(), b.len());
    // The same first 10 steps, then shorter ones: the decayed walk ends farther out.
    assert_eq!(a[10], b[10]);
    assert!(b[50].2.abs() > a[50].2.abs(), "{:?} vs {:?}", b[50], a[50]);
}

#[test]
fn bad_options_are_errors() {
    for (args, expect) in [
        (&["--functions", "sphere"][..], "unknown function 'sphere'"),
        (&["--optimizers", "adamm"][..], "unknown optimizer 'adamm'"),
        (&["--start", "1;2"][..], "expected X,Y"),
        (&["--steps", "0"][..], "at least 1"),
        (&["--set", "adam.lr=-1"][..], "adam"),
        (&["--schedule", "{\"kind\": \"nope\"}"][..], "--schedule"),
    ] {
        let dir = scratch("bad");
        let mut all = vec!["trajectories", "-q", "--out", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        let (code, _, stderr) = downhill(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}
