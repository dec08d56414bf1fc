//! `downhill bench` runs and reports what it promises (a smoke test at a small scale; it
//! asserts no timing).

use std::process::Command;

/// `downhill bench ARGS --json`, which must succeed, parsed.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_json_has_every_field() {
    let v = bench_json(&[
        "--scale",
        "0.002",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--threads",
        "2",
    ]);
    assert!(v["copy_gb_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["threads"], 2);
    let results = v["results"].as_array().unwrap();
    // The lecture's 15 entries and the 14 newer optimizers, on both cases.
    assert_eq!(results.len(), 2 * (15 + 14));
    for r in results {
        for field in ["median_ms", "gb_per_s", "state_bytes_per_param"] {
            assert!(r[field].as_f64().unwrap() >= 0.0, "{field} in {r}");
        }
        // Whole-tensor work (Muon, Adafactor) has no memory roofline; the rest have one.
        let whole_tensor = r["optimizer"] == "muon" || r["optimizer"] == "adafactor";
        for field in ["roofline_gb_per_s", "percent_of_roofline"] {
            if whole_tensor {
                assert!(r[field].is_null(), "{field} in {r}");
            } else {
                assert!(r[field].as_f64().unwrap() >= 0.0, "{field} in {r}");
            }
        }
    }
    let find = |name: &str| {
        results
            .iter()
            .find(|r| r["optimizer"] == name && r["case"] == "large")
            .unwrap()
    };
    // Each newer optimizer's own state: Lion one buffer, Adafactor rows and columns.
    assert_eq!(find("lion")["state_bytes_per_param"], 4.0);
    assert!(find("adafactor")["state_bytes_per_param"].as_f64().unwrap() < 0.5);
    // LAMB's reading pass (p, g, m, v) counts: 28 + 16 bytes.
    assert_eq!(find("lamb")["bytes_per_param"], 44.0);
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
        &["bench", "--tuning", "unroll=2"],
        &["bench", "--device", "cuda", "--tuning", "unroll=9"],
        &[
            "bench",
            "--device",
            "cuda",
            "--tuning",
            "chunk=16384;warp=2",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn bench_adapter_compares_with_the_core() {
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args([
            "bench",
            "--adapter",
            "--optimizers",
            "adamw,sgd-momentum",
            "--scale",
            "0.002",
            "--reps",
            "3",
            "--warmup",
            "1",
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
    // The usual rows, and one adapter row per optimizer and case.
    assert_eq!(v["results"].as_array().unwrap().len(), 4);
    let rows = v["adapter"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for optimizer in ["adamw", "sgd-momentum"] {
        for case in ["large", "small"] {
            let r = rows
                .iter()
                .find(|r| r["optimizer"] == optimizer && r["case"] == case)
                .unwrap_or_else(|| panic!("no adapter row for {optimizer} {case}"));
            let core = r["core_median_ms"].as_f64().unwrap();
            let adapter = r["adapter_median_ms"].as_f64().unwrap();
            let ratio = r["ratio"].as_f64().unwrap();
            assert!(core > 0.0 && adapter > 0.0, "{r}");
            assert!((ratio - adapter / core).abs() < 1e-9 * ratio, "{r}");
            assert!(r["tensors"].as_u64().unwrap() > 0, "{r}");
            // AdamW is also timed as candle's own AdamW on the same Vars; nothing else is.
            let candle = r.get("candle_adamw_median_ms").and_then(|x| x.as_f64());
            let speedup = r
                .get("adapter_speedup_over_candle_adamw")
                .and_then(|x| x.as_f64());
            if optimizer == "adamw" {
                let (candle, speedup) = (candle.unwrap(), speedup.unwrap());
                assert!(candle > 0.0, "{r}");
                assert!((speedup - candle / adapter).abs() < 1e-9 * speedup, "{r}");
            } else {
                assert!(candle.is_none() && speedup.is_none(), "{r}");
            }
        }
    }
    // Without --json: a table after the usual one.
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args([
            "bench",
            "--adapter",
            "--optimizers",
            "sgd",
            "--cases",
            "small",
            "--scale",
            "0.002",
            "--reps",
            "1",
            "--warmup",
            "0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let table = text
        .split("candle adapter")
        .nth(1)
        .unwrap_or_else(|| panic!("no adapter table in\n{text}"));
    let row = table
        .lines()
        .find(|l| l.starts_with("sgd "))
        .unwrap_or_else(|| panic!("no sgd row in\n{text}"));
    assert!(row.trim_end().ends_with('x'), "{row}");
}

/// `--state-precision` times each precision in one interleaved run: a row per precision the
/// rule takes (LAMB keeps `f32` state only), with the state bytes of each, the speed-up over
/// `f32` state on the low-precision rows and the roofline's bandwidth on every row.
#[test]
fn bench_times_every_state_precision_in_one_run() {
    let v = bench_json(&[
        "--scale",
        "0.002",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--cases",
        "large",
        "--optimizers",
        "adamw,lamb",
        "--state-precision",
        "f32,bf16,8bit",
    ]);
    let rows = v["results"].as_array().unwrap();
    let shown: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["optimizer"].as_str().unwrap(),
                r["state_precision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("adamw", "f32"),
            ("adamw", "bf16"),
            ("adamw", "8bit"),
            ("lamb", "f32")
        ]
    );
    for r in rows {
        assert!(r["roofline_gb_per_s"].as_f64().unwrap() > 0.0, "{r}");
        let low = r["state_precision"] != "f32";
        assert_eq!(r["speedup_over_f32_state"].is_null(), !low, "{r}");
    }
    assert_eq!(rows[0]["state_bytes_per_param"], 8.0);
    assert_eq!(rows[1]["state_bytes_per_param"], 4.0);
    // At this scale the small tensors keep f32 state: more than 2.03 bytes, fewer than 4.
    let eight = rows[2]["state_bytes_per_param"].as_f64().unwrap();
    assert!(eight > 2.03 && eight < 4.0, "{eight}");
}
