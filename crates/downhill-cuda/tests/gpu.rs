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

/// Every reference case (the lecture's, `modern/` and `heldout/`) replays on the GPU within
/// its limits; the cases of Muon and Adafactor, which the GPU does not run, are skipped as
/// unsupported (and only those).
#[test]
fn every_reference_case_matches_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    // A test binary carried to another machine is told where the cases are.
    let dir = std::env::var_os("DOWNHILL_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../downhill/tests/reference")
        });
    let mut paths: Vec<PathBuf> = ["", "modern", "heldout"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 50);
    let on = OnGpu(gpu);
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for p in &paths {
        let text = std::fs::read_to_string(p).expect("readable case");
        let case = downhill::reference::parse(&text);
        match case.and_then(|c| downhill::reference::replay_on(&c, &on)) {
            Ok(r) if r.passed() => {}
            Ok(r) => failures.push(format!(
                "{}: worst {:e} at {}",
                r.name, r.worst, r.worst_step
            )),
            Err(e) => match downhill::reference::unsupported(&e) {
                Some(_) => skipped.push(p.display().to_string()),
                None => failures.push(format!("{}: {e}", p.display())),
            },
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    for s in &skipped {
        let file = s.rsplit('/').next().unwrap_or(s);
        assert!(
            file.starts_with("muon__") || file.starts_with("adafactor__"),
            "skipped as unsupported: {s}"
        );
    }
    eprintln!(
        "{} cases, {} skipped as unsupported on the GPU",
        paths.len(),
        skipped.len()
    );
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

/// The largest relative difference between two lists of numbers (`max(1, |b|)` below).
fn worst_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Every number of a checkpoint's tensors, by key.
fn state_values(sd: &downhill::StateDict) -> Vec<(String, Vec<f64>)> {
    use downhill::state::TensorData;
    sd.tensors
        .iter()
        .map(|(k, t)| {
            let v = match &t.data {
                TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
                TensorData::F64(v) => v.clone(),
                TensorData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
                TensorData::Bf16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// LAMB, NovoGrad and Prodigy (a reading pass before the update) run on the GPU: many
/// tensors of several sizes, two groups (Prodigy's sums are per group), clipping by norm;
/// the GPU sums the reading pass in another order than the CPU, so parameters and
/// checkpoints (scalars included) match to 1e-5 relative in `f32` and 1e-9 in `f64`, and two
/// GPU runs give the same bits. Muon and Adafactor (whole-tensor work) are refused.
#[test]
fn reading_pass_rules_match_the_cpu_to_rounding() {
    let Some(gpu) = gpu() else { return };
    let infos: Vec<ParamInfo> = (0..24)
        .map(|i| ParamInfo::new(format!("t{i}"), [1 + (i * 2711) % 40_000]))
        .collect();
    let groups = |options: &serde_json::Value| {
        vec![
            registry::GroupSpec {
                options: options.clone(),
                params: infos[..16].to_vec(),
            },
            registry::GroupSpec {
                options: json!({"weight_decay": 0.0}),
                params: infos[16..].to_vec(),
            },
        ]
    };
    let setup = Setup {
        clip: Clip {
            max_norm: Some(5.0),
            max_value: None,
        },
        ..Setup::default()
    };
    fn run<F: GpuFloat>(
        gpu: &Arc<Gpu>,
        name: &str,
        options: &serde_json::Value,
        groups: Vec<registry::GroupSpec>,
        setup: &Setup,
        tol: f64,
    ) {
        let infos: Vec<ParamInfo> = groups.iter().flat_map(|g| g.params.clone()).collect();
        let init: Vec<Vec<F>> = infos
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (0..p.len())
                    .map(|j| F::from_f64(((i * 5 + j) as f64 * 0.011).sin()))
                    .collect()
            })
            .collect();
        let grad = |s: usize, i: usize, j: usize| {
            F::from_f64(((i + 3 * j) as f64 * 0.17).cos() + 0.3 * ((j + s) as f64 * 0.5).sin())
        };
        let mut results = Vec::new();
        for _ in 0..2 {
            let mut cpu =
                registry::build_groups::<F>(name, options, groups.clone(), setup).unwrap();
            let mut opt =
                gpu_registry::build_groups::<F>(gpu, name, options, groups.clone(), setup).unwrap();
            let (got, want) = run_both(gpu, &mut *opt, &mut *cpu, &init, 5, grad);
            for (t, (a, b)) in got.iter().zip(&want).enumerate() {
                let a: Vec<f64> = a.iter().map(|x| x.to_f64()).collect();
                let b: Vec<f64> = b.iter().map(|x| x.to_f64()).collect();
                let w = worst_rel(&a, &b);
                assert!(w <= tol, "{name} {}: tensor {t} off by {w:e}", F::DTYPE);
            }
            let (gs, cs) = (
                state_values(&opt.state_dict().unwrap()),
                state_values(&cpu.state_dict()),
            );
            assert_eq!(gs.len(), cs.len());
            for ((k, a), (k2, b)) in gs.iter().zip(&cs) {
                assert_eq!(k, k2);
                let w = worst_rel(a, b);
                assert!(w <= tol, "{name} {}: state {k} off by {w:e}", F::DTYPE);
            }
            results.push(got);
        }
        assert!(results[0] == results[1], "{name}: two GPU runs differ");
    }
    for (name, options) in [
        ("lamb", json!({"lr": 0.01, "weight_decay": 0.01})),
        ("novograd", json!({"lr": 0.01})),
        ("prodigy", json!({"weight_decay": 0.01})),
    ] {
        run::<f32>(&gpu, name, &options, groups(&options), &setup, 1e-5);
        run::<f64>(&gpu, name, &options, groups(&options), &setup, 1e-9);
    }
    for name in ["muon", "adafactor"] {
        let params = vec![ParamInfo::new("w", [8, 8])];
        match gpu_registry::build::<f32>(&gpu, name, &json!({}), params, &Setup::default()) {
            Err(CudaError::Unsupported { optimizer, .. }) => assert_eq!(optimizer, name),
            other => panic!(
                "{name}: want Unsupported, got {:?}",
                other.map(|o| o.name())
            ),
        }
    }
}

/// `step_some`: a parameter without a gradient on some steps is skipped on the GPU as on the
/// CPU (not decayed, no momentum, its step count unchanged, left out of the clipping norm and
/// Prodigy's group sums), for element-wise rules bit for bit (value clipping), for the rules
/// with a reading pass (and clipping by norm) to rounding; Lookahead still synchronizes every
/// tensor. A call with the wrong number of gradients is a typed error and changes nothing.
#[test]
fn step_some_skips_tensors_without_gradient_as_the_cpu_does() {
    let Some(gpu) = gpu() else { return };
    let infos: Vec<ParamInfo> = (0..6)
        .map(|i| ParamInfo::new(format!("t{i}"), [1 + (i * 4099) % 9000]))
        .collect();
    // Tensor 2 has no gradient at steps 1, 2 and 4; tensor 5 none at its first step.
    let missing =
        |step: usize, i: usize| (i == 2 && [1, 2, 4].contains(&step)) || (i == 5 && step == 0);
    let by_value = Setup {
        clip: Clip {
            max_norm: None,
            max_value: Some(0.7),
        },
        ..Setup::default()
    };
    let by_norm = Setup {
        clip: Clip {
            max_norm: Some(3.0),
            max_value: None,
        },
        ..Setup::default()
    };
    for (name, options, setup, exact) in [
        (
            "adamw",
            json!({"lr": 0.01, "weight_decay": 0.1}),
            &by_value,
            true,
        ),
        (
            "sgd",
            json!({"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
            &by_value,
            true,
        ),
        (
            "lookahead",
            json!({"k": 2, "inner": {"optimizer": "adam", "lr": 0.01}}),
            &by_value,
            true,
        ),
        (
            "lamb",
            json!({"lr": 0.01, "weight_decay": 0.01}),
            &by_norm,
            false,
        ),
        ("prodigy", json!({"weight_decay": 0.01}), &by_norm, false),
    ] {
        let mut cpu = registry::build::<f64>(name, &options, infos.clone(), setup).unwrap();
        let mut opt =
            gpu_registry::build::<f64>(&gpu, name, &options, infos.clone(), setup).unwrap();
        let mut host: Vec<Vec<f64>> = infos
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (0..p.len())
                    .map(|j| ((i + j) as f64 * 0.03).cos())
                    .collect()
            })
            .collect();
        let mut ps: Vec<_> = host.iter().map(|p| gpu.upload(p).unwrap()).collect();
        for step in 0..6 {
            let g: Vec<Vec<f64>> = infos
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    (0..p.len())
                        .map(|j| ((i + 2 * j + 5 * step) as f64 * 0.23).sin())
                        .collect()
                })
                .collect();
            let gs: Vec<_> = g.iter().map(|g| gpu.upload(g).unwrap()).collect();
            let gr: Vec<Option<&_>> = (gs.iter().enumerate())
                .map(|(i, g)| (!missing(step, i)).then_some(g))
                .collect();
            let mut pr: Vec<_> = ps.iter_mut().collect();
            assert_eq!(opt.step_some(&mut pr, &gr).unwrap(), StepOutcome::Applied);
            let hg: Vec<Option<&[f64]>> = (g.iter().enumerate())
                .map(|(i, g)| (!missing(step, i)).then_some(&g[..]))
                .collect();
            let mut hp: Vec<&mut [f64]> = host.iter_mut().map(|p| &mut p[..]).collect();
            cpu.step_some(&mut hp, &hg).unwrap();
        }
        let got: Vec<Vec<f64>> = ps.iter().map(|p| gpu.download(p).unwrap()).collect();
        let (gs, cs) = (
            state_values(&opt.state_dict().unwrap()),
            state_values(&cpu.state_dict()),
        );
        if exact {
            assert_eq!(got, host, "{name}: GPU and CPU differ");
            assert_eq!(gs, cs, "{name}: states differ");
        } else {
            for (t, (a, b)) in got.iter().zip(&host).enumerate() {
                let w = worst_rel(a, b);
                assert!(w <= 1e-9, "{name}: tensor {t} off by {w:e}");
            }
            for ((k, a), (_, b)) in gs.iter().zip(&cs) {
                let w = worst_rel(a, b);
                assert!(w <= 1e-9, "{name}: state {k} off by {w:e}");
            }
        }
        // Tensor 2 missed three of six steps: its step count says so.
        let steps = cs
            .iter()
            .find(|(k, _)| k.ends_with("t2.step"))
            .map(|(_, v)| v[0]);
        if name != "lookahead" {
            assert_eq!(steps, Some(3.0), "{name}");
        }
        // One gradient too few: refused, nothing changed.
        let before = opt.state_dict().unwrap();
        let g0 = gpu.upload(&vec![0.1f64; infos[0].len()]).unwrap();
        let mut pr: Vec<_> = ps.iter_mut().collect();
        let e = opt.step_some(&mut pr, &[Some(&g0)]).unwrap_err();
        assert!(
            matches!(e, CudaError::Optimizer(downhill::Error::TensorCount { .. })),
            "{name}: {e}"
        );
        assert_eq!(opt.state_dict().unwrap().tensors, before.tensors);
        let after: Vec<Vec<f64>> = ps.iter().map(|p| gpu.download(p).unwrap()).collect();
        assert_eq!(after, got, "{name}: a refused step changed the parameters");
    }
}
