//! `downhill bench --device cuda`: the GPU step against the card's copy bandwidth, in one
//! run.

use std::sync::Arc;

use downhill::registry::Setup;
use downhill::NonFinite;
use downhill_cuda::codegen::Tuning;
use downhill_cuda::cudarc::driver::{CudaSlice, CudaStream};
use downhill_cuda::{registry, Gpu};
use serde_json::{json, Value};

use super::{case_shapes, large_shapes, Args, Tensors};

/// The shapes of a case on the GPU: `large` is `torch_step_bench.py`'s CUDA mix
/// (`param_shapes(200_000_000)`: 160 tensors, 201.5 M parameters).
fn gpu_shapes(case: &str, scale: f64) -> Option<Vec<Vec<usize>>> {
    match case {
        "large" => {
            let d = ((1024.0 * scale.sqrt()).round() as usize).max(4);
            Some(large_shapes((200e6 * scale) as usize, d))
        }
        other => case_shapes(other, scale),
    }
}

/// Milliseconds between two events recorded around `f` on `stream`.
fn event_ms(
    stream: &Arc<CudaStream>,
    f: &mut dyn FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let ctx = stream.context();
    let a = ctx.new_event(None).map_err(|e| e.to_string())?;
    let b = ctx.new_event(None).map_err(|e| e.to_string())?;
    a.record(stream).map_err(|e| e.to_string())?;
    f()?;
    b.record(stream).map_err(|e| e.to_string())?;
    b.synchronize().map_err(|e| e.to_string())?;
    Ok(f64::from(a.elapsed_ms(&b).map_err(|e| e.to_string())?))
}

/// The card's copy bandwidth (read + write) in GB/s: 20 device-to-device copies of 2²⁹
/// `f32`, as `torch_step_bench.py` times `y.copy_(x)`.
fn copy_bandwidth(gpu: &Gpu, scale: f64) -> Result<f64, String> {
    let n = ((1usize << 29) as f64 * scale) as usize;
    let x: CudaSlice<f32> = gpu.zeros(n).map_err(|e| e.to_string())?;
    let mut y: CudaSlice<f32> = gpu.zeros(n).map_err(|e| e.to_string())?;
    let stream = gpu.stream().clone();
    let mut copy = |reps: usize| -> Result<(), String> {
        for _ in 0..reps {
            stream.memcpy_dtod(&x, &mut y).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    copy(3)?;
    let ms = event_ms(gpu.stream(), &mut || copy(20))?;
    Ok(2.0 * (n * 4 * 20) as f64 / (ms * 1e-3) / 1e9)
}

pub(super) fn run(
    args: &Args,
    chosen: &[(&'static str, &'static str, Value)],
    non_finite: NonFinite,
) -> Result<(), String> {
    let tunings: Vec<Tuning> = if args.tuning.is_empty() {
        vec![Tuning::default()]
    } else {
        args.tuning
            .iter()
            .map(|t| t.parse().map_err(|e| format!("--tuning '{t}': {e}")))
            .collect::<Result<_, String>>()?
    };
    let gpu = Gpu::new(0).map_err(|e| e.to_string())?;
    let copy = copy_bandwidth(&gpu, args.scale)?;
    if !args.json {
        println!("device: {}", gpu.name());
        println!("copy (device to device, read+write): {copy:.0} GB/s");
        println!(
            "{:<16} {:<6} {:>10} {:>12} {:>9} {:>9}  tuning",
            "optimizer", "case", "median ms", "Mparams/s", "GB/s", "% copy"
        );
    }
    let setup = Setup {
        non_finite,
        ..Setup::default()
    };
    let mut results = Vec::new();
    for case in &args.cases {
        let shapes =
            gpu_shapes(case, args.scale).ok_or_else(|| format!("unknown case '{case}'"))?;
        let host = Tensors::new(&shapes);
        let n = host.len();
        let up = |v: &Vec<Vec<f32>>| -> Result<Vec<CudaSlice<f32>>, String> {
            v.iter()
                .map(|x| gpu.upload(x).map_err(|e| e.to_string()))
                .collect()
        };
        let grads = up(&host.grads)?;
        let runs = tunings
            .iter()
            .flat_map(|t| chosen.iter().map(move |c| (t, c)));
        for (tuning, (label, name, options)) in runs {
            let tuned = gpu.tuned(*tuning).map_err(|e| e.to_string())?;
            let mut params = up(&host.params)?;
            let mut opt = registry::build::<f32>(&tuned, name, options, host.infos.clone(), &setup)
                .map_err(|e| format!("{label}: {e}"))?;
            let gs: Vec<&CudaSlice<f32>> = grads.iter().collect();
            let mut step = || -> Result<(), String> {
                let mut ps: Vec<&mut CudaSlice<f32>> = params.iter_mut().collect();
                opt.step(&mut ps, &gs)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            for _ in 0..args.warmup.max(1) {
                step()?;
            }
            let mut times = Vec::with_capacity(args.reps);
            for _ in 0..args.reps {
                times.push(event_ms(gpu.stream(), &mut step)?);
            }
            times.sort_by(f64::total_cmp);
            let ms = times[times.len() / 2];
            let gbs = opt.traffic_per_param() * n as f64 / (ms * 1e-3) / 1e9;
            let row = json!({
                "optimizer": label,
                "case": case,
                "params": n,
                "tensors": shapes.len(),
                "median_ms": ms,
                "params_per_s": n as f64 / (ms * 1e-3),
                "gb_per_s": gbs,
                "percent_of_copy": 100.0 * gbs / copy,
                "tuning": tuning.to_string(),
            });
            if !args.json {
                println!(
                    "{label:<16} {case:<6} {ms:>10.3} {:>12.0} {gbs:>9.0} {:>8.1}%  {tuning}",
                    n as f64 / (ms * 1e-3) / 1e6,
                    100.0 * gbs / copy
                );
            }
            results.push(row);
        }
    }
    if args.json {
        let out = json!({
            "device": gpu.name(),
            "copy_gb_per_s": copy,
            "non_finite": args.non_finite,
            "results": results,
        });
        println!("{out}");
    }
    Ok(())
}
