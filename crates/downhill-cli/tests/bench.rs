//! `downhill bench` runs and reports what it promises (a smoke test at a small scale; it
//! asserts no timing).

use std::process::Command;

#[test]
fn bench_json_has_every_field() {
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args([
            "bench",
            "--scale",
            "0.002",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--threads",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["copy_gb_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["threads"], 2);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2 * 15);
    for r in results {
        for field in [
            "median_ms",
            "gb_per_s",
            "roofline_gb_per_s",
            "percent_of_roofline",
            "state_bytes_per_param",
        ] {
            assert!(r[field].as_f64().unwrap() >= 0.0, "{field} in {r}");
        }
    }
    let adamw = results
        .iter()
        .find(|r| r["optimizer"] == "adamw" && r["case"] == "large")
        .unwrap();
    assert_eq!(adamw["bytes_per_param"], 28.0);
    assert_eq!(adamw["state_bytes_per_param"], 8.0);
    let sgdm = results
        .iter()
        .find(|r| r["optimizer"] == "sgd-momentum")
        .unwrap();
    assert_eq!(sgdm["bytes_per_param"], 20.0);
}

#[test]
fn bench_refuses_bad_options() {
    for args in [
        &["bench", "--optimizers", "adamx"][..],
        &["bench", "--cases", "huge"],
        &["bench", "--threads", "0"],
        &["bench", "--scale", "2"],
        &["bench", "--non-finite", "maybe"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}
