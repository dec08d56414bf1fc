//! `downhill verify` end to end: output, exit codes, bad files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn downhill(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args(args)
        .output()
        .expect("run downhill");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exit code"), text)
}

fn reference(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../downhill/tests/reference")
        .join(name);
    std::fs::read_to_string(p).expect("reference case")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("downhill-verify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The reference cases in `crates/downhill/tests/reference/{,modern/,heldout/}`.
fn bundled_count() -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../downhill/tests/reference");
    ["", "modern", "heldout"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(root.join(sub)).ok())
        .flatten()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count()
}

#[test]
fn bundled_cases_all_pass() {
    let (code, out) = downhill(&["verify"]);
    let n = bundled_count();
    assert!(n >= 56 + 30, "{n} bundled cases");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("PASS").count(), n, "{out}");
    assert!(
        out.contains(&format!(
            "{n} cases: {n} passed, 0 failed, 0 could not be replayed"
        )),
        "{out}"
    );
}

#[test]
fn a_failing_case_exits_1() {
    let dir = scratch("fail");
    let mut v: serde_json::Value =
        serde_json::from_str(&reference("radam__default__f64.json")).unwrap();
    let x = v["steps"][10]["params"][0][0].as_f64().unwrap();
    v["steps"][10]["params"][0][0] = serde_json::json!(x + 1e-3);
    std::fs::write(dir.join("bad.json"), v.to_string()).unwrap();
    std::fs::write(dir.join("good.json"), reference("sgd__nesterov__f32.json")).unwrap();
    let (code, out) = downhill(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL") && out.contains("PASS"), "{out}");
}

#[test]
fn unreplayable_cases_exit_2_and_the_rest_still_run() {
    let dir = scratch("error");
    std::fs::write(dir.join("a_not_json.json"), "{ nope").unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&reference("adam__default__f64.json")).unwrap();
    v["optimizer"] = serde_json::json!("adamq");
    std::fs::write(dir.join("b_unknown.json"), v.to_string()).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&reference("adam__default__f64.json")).unwrap();
    v["options"]["betas"] = serde_json::json!([1.5, 0.9]);
    std::fs::write(dir.join("c_invalid.json"), v.to_string()).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&reference("adam__default__f64.json")).unwrap();
    v["steps"][0]["grads"][1] = serde_json::json!([1.0]);
    std::fs::write(dir.join("d_short.json"), v.to_string()).unwrap();
    std::fs::write(
        dir.join("e_good.json"),
        reference("adam__default__f64.json"),
    )
    .unwrap();
    let (code, out) = downhill(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("a_not_json.json: ERROR"), "{out}");
    assert!(
        out.contains("b_unknown.json: ERROR") && out.contains("adamq"),
        "{out}"
    );
    assert!(
        out.contains("c_invalid.json: ERROR") && out.contains("beta1"),
        "{out}"
    );
    assert!(
        out.contains("d_short.json: ERROR") && out.contains("grads"),
        "{out}"
    );
    assert!(
        out.contains("adam/default") && out.contains("PASS"),
        "{out}"
    );
    assert!(
        out.contains("5 cases: 1 passed, 0 failed, 4 could not be replayed"),
        "{out}"
    );
}

#[test]
fn missing_directory_exits_2() {
    let (code, out) = downhill(&["verify", "/nonexistent/downhill-cases"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("/nonexistent/downhill-cases"), "{out}");
}

/// A stand-in for the CUDA driver library, built with the system C compiler: `cuInit` returns
/// `init` and the driver counts no device. `None` when no compiler is found.
fn stub_driver(name: &str, init: i32) -> Option<PathBuf> {
    let dir = scratch(name);
    let src = dir.join("stub.c");
    std::fs::write(
        &src,
        format!(
            "int cuInit(unsigned int flags) {{ (void)flags; return {init}; }}\n\
             int cuDeviceGetCount(int *count) {{ *count = 0; return 0; }}\n\
             int cuGetErrorString(int e, const char **s) {{ (void)e; *s = \"stub\"; return 0; }}\n\
             int cuGetErrorName(int e, const char **s) {{ (void)e; *s = \"STUB\"; return 0; }}\n"
        ),
    )
    .unwrap();
    build_library("cc", &[], &src, &dir.join("libcuda.so")).then_some(dir)
}

/// Build shared library `out` from `src` with `compiler` and `flags`; `false` (and why, on
/// stderr: the test is then skipped) when that fails, as where there is no compiler.
fn build_library(compiler: &str, flags: &[&str], src: &Path, out: &Path) -> bool {
    let built = Command::new(compiler)
        .args(flags)
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(src)
        .arg("-ldl")
        .status();
    match built {
        Ok(s) if s.success() => true,
        other => {
            eprintln!(
                "skipped: could not build {} (`{compiler}`: {other:?})",
                out.display()
            );
            false
        }
    }
}

#[test]
fn a_driver_without_a_gpu_is_named_as_such() {
    // cuInit failing with CUDA_ERROR_NO_DEVICE (100), as in a container given the driver
    // library but no GPU, and a driver that initializes but counts no device: both say that
    // no GPU was found, exit 2, and leave the CPU path working.
    for (name, init) in [("stub-nodevice", 100), ("stub-zero", 0)] {
        let Some(dir) = stub_driver(name, init) else {
            return;
        };
        for args in [
            &["verify", "--device", "cuda"][..],
            &["bench", "--device", "cuda", "--reps", "1"][..],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
                .args(args)
                .env("LD_LIBRARY_PATH", &dir)
                .output()
                .expect("run downhill");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("no CUDA GPU 0: the driver reports 0 device(s)"),
                "{args:?}: {err}"
            );
        }
    }
}

/// The stand-in CUDA driver and NVRTC of `crates/downhill-cuda/tests/fake_cuda` (host memory,
/// kernels compiled for the host), built in a scratch directory; `None` without a C++
/// compiler.
fn fake_cuda(name: &str) -> Option<PathBuf> {
    let dir = scratch(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../downhill-cuda/tests/fake_cuda");
    let shim = format!("-DDOWNHILL_SHIM=\"{}\"", src.join("shim.h").display());
    let flags = ["-std=c++20", "-O1", "-pthread", shim.as_str()];
    for (lib, file) in [("libcuda.so", "cuda.cpp"), ("libnvrtc.so", "nvrtc.cpp")] {
        if !build_library("c++", &flags, &src.join(file), &dir.join(lib)) {
            return None;
        }
    }
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    Some(dir)
}

#[test]
fn the_gpu_path_replays_cases_over_a_fake_driver() {
    // The whole GPU path (kernels generated, "compiled", tables and arenas uploaded, the
    // gradient scan and its sum, the step, the read back) over the fake driver: Adam (the
    // non-finite scan: two kernels of one source), clipping by norm, and Lookahead.
    let Some(fake) = fake_cuda("fake-cuda") else {
        return;
    };
    let cases = scratch("fake-cuda-cases");
    for case in [
        "adam__default__f32.json",
        "adam__clip-grad-norm__f64.json",
        "lookahead__adam__f32.json",
    ] {
        std::fs::write(cases.join(case), reference(case)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args(["verify", "--device", "cuda"])
        .arg(&cases)
        .env("LD_LIBRARY_PATH", &fake)
        .env("DOWNHILL_FAKE_CUDA_DIR", fake.join("modules"))
        .output()
        .expect("run downhill");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("replaying on downhill fake GPU"), "{text}");
    assert!(
        text.contains("3 cases: 3 passed, 0 failed, 0 could not be replayed"),
        "{text}"
    );
}
