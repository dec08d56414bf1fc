//! Optimizer state sharded over ranks (ZeRO stage 1): what the core library needs to know
//! about it, and nothing about how ranks talk (that is the `downhill-dist` crate's).
//!
//! A sharded [`RuleOptimizer`](crate::RuleOptimizer) is built like any other, over every
//! parameter, with a [`Shard`] in its [`Setup`](crate::registry::Setup). It keeps state only
//! for its rank's elements and updates only those; the caller hands it the mean gradient of
//! those elements and all-gathers the parameters afterwards.
//!
//! Ownership follows the single-process step's own [plan](crate::kernel::Plan): each rank
//! owns a run of whole segments (pieces of at most `chunk` elements of one tensor), balanced
//! by elements. Every reduction of a step (the gradients' norm and finiteness, a rule's
//! per-tensor and per-group sums) is a sum of per-segment partials in segment order; each
//! segment's partial is computed by the one rank that owns it, the vector of partials is
//! summed over ranks (every other rank adds an exact `0.0`), and each rank then adds them up
//! in segment order as one process would. So a sharded step gives the single-process bits,
//! reductions included, at any number of ranks.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::kernel::Plan;
use crate::state::{StateDict, StateTensor, TensorData};
use crate::{Error, Result};

/// The metadata entry of a shard's checkpoint: `{"rank", "ranks", "pieces": {key: {"range":
/// [lo, hi], "shape": whole shape}}}`; a piece is elements `lo..hi` of the flattened whole.
pub const SHARD_META: &str = "shard";

/// Sums over the ranks of a sharded optimizer: what a sharded step asks of the collective
/// layer, once or twice a step, for a few numbers per segment.
pub trait ShardSums: Send + Sync + Debug {
    /// Replace `values` (the same length on every rank) by their element-wise sum over ranks.
    fn sum(&self, values: &mut [f64]) -> Result<()>;
}

/// This rank's place among the ranks of a sharded optimizer.
#[derive(Clone, Debug)]
pub struct Shard {
    /// This rank, `0..ranks`.
    pub rank: usize,
    /// The number of ranks.
    pub ranks: usize,
    /// Elements per chunk of the plan, and so at most per segment, the unit of ownership:
    /// [`CHUNK`](crate::kernel::CHUNK) gives the single-process step's bits; smaller chunks
    /// split small tensors over ranks (the reductions then add in another order).
    pub chunk: usize,
    /// The sums over ranks.
    pub sums: Arc<dyn ShardSums>,
}

impl Shard {
    /// Check `rank < ranks`, `ranks ≥ 1`, `chunk ≥ 1`.
    pub fn validate(&self) -> Result<()> {
        if self.ranks == 0 || self.rank >= self.ranks || self.chunk == 0 {
            return Err(crate::Error::Setup(format!(
                "shard: rank {} of {} ranks with chunks of {} elements",
                self.rank, self.ranks, self.chunk
            )));
        }
        Ok(())
    }
}

/// Which elements of each tensor each rank owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    /// `owned[r][t]`: rank `r`'s range of tensor `t` (empty when it owns none of it).
    owned: Vec<Vec<Range<usize>>>,
    /// `segments[r]`: rank `r`'s segments of the plan.
    segments: Vec<Range<usize>>,
    /// The rank of the optimizer that holds this layout.
    rank: usize,
}

impl ShardLayout {
    /// The layout of an optimizer made of parts (several algorithms in one optimizer), each
    /// sharded on its own: `parts` gives each part's tensors (their places in the whole) and
    /// its layout.
    pub fn combine(tensors: usize, parts: &[(&[usize], &ShardLayout)]) -> ShardLayout {
        let ranks = parts.first().map_or(1, |(_, l)| l.ranks());
        let rank = parts.first().map_or(0, |(_, l)| l.rank);
        let mut owned = vec![vec![0..0; tensors]; ranks];
        for (members, layout) in parts {
            for (r, mine) in owned.iter_mut().enumerate() {
                for (&t, range) in members.iter().zip(layout.owned(r)) {
                    mine[t] = range.clone();
                }
            }
        }
        ShardLayout {
            owned,
            // Segments are the parts' own.
            segments: vec![0..0; ranks],
            rank,
        }
    }

    /// Split `plan`'s segments over `ranks` ranks, in order, a rank's run of segments starting
    /// at the first segment that starts at or after its share `r·total/ranks` of the
    /// elements; with `whole_tensors`, at the first such segment that starts a tensor (for
    /// rules whose update needs whole tensors: Muon's and Adafactor's, which each rank then
    /// runs for its own tensors).
    pub fn new(
        plan: &Plan,
        tensors: usize,
        ranks: usize,
        rank: usize,
        whole_tensors: bool,
    ) -> ShardLayout {
        let ranks = ranks.max(1);
        let total: usize = (0..plan.num_segments())
            .map(|s| plan.segment(s).end - plan.segment(s).start)
            .sum();
        let mut bounds = vec![0; ranks + 1];
        bounds[ranks] = plan.num_segments();
        let mut at = 0usize;
        let mut s = 0;
        for (r, bound) in bounds.iter_mut().enumerate().take(ranks).skip(1) {
            // The first element of rank r's share, rounded up to a segment start.
            let share = (total as u128 * r as u128 / ranks as u128) as usize;
            let starts_tensor = |s: usize| plan.segment(s).start == 0;
            while s < plan.num_segments() && (at < share || (whole_tensors && !starts_tensor(s))) {
                let seg = plan.segment(s);
                at += seg.end - seg.start;
                s += 1;
            }
            *bound = s;
        }
        let segments: Vec<Range<usize>> = (0..ranks).map(|r| bounds[r]..bounds[r + 1]).collect();
        let owned = segments
            .iter()
            .map(|segs| {
                let mut ranges = vec![0..0; tensors];
                for s in segs.clone() {
                    let seg = plan.segment(s);
                    let r = &mut ranges[seg.tensor];
                    *r = if r.start == r.end {
                        seg.start..seg.end
                    } else {
                        r.start..seg.end
                    };
                }
                ranges
            })
            .collect();
        ShardLayout {
            owned,
            segments,
            rank,
        }
    }

    /// The number of ranks.
    pub fn ranks(&self) -> usize {
        self.owned.len()
    }

    /// The rank of the optimizer that holds this layout.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// This rank's range of each tensor.
    pub fn mine(&self) -> &[Range<usize>] {
        &self.owned[self.rank]
    }

    /// Rank `rank`'s range of each tensor.
    pub fn owned(&self, rank: usize) -> &[Range<usize>] {
        &self.owned[rank]
    }

    /// Rank `rank`'s segments of the plan.
    pub fn segments(&self, rank: usize) -> Range<usize> {
        self.segments[rank].clone()
    }

    /// The number of elements rank `rank` owns.
    pub fn elements(&self, rank: usize) -> usize {
        self.owned[rank].iter().map(ExactSizeIterator::len).sum()
    }

    /// The elements of the largest rank: the block every rank sends and receives in the
    /// reduce-scatter and the all-gather (the others are padded to it).
    pub fn block(&self) -> usize {
        (0..self.ranks())
            .map(|r| self.elements(r))
            .max()
            .unwrap_or(0)
    }
}

/// Note in `pieces` that checkpoint entry `key` holds elements `range` of a buffer of
/// `shape`.
pub(crate) fn record_piece(
    pieces: &mut Map<String, Value>,
    key: &str,
    range: Range<usize>,
    shape: &[usize],
) {
    pieces.insert(
        key.to_string(),
        json!({"range": [range.start, range.end], "shape": shape}),
    );
}

/// Mark `sd` as rank `rank`'s shard of `ranks`, with its `pieces`.
pub(crate) fn mark_shard(
    sd: &mut StateDict,
    rank: usize,
    ranks: usize,
    pieces: Map<String, Value>,
) {
    let meta = json!({"rank": rank, "ranks": ranks, "pieces": pieces});
    sd.meta.insert(SHARD_META.into(), meta.to_string());
}

/// Note in shard `sd`'s metadata that entry `key` holds elements `range` of a buffer of
/// `shape` (for a wrapper that adds buffers of its own to a shard: Lookahead's slow weights).
pub(crate) fn add_piece(sd: &mut StateDict, key: &str, range: Range<usize>, shape: &[usize]) {
    let Some(meta) = sd.meta.get(SHARD_META) else {
        return;
    };
    let Ok(mut v) = serde_json::from_str::<Value>(meta) else {
        return;
    };
    if let Some(pieces) = v.get_mut("pieces").and_then(Value::as_object_mut) {
        record_piece(pieces, key, range, shape);
    }
    sd.meta.insert(SHARD_META.into(), v.to_string());
}

/// Gather the pieces of shard `part` (one part of an optimizer made of parts) under `prefix`
/// into `pieces`; returns (rank, ranks) when it is a shard.
pub(crate) fn take_pieces(
    part: &StateDict,
    prefix: &str,
    pieces: &mut Map<String, Value>,
) -> Result<Option<(usize, usize)>> {
    if !is_shard(part) {
        return Ok(None);
    }
    let m = read_meta(part, prefix)?;
    for (key, range, shape) in m.pieces {
        record_piece(pieces, &format!("{prefix}{key}"), range, &shape);
    }
    Ok(Some((m.rank, m.ranks)))
}

/// Whether `sd` is one rank's shard (not a whole state).
pub fn is_shard(sd: &StateDict) -> bool {
    sd.meta.contains_key(SHARD_META)
}

/// One shard's metadata, read.
struct ShardMeta {
    rank: usize,
    ranks: usize,
    /// key → (range, whole shape)
    pieces: Vec<(String, Range<usize>, Vec<usize>)>,
}

fn read_meta(sd: &StateDict, which: &str) -> Result<ShardMeta> {
    let bad = |m: &str| Error::State(format!("{which}: shard metadata {m}"));
    let text = sd
        .meta
        .get(SHARD_META)
        .ok_or_else(|| bad("is missing: not a shard"))?;
    let v: Value = serde_json::from_str(text).map_err(|e| bad(&format!("does not parse: {e}")))?;
    let num = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| bad(&format!("has no number `{k}`")))
    };
    let (rank, ranks) = (num("rank")?, num("ranks")?);
    if rank >= ranks {
        return Err(bad(&format!("says rank {rank} of {ranks}")));
    }
    let mut pieces = Vec::new();
    for (key, p) in v
        .get("pieces")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("has no `pieces`"))?
    {
        let nums = |k: &str| -> Option<Vec<usize>> {
            p.get(k)?
                .as_array()?
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        };
        let (range, shape) = match (nums("range"), nums("shape")) {
            (Some(r), Some(shape)) if r.len() == 2 && r[0] <= r[1] => (r[0]..r[1], shape),
            _ => return Err(bad(&format!("has a malformed piece '{key}'"))),
        };
        let len = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if len.is_none_or(|n| range.end > n) {
            return Err(bad(&format!(
                "piece '{key}' {range:?} lies outside shape {shape:?}"
            )));
        }
        pieces.push((key.clone(), range, shape));
    }
    Ok(ShardMeta {
        rank,
        ranks,
        pieces,
    })
}

/// Put the shards of every rank (`shards[r]` is rank `r`'s, from
/// [`Optimizer::state_dict`](crate::Optimizer::state_dict) of a sharded optimizer) together
/// into the state of one process: bit for bit what the single-process optimizer would have
/// saved. Refuses, naming the shard, a set that does not fit together: a missing or repeated
/// rank, pieces that do not tile their buffer, or anything but the pieces that differs
/// between ranks.
pub fn consolidate(shards: &[StateDict]) -> Result<StateDict> {
    let first = shards
        .first()
        .ok_or_else(|| Error::State("no shards to consolidate".into()))?;
    let metas: Vec<ShardMeta> = shards
        .iter()
        .enumerate()
        .map(|(i, sd)| read_meta(sd, &format!("shard {i}")))
        .collect::<Result<_>>()?;
    for (i, m) in metas.iter().enumerate() {
        if m.ranks != shards.len() || m.rank != i {
            return Err(Error::State(format!(
                "shard {i} is rank {} of {} ranks; expected rank {i} of {}",
                m.rank,
                m.ranks,
                shards.len()
            )));
        }
    }
    let mut out = StateDict {
        meta: first.meta.clone(),
        tensors: BTreeMap::new(),
    };
    out.meta.remove(SHARD_META);
    // Everything but the pieces must agree.
    for (i, sd) in shards.iter().enumerate().skip(1) {
        let mut meta = sd.meta.clone();
        meta.remove(SHARD_META);
        if meta != out.meta {
            let key = (meta.keys().chain(out.meta.keys()))
                .find(|k| meta.get(*k) != out.meta.get(*k))
                .cloned()
                .unwrap_or_default();
            return Err(Error::State(format!(
                "shard {i}'s metadata '{key}' ({:?}) differs from shard 0's ({:?}): the shards \
                 are not of one optimizer at one step",
                meta.get(&key),
                out.meta.get(&key)
            )));
        }
    }
    let piece_keys: std::collections::HashSet<&str> =
        metas[0].pieces.iter().map(|(k, _, _)| k.as_str()).collect();
    for (i, (sd, m)) in shards.iter().zip(&metas).enumerate() {
        let keys: std::collections::HashSet<&str> =
            m.pieces.iter().map(|(k, _, _)| k.as_str()).collect();
        if keys != piece_keys {
            return Err(Error::State(format!(
                "shard {i} holds other buffers than shard 0: not the same optimizer"
            )));
        }
        for (key, t) in &sd.tensors {
            if piece_keys.contains(key.as_str()) {
                continue;
            }
            match first.tensors.get(key) {
                Some(t0) if t0 == t => {}
                _ => {
                    return Err(Error::State(format!(
                        "shard {i}'s '{key}' differs from shard 0's: the shards are not of one step"
                    )))
                }
            }
            out.tensors.insert(key.clone(), t.clone());
        }
        if i == 0 {
            continue;
        }
        if let Some(k) = first
            .tensors
            .keys()
            .find(|k| !piece_keys.contains(k.as_str()) && !sd.tensors.contains_key(*k))
        {
            return Err(Error::State(format!("shard {i} has no '{k}'")));
        }
    }
    for key in piece_keys {
        let mut data: Option<TensorData> = None;
        let mut next = 0;
        let mut whole = Vec::new();
        for (i, (sd, m)) in shards.iter().zip(&metas).enumerate() {
            let (_, range, shape) = m
                .pieces
                .iter()
                .find(|(k, _, _)| k == key)
                .ok_or_else(|| Error::State(format!("shard {i} has no piece '{key}'")))?;
            if i > 0 && shape != &whole {
                return Err(Error::State(format!(
                    "shard {i} gives '{key}' shape {shape:?}, shard 0 {whole:?}"
                )));
            }
            whole.clone_from(shape);
            let t = sd
                .tensors
                .get(key)
                .ok_or_else(|| Error::State(format!("shard {i} has no '{key}'")))?;
            if t.data.len() != range.len() || t.shape != [range.len()] {
                return Err(Error::State(format!(
                    "shard {i}'s '{key}' holds {} elements of shape {:?}, its piece is {range:?}",
                    t.data.len(),
                    t.shape
                )));
            }
            if range.is_empty() {
                continue;
            }
            if range.start != next {
                return Err(Error::State(format!(
                    "shard {i}'s '{key}' starts at element {}, the shards before end at {next}",
                    range.start
                )));
            }
            next = range.end;
            data = Some(match (data, &t.data) {
                (None, d) => d.clone(),
                (Some(TensorData::F32(mut a)), TensorData::F32(b)) => {
                    a.extend_from_slice(b);
                    TensorData::F32(a)
                }
                (Some(TensorData::F64(mut a)), TensorData::F64(b)) => {
                    a.extend_from_slice(b);
                    TensorData::F64(a)
                }
                (Some(TensorData::U8(mut a)), TensorData::U8(b)) => {
                    a.extend_from_slice(b);
                    TensorData::U8(a)
                }
                (Some(TensorData::Bf16(mut a)), TensorData::Bf16(b)) => {
                    a.extend_from_slice(b);
                    TensorData::Bf16(a)
                }
                (Some(a), b) => {
                    return Err(Error::State(format!(
                        "shard {i}'s '{key}' holds {}, the shards before {}",
                        b.type_name(),
                        a.type_name()
                    )))
                }
            });
        }
        let n: usize = whole.iter().product();
        if next != n {
            return Err(Error::State(format!(
                "the shards hold elements 0..{next} of '{key}', of {n}"
            )));
        }
        let data = match data {
            Some(d) => d,
            // An empty buffer: any shard's (empty) data has the type.
            None => shards[0].tensors[key].data.clone(),
        };
        out.tensors
            .insert(key.to_string(), StateTensor { shape: whole, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_own_runs_of_whole_segments_covering_every_element_once() {
        let lens = [10, 3, 0, 25, 7];
        let plan = Plan::new(&lens, 4);
        for ranks in 1..=6 {
            let layout = ShardLayout::new(&plan, lens.len(), ranks, 0, false);
            let mut seen: Vec<Vec<usize>> = lens.iter().map(|&n| vec![0; n]).collect();
            for r in 0..ranks {
                for (t, range) in layout.owned(r).iter().enumerate() {
                    for i in range.clone() {
                        seen[t][i] += 1;
                    }
                }
            }
            assert!(seen.iter().flatten().all(|&c| c == 1), "{ranks} ranks");
            let total: usize = lens.iter().sum();
            assert_eq!((0..ranks).map(|r| layout.elements(r)).sum::<usize>(), total);
            // Balanced to within one segment (at most 4 elements here).
            assert!(layout.block() <= total.div_ceil(ranks) + 4, "{ranks} ranks");
        }
    }

    /// Sums that add nothing (each rank alone): enough to build shards and put them together.
    #[derive(Debug)]
    struct Alone;
    impl ShardSums for Alone {
        fn sum(&self, _: &mut [f64]) -> Result<()> {
            Ok(())
        }
    }

    /// Rank `rank`'s shard of an Adam over two tensors after `steps` steps.
    fn shard_of(rank: usize, steps: usize) -> StateDict {
        use crate::registry::{self, Setup};
        let infos = vec![
            crate::ParamInfo::new("w", [3, 5]),
            crate::ParamInfo::new("b", [4]),
        ];
        let setup = Setup {
            shard: Some(Shard {
                rank,
                ranks: 2,
                chunk: 4,
                sums: Arc::new(Alone),
            }),
            ..Setup::default()
        };
        let mut opt =
            registry::build::<f32>("adam", &serde_json::json!({}), infos.clone(), &setup).unwrap();
        let owned = opt.shard_layout().unwrap().mine().to_vec();
        let mut params: Vec<Vec<f32>> = infos.iter().map(|i| vec![1.0; i.len()]).collect();
        for _ in 0..steps {
            let grads: Vec<Vec<f32>> = owned.iter().map(|r| vec![0.5; r.len()]).collect();
            let mut ps: Vec<&mut [f32]> = params.iter_mut().map(Vec::as_mut_slice).collect();
            let gs: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
            opt.step(&mut ps, &gs).unwrap();
        }
        opt.state_dict()
    }

    #[test]
    fn shards_put_together_into_whole_buffers_and_misfits_are_refused() {
        let (a, b) = (shard_of(0, 2), shard_of(1, 2));
        let whole = consolidate(&[a.clone(), b.clone()]).unwrap();
        assert!(!is_shard(&whole));
        assert_eq!(whole.tensors["g0.w.m"].shape, vec![3, 5]);
        assert_eq!(whole.tensors["g0.b.m"].data.len(), 4);
        let refused = |shards: &[StateDict], says: &str| match consolidate(shards) {
            Err(Error::State(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("{other:?}"),
        };
        refused(&[b.clone(), a.clone()], "shard 0 is rank 1");
        refused(std::slice::from_ref(&a), "of 2 ranks");
        refused(&[a.clone(), shard_of(1, 3)], "at one step");
        refused(&[], "no shards");
        let mut cut = b.clone();
        if let Some(t) = cut.tensors.get_mut("g0.w.v") {
            t.data = TensorData::F32(vec![0.0; 1]);
            t.shape = vec![1];
        }
        refused(&[a.clone(), cut], "its piece is");
        // One process refuses a shard, asking for them all.
        let mut one = crate::registry::build::<f32>(
            "adam",
            &serde_json::json!({}),
            vec![
                crate::ParamInfo::new("w", [3, 5]),
                crate::ParamInfo::new("b", [4]),
            ],
            &crate::registry::Setup::default(),
        )
        .unwrap();
        assert!(
            matches!(one.load_state_dict(&a), Err(Error::State(m)) if m.contains("consolidate"))
        );
        one.load_state_dict(&whole).unwrap();
    }

    #[test]
    fn whole_tensors_go_to_one_rank_each() {
        let lens = [10, 3, 0, 25, 7];
        let plan = Plan::new(&lens, 4);
        for ranks in 1..=4 {
            let layout = ShardLayout::new(&plan, lens.len(), ranks, 0, true);
            for (t, &n) in lens.iter().enumerate() {
                let owners: Vec<usize> = (0..ranks)
                    .filter(|&r| !layout.owned(r)[t].is_empty())
                    .collect();
                assert!(
                    n == 0 || owners.len() == 1,
                    "{ranks} ranks, tensor {t}: {owners:?}"
                );
                assert!(owners.iter().all(|&r| layout.owned(r)[t] == (0..n)));
            }
        }
    }

    #[test]
    fn one_segment_goes_to_the_first_rank() {
        let plan = Plan::new(&[3], 16);
        let layout = ShardLayout::new(&plan, 1, 2, 0, false);
        assert_eq!(layout.owned(0)[0], 0..3);
        assert_eq!(layout.owned(1)[0], 0..0);
        assert_eq!(layout.block(), 3);
    }
}
