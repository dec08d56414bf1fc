//! `--ranks N`: a command run data-parallel over N MPI processes, with the optimizer state
//! sharded (`downhill-dist`). Run by hand, the command starts `mpiexec -n N` on itself with
//! the same arguments and waits for it; each rank then runs with a [`Collective`] over MPI.
//! Built without the `mpi` feature, `--ranks` is an error saying how to build with it.

use std::process::ExitCode;

#[cfg(feature = "mpi")]
pub use downhill_dist::Collective;

/// Set in the ranks' environment by the launching process.
#[cfg(feature = "mpi")]
const LAUNCHED: &str = "DOWNHILL_RANKS_LAUNCHED";

/// What `--ranks` made of this process.
pub enum Ranks {
    /// This process started the ranks, which have ended with this status.
    Launched(ExitCode),
    /// This process is one of the ranks.
    #[cfg(feature = "mpi")]
    Rank(std::sync::Arc<dyn Collective>),
}

/// Whether this process is one of the ranks a `--ranks` command started.
#[cfg(feature = "mpi")]
pub fn is_rank() -> bool {
    std::env::var_os(LAUNCHED).is_some()
}

/// Start `ranks` ranks running this command, or, in one of them, join them.
#[cfg(feature = "mpi")]
pub fn start(ranks: usize) -> Result<Ranks, String> {
    start_with(ranks, &[])
}

/// [`start`], with `env` set in the ranks' environment.
#[cfg(feature = "mpi")]
pub fn start_with(ranks: usize, env: &[(&str, String)]) -> Result<Ranks, String> {
    use std::sync::Arc;
    if ranks == 0 {
        return Err("--ranks must be at least 1".into());
    }
    if std::env::var_os(LAUNCHED).is_some() {
        let comm = downhill_dist::mpi::Mpi::init().map_err(|e| e.to_string())?;
        if comm.size() != ranks {
            return Err(format!(
                "--ranks {ranks}, but mpiexec started {} ranks",
                comm.size()
            ));
        }
        return Ok(Ranks::Rank(Arc::new(comm)));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let status = std::process::Command::new("mpiexec")
        .arg("-n")
        .arg(ranks.to_string())
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(LAUNCHED, "1")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .status()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("mpiexec not found: {}", install_hint()),
            _ => format!("cannot start mpiexec: {e}"),
        })?;
    // mpiexec ends every rank when one fails and reports it (a rank names itself in its
    // last message); its status is the ranks'.
    let code = status.code().map_or(2, |c| c.clamp(0, 255) as u8);
    Ok(Ranks::Launched(ExitCode::from(code)))
}

/// Without MPI: `--ranks` is an error saying how to get it.
#[cfg(not(feature = "mpi"))]
pub fn start(_ranks: usize) -> Result<Ranks, String> {
    Err(format!(
        "this downhill was built without MPI: build it with `cargo build --release -p \
         downhill-cli --features mpi` ({})",
        install_hint()
    ))
}

fn install_hint() -> &'static str {
    "MPI comes from MPICH: apt-get install mpich libmpich-dev libclang-dev pkgconf"
}

/// [`start_with`], or without MPI the error saying how to build with it: for callers that
/// compile either way.
pub fn start_ranks(ranks: usize, env: &[(&str, String)]) -> Result<Ranks, String> {
    #[cfg(feature = "mpi")]
    return start_with(ranks, env);
    #[cfg(not(feature = "mpi"))]
    {
        let _ = env;
        start(ranks)
    }
}
