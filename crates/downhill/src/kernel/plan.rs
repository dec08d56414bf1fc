//! How a step's elements are split into work: fixed chunks of about [`CHUNK`] elements that
//! run across tensor boundaries, so many small tensors parallelize as well as a few large
//! ones. The plan depends only on the tensor lengths, never on the thread count, so every
//! reduction (gradient norm, SWATS' dot products) sums the same partials in the same order
//! whatever the number of threads.

use std::ops::Range;

/// Elements per chunk: large enough to amortize scheduling, small enough to balance threads
/// and to keep a chunk's streams in L2. Tuned with `downhill bench`.
pub const CHUNK: usize = 16 * 1024;

/// A contiguous range of one tensor's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The tensor's index.
    pub tensor: usize,
    /// First element.
    pub start: usize,
    /// One past the last element.
    pub end: usize,
}

/// The split of a step's work into chunks of segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    segments: Vec<Segment>,
    /// `chunks[c]..chunks[c + 1]` are the segments of chunk `c`.
    chunks: Vec<usize>,
    /// The segments of each tensor, in order.
    per_tensor: Vec<Range<usize>>,
}

impl Plan {
    /// Split tensors of the given lengths into chunks of at most `chunk` elements.
    pub fn new(lens: &[usize], chunk: usize) -> Plan {
        Plan::aligned(lens, chunk, |_| 1)
    }

    /// As [`new`](Plan::new), with tensor `t` split only at multiples of `align(t)` elements
    /// (its blocks, when its state is stored in blocks: [`super::lowbit::BLOCK`]); a chunk
    /// that has less room left than a block ends early.
    pub fn aligned(lens: &[usize], chunk: usize, align: impl Fn(usize) -> usize) -> Plan {
        let chunk = chunk.max(1);
        let mut plan = Plan {
            chunks: vec![0],
            ..Plan::default()
        };
        let mut fill = 0;
        for (t, &n) in lens.iter().enumerate() {
            let first = plan.segments.len();
            let mut start = 0;
            let align = align(t).max(1);
            while start < n {
                let mut take = (n - start).min(chunk - fill);
                if start + take < n {
                    take -= take % align;
                    if take == 0 {
                        if fill > 0 {
                            // Not even one block fits: the next chunk takes it.
                            plan.chunks.push(plan.segments.len());
                            fill = 0;
                            continue;
                        }
                        take = align.min(n - start);
                    }
                }
                plan.segments.push(Segment {
                    tensor: t,
                    start,
                    end: start + take,
                });
                start += take;
                fill += take;
                if fill == chunk {
                    plan.chunks.push(plan.segments.len());
                    fill = 0;
                }
            }
            plan.per_tensor.push(first..plan.segments.len());
        }
        if fill > 0 {
            plan.chunks.push(plan.segments.len());
        }
        plan
    }

    /// Number of chunks.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len() - 1
    }

    /// Number of segments.
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }

    /// The segments of chunk `c`, with their indices.
    pub fn chunk(&self, c: usize) -> impl Iterator<Item = (usize, &Segment)> {
        let r = self.chunks[c]..self.chunks[c + 1];
        r.clone().zip(&self.segments[r])
    }

    /// The segment indices of tensor `t`.
    pub fn tensor_segments(&self, t: usize) -> Range<usize> {
        self.per_tensor[t].clone()
    }

    /// Segment `s`.
    pub fn segment(&self, s: usize) -> Segment {
        self.segments[s]
    }

    /// The same plan with work only in segments `keep` (a rank's share of a sharded step):
    /// segment indices, and so the order of every reduction over partial sums, stay those
    /// of the whole plan; the chunks are the whole plan's, cut to `keep`.
    pub fn restrict(&self, keep: Range<usize>) -> Plan {
        let mut chunks = vec![keep.start];
        chunks.extend((self.chunks.iter().copied()).filter(|&c| c > keep.start && c < keep.end));
        if keep.end > keep.start {
            chunks.push(keep.end);
        }
        Plan {
            segments: self.segments.clone(),
            chunks,
            per_tensor: self.per_tensor.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restricted_plan_keeps_segment_indices_and_runs_only_its_segments() {
        let plan = super::Plan::new(&[5, 7, 3], 4);
        let kept = plan.restrict(2..5);
        let runs: Vec<usize> = (0..kept.num_chunks())
            .flat_map(|c| kept.chunk(c).map(|(i, _)| i).collect::<Vec<_>>())
            .collect();
        assert_eq!(runs, vec![2, 3, 4]);
        assert_eq!(kept.num_segments(), plan.num_segments());
        assert_eq!(kept.tensor_segments(1), plan.tensor_segments(1));
        assert_eq!(plan.restrict(3..3).num_chunks(), 0);
    }

    use super::*;

    #[test]
    fn chunks_cross_tensor_boundaries_and_cover_everything() {
        let plan = Plan::new(&[5, 0, 3, 9], 4);
        let mut covered: [Vec<usize>; 4] = Default::default();
        for c in 0..plan.num_chunks() {
            let n: usize = plan.chunk(c).map(|(_, s)| s.end - s.start).sum();
            assert!(n <= 4);
            if c + 1 < plan.num_chunks() {
                assert_eq!(n, 4);
            }
            for (_, s) in plan.chunk(c) {
                covered[s.tensor].extend(s.start..s.end);
            }
        }
        assert_eq!(covered[0], (0..5).collect::<Vec<_>>());
        assert!(covered[1].is_empty());
        assert_eq!(covered[3], (0..9).collect::<Vec<_>>());
        assert_eq!(plan.num_chunks(), 5); // 17 elements in chunks of 4
        assert!(plan.tensor_segments(1).is_empty());
    }

    #[test]
    fn many_small_tensors_share_chunks() {
        let plan = Plan::new(&vec![1000; 100], 16 * 1024);
        assert_eq!(plan.num_chunks(), 7);
    }

    #[test]
    fn aligned_tensors_split_on_block_boundaries() {
        let lens = [300, 1000, 77, 5000];
        let plan = Plan::aligned(&lens, 1024, |t| if t == 1 || t == 3 { 256 } else { 1 });
        let mut covered = vec![0usize; 4];
        for c in 0..plan.num_chunks() {
            let n: usize = plan.chunk(c).map(|(_, s)| s.end - s.start).sum();
            assert!(n <= 1024);
            for (_, s) in plan.chunk(c) {
                if s.tensor == 1 || s.tensor == 3 {
                    assert_eq!(s.start % 256, 0, "{s:?}");
                    assert!(s.end % 256 == 0 || s.end == lens[s.tensor], "{s:?}");
                }
                assert_eq!(covered[s.tensor], s.start);
                covered[s.tensor] = s.end;
            }
        }
        assert_eq!(covered, lens);
        assert_eq!(Plan::aligned(&lens, 1024, |_| 1), Plan::new(&lens, 1024));
    }

    #[test]
    fn empty() {
        let plan = Plan::new(&[], 8);
        assert_eq!(plan.num_chunks(), 0);
    }
}
