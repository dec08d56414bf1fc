//! The reference cases replayed with the state sharded over ranks: an
//! [`Executor`](downhill::reference::Executor) for `downhill verify --ranks N`.
//!
//! The case's gradient is the whole batch's: rank 0 hands it in, the other ranks zeros, and
//! the ranks' gradients are summed ([`Reduction::Sum`]), so the optimizer steps with exactly
//! the case's gradient. The cases are small, so the
//! state is cut into segments of about a quarter of a rank's share (ownership by whole
//! segments of [`CHUNK`](downhill::kernel::CHUNK) would leave most ranks nothing to own):
//! every rank owns some of almost every case, and the replay checks the sharded step against
//! the reference within the case's threshold.

use std::sync::Arc;

use downhill::reference::{Build, Executor, Stepper};
use downhill::registry::GroupSpec;
use downhill::{Optimizer, ParamInfo, StateDict};
use serde_json::json;

use crate::comm::Collective;
use crate::sharded::{Element, Reduction, ShardedOptimizer};

/// Replays cases with the optimizer's state sharded over `comm`'s ranks.
#[derive(Clone, Debug)]
pub struct Sharded {
    /// The ranks.
    pub comm: Arc<dyn Collective>,
}

fn build<F: Element>(
    comm: &Arc<dyn Collective>,
    b: Build<'_>,
) -> Result<Box<dyn Stepper<F>>, String> {
    let total: usize = b.params.iter().map(ParamInfo::len).sum();
    let chunk = total.div_ceil(4 * comm.size()).max(1);
    let groups = vec![GroupSpec {
        options: json!({}),
        params: b.params.to_vec(),
    }];
    match ShardedOptimizer::<F>::with_chunk(b.name, b.options, groups, b.setup, comm.clone(), chunk)
    {
        Ok(opt) => Ok(Box::new(FromRankZero(opt.with_reduction(Reduction::Sum)))),
        Err(e) => Err(e.to_string()),
    }
}

impl Executor for Sharded {
    fn f32(&self, b: Build<'_>, _: &[Vec<f32>]) -> Result<Box<dyn Stepper<f32>>, String> {
        build(&self.comm, b)
    }
    fn f64(&self, b: Build<'_>, _: &[Vec<f64>]) -> Result<Box<dyn Stepper<f64>>, String> {
        build(&self.comm, b)
    }
    fn replays_low_precision_state(&self) -> bool {
        true
    }
}

/// A sharded optimizer summing gradients, to which rank 0 hands the case's gradient and the
/// other ranks zeros.
#[derive(Debug)]
struct FromRankZero<F: Element>(ShardedOptimizer<F>);

impl<F: Element> Stepper<F> for FromRankZero<F> {
    fn step(&mut self, params: &mut [Vec<F>], grads: &[Vec<F>]) -> Result<(), String> {
        let zeros: Vec<Vec<F>>;
        let grads = if self.0.comm().rank() == 0 {
            grads
        } else {
            zeros = grads
                .iter()
                .map(|g| vec![F::from_f64(0.0); g.len()])
                .collect();
            &zeros
        };
        let mut ps: Vec<&mut [F]> = params.iter_mut().map(Vec::as_mut_slice).collect();
        let gs: Vec<&[F]> = grads.iter().map(Vec::as_slice).collect();
        Optimizer::step(&mut self.0, &mut ps, &gs)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    /// The whole state, put together from every rank's shard (every rank must ask).
    fn state_dict(&self) -> Result<StateDict, String> {
        self.0.consolidated_state_dict().map_err(|e| e.to_string())
    }
    fn load_state_dict(&mut self, state: &StateDict) -> Result<(), String> {
        Optimizer::load_state_dict(&mut self.0, state).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Threads;

    /// The bundled reference cases that `verify` replays, sharded over 2 and 3 threads.
    #[test]
    fn the_reference_cases_pass_sharded_over_2_and_3_ranks() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../downhill/tests/reference");
        let mut cases = Vec::new();
        for sub in [".", "modern", "heldout", "lowbit", "lowbit/heldout"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                panic!(
                    "{}: the reference cases are missing",
                    dir.join(sub).display()
                )
            };
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    cases.push(e.path());
                }
            }
        }
        cases.sort();
        assert!(cases.len() > 150, "{} cases", cases.len());
        for ranks in [2, 3] {
            let outcomes = Threads::run(ranks, |comm| {
                let on = Sharded {
                    comm: Arc::new(comm),
                };
                cases
                    .iter()
                    .map(|p| {
                        let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
                        let case = downhill::reference::parse(&text)?;
                        downhill::reference::replay_on(&case, &on)
                            .map(|r| (r.passed(), r.worst, r.notes))
                    })
                    .collect::<Vec<_>>()
            });
            for (p, o) in cases.iter().zip(&outcomes[0]) {
                match o {
                    Ok((passed, worst, notes)) => {
                        assert!(
                            passed,
                            "{}: {ranks} ranks: worst {worst:e} {notes:?}",
                            p.display()
                        )
                    }
                    Err(e) => panic!("{}: {ranks} ranks: {e}", p.display()),
                }
            }
        }
    }
}
