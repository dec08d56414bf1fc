//! `downhill bench`: the step of every optimizer against the machine's memory limits.

use std::time::Instant;

use downhill::kernel::roofline::{self, Roofline, RooflineTwoPass};
use downhill::optim::lookahead::{Lookahead, LookaheadConfig};
use downhill::registry::{self, Setup};
use downhill::StatePrecision;
use downhill::{kernel, NonFinite, Optimizer, ParamInfo, RuleOptimizer};
use downhill_candle::{Config, DownhillOptimizer};
use serde_json::{json, Value};

mod cuda;
#[cfg(feature = "mpi")]
mod ranks;

#[derive(clap::Args)]
pub struct Args {
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Optimizers to time, comma-separated (default: all). Names: see `--list`.
    #[arg(long, value_delimiter = ',')]
    optimizers: Vec<String>,
    /// Cases: `large` (~40 tensors, 50 M parameters) and/or `small` (10 000 × 1 000).
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("large"), String::from("small")])]
    cases: Vec<String>,
    /// Timed steps per measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Non-finite gradient policy of the timed optimizers: `refuse` (the default, scans the
    /// gradients first) or `unchecked`.
    #[arg(long, default_value = "refuse")]
    non_finite: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// List the optimizer names and exit.
    #[arg(long)]
    list: bool,
    /// Scale the cases and the copy buffer (0 < scale ≤ 1), for a quick run; the published
    /// figures use 1.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Also time the candle adapter (`downhill_candle::DownhillOptimizer::step` over candle
    /// `Var`s of the same shapes) against the core's step, their steps interleaved, and
    /// report the ratio of their medians.
    #[arg(long)]
    adapter: bool,
    /// Where to time: `cpu`, or `cuda` (the first GPU: its copy bandwidth, then each optimizer
    /// on `large`, 160 tensors and 201.5 M parameters as in `torch_step_bench.py`'s CUDA part,
    /// and `small`, timed with CUDA events).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    /// With `--device cuda`: GPU kernel layouts to compare, each timed on every case and
    /// optimizer (repeat the flag, or separate layouts with `;`): `chunk=16384,unroll=2,
    /// min-blocks=4`, absent keys at their defaults (chunk 16384 elements, 1 vector per
    /// thread and turn, no register bound). Default: the default layout alone.
    #[arg(long, value_delimiter = ';')]
    tuning: Vec<String>,
    /// Precisions of the optimizer state to time each optimizer with, comma-separated:
    /// `f32` (the default), `bf16`, `8bit` (block-wise, bitsandbytes' `min_8bit_size` 4096).
    /// Optimizers that cannot keep their state in fewer bits (a reading pass, whole-tensor
    /// work) are timed in `f32` only.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("f32")])]
    state_precision: Vec<String>,
    /// Time the step with its state sharded over N MPI ranks (launches `mpiexec -n N`; needs
    /// the `mpi` feature): per step, the time in reduce-scatter, in the shard's step and in
    /// all-gather, the bytes each rank sends and the state each rank keeps, beside the
    /// single-process step (timed first, with `--threads`). Each rank runs cores/N threads.
    #[arg(long, value_name = "N")]
    ranks: Option<usize>,
}

/// The benchmarked optimizers: (label, registry name, options).
fn catalogue() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("adamw", "adamw", json!({"lr": 1e-3})),
        ("sgd-momentum", "sgd", json!({"lr": 0.01, "momentum": 0.9})),
        ("sgd", "sgd", json!({"lr": 0.01})),
        (
            "nesterov",
            "sgd",
            json!({"lr": 0.01, "momentum": 0.9, "nesterov": true}),
        ),
        ("sgdw", "sgdw", json!({"lr": 0.01, "momentum": 0.9})),
        ("adam", "adam", json!({"lr": 1e-3})),
        ("adam-amsgrad", "adam", json!({"lr": 1e-3, "amsgrad": true})),
        ("adagrad", "adagrad", json!({"lr": 0.01})),
        ("rmsprop", "rmsprop", json!({"lr": 0.01})),
        ("adamax", "adamax", json!({"lr": 2e-3})),
        ("adadelta", "adadelta", json!({})),
        ("nadam", "nadam", json!({"lr": 2e-3})),
        ("radam", "radam", json!({"lr": 1e-3})),
        ("swats", "swats", json!({"lr": 1e-3})),
        (
            "lookahead-adam",
            "lookahead",
            json!({"k": 5, "alpha": 0.5, "inner": {"optimizer": "adam", "lr": 1e-3}}),
        ),
        // The optimizers after the lecture.
        ("lion", "lion", json!({"lr": 1e-4})),
        ("lamb", "lamb", json!({"lr": 1e-3, "weight_decay": 0.01})),
        ("adabelief", "adabelief", json!({"lr": 1e-3})),
        ("adan", "adan", json!({"lr": 1e-3})),
        ("yogi", "yogi", json!({"lr": 1e-3})),
        ("novograd", "novograd", json!({"lr": 1e-3})),
        ("adafactor", "adafactor", json!({"lr": 1e-2})),
        ("muon", "muon", json!({"lr": 0.02})),
        (
            "schedule-free-adamw",
            "schedule_free_adamw",
            json!({"lr": 1e-3}),
        ),
        ("prodigy", "prodigy", json!({"lr": 1.0})),
        ("rprop", "rprop", json!({"lr": 1e-3})),
        ("asgd", "asgd", json!({"lr": 0.01})),
        ("adopt", "adopt", json!({"lr": 1e-3})),
        ("ademamix", "ademamix", json!({"lr": 1e-3})),
    ]
}

/// The shapes of `torch_step_bench.py`'s `param_shapes()`: transformer-like blocks until
/// `total` parameters.
pub(crate) fn large_shapes(total: usize, d: usize) -> Vec<Vec<usize>> {
    let block = [
        vec![d, 3 * d],
        vec![3 * d],
        vec![d, d],
        vec![d],
        vec![d, 4 * d],
        vec![4 * d],
        vec![4 * d, d],
        vec![d],
        vec![d],
        vec![d],
    ];
    let (mut shapes, mut n) = (Vec::new(), 0);
    while n < total {
        for s in &block {
            n += s.iter().product::<usize>();
            shapes.push(s.clone());
        }
    }
    shapes
}

pub(crate) fn case_shapes(case: &str, scale: f64) -> Option<Vec<Vec<usize>>> {
    match case {
        "large" => {
            let d = ((1024.0 * scale.sqrt()).round() as usize).max(4);
            Some(large_shapes((50e6 * scale) as usize, d))
        }
        "small" => Some(vec![vec![1000]; ((10_000.0 * scale) as usize).max(1)]),
        _ => None,
    }
}

pub(crate) struct Tensors {
    pub(crate) infos: Vec<ParamInfo>,
    pub(crate) params: Vec<Vec<f32>>,
    pub(crate) grads: Vec<Vec<f32>>,
}

impl Tensors {
    pub(crate) fn new(shapes: &[Vec<usize>]) -> Self {
        let infos: Vec<ParamInfo> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| ParamInfo::new(format!("t{i}"), s.clone()))
            .collect();
        let fill = |scale: f32, n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|j| scale * (((j * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0))
                .collect()
        };
        let params = infos
            .iter()
            .enumerate()
            .map(|(i, p)| fill(1.0, p.len(), i))
            .collect();
        let grads = infos
            .iter()
            .enumerate()
            .map(|(i, p)| fill(1e-3, p.len(), i + 1))
            .collect();
        Tensors {
            infos,
            params,
            grads,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.infos.iter().map(ParamInfo::len).sum()
    }

    /// Median seconds of `reps` steps of each optimizer after `warmup`, the optimizers taking
    /// turns step by step (so that a slower moment of the machine falls on all of them).
    fn time_interleaved(
        &mut self,
        opts: &mut [Box<dyn Optimizer<f32>>],
        warmup: usize,
        reps: usize,
    ) -> Result<Vec<f64>, String> {
        let gs: Vec<&[f32]> = self.grads.iter().map(|g| &g[..]).collect();
        let mut times = vec![Vec::with_capacity(reps); opts.len()];
        for i in 0..warmup + reps {
            for (opt, times) in opts.iter_mut().zip(&mut times) {
                let mut ps: Vec<&mut [f32]> = self.params.iter_mut().map(|p| &mut p[..]).collect();
                let t = Instant::now();
                opt.step(&mut ps, &gs).map_err(|e| e.to_string())?;
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
        }
        Ok(times
            .into_iter()
            .map(|mut t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect())
    }
}

/// The same parameters and gradients as candle tensors: the adapter's side of `--adapter`.
struct CandleCase {
    vars: Vec<(String, candle_core::Var)>,
    grads: candle_core::backprop::GradStore,
}

impl CandleCase {
    fn new(tensors: &Tensors) -> Result<Self, String> {
        let cpu = candle_core::Device::Cpu;
        // All variables, then all gradients (as a model's initialization, then its backward
        // pass, would allocate them), like the core's tensors.
        let mut vars = Vec::with_capacity(tensors.infos.len());
        for (info, p) in tensors.infos.iter().zip(&tensors.params) {
            let var = candle_core::Var::from_vec(p.clone(), info.shape.clone(), &cpu)
                .map_err(|e| e.to_string())?;
            vars.push((info.name.clone(), var));
        }
        let mut grads = candle_core::backprop::GradStore::default();
        for ((info, g), (_, var)) in tensors.infos.iter().zip(&tensors.grads).zip(&vars) {
            let grad = candle_core::Tensor::from_vec(g.clone(), info.shape.clone(), &cpu)
                .map_err(|e| e.to_string())?;
            grads.insert(var.as_tensor(), grad);
        }
        Ok(CandleCase { vars, grads })
    }
}

/// Median seconds of the core's step and of the adapter's step on the same shapes, the two
/// interleaved (and taking turns going first) so that both see the same machine.
fn time_adapter(
    tensors: &mut Tensors,
    candle: &CandleCase,
    name: &str,
    options: &Value,
    setup: &Setup,
    warmup: usize,
    reps: usize,
) -> Result<(f64, f64), String> {
    use candle_nn::Optimizer as _;
    let mut core = registry::build::<f32>(name, options, tensors.infos.clone(), setup)
        .map_err(|e| e.to_string())?;
    let config = Config {
        setup: setup.clone(),
        ..Config::new(name, options.clone())
    };
    let mut adapter =
        DownhillOptimizer::with_names(candle.vars.clone(), config).map_err(|e| e.to_string())?;
    let gs: Vec<&[f32]> = tensors.grads.iter().map(|g| &g[..]).collect();
    let (mut core_times, mut adapter_times) = (Vec::new(), Vec::new());
    for i in 0..warmup + reps {
        for turn in 0..2 {
            let t = Instant::now();
            if (turn + i) % 2 == 0 {
                let mut ps: Vec<&mut [f32]> =
                    tensors.params.iter_mut().map(|p| &mut p[..]).collect();
                core.step(&mut ps, &gs).map_err(|e| e.to_string())?;
                if i >= warmup {
                    core_times.push(t.elapsed().as_secs_f64());
                }
            } else {
                adapter.step(&candle.grads).map_err(|e| e.to_string())?;
                if i >= warmup {
                    adapter_times.push(t.elapsed().as_secs_f64());
                }
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(core_times), median(adapter_times)))
}

/// Candle's own `AdamW` (what the adapter replaces) with `options`' hyperparameters, when they
/// are ones it has (PyTorch's names: `lr`, `betas`, `eps`, `weight_decay`); `None` otherwise.
fn candle_adamw_params(options: &Value) -> Option<candle_nn::ParamsAdamW> {
    let mut p = candle_nn::ParamsAdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-2,
    };
    for (k, v) in options.as_object()? {
        match k.as_str() {
            "lr" => p.lr = v.as_f64()?,
            "eps" => p.eps = v.as_f64()?,
            "weight_decay" => p.weight_decay = v.as_f64()?,
            "betas" => {
                let b = v.as_array()?;
                (p.beta1, p.beta2) = (b.first()?.as_f64()?, b.get(1)?.as_f64()?);
            }
            _ => return None,
        }
    }
    Some(p)
}

/// Median seconds of candle's `AdamW` step over the same variables and gradients (it makes
/// new tensors for each operation of each variable: a few steps suffice).
fn time_candle_adamw(
    candle: &CandleCase,
    params: candle_nn::ParamsAdamW,
    reps: usize,
) -> Result<f64, String> {
    use candle_nn::Optimizer as _;
    let vars = candle.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = candle_nn::AdamW::new(vars, params).map_err(|e| e.to_string())?;
    opt.step(&candle.grads).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        opt.step(&candle.grads).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn copy_bandwidth(reps: usize, scale: f64) -> f64 {
    // 512 MiB per buffer, as torch_step_bench.py
    let n = (((1usize << 27) as f64 * scale) as usize).max(1024);
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut times = Vec::new();
    for i in 0..reps + 2 {
        let t = Instant::now();
        roofline::copy(&mut dst, &src);
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    2.0 * (n * 4) as f64 / times[times.len() / 2] / 1e9
}

/// The roofline optimizer with the memory streams of an optimizer keeping `state` bytes of
/// `f32` state per parameter and moving `traffic` bytes a step; for Lookahead
/// (`lookahead_k`), one of them is the slow weights, synchronized every k steps as the real
/// one is. An optimizer whose traffic shows a reading pass ([`Rule::MEASURES`]: LAMB,
/// NovoGrad, Prodigy) gets the roofline with one. `None` for an optimizer whose step is not
/// element-wise streams (Muon, Adafactor: whole-tensor work), which has no such limit.
fn roofline_for(
    state: f64,
    traffic: f64,
    element_wise: bool,
    lookahead_k: Option<u64>,
    infos: &[ParamInfo],
) -> Result<Option<Box<dyn Optimizer<f32>>>, String> {
    if !element_wise {
        return Ok(None);
    }
    let slow = if lookahead_k.is_some() { 1.0 } else { 0.0 };
    let rule = Roofline {
        buffers: (state / 4.0 - slow).round() as usize,
        lr: 1e-6,
    };
    let words = |x: f64| (x / 4.0).round() as i64;
    let one_pass = 3 + 2 * words(state);
    let extra = words(traffic) - one_pass;
    let unchecked = NonFinite::Unchecked;
    let infos = infos.to_vec();
    let two_pass = |reads: i64| -> Result<Option<Box<dyn Optimizer<f32>>>, String> {
        // The reading passes downhill's rules have: NovoGrad's (the gradient), LAMB's and
        // Prodigy's (four values); another count has no roofline kernel here.
        let opt: Box<dyn Optimizer<f32>> = match reads {
            1 => Box::new(
                RuleOptimizer::<f32, _>::new(RooflineTwoPass::<1>(rule.clone()), infos.clone())
                    .map_err(|e| e.to_string())?
                    .with_non_finite(unchecked),
            ),
            4 => Box::new(
                RuleOptimizer::<f32, _>::new(RooflineTwoPass::<4>(rule.clone()), infos.clone())
                    .map_err(|e| e.to_string())?
                    .with_non_finite(unchecked),
            ),
            _ => return Ok(None),
        };
        Ok(Some(opt))
    };
    let inner: Box<dyn Optimizer<f32>> = if lookahead_k.is_some() || extra == 0 {
        Box::new(
            RuleOptimizer::<f32, _>::new(rule.clone(), infos.clone())
                .map_err(|e| e.to_string())?
                .with_non_finite(unchecked),
        )
    } else if extra <= 2 + words(state) {
        match two_pass(extra)? {
            Some(o) => o,
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(match lookahead_k {
        Some(k) => Box::new(
            Lookahead::new(inner, LookaheadConfig { k, alpha: 0.5 }).map_err(|e| e.to_string())?,
        ),
        None => inner,
    }))
}

/// Whether this process is one of the ranks of `--ranks`.
fn is_rank() -> bool {
    #[cfg(feature = "mpi")]
    return crate::ranks::is_rank();
    #[cfg(not(feature = "mpi"))]
    false
}

pub fn run(args: &Args) -> Result<(), String> {
    let catalogue = catalogue();
    if args.list {
        for (label, name, options) in &catalogue {
            println!("{label:<16} {name} {options}");
        }
        return Ok(());
    }
    let chosen: Vec<_> = if args.optimizers.is_empty() {
        catalogue
    } else {
        args.optimizers
            .iter()
            .map(|o| {
                catalogue
                    .iter()
                    .find(|(label, ..)| label == o)
                    .cloned()
                    .ok_or_else(|| format!("unknown optimizer '{o}' (see `downhill bench --list`)"))
            })
            .collect::<Result<_, _>>()?
    };
    if !(args.scale > 0.0 && args.scale <= 1.0) {
        return Err(format!("--scale must be in (0, 1], got {}", args.scale));
    }
    for c in &args.cases {
        case_shapes(c, args.scale).ok_or_else(|| format!("unknown case '{c}' (large, small)"))?;
    }
    if args.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    for p in &args.state_precision {
        p.parse::<StatePrecision>().map_err(|e| e.to_string())?;
    }
    if args.device == "cuda" && args.state_precision.iter().any(|p| p != "f32") {
        return Err("--state-precision bf16/8bit: the GPU kernels keep f32 state for now".into());
    }
    let non_finite = match args.non_finite.as_str() {
        "refuse" => NonFinite::Refuse,
        "unchecked" => NonFinite::Unchecked,
        other => {
            return Err(format!(
                "--non-finite: expected refuse or unchecked, got '{other}'"
            ))
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match args.ranks {
        Some(n) if is_rank() => (cores / n.max(1)).max(1),
        _ => args.threads.unwrap_or(cores),
    };
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(n) = args.ranks {
        if args.device == "cuda" || args.adapter {
            return Err("--ranks times the CPU step alone (no --device cuda, no --adapter)".into());
        }
        #[cfg(feature = "mpi")]
        return pool.install(|| ranks::run(args, &chosen, non_finite, n));
        #[cfg(not(feature = "mpi"))]
        return crate::ranks::start(n).map(|_| ());
    }
    if args.device == "cuda" {
        return cuda::run(args, &chosen, non_finite);
    }
    if !args.tuning.is_empty() {
        return Err("--tuning is for --device cuda".into());
    }
    pool.install(|| measure(args, &chosen, non_finite, threads))
}

fn measure(
    args: &Args,
    chosen: &[(&str, &str, Value)],
    non_finite: NonFinite,
    threads: usize,
) -> Result<(), String> {
    let copy = copy_bandwidth(args.reps.max(5), args.scale);
    if !args.json {
        println!(
            "downhill bench: {threads} threads, SIMD {}, f32",
            kernel::simd_level()
        );
        println!("copy (read+write, 2^27 f32): {copy:.1} GB/s");
        println!(
            "{:<20} {:<6} {:>10} {:>12} {:>9} {:>12} {:>9} {:>11} {:>7}",
            "optimizer",
            "case",
            "median ms",
            "Mparams/s",
            "GB/s",
            "roofline GB/s",
            "% roof",
            "state B/par",
            "vs f32"
        );
    }
    let mut results = Vec::new();
    let mut adapter_rows = Vec::new();
    for case in &args.cases {
        let shapes = case_shapes(case, args.scale).ok_or("unknown case")?;
        let mut tensors = Tensors::new(&shapes);
        // Muon takes matrices only: it is timed on the case's 2-D tensors (as PyTorch's Muon
        // in `bench/torch_muon_bench.py`).
        let mut matrices: Option<Tensors> = None;
        for (label, name, options) in chosen {
            let setup = Setup {
                non_finite,
                ..Setup::default()
            };
            let tensors = if *name == "muon" {
                matrices.get_or_insert_with(|| {
                    let only: Vec<Vec<usize>> =
                        shapes.iter().filter(|s| s.len() == 2).cloned().collect();
                    Tensors::new(&only)
                })
            } else {
                &mut tensors
            };
            let n = tensors.len() as f64;
            // The optimizer in each asked-for state precision (a rule that cannot keep its
            // state in fewer bits is left out there), then its roofline: all timed in one
            // interleaved loop, so that their ratios see the same machine.
            let mut runs: Vec<(&str, Box<dyn Optimizer<f32>>)> = Vec::new();
            for precision in &args.state_precision {
                let mut options = options.clone();
                if precision != "f32" {
                    options["state_precision"] = json!(precision);
                }
                match registry::build::<f32>(name, &options, tensors.infos.clone(), &setup) {
                    Ok(opt) => runs.push((precision.as_str(), opt)),
                    Err(downhill::Error::Options { .. }) if precision != "f32" => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let Some((_, first)) = runs.first() else {
                continue;
            };
            let element_wise = first.element_wise();
            // The roofline moves the f32-state step's streams (whatever the precisions asked).
            let f32_opt = registry::build::<f32>(name, options, tensors.infos.clone(), &setup)
                .map_err(|e| e.to_string())?;
            let (f32_traffic, f32_state) =
                (f32_opt.traffic_per_param(), f32_opt.state_bytes_per_param());
            drop(f32_opt);
            let lookahead_k = (*name == "lookahead").then(|| {
                options["k"]
                    .as_u64()
                    .unwrap_or(LookaheadConfig::default().k)
            });
            let roof = roofline_for(
                f32_state,
                f32_traffic,
                element_wise,
                lookahead_k,
                &tensors.infos,
            )?;
            let (precisions, mut timed): (Vec<&str>, Vec<Box<dyn Optimizer<f32>>>) =
                runs.into_iter().unzip();
            let has_roof = roof.is_some();
            timed.extend(roof);
            let secs = tensors.time_interleaved(&mut timed, args.warmup, args.reps)?;
            // The bandwidth the roofline kernel reached, counting the f32 step's bytes: the
            // limit of any step of these streams, whatever the bytes it must move.
            let roof_gbs = has_roof.then(|| f32_traffic * n / secs[precisions.len()] / 1e9);
            let f32_secs = precisions.iter().position(|p| *p == "f32").map(|i| secs[i]);
            for ((precision, opt), &secs) in precisions.iter().zip(&timed).zip(&secs) {
                let low = *precision != "f32";
                let traffic = opt.traffic_per_param();
                let state = opt.state_bytes_per_param();
                let gbs = traffic * n / secs / 1e9;
                let percent = roof_gbs.map(|r| 100.0 * gbs / r);
                let over_f32 = f32_secs.filter(|_| low).map(|f| f / secs);
                let row = json!({
                    "optimizer": label,
                    "state_precision": precision,
                    "case": case,
                    "params": n,
                    "median_ms": secs * 1e3,
                    "params_per_s": n / secs,
                    "gb_per_s": gbs,
                    "roofline_gb_per_s": roof_gbs,
                    "percent_of_roofline": percent,
                    "speedup_over_f32_state": over_f32,
                    "bytes_per_param": traffic,
                    "state_bytes_per_param": state,
                });
                if !args.json {
                    let or_dash = |x: Option<f64>, w: usize, suffix: &str| match x {
                        Some(v) => format!("{v:>w$.1}{suffix}"),
                        None => format!("{:>w$}{}", "-", " ".repeat(suffix.len())),
                    };
                    let shown = if low {
                        format!("{label}/{precision}")
                    } else {
                        label.to_string()
                    };
                    let speedup = match over_f32 {
                        Some(x) => format!("{x:>6.2}x"),
                        None => format!("{:>7}", "-"),
                    };
                    println!(
                        "{:<20} {:<6} {:>10.2} {:>12.0} {:>9.1} {} {} {:>11.3} {}",
                        shown,
                        case,
                        secs * 1e3,
                        n / secs / 1e6,
                        gbs,
                        or_dash(roof_gbs, 12, ""),
                        or_dash(percent, 8, "%"),
                        state,
                        speedup
                    );
                }
                results.push(row);
            }
        }
        if args.adapter {
            let candle = CandleCase::new(&tensors)?;
            for (label, name, options) in chosen {
                let setup = Setup {
                    non_finite,
                    ..Setup::default()
                };
                let (core, adapter) = time_adapter(
                    &mut tensors,
                    &candle,
                    name,
                    options,
                    &setup,
                    args.warmup,
                    args.reps,
                )?;
                let mut row = json!({
                    "optimizer": label,
                    "case": case,
                    "tensors": shapes.len(),
                    "core_median_ms": core * 1e3,
                    "adapter_median_ms": adapter * 1e3,
                    "ratio": adapter / core,
                });
                if *name == "adamw" {
                    if let Some(p) = candle_adamw_params(options) {
                        let secs = time_candle_adamw(&candle, p, args.reps.min(5))?;
                        row["candle_adamw_median_ms"] = json!(secs * 1e3);
                        row["adapter_speedup_over_candle_adamw"] = json!(secs / adapter);
                    }
                }
                adapter_rows.push(row);
            }
        }
    }
    if args.adapter && !args.json {
        println!();
        println!("candle adapter (DownhillOptimizer::step over candle Vars) against the core's step, interleaved:");
        println!(
            "{:<16} {:<6} {:>8} {:>14} {:>17} {:>7}",
            "optimizer", "case", "tensors", "core median ms", "adapter median ms", "ratio"
        );
        for r in &adapter_rows {
            println!(
                "{:<16} {:<6} {:>8} {:>14.2} {:>17.2} {:>6.2}x",
                r["optimizer"].as_str().unwrap_or(""),
                r["case"].as_str().unwrap_or(""),
                r["tensors"].as_u64().unwrap_or(0),
                r["core_median_ms"].as_f64().unwrap_or(f64::NAN),
                r["adapter_median_ms"].as_f64().unwrap_or(f64::NAN),
                r["ratio"].as_f64().unwrap_or(f64::NAN),
            );
        }
        let candle_rows: Vec<&Value> = adapter_rows
            .iter()
            .filter(|r| r.get("candle_adamw_median_ms").is_some())
            .collect();
        if !candle_rows.is_empty() {
            println!();
            println!("candle's own AdamW (candle_nn::AdamW::step) on the same Vars, same hyperparameters:");
            println!(
                "{:<16} {:<6} {:>18} {:>17} {:>8}",
                "optimizer", "case", "candle AdamW ms", "adapter median ms", "speedup"
            );
            for r in candle_rows {
                println!(
                    "{:<16} {:<6} {:>18.2} {:>17.2} {:>7.1}x",
                    r["optimizer"].as_str().unwrap_or(""),
                    r["case"].as_str().unwrap_or(""),
                    r["candle_adamw_median_ms"].as_f64().unwrap_or(f64::NAN),
                    r["adapter_median_ms"].as_f64().unwrap_or(f64::NAN),
                    r["adapter_speedup_over_candle_adamw"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                );
            }
        }
    }
    if args.json {
        let mut out = json!({
            "copy_gb_per_s": copy,
            "threads": threads,
            "simd": kernel::simd_level(),
            "non_finite": args.non_finite,
            "results": results,
        });
        if args.adapter {
            out["adapter"] = Value::from(adapter_rows);
        }
        println!("{out}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_adamw_takes_pytorch_names_and_nothing_it_lacks() {
        let p = candle_adamw_params(&json!({})).unwrap();
        assert_eq!(
            (p.lr, p.beta1, p.beta2, p.eps, p.weight_decay),
            (1e-3, 0.9, 0.999, 1e-8, 1e-2)
        );
        let p = candle_adamw_params(
            &json!({"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.0}),
        )
        .unwrap();
        assert_eq!(
            (p.lr, p.beta1, p.beta2, p.eps, p.weight_decay),
            (0.01, 0.8, 0.99, 1e-6, 0.0)
        );
        // Options candle's AdamW does not have make the comparison meaningless: none.
        assert!(candle_adamw_params(&json!({"amsgrad": true})).is_none());
        assert!(candle_adamw_params(&json!({"betas": [0.9]})).is_none());
        assert!(candle_adamw_params(&json!({"lr": "fast"})).is_none());
    }
}
