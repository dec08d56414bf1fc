//! `downhill compare`: train one model with a list of optimizers, from the same initial
//! weights and the same data order, and report how they differ.

mod claims;
mod config;
mod linear;
mod plot;
mod record;
mod report;
mod train;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) use config::catalogue;
pub use config::{apply_set, select, Args, CompareConfig, Entry, NoiseArgs, Standardize};
use record::{EpochRecord, RunFailure};
pub use report::ReportError;
pub(crate) use report::{escape, write_atomic, write_drawn};
pub use train::{Activation, BatchMode, ModelSpec};
use train::{Data, Plan};

/// Errors that end a comparison: bad configuration, missing data, a file that cannot be
/// written. A diverging optimizer is not one: it is reported as a failed run.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The options or the TOML file do not make a valid comparison.
    #[error("{0}")]
    Config(String),
    /// The dataset could not be loaded.
    #[error(transparent)]
    Data(#[from] downhill_data::DataError),
    /// Writing the run directory failed.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Writing the report failed.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// candle failed outside any one optimizer's run (building tensors).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Run `downhill compare`.
pub fn run(args: &Args) -> Result<(), CompareError> {
    let config = CompareConfig::from_args(args)?;
    if args.print_config {
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    let ranks = match args.ranks {
        None => None,
        Some(n) => {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            let threads = config.threads.unwrap_or((cores / n.max(1)).max(1));
            let env = [("RAYON_NUM_THREADS", threads.to_string())];
            match crate::ranks::start_ranks(n, &env).map_err(CompareError::Config)? {
                crate::ranks::Ranks::Launched(code) => {
                    return if code == std::process::ExitCode::SUCCESS {
                        Ok(())
                    } else {
                        Err(CompareError::Config("a rank failed (see above)".into()))
                    };
                }
                #[cfg(feature = "mpi")]
                crate::ranks::Ranks::Rank(comm) => Some(comm),
            }
        }
    };
    let pool = thread_pool(config.threads)?;
    pool.install(|| compare(args, &config, ranks.as_ref()))
}

/// One pool of `threads` workers (default: one per core) for candle's matrix products and
/// downhill's kernels alike, with the comparison itself running on one of them.
///
/// candle reads its thread counts from the environment on every product, and by default
/// also starts a second pool of its own for element-wise ops, whose workers spin between
/// ops; on a machine with few cores that pool takes cycles from the products and the
/// optimizer step (`CANDLE_NUM_THREADS=1` made an epoch on Fashion-MNIST 1.4x faster on 2
/// cores). Variables the user has set are left as they are.
fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, CompareError> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    for (name, value) in [
        ("RAYON_NUM_THREADS", threads.to_string()),
        ("CANDLE_NUM_THREADS", "1".to_string()),
    ] {
        if std::env::var_os(name).is_none() {
            // No other thread has been started yet, so nothing reads the environment
            // while it changes.
            std::env::set_var(name, value);
        }
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CompareError::Config(format!("threads: {e}")))
}

/// The comparison proper, on the pool's threads.
fn compare(
    args: &Args,
    config: &CompareConfig,
    ranks: Option<&train::dist::Comm>,
) -> Result<(), CompareError> {
    let (rank, size) = train::dist::place(ranks);
    // Rank 0 reports and writes; the others train and stay quiet.
    let lead = rank == 0;
    let mut split = downhill_data::by_name(&config.dataset, config.data_dir.as_deref(), 0)?;
    config.standardize.apply(&mut split);
    let (train_data, test_data) = (Data::new(&split.train)?, Data::new(&split.test)?);
    let out = if lead {
        output_dir(args.out.as_deref(), &config.dataset)?
    } else {
        PathBuf::new()
    };
    let title = format!(
        "{} · {} · batch {} · {} epochs{} · seed{} {}{}",
        config.dataset,
        config
            .model
            .describe(split.train.features, split.train.classes),
        config.batch,
        config.epochs,
        if config.shuffle { "" } else { " · no shuffle" },
        if config.seeds.len() > 1 { "s" } else { "" },
        config
            .seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
        if size > 1 {
            format!(" · data-parallel over {size} ranks, optimizer state sharded (state: rank 0's)")
        } else {
            String::new()
        },
    );
    let quiet = args.quiet || !lead || !std::io::stderr().is_terminal();
    if !args.quiet && lead {
        eprintln!(
            "{title}\n{} training / {} test examples; writing to {}",
            split.train.len(),
            split.test.len(),
            out.display()
        );
    }
    let bars = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template(
        "{prefix:>16} {bar:30.cyan/blue} {pos:>6}/{len:6} updates  {msg}",
    )
    .map_err(|e| CompareError::Config(e.to_string()))?
    .progress_chars("=> ");
    let updates_per_epoch = split
        .train
        .len()
        .div_ceil(config.batch.size(split.train.len()));

    let mut records: Vec<EpochRecord> = Vec::new();
    let mut failures: Vec<RunFailure> = Vec::new();
    let mut details = Vec::new();
    let started = Instant::now();
    for &seed in &config.seeds {
        let plan = Plan {
            batch: config.batch,
            epochs: config.epochs,
            shuffle: config.shuffle,
            seed,
            early_updates: claims::EARLY_UPDATES,
        };
        for entry in &config.optimizers {
            let bar = bars.add(ProgressBar::new(
                config.epochs.saturating_mul(updates_per_epoch) as u64,
            ));
            bar.set_style(style.clone());
            bar.set_prefix(if config.seeds.len() > 1 {
                format!("{} s{seed}", entry.label)
            } else {
                entry.label.clone()
            });
            let setup = entry.setup(config, seed)?;
            let result = train::run(
                &entry.label,
                &config.model,
                setup,
                &train_data,
                &test_data,
                &plan,
                ranks,
                |epoch, _, loss| {
                    bar.inc(1);
                    bar.set_message(format!("epoch {epoch}  loss {loss:.4}"));
                },
            );
            let result = match result {
                Ok(r) => r,
                Err(e) => train::RunResult {
                    failure: Some((0, e.to_string())),
                    ..Default::default()
                },
            };
            if let Some((epoch, reason)) = &result.failure {
                bar.abandon_with_message(format!("stopped in epoch {epoch}: {reason}"));
                failures.push(RunFailure {
                    optimizer: entry.label.clone(),
                    seed,
                    epoch: *epoch,
                    reason: reason.clone(),
                });
            } else if let Some(last) = result.records.last() {
                bar.finish_with_message(format!(
                    "test accuracy {:.1}%  train loss {:.4}  {:.1} s",
                    100.0 * last.test_accuracy,
                    last.train_loss,
                    last.wall_time_s
                ));
            }
            records.extend(result.records.iter().cloned());
            details.push(claims::RunDetail {
                label: entry.label.clone(),
                warmup: entry.warmup.is_some() || entry.schedule.is_some(),
                seed,
                early_losses: result.early_losses,
                effective_lr: result.effective_lr,
                switches: result.switches,
            });
        }
    }
    let total = started.elapsed().as_secs_f64();
    if !lead {
        return Ok(());
    }
    let order: Vec<String> = config.optimizers.iter().map(|o| o.label.clone()).collect();
    let claims = claims::judge(&config.optimizers, &records, &details);
    let config_toml = config.to_toml()?;
    let command = "downhill compare --config config.toml".to_string();
    let report = report::Report {
        title: &title,
        order: &order,
        records: &records,
        failures: &failures,
        claims: &claims,
        config_toml: &config_toml,
        command: &command,
    };
    let mut written = report::write_all(&out, &report)?;
    let early = out.join("early_updates.csv");
    let early_bytes = claims::early_csv(&details).map_err(|source| report::ReportError::Csv {
        path: early.clone(),
        source,
    })?;
    for (path, bytes) in [
        (out.join("config.toml"), config_toml.into_bytes()),
        (early, early_bytes),
    ] {
        report::write_atomic(&path, &bytes)?;
        written.push(path);
    }

    println!("{title}\n");
    println!(
        "{}",
        report::summary_table(&report::summarize(&records, &order))
    );
    for f in &failures {
        println!(
            "{} (seed {}) stopped in epoch {}: {}",
            f.optimizer, f.seed, f.epoch, f.reason
        );
    }
    println!("Does this run bear out the lecture?");
    for c in &claims {
        let mark = match c.holds {
            Some(true) => "yes",
            Some(false) => "no ",
            None => "n/a",
        };
        println!("  [{mark}] {}\n        {}", c.claim, c.evidence);
    }
    println!(
        "\n{} runs in {total:.1} s; report: {}",
        config.seeds.len() * config.optimizers.len(),
        out.join("report.html").display()
    );
    if !args.quiet {
        eprintln!("wrote {} files", written.len());
    }
    Ok(())
}

/// `dir` if given (created if missing), else the first free `runs/<dataset>-<n>`.
fn output_dir(dir: Option<&Path>, dataset: &str) -> Result<PathBuf, CompareError> {
    let path = match dir {
        Some(d) => d.to_path_buf(),
        None => (1..)
            .map(|n| PathBuf::from("runs").join(format!("{dataset}-{n}")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| PathBuf::from("runs").join(dataset)),
    };
    std::fs::create_dir_all(&path).map_err(|e| CompareError::Io {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(path)
}
