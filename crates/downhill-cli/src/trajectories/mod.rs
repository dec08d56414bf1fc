//! `downhill trajectories`: the paths of a list of optimizers, from one starting point, over
//! the 2-D test functions of [`downhill::test_functions`], drawn over each function's contour
//! plot (PNG and SVG), animated step by step in a self-contained HTML page, and summed up in
//! a table of steps taken and final distance to the nearest minimum.

mod html;
mod plot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use downhill::registry::{self, Setup};
use downhill::test_functions::{walk, TestFunction, Walk, WalkEnd};
use downhill::{GradientNoise, ParamInfo};
use serde_json::{json, Value};

use crate::compare::{
    apply_set, catalogue, select, write_atomic, write_drawn, Entry, NoiseArgs, ReportError,
};

/// Options of `downhill trajectories`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Test functions, comma-separated: rosenbrock, beale, himmelblau, saddle,
    /// ill-conditioned, rastrigin (default: all)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub functions: Vec<String>,
    /// Optimizers by label, as for `compare` (default: the lecture's eleven)
    #[arg(long, value_delimiter = ',', value_name = "LABELS")]
    pub optimizers: Vec<String>,
    /// Set a hyperparameter of one optimizer, as for `compare`: `adam.lr=0.05`,
    /// `sgd-momentum.momentum=0.95`. A learning rate set here replaces the per-function
    /// defaults. Repeatable
    #[arg(long = "set", value_name = "LABEL.KEY=VALUE")]
    pub set: Vec<String>,
    /// Starting point `X,Y` for every function (default: each function's own)
    #[arg(long, value_name = "X,Y", allow_hyphen_values = true)]
    pub start: Option<String>,
    /// Steps at most
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// A path stops once this close to a minimum
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Learning-rate schedule for every optimizer, as JSON: `{"kind": "cosine", "t_max": 300}`
    #[arg(long, value_name = "JSON")]
    pub schedule: Option<String>,
    #[command(flatten)]
    pub noise: NoiseArgs,
    /// Seed of the gradient noise
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (default: the first free `runs/trajectories-<n>`)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print only the table
    #[arg(short, long)]
    pub quiet: bool,
}

/// Why `downhill trajectories` could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrajectoriesError {
    /// The options do not describe a valid run.
    #[error("{0}")]
    Config(String),
    /// A directory could not be made.
    #[error("{path}: {message}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file could not be written or drawn.
    #[error(transparent)]
    Write(#[from] ReportError),
}

fn config_err(msg: impl Into<String>) -> TrajectoriesError {
    TrajectoriesError::Config(msg.into())
}

/// The lecture's optimizers for this command: `compare`'s twelve without SGDW, whose
/// decoupled decay pulls every path towards the origin.
const DEFAULT_LABELS: [&str; 11] = [
    "sgd",
    "sgd-momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "nadam",
    "radam",
    "swats",
    "lookahead-adam",
];

/// Which default learning rate an optimizer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// SGD, with or without momentum: the step is the gradient's size.
    Sgd,
    /// Adagrad: the first step is `lr` per coordinate, later ones shrink.
    Adagrad,
    /// RMSProp and the Adam family: about `lr` per coordinate per step.
    Adaptive,
    /// RAdam: its first steps (while the variance estimate is unreliable) are momentum steps
    /// of the raw gradient, so where gradients are large it needs an SGD-sized rate.
    Rectified,
}

fn family(optimizer: &str, options: &Value) -> Option<Family> {
    match optimizer {
        "sgd" | "sgdw" => Some(Family::Sgd),
        "adagrad" => Some(Family::Adagrad),
        "adadelta" => None,
        "radam" => Some(Family::Rectified),
        "lookahead" => {
            let inner = options.pointer("/inner/optimizer")?.as_str()?;
            family(inner, &Value::Null)
        }
        _ => Some(Family::Adaptive),
    }
}

/// The default learning rate of `family` on `f`: large enough that the default picture shows
/// each method's character within a few hundred steps, small enough that plain SGD does not
/// diverge from the function's start.
fn default_lr(f: TestFunction, family: Family) -> f64 {
    use TestFunction as T;
    match (f, family) {
        (T::Rosenbrock, Family::Sgd) => 1e-3,
        (T::Beale, Family::Sgd) => 5e-3,
        (T::Himmelblau, Family::Sgd) => 5e-3,
        (T::Saddle, Family::Sgd) => 0.02,
        (T::IllConditioned, Family::Sgd) => 0.02,
        (T::Rastrigin, Family::Sgd) => 2e-3,
        (T::Rastrigin, Family::Adagrad) => 0.5,
        (_, Family::Adagrad) => 0.3,
        (_, Family::Adaptive) => 0.05,
        (T::Rosenbrock | T::Rastrigin, Family::Rectified) => 2e-3,
        (T::Beale, Family::Rectified) => 5e-3,
        (_, Family::Rectified) => 0.05,
    }
}

/// The options of `entry` on `f`: its own, with the function's default learning rate unless
/// one was set on the command line (`lr_set`).
fn options_on(entry: &Entry, f: TestFunction, lr_set: bool) -> Value {
    let mut options = entry.options.clone();
    if lr_set {
        return options;
    }
    if let Some(fam) = family(&entry.optimizer, &options) {
        let lr = json!(default_lr(f, fam));
        let target = if entry.optimizer == "lookahead" {
            options.pointer_mut("/inner")
        } else {
            Some(&mut options)
        };
        if let Some(Value::Object(map)) = target {
            map.insert("lr".into(), lr);
        }
    }
    options
}

/// One optimizer's walk over one function.
pub(crate) struct Trace {
    pub label: String,
    pub lr: Option<f64>,
    pub walk: Result<Walk, String>,
}

/// Everything drawn for one function.
pub(crate) struct Figure {
    pub function: TestFunction,
    pub start: [f64; 2],
    pub traces: Vec<Trace>,
}

fn parse_start(text: &str) -> Result<[f64; 2], TrajectoriesError> {
    let bad = || config_err(format!("--start '{text}': expected X,Y"));
    let (x, y) = text.split_once(',').ok_or_else(bad)?;
    let x: f64 = x.trim().parse().map_err(|_| bad())?;
    let y: f64 = y.trim().parse().map_err(|_| bad())?;
    if !(x.is_finite() && y.is_finite()) {
        return Err(bad());
    }
    Ok([x, y])
}

/// Run `downhill trajectories`.
pub fn run(args: &Args) -> Result<(), TrajectoriesError> {
    let functions: Vec<TestFunction> = if args.functions.is_empty() {
        TestFunction::ALL.to_vec()
    } else {
        args.functions
            .iter()
            .map(|n| {
                TestFunction::from_name(n.trim()).ok_or_else(|| {
                    let known: Vec<&str> = TestFunction::ALL.iter().map(|f| f.name()).collect();
                    config_err(format!(
                        "unknown function '{n}'; known: {}",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let labels: Vec<String> = if args.optimizers.is_empty() {
        DEFAULT_LABELS.iter().map(|s| s.to_string()).collect()
    } else {
        args.optimizers.clone()
    };
    let defaults: Vec<Entry> = catalogue()
        .into_iter()
        .filter(|e| DEFAULT_LABELS.contains(&e.label.as_str()))
        .collect();
    let mut entries = select(&labels, &defaults).map_err(|e| config_err(e.to_string()))?;
    if entries.is_empty() {
        return Err(config_err("no optimizers given"));
    }
    for s in &args.set {
        apply_set(&mut entries, s).map_err(|e| config_err(e.to_string()))?;
    }
    // Which entries had their learning rate set by hand.
    let lr_set: Vec<bool> = entries
        .iter()
        .map(|e| {
            args.set.iter().any(|s| {
                let key = s.split('=').next().unwrap_or("");
                key == format!("{}.lr", e.label) || key == format!("{}.inner.lr", e.label)
            })
        })
        .collect();
    if args.steps == 0 {
        return Err(config_err("--steps must be at least 1"));
    }
    if !(args.tolerance > 0.0 && args.tolerance.is_finite()) {
        return Err(config_err("--tolerance must be positive"));
    }
    let start = args.start.as_deref().map(parse_start).transpose()?;
    let schedule = args
        .schedule
        .as_deref()
        .map(|text| {
            let v: Value =
                serde_json::from_str(text).map_err(|e| config_err(format!("--schedule: {e}")))?;
            downhill::schedule::from_json(&v).map_err(|e| config_err(format!("--schedule: {e}")))
        })
        .transpose()?;
    let noise = args.noise.over(None).map(|n| GradientNoise {
        seed: args.seed,
        ..n
    });
    if let Some(n) = noise {
        n.validate().map_err(|e| config_err(e.to_string()))?;
    }
    let setup = Setup {
        schedule: schedule.map(|s| -> Arc<dyn downhill::schedule::Schedule> { s }),
        noise,
        ..Setup::default()
    };
    // Every optimizer must build, on every function, before anything is drawn.
    let mut figures = Vec::new();
    for &f in &functions {
        let start = start.unwrap_or_else(|| f.start());
        let mut traces = Vec::new();
        for (entry, &lr_set) in entries.iter().zip(&lr_set) {
            let options = options_on(entry, f, lr_set);
            // The point as a 1×2 matrix: the same steps for element-wise rules, and one that
            // Muon (matrices only) takes — its orthogonalized momentum is then the momentum's
            // direction, normalized.
            let params = vec![ParamInfo::new("xy", [1, 2])];
            let mut opt = registry::build::<f64>(&entry.optimizer, &options, params, &setup)
                .map_err(|e| config_err(format!("{}: {e}", entry.label)))?;
            let lr = opt.lr(0).ok();
            let walk =
                walk(f, opt.as_mut(), start, args.steps, args.tolerance).map_err(|e| e.to_string());
            traces.push(Trace {
                label: entry.label.clone(),
                lr,
                walk,
            });
        }
        figures.push(Figure {
            function: f,
            start,
            traces,
        });
    }

    let out = output_dir(args.out.as_deref())?;
    let mut written = Vec::new();
    for fig in &figures {
        let path = out.join(format!("{}.svg", fig.function.name()));
        write_atomic(
            &path,
            plot::svg(fig, true).map_err(config_err)?.svg.as_bytes(),
        )?;
        written.push(path);
        let path = out.join(format!("{}.png", fig.function.name()));
        write_drawn(&path, |temp| plot::png(fig, temp))?;
        written.push(path);
    }
    let page = html::page(&figures, args).map_err(config_err)?;
    let path = out.join("trajectories.html");
    write_atomic(&path, page.as_bytes())?;
    written.push(path);
    let path = out.join("paths.csv");
    write_atomic(&path, &paths_csv(&figures)?)?;
    written.push(path);

    println!("{}", table(&figures));
    if !args.quiet {
        eprintln!(
            "wrote {} files to {}; open {}",
            written.len(),
            out.display(),
            out.join("trajectories.html").display()
        );
    }
    Ok(())
}

/// `function,optimizer,step,x,y,f` for every point of every path.
fn paths_csv(figures: &[Figure]) -> Result<Vec<u8>, TrajectoriesError> {
    let err = |e: csv::Error| config_err(format!("paths.csv: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["function", "optimizer", "step", "x", "y", "f"])
        .map_err(err)?;
    for fig in figures {
        for t in &fig.traces {
            if let Ok(walk) = &t.walk {
                for (k, p) in walk.path.iter().enumerate() {
                    w.serialize((
                        fig.function.name(),
                        &t.label,
                        k,
                        p[0],
                        p[1],
                        fig.function.value(*p),
                    ))
                    .map_err(err)?;
                }
            }
        }
    }
    w.into_inner()
        .map_err(|e| config_err(format!("paths.csv: {}", e.error())))
}

/// The terminal table: per function and optimizer, steps taken, how the walk ended, the
/// final value and the distance to the nearest minimum.
fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<16} {:<15} {:>8} {:>6}  {:<14} {:>12} {:>12}\n",
        "function", "optimizer", "lr", "steps", "end", "final f", "to minimum"
    );
    out.push_str(&format!("{}\n", "-".repeat(91)));
    for fig in figures {
        for t in &fig.traces {
            let lr = t.lr.map_or("-".into(), |lr| format!("{lr:.3e}"));
            match &t.walk {
                Ok(w) => {
                    let last = w.last();
                    let end = match w.end {
                        WalkEnd::Reached => "reached",
                        WalkEnd::OutOfSteps => "out of steps",
                        WalkEnd::Escaped => "left the plot",
                    };
                    let dist = fig
                        .function
                        .distance_to_minimum(last)
                        .map_or("-".into(), |d| format!("{d:.3e}"));
                    out.push_str(&format!(
                        "{:<16} {:<15} {:>8} {:>6}  {:<14} {:>12.4e} {:>12}\n",
                        fig.function.name(),
                        t.label,
                        lr,
                        w.steps(),
                        end,
                        fig.function.value(last),
                        dist
                    ));
                }
                Err(e) => out.push_str(&format!(
                    "{:<16} {:<15} {:>8} stopped: {e}\n",
                    fig.function.name(),
                    t.label,
                    lr
                )),
            }
        }
    }
    out
}

/// `dir` if given (created if missing), else the first free `runs/trajectories-<n>`.
fn output_dir(dir: Option<&Path>) -> Result<PathBuf, TrajectoriesError> {
    let path = match dir {
        Some(d) => d.to_path_buf(),
        None => (1..)
            .map(|n| PathBuf::from("runs").join(format!("trajectories-{n}")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| PathBuf::from("runs").join("trajectories")),
    };
    std::fs::create_dir_all(&path).map_err(|e| TrajectoriesError::Io {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(path)
}
