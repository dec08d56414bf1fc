//! `downhill bench --ranks N`: the step with its state sharded over N MPI ranks, split into
//! its parts (reduce-scatter, the shard's step, all-gather), with the bytes each rank sends
//! and the state each rank keeps, beside the single-process step timed first by the process
//! that starts the ranks (with every core, as `bench` does).

use std::time::Instant;

use downhill::registry::{self, GroupSpec, Setup};
use downhill::{NonFinite, Optimizer};
use serde_json::{json, Map, Value};

use super::{case_shapes, Args, Tensors};
use crate::ranks::{self, Ranks};

/// Where the launching process hands its single-process timings to the ranks.
const BASELINE: &str = "DOWNHILL_BENCH_SINGLE_PROCESS";

fn key(label: &str, case: &str, precision: &str) -> String {
    format!("{label}/{case}/{precision}")
}

/// The runs: (label, name, options with the precision, precision) per asked precision.
fn runs<'a>(
    chosen: &'a [(&'a str, &'a str, Value)],
    args: &'a Args,
) -> impl Iterator<Item = (&'a str, &'a str, Value, &'a str)> + 'a {
    chosen.iter().flat_map(move |(label, name, options)| {
        args.state_precision.iter().map(move |p| {
            let mut o = options.clone();
            if p != "f32" {
                o["state_precision"] = json!(p);
            }
            (*label, *name, o, p.as_str())
        })
    })
}

/// Time each optimizer's single-process step (all cores), then start the ranks.
pub(super) fn run(
    args: &Args,
    chosen: &[(&str, &str, Value)],
    non_finite: NonFinite,
    ranks: usize,
) -> Result<(), String> {
    if ranks::is_rank() {
        return rank(args, chosen, non_finite, ranks);
    }
    let setup = Setup {
        non_finite,
        ..Setup::default()
    };
    let mut single = Map::new();
    for case in &args.cases {
        let mut tensors = Tensors::new(&case_shapes(case, args.scale).ok_or("unknown case")?);
        for (label, name, options, precision) in runs(chosen, args) {
            let Ok(opt) = registry::build::<f32>(name, &options, tensors.infos.clone(), &setup)
            else {
                continue;
            };
            let state = opt.state_bytes_per_param();
            let secs = tensors.time_interleaved(&mut [opt], args.warmup, args.reps)?;
            single.insert(
                key(label, case, precision),
                json!({"median_ms": secs[0] * 1e3, "state_bytes_per_param": state}),
            );
        }
    }
    let env = [(BASELINE, Value::Object(single).to_string())];
    match ranks::start_with(ranks, &env)? {
        Ranks::Launched(code) if code == std::process::ExitCode::SUCCESS => Ok(()),
        Ranks::Launched(_) => Err("a rank failed (see above)".into()),
        Ranks::Rank(_) => Err("unreachable: the launching process is no rank".into()),
    }
}

/// One rank: every optimizer, sharded; rank 0 gathers the ranks' figures and reports.
fn rank(
    args: &Args,
    chosen: &[(&str, &str, Value)],
    non_finite: NonFinite,
    ranks: usize,
) -> Result<(), String> {
    let Ranks::Rank(comm) = ranks::start(ranks)? else {
        return Err("expected to be a rank".into());
    };
    let single: Map<String, Value> = std::env::var(BASELINE)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let me = comm.rank();
    let threads = rayon::current_num_threads();
    if me == 0 && !args.json {
        println!(
            "downhill bench --ranks {ranks}: {ranks} MPI ranks of {threads} threads; the \
             single-process step with {} threads",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!(
            "{:<20} {:<6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>10} {:>9} {:>9}",
            "optimizer",
            "case",
            "step ms",
            "r-s ms",
            "shard ms",
            "a-g ms",
            "MB sent",
            "state MB",
            "state B/p",
            "1-proc ms",
            "overhead"
        );
    }
    let setup = Setup {
        non_finite,
        ..Setup::default()
    };
    let mut rows = Vec::new();
    for case in &args.cases {
        let mut tensors = Tensors::new(&case_shapes(case, args.scale).ok_or("unknown case")?);
        let n = tensors.len() as f64;
        for (label, name, options, precision) in runs(chosen, args) {
            let groups = vec![GroupSpec {
                options: json!({}),
                params: tensors.infos.clone(),
            }];
            let built = downhill_dist::ShardedOptimizer::<f32>::new(
                name,
                &options,
                groups,
                &setup,
                comm.clone(),
            );
            let mut opt = match built {
                Ok(o) => o,
                // Not shardable yet, or no such precision for this rule: every rank agrees.
                Err(e) => {
                    if me == 0 && !args.json {
                        println!("{label:<20} {case:<6} not timed: {e}");
                    }
                    continue;
                }
            };
            let gs: Vec<&[f32]> = tensors.grads.iter().map(|g| &g[..]).collect();
            let mut step = |opt: &mut downhill_dist::ShardedOptimizer<f32>| {
                let mut ps: Vec<&mut [f32]> =
                    tensors.params.iter_mut().map(|p| &mut p[..]).collect();
                opt.step(&mut ps, &gs).map_err(|e| e.to_string())
            };
            for _ in 0..args.warmup {
                step(&mut opt)?;
            }
            let (t0, sent0) = (opt.times(), comm.bytes_sent());
            let mut secs = Vec::with_capacity(args.reps);
            for _ in 0..args.reps {
                let t = Instant::now();
                step(&mut opt)?;
                secs.push(t.elapsed().as_secs_f64());
            }
            secs.sort_by(f64::total_cmp);
            let t1 = opt.times();
            let reps = args.reps as f64;
            let mine = json!({
                "median_ms": secs[secs.len() / 2] * 1e3,
                "reduce_scatter_ms": (t1.reduce_scatter - t0.reduce_scatter).as_secs_f64() * 1e3 / reps,
                "shard_step_ms": (t1.shard_step - t0.shard_step).as_secs_f64() * 1e3 / reps,
                "all_gather_ms": (t1.all_gather - t0.all_gather).as_secs_f64() * 1e3 / reps,
                "bytes_sent": (comm.bytes_sent() - sent0) as f64 / reps,
                "state_bytes": opt.state_bytes(),
            });
            let all = comm
                .all_gather_bytes(mine.to_string().as_bytes())
                .map_err(|e| e.to_string())?;
            if me != 0 {
                continue;
            }
            let per_rank: Vec<Value> = all
                .iter()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .collect();
            let max = |k: &str| {
                per_rank
                    .iter()
                    .filter_map(|r| r[k].as_f64())
                    .fold(0.0f64, f64::max)
            };
            let base = &single.get(&key(label, case, precision));
            let base_ms = base.and_then(|b| b["median_ms"].as_f64());
            let step_ms = max("median_ms");
            let state = max("state_bytes");
            let shown = if precision == "f32" {
                label.to_string()
            } else {
                format!("{label}/{precision}")
            };
            let row = json!({
                "optimizer": label,
                "state_precision": precision,
                "case": case,
                "params": n,
                "ranks": ranks,
                "threads_per_rank": threads,
                "median_ms": step_ms,
                "reduce_scatter_ms": max("reduce_scatter_ms"),
                "shard_step_ms": max("shard_step_ms"),
                "all_gather_ms": max("all_gather_ms"),
                "bytes_sent_per_rank": max("bytes_sent"),
                "state_bytes_per_rank": state,
                "state_bytes_per_param_per_rank": state / n,
                "single_process_state_bytes_per_param": base.and_then(|b| b["state_bytes_per_param"].as_f64()),
                "single_process_median_ms": base_ms,
                "overhead": base_ms.map(|b| step_ms / b),
                "per_rank": per_rank,
            });
            if !args.json {
                let dash = |x: Option<f64>, w: usize, f: &dyn Fn(f64) -> String| {
                    x.map_or(format!("{:>w$}", "-"), |v| format!("{:>w$}", f(v)))
                };
                println!(
                    "{:<20} {:<6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>11.1} {:>10.3} {} {}",
                    shown,
                    case,
                    step_ms,
                    row["reduce_scatter_ms"].as_f64().unwrap_or(0.0),
                    row["shard_step_ms"].as_f64().unwrap_or(0.0),
                    row["all_gather_ms"].as_f64().unwrap_or(0.0),
                    max("bytes_sent") / 1e6,
                    state / 1e6,
                    state / n,
                    dash(base_ms, 9, &|v| format!("{v:.2}")),
                    dash(base_ms.map(|b| step_ms / b), 9, &|v| format!("{v:.2}x")),
                );
            }
            rows.push(row);
        }
    }
    if me == 0 && args.json {
        println!("{}", json!({"ranks": ranks, "results": rows}));
    }
    Ok(())
}
