//! Writes the PTX of the benchmark's kernels (AdamW and SGD with momentum at PyTorch's
//! defaults, `f32` and `f64`; the gradient scan; the noise) into a directory, for `ptxas -v`
//! to report registers and spills without a GPU (`scripts/ptx-report.sh`). Needs NVRTC.
//!
//! `cargo run --release -p downhill-cuda --example ptx -- DIR [ARCH [TUNING]]` (ARCH:
//! `compute_90`; TUNING as `bench --device cuda --tuning`, e.g. `unroll=2,min-blocks=4`).

use downhill::kernel::trace::trace;
use downhill::kernel::Prelude;
use downhill::optim::{adam::Adam, sgd::Sgd, Rule};
use downhill_cuda::codegen::{noise_kernel, scan_kernel, step_kernel};
use downhill_cuda::{compile, GpuFloat, Tuning};

fn step<F: GpuFloat, R: Rule>(rule: R, name: &str, tuning: &Tuning) -> (String, String) {
    let coef = rule.begin(&mut Default::default(), rule.hyper().lr);
    let pre = Prelude {
        decay_factor: (rule.hyper().weight_decay != 0.0).then_some(0.99),
        ..Prelude::default()
    };
    let tape = trace::<F, R>(&pre, &coef, rule.buffers().len());
    let name = format!("{name}_{}", F::DTYPE);
    (step_kernel(&tape, &name, tuning), name)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: ptx DIR [ARCH [TUNING]]")?);
    let arch: &'static str = Box::leak(args.next().unwrap_or("compute_90".into()).into_boxed_str());
    let tuning: Tuning = args.next().unwrap_or_default().parse()?;
    std::fs::create_dir_all(&dir)?;
    let momentum = Sgd {
        momentum: 0.9,
        ..Sgd::default()
    };
    let kernels = [
        step::<f32, _>(Adam::adamw(), "adamw", &tuning),
        step::<f64, _>(Adam::adamw(), "adamw", &tuning),
        step::<f32, _>(momentum.clone(), "sgd_momentum", &tuning),
        step::<f64, _>(momentum, "sgd_momentum", &tuning),
        (scan_kernel::<f32>(), "scan".into()),
        (noise_kernel::<f32>(), "noise".into()),
    ];
    for (source, name) in kernels {
        let ptx = compile(&source, &name, Some(arch))?;
        let path = dir.join(format!("{name}.ptx"));
        std::fs::write(&path, ptx)?;
        println!("{}", path.display());
    }
    Ok(())
}
