//! One optimizer running different algorithms on different parameter groups: the Muon recipe
//! (Muon on the 2-D hidden weights, AdamW on biases, norms, embeddings and the head), with one
//! step, one checkpoint and one schedule.
//!
//! [`MultiOptimizer`] holds one optimizer per algorithm (a *part*), each over its own
//! parameters, and owns what must see every gradient at once: the non-finite check, the global
//! norm for clipping, and gradient noise (drawn with the tensors' positions in the whole list,
//! so the noise is the one a single optimizer would draw). The parts then run their update
//! rules, decay and schedule as they would alone. A refused step is refused before any part
//! steps, so nothing changes.
//!
//! The registry builds one when a group's options name another `"optimizer"` than the
//! top-level one (see [`crate::registry::build_groups`]).

use crate::clip::{clip_coef, Clip};
use crate::kernel::{self, Float, Plan, RawSlice, CHUNK};
use crate::optimizer::{
    check_eval_shapes, check_shapes, check_shard_shapes, non_finite_error_in, NonFinite, Optimizer,
    ParamInfo, StepOutcome,
};
use crate::shard::{Shard, ShardLayout};
use crate::state::{StateDict, FORMAT_VERSION};
use crate::{Error, GradientNoise, Result};

/// One algorithm's share of a [`MultiOptimizer`] (`O`: the optimizer type, such as
/// `dyn Optimizer<F>`).
#[derive(Debug)]
pub struct Part<O: ?Sized> {
    /// The optimizer (built without clipping by norm, noise or a non-finite check: the
    /// [`MultiOptimizer`] does those).
    pub optimizer: Box<O>,
    /// The positions of its parameters in the whole list, in its own order.
    pub members: Vec<usize>,
    /// The whole optimizer's group number of each of its groups.
    pub groups: Vec<usize>,
}

/// Several optimizers stepped as one; see the [module docs](self).
#[derive(Debug)]
pub struct MultiOptimizer<F: Float> {
    parts: Vec<Part<dyn Optimizer<F>>>,
    params: Vec<ParamInfo>,
    /// For each group of the whole: (part, the part's group).
    group_at: Vec<(usize, usize)>,
    clip: Clip,
    non_finite: NonFinite,
    noise: Option<GradientNoise>,
    steps: u64,
    skipped: u64,
    plan: Plan,
    partials: Vec<[f64; 2]>,
    /// Gradients scaled by norm clipping or with noise added, when either is on.
    copies: Vec<Vec<F>>,
    /// Sharded: this rank's place, and which elements every rank owns (the parts' layouts
    /// put together). The gradients a step takes are then this rank's elements.
    shard: Option<(Shard, ShardLayout)>,
}

impl<F: Float> MultiOptimizer<F> {
    /// Step `parts` as one over `params` (each parameter in exactly one part), with global
    /// clipping, the non-finite `policy` and `noise`. The parts must have been built without
    /// norm clipping, noise or a non-finite check (`NonFinite::Unchecked`), and with value
    /// clipping only when there is no noise (noise applies it here).
    pub fn new(
        params: Vec<ParamInfo>,
        parts: Vec<Part<dyn Optimizer<F>>>,
        clip: Clip,
        non_finite: NonFinite,
        noise: Option<GradientNoise>,
    ) -> Result<Self> {
        clip.validate()?;
        if let Some(n) = &noise {
            n.validate()?;
        }
        let mut owner = vec![None; params.len()];
        let mut group_at = Vec::new();
        for (k, part) in parts.iter().enumerate() {
            if part.members.len() != part.optimizer.params().len() {
                return Err(Error::Setup(format!(
                    "part {k} lists {} members for {} parameters",
                    part.members.len(),
                    part.optimizer.params().len()
                )));
            }
            for (&i, info) in part.members.iter().zip(part.optimizer.params()) {
                match owner.get_mut(i) {
                    Some(slot @ None) if params[i] == *info => *slot = Some(k),
                    _ => {
                        return Err(Error::Setup(format!(
                            "parameter '{}' is not in exactly one part",
                            info.name
                        )))
                    }
                }
            }
            for (local, &global) in part.groups.iter().enumerate() {
                if group_at.len() <= global {
                    group_at.resize(global + 1, (usize::MAX, 0));
                }
                group_at[global] = (k, local);
            }
        }
        if let Some(i) = owner.iter().position(Option::is_none) {
            return Err(Error::Setup(format!(
                "parameter '{}' belongs to no part",
                params[i].name
            )));
        }
        if group_at.iter().any(|&(k, _)| k == usize::MAX) {
            return Err(Error::Setup("the parts' groups leave a gap".into()));
        }
        let lens: Vec<usize> = params.iter().map(ParamInfo::len).collect();
        let plan = Plan::new(&lens, CHUNK);
        let copying = clip.max_norm.is_some() || noise.is_some();
        Ok(MultiOptimizer {
            partials: vec![[0.0; 2]; plan.num_segments()],
            copies: if copying {
                lens.iter().map(|&n| Vec::with_capacity(n)).collect()
            } else {
                Vec::new()
            },
            plan,
            parts,
            params,
            group_at,
            clip,
            non_finite,
            noise,
            steps: 0,
            skipped: 0,
            shard: None,
        })
    }

    /// Shard the whole as its parts are sharded (each built with `shard`, over its tensors):
    /// the step then takes this rank's elements of each gradient. Clipping by norm and the
    /// non-finite check sum each rank's partial result, in rank order (deterministic; the
    /// norm's last bits may differ from one process's, the parts' own steps do not).
    pub fn with_shard(mut self, shard: Option<Shard>) -> Result<Self> {
        let Some(shard) = shard else {
            return Ok(self);
        };
        let mut layouts = Vec::with_capacity(self.parts.len());
        for (k, part) in self.parts.iter().enumerate() {
            let layout = part.optimizer.shard_layout().ok_or_else(|| {
                Error::Setup(format!("part {k} of a sharded optimizer is not sharded"))
            })?;
            layouts.push((part.members.as_slice(), layout));
        }
        let layout = ShardLayout::combine(self.params.len(), &layouts);
        let lens: Vec<usize> = layout.mine().iter().map(ExactSizeIterator::len).collect();
        self.plan = Plan::new(&lens, CHUNK);
        self.partials = vec![[0.0; 2]; self.plan.num_segments()];
        self.shard = Some((shard, layout));
        Ok(self)
    }

    /// The parts, in the order given.
    pub fn parts(&self) -> &[Part<dyn Optimizer<F>>] {
        &self.parts
    }

    fn group(&self, group: usize) -> Result<(usize, usize)> {
        self.group_at.get(group).copied().ok_or_else(|| {
            Error::Setup(format!(
                "group {group} does not exist ({} groups)",
                self.group_at.len()
            ))
        })
    }

    fn step_masked(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[&[F]],
        active: &[bool],
    ) -> Result<StepOutcome> {
        // Everything that can refuse the step runs before any part steps.
        self.check_shapes(params, grads, active)?;
        let norm = self.clip.max_norm.is_some();
        let check = self.non_finite != NonFinite::Unchecked;
        let (mut finite, mut sum_squares) = (true, 0.0);
        if check || norm {
            let s = kernel::scan_grads(
                &self.plan,
                grads,
                active,
                norm,
                RawSlice::new(&mut self.partials),
            );
            (finite, sum_squares) = (s.finite, s.sum_squares);
            if let Some((shard, _)) = &self.shard {
                // Each rank's (sum of squares, not finite) at its place, summed over ranks,
                // then added in rank order.
                let mut all = vec![0.0; 2 * shard.ranks];
                all[2 * shard.rank] = sum_squares;
                all[2 * shard.rank + 1] = if finite { 0.0 } else { 1.0 };
                shard.sums.sum(&mut all)?;
                sum_squares = all.iter().step_by(2).sum();
                finite = all.iter().skip(1).step_by(2).all(|&x| x == 0.0);
            }
        }
        if check && !finite {
            if self.non_finite == NonFinite::Skip {
                self.skipped += 1;
                return Ok(StepOutcome::Skipped);
            }
            return Err(self.non_finite_error(grads));
        }
        let scale = self
            .clip
            .max_norm
            .map(|max_norm| clip_coef(max_norm, sum_squares.sqrt()));
        let mut copies = std::mem::take(&mut self.copies);
        let starts: Vec<usize> = (self.shard.iter())
            .flat_map(|(_, l)| l.mine().iter().map(|r| r.start))
            .collect();
        match self.noise {
            Some(noise) => noise.apply_from(
                self.steps,
                grads,
                &starts,
                scale,
                self.clip.max_value,
                &mut copies,
            ),
            None if scale.is_some() => {
                let s = F::from_f64(scale.unwrap_or(1.0));
                for (c, g) in copies.iter_mut().zip(grads) {
                    c.clear();
                    c.extend(g.iter().map(|&x| x * s));
                }
            }
            None => {}
        }
        let source: Vec<&[F]> = if copies.is_empty() {
            grads.to_vec()
        } else {
            copies.iter().map(Vec::as_slice).collect()
        };
        let mut result = Ok(StepOutcome::Applied);
        let mut slots: Vec<Option<&mut [F]>> = params.iter_mut().map(|p| Some(&mut **p)).collect();
        for part in &mut self.parts {
            let mut ps: Vec<&mut [F]> = part
                .members
                .iter()
                .filter_map(|&i| slots[i].take())
                .collect();
            let gs: Vec<Option<&[F]>> = part
                .members
                .iter()
                .map(|&i| active[i].then_some(source[i]))
                .collect();
            if let Err(e) = part.optimizer.step_some(&mut ps, &gs) {
                // Cannot happen (shapes and gradients were checked, the parts do not check):
                // say so rather than go on with the parts out of step.
                result = Err(Error::Setup(format!(
                    "a part of the optimizer failed after the checks: {e}"
                )));
                break;
            }
        }
        drop(source);
        self.copies = copies;
        if result.is_ok() {
            self.steps += 1;
        }
        result
    }
}

impl<F: Float> MultiOptimizer<F> {
    /// This rank's range of each tensor, when sharded.
    fn owned(&self) -> Option<&[std::ops::Range<usize>]> {
        self.shard.as_ref().map(|(_, l)| l.mine())
    }

    /// The shapes: whole parameters, and whole gradients (sharded: this rank's elements).
    fn check_shapes(&self, params: &[&mut [F]], grads: &[&[F]], active: &[bool]) -> Result<()> {
        match self.owned() {
            None => check_shapes(&self.params, params, grads, Some(active)),
            Some(owned) => check_shard_shapes(&self.params, owned, params, grads, Some(active)),
        }
    }

    /// The error naming the first non-finite gradient element this rank holds.
    fn non_finite_error(&self, grads: &[&[F]]) -> Error {
        non_finite_error_in(&self.params, self.owned(), grads)
    }
}

/// The prefix of part `k`'s keys in a checkpoint.
fn prefix(k: usize) -> String {
    format!("part{k}/")
}

impl<F: Float> Optimizer<F> for MultiOptimizer<F> {
    fn name(&self) -> String {
        "multi".into()
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn step(&mut self, params: &mut [&mut [F]], grads: &[&[F]]) -> Result<StepOutcome> {
        let active = vec![true; grads.len()];
        self.step_masked(params, grads, &active)
    }

    fn step_some(
        &mut self,
        params: &mut [&mut [F]],
        grads: &[Option<&[F]>],
    ) -> Result<StepOutcome> {
        let active: Vec<bool> = grads.iter().map(Option::is_some).collect();
        let slices: Vec<&[F]> = grads.iter().map(|g| g.unwrap_or(&[])).collect();
        self.step_masked(params, &slices, &active)
    }

    fn has_eval_point(&self) -> bool {
        self.parts.iter().any(|p| p.optimizer.has_eval_point())
    }

    fn shard_layout(&self) -> Option<&ShardLayout> {
        self.shard.as_ref().map(|(_, l)| l)
    }

    fn element_wise(&self) -> bool {
        self.parts.iter().all(|p| p.optimizer.element_wise())
    }

    fn eval_params(&self, params: &[&[F]], out: &mut [&mut [F]]) -> Result<()> {
        check_eval_shapes(&self.params, params, out)?;
        let mut slots: Vec<Option<&mut [F]>> = out.iter_mut().map(|o| Some(&mut **o)).collect();
        for part in &self.parts {
            let ps: Vec<&[F]> = part.members.iter().map(|&i| params[i]).collect();
            let mut os: Vec<&mut [F]> = part
                .members
                .iter()
                .filter_map(|&i| slots[i].take())
                .collect();
            part.optimizer.eval_params(&ps, &mut os)?;
        }
        Ok(())
    }

    fn steps_taken(&self) -> u64 {
        self.steps
    }

    fn steps_skipped(&self) -> u64 {
        self.skipped
    }

    fn num_groups(&self) -> usize {
        self.group_at.len()
    }

    fn lr(&self, group: usize) -> Result<f64> {
        let (k, g) = self.group(group)?;
        self.parts[k].optimizer.lr(g)
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        let (k, g) = self.group(group)?;
        self.parts[k].optimizer.set_lr(g, lr)
    }

    /// Each part's state under `part{k}/`, plus the whole's step counts.
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::default();
        sd.meta
            .insert("format_version".into(), FORMAT_VERSION.to_string());
        sd.meta.insert("optimizer".into(), "multi".into());
        sd.meta.insert("dtype".into(), F::DTYPE.name().into());
        sd.meta.insert("step".into(), self.steps.to_string());
        sd.meta.insert("skipped".into(), self.skipped.to_string());
        let names: Vec<String> = self.parts.iter().map(|p| p.optimizer.name()).collect();
        sd.meta
            .insert("parts".into(), serde_json::Value::from(names).to_string());
        // Sharded, the parts' pieces are listed together, under their keys here.
        let mut pieces = serde_json::Map::new();
        let mut place = None;
        for (k, part) in self.parts.iter().enumerate() {
            let mut inner = part.optimizer.state_dict();
            if let Ok(Some(p)) = crate::shard::take_pieces(&inner, &prefix(k), &mut pieces) {
                place = Some(p);
                inner.meta.remove(crate::shard::SHARD_META);
            }
            for (key, t) in inner.tensors {
                sd.tensors.insert(format!("{}{key}", prefix(k)), t);
            }
            for (key, v) in inner.meta {
                sd.meta.insert(format!("{}{key}", prefix(k)), v);
            }
        }
        if let Some((rank, ranks)) = place {
            crate::shard::mark_shard(&mut sd, rank, ranks, pieces);
        }
        sd
    }

    /// All or nothing: a part that refuses its state puts back the parts loaded before it.
    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        sd.expect("multi", F::DTYPE)?;
        if crate::shard::is_shard(sd) {
            return Err(Error::State(
                "this is one rank's shard of a sharded optimizer's state: put the shards of \
                 every rank together first (downhill::shard::consolidate)"
                    .into(),
            ));
        }
        let steps = sd.meta_u64("step")?;
        let skipped = sd.meta_u64("skipped")?;
        let known = |key: &str| (0..self.parts.len()).any(|k| key.starts_with(&prefix(k)));
        sd.reject_unknown_keys(known)?;
        let mut loaded: Vec<StateDict> = Vec::new();
        for k in 0..self.parts.len() {
            let p = prefix(k);
            let mut part_sd = StateDict::default();
            for (key, t) in &sd.tensors {
                if let Some(rest) = key.strip_prefix(&p) {
                    part_sd.tensors.insert(rest.to_string(), t.clone());
                }
            }
            for (key, v) in &sd.meta {
                if let Some(rest) = key.strip_prefix(&p) {
                    part_sd.meta.insert(rest.to_string(), v.clone());
                }
            }
            let before = self.parts[k].optimizer.state_dict();
            if let Err(e) = self.parts[k].optimizer.load_state_dict(&part_sd) {
                for (j, old) in loaded.iter().enumerate() {
                    // These states were this optimizer's own a moment ago.
                    let _ = self.parts[j].optimizer.load_state_dict(old);
                }
                return Err(e);
            }
            loaded.push(before);
        }
        self.steps = steps;
        self.skipped = skipped;
        Ok(())
    }

    fn state_bytes_per_param(&self) -> f64 {
        self.weighted(|o| o.state_bytes_per_param())
    }

    fn traffic_per_param(&self) -> f64 {
        self.weighted(|o| o.traffic_per_param())
    }
}

impl<F: Float> MultiOptimizer<F> {
    /// The mean over all elements of a per-part figure.
    fn weighted(&self, f: impl Fn(&dyn Optimizer<F>) -> f64) -> f64 {
        let total: usize = self.params.iter().map(ParamInfo::len).sum();
        if total == 0 {
            return 0.0;
        }
        let sum: f64 = self
            .parts
            .iter()
            .map(|p| {
                let n: usize = p.optimizer.params().iter().map(ParamInfo::len).sum();
                f(&*p.optimizer) * n as f64
            })
            .sum();
        sum / total as f64
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::{build_groups, GroupSpec, Setup};

    fn groups(first: serde_json::Value, second: serde_json::Value) -> Vec<GroupSpec> {
        vec![
            GroupSpec {
                options: first,
                params: vec![ParamInfo::new("w", [3, 2]), ParamInfo::new("v", [2, 2])],
            },
            GroupSpec {
                options: second,
                params: vec![ParamInfo::new("b", [2])],
            },
        ]
    }

    fn setup() -> Setup {
        Setup {
            clip: Clip {
                max_norm: Some(0.5),
                max_value: Some(0.3),
            },
            ..Setup::default()
        }
    }

    fn tensors(seed: u64) -> Vec<Vec<f64>> {
        let mut x = seed;
        [6, 4, 2]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    fn step(
        opt: &mut dyn Optimizer<f64>,
        p: &mut [Vec<f64>],
        g: &[Vec<f64>],
    ) -> Result<StepOutcome> {
        let mut ps: Vec<&mut [f64]> = p.iter_mut().map(|x| &mut x[..]).collect();
        let gs: Vec<&[f64]> = g.iter().map(|x| &x[..]).collect();
        opt.step(&mut ps, &gs)
    }

    /// Two algorithms as one optimizer step exactly as one optimizer with two groups would,
    /// global clipping included, when the algorithms happen to be the same rule.
    #[test]
    fn parts_step_as_one_optimizer() {
        let mut multi = build_groups::<f64>(
            "sgd",
            &json!({"lr": 0.1, "momentum": 0.9}),
            groups(
                json!({}),
                json!({"optimizer": "sgdw", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}),
            ),
            &setup(),
        )
        .unwrap();
        assert_eq!(multi.name(), "multi");
        let mut single = build_groups::<f64>(
            "sgd",
            &json!({"lr": 0.1, "momentum": 0.9}),
            groups(json!({}), json!({"lr": 0.05})),
            &setup(),
        )
        .unwrap();
        let (mut a, mut b) = (tensors(1), tensors(1));
        for t in 0..6 {
            let g = tensors(10 + t);
            step(&mut *multi, &mut a, &g).unwrap();
            step(&mut *single, &mut b, &g).unwrap();
            assert_eq!(a, b, "step {t}");
        }
        assert_eq!(multi.num_groups(), 2);
        assert_eq!(multi.lr(1).unwrap(), 0.05);
        multi.set_lr(0, 0.2).unwrap();
        assert_eq!(multi.lr(0).unwrap(), 0.2);
        assert!(multi.lr(2).is_err());
    }

    #[test]
    fn a_refused_step_or_checkpoint_changes_nothing() {
        let build = || {
            build_groups::<f64>(
                "adam",
                &json!({"lr": 0.01}),
                groups(
                    json!({}),
                    json!({"optimizer": "sgd", "lr": 0.1, "momentum": 0.5}),
                ),
                &Setup::default(),
            )
            .unwrap()
        };
        let mut opt = build();
        let mut p = tensors(3);
        step(&mut *opt, &mut p, &tensors(4)).unwrap();
        let (p_before, sd_before) = (p.clone(), opt.state_dict());
        let mut bad = tensors(5);
        bad[2][1] = f64::NAN; // in the second part: refused before the first part steps
        let e = step(&mut *opt, &mut p, &bad).unwrap_err();
        assert!(
            matches!(e, Error::NonFiniteGradient { ref param, .. } if param == "b"),
            "{e}"
        );
        assert_eq!(p, p_before);
        assert!(opt.state_dict() == sd_before);

        // Round trip, then a checkpoint whose second part is broken: refused, all unchanged.
        let mut other = build();
        other.load_state_dict(&sd_before).unwrap();
        assert!(other.state_dict() == sd_before);
        let fresh = build();
        let mut broken = sd_before.clone();
        let key = broken
            .tensors
            .keys()
            .find(|k| k.starts_with("part1/") && k.ends_with(".m"))
            .cloned()
            .unwrap();
        broken.tensors.get_mut(&key).unwrap().shape = vec![7];
        let mut target = fresh;
        let untouched = target.state_dict();
        assert!(target.load_state_dict(&broken).is_err());
        assert!(target.state_dict() == untouched);
        // The parts keep stepping together after a load.
        let g = tensors(6);
        let mut q = p.clone();
        step(&mut *opt, &mut p, &g).unwrap();
        step(&mut *other, &mut q, &g).unwrap();
        assert_eq!(p, q);
    }

    #[test]
    fn a_group_naming_no_algorithm_is_an_error() {
        let e = build_groups::<f64>(
            "adam",
            &json!({}),
            groups(json!({}), json!({"optimizer": 3})),
            &Setup::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Options { .. }), "{e}");
        let e = build_groups::<f64>(
            "adam",
            &json!({}),
            groups(json!({}), json!({"optimizer": "adamz"})),
            &Setup::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Unknown { .. }), "{e}");
    }
}
