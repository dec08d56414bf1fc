//! GPU tests: they run wherever a GPU, its driver and NVRTC are present, and report
//! themselves skipped, with the reason, elsewhere (CI has no GPU).

use std::path::PathBuf;
use std::sync::Arc;

use downhill::registry::{self, Setup};
use downhill::{Clip, NonFinite, Optimizer, ParamInfo, StepOutcome};
use downhill_cuda::reference::OnGpu;
use downhill_cuda::{registry as gpu_registry, CudaError, Gpu, GpuFloat, GpuOptimizer};
use serde_json::json;

fn gpu() -> Option<Arc<Gpu>> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Step a GPU and a CPU optimizer side by side, `steps` times from `init`, on the gradients
/// `grad(step, tensor, element)`; the GPU's parameters and the CPU's after.
fn run_both<F: GpuFloat>(
    gpu: &Gpu,
    opt: &mut dyn GpuOptimizer<F>,
    cpu: &mut dyn Optimizer<F>,
    init: &[Vec<F>],
    steps: usize,
    grad: impl Fn(usize, usize, usize) -> F,
) -> (Vec<Vec<F>>, Vec<Vec<F>>) {
    let mut host = init.to_vec();
    let mut ps: Vec<_> = host.iter().map(|p| gpu.upload(p).unwrap()).collect();
    for step in 0..steps {
        let g: Vec<Vec<F>> = host
            .iter()
            .enumerate()
            .map(|(i, p)| (0..p.len()).map(|j| grad(step, i, j)).collect())
            .collect();
        let gs: Vec<_> = g.iter().map(|g| gpu.upload(g).unwrap()).collect();
        let mut pr: Vec<_> = ps.iter_mut().collect();
        let gr: Vec<_> = gs.iter().collect();
        assert_eq!(opt.step(&mut pr, &gr).unwrap(), StepOutcome::Applied);
        let mut hp: Vec<&mut [F]> = host.iter_mut().map(|p| &mut p[..]).collect();
        let hg: Vec<&[F]> = g.iter().map(|g| &g[..]).collect();
        cpu.step(&mut hp, &hg).unwrap();
    }
    let got = ps.iter().map(|p| gpu.download(p).unwrap()).collect();
    (got, host)
}

#[test]
fn without_a_gpu_the_error_names_what_is_missing() {
    if let Err(e) = Gpu::new(0) {
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                CudaError::NoDriver | CudaError::NoDevice { .. } | CudaError::NoNvrtc
            ),
            "{msg}"
        );
        assert!(msg.contains("libcuda") || msg.contains("device") || msg.contains("libnvrtc"));
    }
}

#[test]
fn every_reference_case_matches_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    // A test binary carried to another machine is told where the cases are.
    let dir = std::env::var_os("DOWNHILL_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../downhill/tests/reference")
        });
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reference cases")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 50);
    let on = OnGpu(gpu);
    let mut failures = Vec::new();
    for p in &paths {
        let text = std::fs::read_to_string(p).expect("readable case");
        match downhill::reference::parse(&text)
            .and_then(|c| downhill::reference::replay_on(&c, &on))
        {
            Ok(r) if r.passed() => {}
            Ok(r) => failures.push(format!(
                "{}: worst {:e} at {}",
                r.name, r.worst, r.worst_step
            )),
            Err(e) => failures.push(format!("{}: {e}", p.display())),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Many small tensors with every prelude stage, two groups, a schedule: the GPU gives the
/// CPU's bits (same operations, no FMA contraction), except for the global norm's rounding.
#[test]
fn many_tensors_match_the_cpu_and_runs_repeat_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let infos: Vec<ParamInfo> = (0..300)
        .map(|i| ParamInfo::new(format!("t{i}"), [1 + (i * 37) % 2000]))
        .collect();
    let init: Vec<Vec<f32>> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (0..p.len())
                .map(|j| ((i * 7 + j) as f32 * 0.01).sin())
                .collect()
        })
        .collect();
    let grad = |step: usize| -> Vec<Vec<f32>> {
        infos
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (0..p.len())
                    .map(|j| ((i + j * 3 + step * 11) as f32 * 0.37).cos())
                    .collect()
            })
            .collect()
    };
    let setup = Setup {
        clip: Clip {
            max_norm: None,
            max_value: Some(0.8),
        },
        ..Setup::default()
    };
    for (name, options) in [
        ("adamw", json!({"lr": 0.01, "maximize": true})),
        (
            "sgd",
            json!({"lr": 0.05, "momentum": 0.9, "nesterov": true, "weight_decay": 0.01}),
        ),
        ("radam", json!({})),
        ("rmsprop", json!({"centered": true, "momentum": 0.5})),
    ] {
        let mut cpu = registry::build::<f32>(name, &options, infos.clone(), &setup).unwrap();
        let run = || {
            let mut opt =
                gpu_registry::build::<f32>(&gpu, name, &options, infos.clone(), &setup).unwrap();
            let mut ps: Vec<_> = init.iter().map(|p| gpu.upload(p).unwrap()).collect();
            for step in 0..8 {
                let gs: Vec<_> = grad(step).iter().map(|g| gpu.upload(g).unwrap()).collect();
                let mut pr: Vec<_> = ps.iter_mut().collect();
                let gr: Vec<_> = gs.iter().collect();
                assert_eq!(opt.step(&mut pr, &gr).unwrap(), StepOutcome::Applied);
            }
            let out: Vec<Vec<f32>> = ps.iter().map(|p| gpu.download(p).unwrap()).collect();
            (out, opt.state_dict().unwrap())
        };
        let (a, state) = run();
        let (b, _) = run();
        assert_eq!(a, b, "{name}: two GPU runs differ");
        let mut host = init.clone();
        for step in 0..8 {
            let g = grad(step);
            let mut pr: Vec<&mut [f32]> = host.iter_mut().map(|p| &mut p[..]).collect();
            let gr: Vec<&[f32]> = g.iter().map(|g| &g[..]).collect();
            cpu.step(&mut pr, &gr).unwrap();
        }
        assert_eq!(a, host, "{name}: GPU and CPU differ");
        // The GPU's checkpoint loads on the CPU and gives the CPU's state.
        assert_eq!(
            state.tensors,
            cpu.state_dict().tensors,
            "{name}: states differ"
        );
    }
}

/// Gradient noise on the GPU adds the CPU's noise (counter-based normals computed by the
/// same operations): with value clipping before it, the steps give the CPU's bits.
#[test]
fn gradient_noise_matches_the_cpu_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let infos: Vec<ParamInfo> = (0..40)
        .map(|i| ParamInfo::new(format!("t{i}"), [1 + (i * 997) % 20_000]))
        .collect();
    let setup = Setup {
        clip: Clip {
            max_norm: None,
            max_value: Some(0.5),
        },
        noise: Some(downhill::noise::GradientNoise {
            eta: 0.05,
            gamma: 0.55,
            seed: 9,
        }),
        ..Setup::default()
    };
    for (name, options) in [
        ("adam", json!({"lr": 0.01})),
        ("sgd", json!({"lr": 0.05, "momentum": 0.9})),
    ] {
        let mut cpu = registry::build::<f64>(name, &options, infos.clone(), &setup).unwrap();
        let mut opt =
            gpu_registry::build::<f64>(&gpu, name, &options, infos.clone(), &setup).unwrap();
        let init: Vec<Vec<f64>> = infos.iter().map(|p| vec![0.25; p.len()]).collect();
        let (got, host) = run_both(&gpu, &mut *opt, &mut *cpu, &init, 4, |s, i, j| {
            ((i + j + s * 5) as f64 * 0.3).sin()
        });
        assert_eq!(got, host, "{name}: GPU and CPU noise differ");
    }
}

/// Lookahead resumed from its GPU checkpoint (state and slow weights in new buffers) gives the
/// uninterrupted run's bits, and the CPU's.
#[test]
fn lookahead_resumes_from_a_checkpoint_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let infos: Vec<ParamInfo> = (0..5)
        .map(|i| ParamInfo::new(format!("t{i}"), [1 + i * 1234]))
        .collect();
    let options = json!({"k": 2, "alpha": 0.5, "inner": {"optimizer": "adam", "lr": 0.01}});
    let setup = Setup::default();
    let grad = |step: usize| -> Vec<Vec<f64>> {
        infos
            .iter()
            .map(|p| {
                (0..p.len())
                    .map(|j| ((j + step * 7) as f64 * 0.21).cos())
                    .collect()
            })
            .collect()
    };
    let build =
        || gpu_registry::build::<f64>(&gpu, "lookahead", &options, infos.clone(), &setup).unwrap();
    let mut whole = build();
    let mut first = build();
    let init: Vec<Vec<f64>> = infos.iter().map(|p| vec![0.5; p.len()]).collect();
    let mut a: Vec<_> = init.iter().map(|p| gpu.upload(p).unwrap()).collect();
    let mut b: Vec<_> = init.iter().map(|p| gpu.upload(p).unwrap()).collect();
    let mut cpu = registry::build::<f64>("lookahead", &options, infos.clone(), &setup).unwrap();
    let mut host = init.clone();
    let mut resumed = None;
    for step in 0..7 {
        let g = grad(step);
        let gs: Vec<_> = g.iter().map(|g| gpu.upload(g).unwrap()).collect();
        let gr: Vec<_> = gs.iter().collect();
        whole
            .step(&mut a.iter_mut().collect::<Vec<_>>(), &gr)
            .unwrap();
        if step == 3 {
            let mut fresh = build();
            fresh.load_state_dict(&first.state_dict().unwrap()).unwrap();
            resumed = Some(fresh);
        }
        let opt = resumed.as_mut().unwrap_or(&mut first);
        opt.step(&mut b.iter_mut().collect::<Vec<_>>(), &gr)
            .unwrap();
        let mut hp: Vec<&mut [f64]> = host.iter_mut().map(|p| &mut p[..]).collect();
        let hg: Vec<&[f64]> = g.iter().map(|g| &g[..]).collect();
        cpu.step(&mut hp, &hg).unwrap();
    }
    let a: Vec<Vec<f64>> = a.iter().map(|p| gpu.download(p).unwrap()).collect();
    let b: Vec<Vec<f64>> = b.iter().map(|p| gpu.download(p).unwrap()).collect();
    assert_eq!(a, b, "the resumed run differs from the uninterrupted one");
    assert_eq!(a, host, "GPU and CPU differ");
}

/// Other kernel layouts (two vectors per thread and turn with a register bound, small chunks)
/// give the CPU's bits on the device too.
#[test]
fn tuned_layouts_match_the_cpu_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let tuned = gpu
        .tuned(downhill_cuda::Tuning {
            chunk: 4096,
            unroll: 2,
            min_blocks: 4,
        })
        .unwrap();
    let infos: Vec<ParamInfo> = (0..60)
        .map(|i| ParamInfo::new(format!("t{i}"), [1 + (i * 3331) % 30_000]))
        .collect();
    let setup = Setup::default();
    for (name, options) in [
        ("adamw", json!({"lr": 0.01})),
        (
            "sgd",
            json!({"lr": 0.05, "momentum": 0.9, "nesterov": true}),
        ),
    ] {
        let mut cpu = registry::build::<f32>(name, &options, infos.clone(), &setup).unwrap();
        let mut opt =
            gpu_registry::build::<f32>(&tuned, name, &options, infos.clone(), &setup).unwrap();
        let init: Vec<Vec<f32>> = infos.iter().map(|p| vec![0.5; p.len()]).collect();
        let (got, host) = run_both(&gpu, &mut *opt, &mut *cpu, &init, 3, |s, i, j| {
            ((i + 2 * j + s) as f32 * 0.17).sin()
        });
        assert_eq!(got, host, "{name}: tuned GPU layout and CPU differ");
    }
}

#[test]
fn a_refused_step_changes_nothing_and_names_the_element() {
    let Some(gpu) = gpu() else { return };
    let infos = vec![ParamInfo::new("w", [1000])];
    let setup = Setup {
        non_finite: NonFinite::Refuse,
        clip: Clip {
            max_norm: Some(1.0),
            max_value: None,
        },
        ..Setup::default()
    };
    let mut opt = gpu_registry::build::<f64>(&gpu, "adam", &json!({}), infos, &setup).unwrap();
    let mut p = gpu.upload(&vec![1.0f64; 1000]).unwrap();
    let mut g = vec![0.5f64; 1000];
    g[617] = f64::NAN;
    let g = gpu.upload(&g).unwrap();
    let before = opt.state_dict().unwrap();
    let e = opt.step(&mut [&mut p], &[&g]).unwrap_err();
    assert!(e.to_string().contains("617"), "{e}");
    assert_eq!(gpu.download(&p).unwrap(), vec![1.0; 1000]);
    assert_eq!(opt.state_dict().unwrap().tensors, before.tensors);
    assert_eq!(opt.steps_taken(), 0);
}
