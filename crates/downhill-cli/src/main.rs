//! The `downhill` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use downhill_cli::{bench, compare, trajectories, verify};

/// Gradient-descent optimizers that match PyTorch step for step.
#[derive(Parser)]
#[command(name = "downhill", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay reference trajectories (recorded from PyTorch) and check every step.
    ///
    /// With no DIR, replays the cases bundled into the binary; otherwise every `*.json` in DIR.
    /// Exit status: 0 all pass, 1 some case fails, 2 some case cannot be replayed.
    Verify(verify::Args),
    /// Time every optimizer's step against the machine's memory-bandwidth limits.
    ///
    /// Measures a parallel copy, then per optimizer and case the median step time, parameters
    /// per second, GB/s by the bytes the algorithm must move, and the same for a roofline
    /// kernel with the optimizer's memory streams and trivial arithmetic.
    Bench(bench::Args),
    /// Train one model with a list of optimizers and show how they differ.
    ///
    /// Every optimizer starts from the same weights and sees the examples in the same order.
    /// Writes a run directory (metrics as CSV and JSON, plots as PNG and SVG, report.html),
    /// prints a summary table and checks the lecture's claims on the run. With no options:
    /// the lecture's twelve optimizers on the embedded digits.
    Compare(Box<compare::Args>),
    /// Draw the paths of a list of optimizers over 2-D test functions.
    ///
    /// Every optimizer starts from the same point of each function (Rosenbrock, Beale,
    /// Himmelblau, a saddle, an ill-conditioned quadratic, Rastrigin). Writes a PNG and an SVG
    /// per function, an animated HTML page and the paths as CSV, and prints a table of steps
    /// taken and final distance to the nearest minimum.
    Trajectories(Box<trajectories::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(args) => verify::run(&args),
        Command::Bench(args) => match bench::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Compare(args) => match compare::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Trajectories(args) => match trajectories::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
