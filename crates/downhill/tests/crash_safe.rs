//! Checkpoints survive a process killed in the middle of saving: the test re-runs its own
//! binary as a child that saves over and over, kills it at a random moment, and loads what is
//! on disk — many times.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use downhill::registry::{self, Setup};
use downhill::{checkpoint, Optimizer, ParamInfo};
use serde_json::json;

/// Set in the child's environment: the directory it saves into.
const DIR_VAR: &str = "DOWNHILL_CRASH_TEST_DIR";
const FILE: &str = "state.safetensors";

/// An Adam over 1 M parameters: a 8 MB state, so that a save takes long enough to be hit.
fn optimizer() -> Box<dyn Optimizer<f32>> {
    let params = vec![
        ParamInfo::new("w", [1000, 1000]),
        ParamInfo::new("b", [1000]),
    ];
    registry::build::<f32>("adam", &json!({"lr": 1e-3}), params, &Setup::default()).unwrap()
}

fn step(opt: &mut dyn Optimizer<f32>, p: &mut [Vec<f32>], k: usize) {
    let g: Vec<Vec<f32>> = p
        .iter()
        .map(|t| (0..t.len()).map(|j| ((j + k) % 7) as f32 - 3.0).collect())
        .collect();
    let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|t| &mut t[..]).collect();
    let gs: Vec<&[f32]> = g.iter().map(|t| &t[..]).collect();
    opt.step(&mut ps, &gs).unwrap();
}

/// The child: step and save, for ever (until killed). A no-op in a normal test run.
#[test]
fn saver_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let path = PathBuf::from(dir).join(FILE);
    let mut opt = optimizer();
    let mut p = vec![vec![0.0f32; 1_000_000], vec![0.0f32; 1000]];
    // Continue from what is on disk, so that the step count grows across children.
    if path.exists() {
        checkpoint::load(&path, opt.as_mut()).unwrap();
    }
    for k in 0.. {
        step(opt.as_mut(), &mut p, k);
        checkpoint::save(&path, opt.as_ref()).unwrap();
    }
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().contains(".tmp-"))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn a_save_killed_at_any_moment_leaves_a_loadable_checkpoint() {
    let dir = std::env::temp_dir().join(format!("downhill-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(FILE);
    let mut first = optimizer();
    let mut p = vec![vec![0.0f32; 1_000_000], vec![0.0f32; 1000]];
    step(first.as_mut(), &mut p, 0);
    checkpoint::save(&path, first.as_ref()).unwrap();

    let exe = std::env::current_exe().unwrap();
    let iterations = 40;
    let (mut mid_save, mut last_step) = (0, 1u64);
    for i in 0..iterations {
        let before = temp_files(&dir);
        let mut child = Command::new(&exe)
            .args(["saver_child", "--exact", "--test-threads=1"])
            .env(DIR_VAR, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a different moment each time: during start-up, loading, stepping, writing,
        // syncing or renaming.
        std::thread::sleep(Duration::from_millis(30 + (i * 37 % 250) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        // A temporary file left behind is a save that was cut short.
        if temp_files(&dir) > before {
            mid_save += 1;
        }
        let mut resumed = optimizer();
        checkpoint::load(&path, resumed.as_mut())
            .unwrap_or_else(|e| panic!("iteration {i}: the checkpoint does not load: {e}"));
        let steps = resumed.steps_taken();
        assert!(
            steps >= last_step,
            "iteration {i}: went back from {last_step} to {steps}"
        );
        last_step = steps;
    }
    eprintln!(
        "{iterations} kills, {mid_save} in the middle of a save; checkpoint at step {last_step}"
    );
    // The kills did land in saves, and the children did make progress.
    assert!(
        mid_save >= iterations / 4,
        "only {mid_save} kills hit a save"
    );
    assert!(last_step > 1);
    let _ = std::fs::remove_dir_all(&dir);
}
