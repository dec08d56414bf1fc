//! `downhill verify`: replay reference cases.

use std::path::PathBuf;
use std::process::ExitCode;

use downhill::reference;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

#[derive(clap::Args)]
pub struct Args {
    /// Directory of `*.json` cases (default: the cases bundled into the binary).
    dir: Option<PathBuf>,
    /// Print only failures, errors and the summary.
    #[arg(long, short)]
    quiet: bool,
    /// Where to replay: `cpu`, or `cuda` (the first GPU; the same thresholds).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    /// Replay every case with the optimizer state sharded over N MPI ranks (launches
    /// `mpiexec -n N` itself; needs the `mpi` feature). Rank 0 hands in each case's gradient,
    /// the others zeros, summed.
    #[arg(long, value_name = "N")]
    ranks: Option<usize>,
}

/// Where the cases are replayed.
enum On {
    Cpu,
    Gpu(downhill_cuda::reference::OnGpu),
    #[cfg(feature = "mpi")]
    Ranks(downhill_dist::reference::Sharded),
}

impl On {
    fn replay(&self, case: &reference::Case) -> Result<reference::Replay, String> {
        match self {
            On::Cpu => reference::replay(case),
            On::Gpu(on) => reference::replay_on(case, on),
            #[cfg(feature = "mpi")]
            On::Ranks(on) => reference::replay_on(case, on),
        }
    }
}

/// A case to replay: its file name and its text (or why it could not be read).
struct Source {
    file: String,
    text: Result<String, String>,
}

fn sources(args: &Args) -> Result<Vec<Source>, String> {
    let Some(dir) = &args.dir else {
        return Ok(bundled::CASES
            .iter()
            .map(|(file, text)| Source {
                file: (*file).to_string(),
                text: Ok((*text).to_string()),
            })
            .collect());
    };
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| Source {
            file: p.display().to_string(),
            text: std::fs::read_to_string(&p).map_err(|e| e.to_string()),
        })
        .collect())
}

pub fn run(args: &Args) -> ExitCode {
    // Only rank 0 of `--ranks` reports.
    let (on, show) = match args.ranks {
        Some(ranks) => match crate::ranks::start(ranks) {
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Ok(crate::ranks::Ranks::Launched(code)) => return code,
            #[cfg(feature = "mpi")]
            Ok(crate::ranks::Ranks::Rank(comm)) => {
                let show = comm.rank() == 0;
                if show {
                    println!("replaying with the optimizer state sharded over {ranks} MPI ranks");
                }
                (On::Ranks(downhill_dist::reference::Sharded { comm }), show)
            }
        },
        None if args.device == "cuda" => match downhill_cuda::Gpu::new(0) {
            Ok(g) => {
                println!("replaying on {}", g.name());
                (On::Gpu(downhill_cuda::reference::OnGpu(g)), true)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => (On::Cpu, true),
    };
    let sources = match sources(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if sources.is_empty() {
        eprintln!("error: no *.json cases found");
        return ExitCode::from(2);
    }
    let (mut passed, mut failed, mut errors, mut skipped) = (0usize, 0usize, 0usize, 0usize);
    for src in &sources {
        let outcome = src
            .text
            .clone()
            .and_then(|t| reference::parse(&t))
            .and_then(|case| on.replay(&case));
        match outcome {
            Ok(r) => {
                let ok = r.passed();
                if ok {
                    passed += 1;
                } else {
                    failed += 1;
                }
                if show && (!ok || !args.quiet) {
                    println!(
                        "{:<36} {} {:>4} steps  worst rel err {:>9.2e} (step {:>3}, limit {:.0e})  {}",
                        r.name,
                        r.dtype,
                        r.steps,
                        r.worst,
                        r.worst_step,
                        r.threshold,
                        if ok { "PASS" } else { "FAIL" }
                    );
                }
                for note in r.notes.iter().filter(|_| show) {
                    println!("    {note}");
                }
            }
            Err(e) => match reference::unsupported(&e) {
                // The device does not run this optimizer (the GPU: Muon, Adafactor).
                Some(reason) => {
                    skipped += 1;
                    if show {
                        println!("{}: SKIPPED: {reason}", src.file);
                    }
                }
                None => {
                    errors += 1;
                    if show {
                        println!("{}: ERROR: {e}", src.file);
                    }
                }
            },
        }
    }
    let skipped = if skipped > 0 {
        format!(", {skipped} skipped (not run here)")
    } else {
        String::new()
    };
    if show {
        println!(
            "{} cases: {passed} passed, {failed} failed, {errors} could not be replayed{skipped}",
            sources.len()
        );
    }
    if errors > 0 {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
