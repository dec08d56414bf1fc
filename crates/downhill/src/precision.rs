//! The precision a parameter group's optimizer state is stored in: `f32` (the default),
//! `bf16`, or `8bit` (block-wise dynamic quantization, as bitsandbytes). Parameters,
//! gradients and the update's arithmetic keep their own type; only the stored state buffers
//! shrink. The codecs are in [`crate::kernel::lowbit`].
//!
//! | `state_precision` | bytes per state buffer and parameter | reference |
//! |---|---|---|
//! | `f32` | 4 (8 for `f64` parameters) | PyTorch / optax |
//! | `bf16` | 2 | bitsandbytes' update math, state rounded to nearest-even bfloat16 |
//! | `8bit` | 1 + 4/256 (one `u8` code, one `f32` absmax per 256) | bitsandbytes' 8-bit blockwise optimizers |
//!
//! With `bf16` or `8bit` state a rule computes its update in bitsandbytes' order of
//! operations ([`Rule::begin_for`](crate::optim::Rule::begin_for)), so that it reproduces
//! bitsandbytes bit for bit; Adam then applies weight decay decoupled, as bitsandbytes'
//! `Adam8bit` does. Tensors with fewer than `min_8bit_size` elements keep `f32` state under
//! `8bit` (bitsandbytes' default: 4096).

use serde::{Deserialize, Serialize};

use crate::kernel::lowbit::{QuantMap, BLOCK};
use crate::state::{StateDict, StateTensor, TensorData};
use crate::{Error, Result};

/// How a state buffer is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatePrecision {
    /// The parameters' own type (`f32` for `f32` parameters).
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// bfloat16, rounded to nearest even after every step.
    #[serde(rename = "bf16")]
    Bf16,
    /// 8-bit block-wise dynamic quantization.
    #[serde(rename = "8bit")]
    Bit8,
}

impl StatePrecision {
    /// `"f32"`, `"bf16"` or `"8bit"`.
    pub fn name(self) -> &'static str {
        match self {
            StatePrecision::F32 => "f32",
            StatePrecision::Bf16 => "bf16",
            StatePrecision::Bit8 => "8bit",
        }
    }

    /// Whether the state is stored in fewer bits than `f32`.
    pub fn is_low(self) -> bool {
        self != StatePrecision::F32
    }
}

impl std::str::FromStr for StatePrecision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(StatePrecision::F32),
            "bf16" => Ok(StatePrecision::Bf16),
            "8bit" => Ok(StatePrecision::Bit8),
            other => Err(Error::Options {
                what: "state_precision".into(),
                message: format!("unknown precision '{other}' (f32, bf16, 8bit)"),
            }),
        }
    }
}

impl std::fmt::Display for StatePrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter group's state storage: its options `state_precision`, `min_8bit_size` and
/// `block_size` (bitsandbytes' names and defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateStorage {
    /// The precision of the state buffers.
    pub state_precision: StatePrecision,
    /// Under `8bit`, tensors with fewer elements keep `f32` state.
    pub min_8bit_size: usize,
    /// Elements per quantization block: only 256 is supported.
    pub block_size: usize,
}

impl Default for StateStorage {
    fn default() -> Self {
        StateStorage {
            state_precision: StatePrecision::F32,
            min_8bit_size: 4096,
            block_size: BLOCK,
        }
    }
}

impl StateStorage {
    /// The option names this type takes out of a group's options.
    pub const OPTIONS: &'static [&'static str] =
        &["state_precision", "min_8bit_size", "block_size"];

    /// Storage with this precision and the other options at their defaults.
    pub fn new(state_precision: StatePrecision) -> Self {
        StateStorage {
            state_precision,
            ..StateStorage::default()
        }
    }

    /// Refuse a block size other than [`BLOCK`].
    pub fn validate(&self) -> Result<()> {
        if self.block_size != BLOCK {
            return Err(Error::InvalidHyperparameter {
                optimizer: "state storage",
                name: "block_size",
                value: self.block_size as f64,
                reason: "must be 256 (the only block size supported)",
            });
        }
        Ok(())
    }

    /// The precision of a tensor of `len` elements in this group.
    pub fn precision_for(&self, len: usize) -> StatePrecision {
        match self.state_precision {
            StatePrecision::Bit8 if len < self.min_8bit_size => StatePrecision::F32,
            p => p,
        }
    }
}

/// One state buffer of one tensor stored in fewer bits.
#[derive(Clone, Debug, PartialEq)]
pub enum PackedBuffer {
    /// bfloat16 bits, one per element.
    Bf16(Vec<u16>),
    /// 8-bit codes, one per element, and one absmax per block of [`BLOCK`].
    Q8 {
        /// The codes.
        codes: Vec<u8>,
        /// The absmax of each block.
        absmax: Vec<f32>,
        /// The map the codes index.
        map: QuantMap,
    },
}

impl PackedBuffer {
    /// `values` stored at `precision` (`Bf16` or `Bit8`; the map for 8 bits).
    pub fn encode(values: &[f32], precision: StatePrecision, map: QuantMap) -> PackedBuffer {
        use crate::kernel::lowbit;
        match precision {
            StatePrecision::Bit8 => {
                let book = map.codebook();
                let mut codes = vec![0u8; values.len()];
                let absmax = values
                    .chunks(BLOCK)
                    .zip(codes.chunks_mut(BLOCK))
                    .map(|(x, c)| book.encode_block(x, c))
                    .collect();
                PackedBuffer::Q8 { codes, absmax, map }
            }
            _ => {
                let mut bits = vec![0u16; values.len()];
                lowbit::bf16_encode_block(values, &mut bits);
                PackedBuffer::Bf16(bits)
            }
        }
    }

    /// The values this buffer stands for.
    pub fn decode(&self) -> Vec<f32> {
        use crate::kernel::lowbit;
        match self {
            PackedBuffer::Bf16(bits) => bits.iter().map(|&b| lowbit::f32_from_bf16(b)).collect(),
            PackedBuffer::Q8 { codes, absmax, map } => {
                let book = map.codebook();
                let mut out = vec![0.0f32; codes.len()];
                for ((c, o), &a) in codes.chunks(BLOCK).zip(out.chunks_mut(BLOCK)).zip(absmax) {
                    book.decode_block(c, a, o);
                }
                out
            }
        }
    }

    /// Store this buffer in `sd` as a checkpoint keeps it, under `key` for a tensor of
    /// `shape`: bfloat16 as `BF16`; 8-bit codes as `U8`, their absmax as `{key}.absmax`.
    pub fn insert_into(self, sd: &mut StateDict, key: String, shape: &[usize]) {
        let shape = shape.to_vec();
        let data = match self {
            PackedBuffer::Bf16(bits) => TensorData::Bf16(bits),
            PackedBuffer::Q8 { codes, absmax, .. } => {
                let blocks = StateTensor {
                    shape: vec![absmax.len()],
                    data: TensorData::F32(absmax),
                };
                sd.tensors.insert(format!("{key}.absmax"), blocks);
                TensorData::U8(codes)
            }
        };
        sd.tensors.insert(key, StateTensor { shape, data });
    }

    /// Elements `range` of this buffer (a rank's share: for 8 bits `range.start` is a
    /// multiple of [`BLOCK`], so the blocks are the whole buffer's).
    pub fn slice(&self, range: std::ops::Range<usize>) -> PackedBuffer {
        match self {
            PackedBuffer::Bf16(b) => PackedBuffer::Bf16(b[range].to_vec()),
            PackedBuffer::Q8 { codes, absmax, map } => {
                debug_assert_eq!(range.start % BLOCK, 0);
                PackedBuffer::Q8 {
                    absmax: absmax[range.start / BLOCK..range.end.div_ceil(BLOCK)].to_vec(),
                    codes: codes[range].to_vec(),
                    map: *map,
                }
            }
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            PackedBuffer::Bf16(b) => b.len(),
            PackedBuffer::Q8 { codes, .. } => codes.len(),
        }
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes stored.
    pub fn bytes(&self) -> usize {
        match self {
            PackedBuffer::Bf16(b) => 2 * b.len(),
            PackedBuffer::Q8 { codes, absmax, .. } => codes.len() + 4 * absmax.len(),
        }
    }
}

/// Bytes a buffer of `len` elements takes at `precision` (`elem`: bytes of the full type).
pub fn buffer_bytes(precision: StatePrecision, len: usize, elem: usize) -> f64 {
    match precision {
        StatePrecision::F32 => (elem * len) as f64,
        StatePrecision::Bf16 => (2 * len) as f64,
        StatePrecision::Bit8 => (len + 4 * len.div_ceil(BLOCK)) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_bitsandbytes_defaults() {
        let s: StateStorage =
            serde_json::from_value(serde_json::json!({"state_precision": "8bit"})).unwrap();
        assert_eq!(s.state_precision, StatePrecision::Bit8);
        assert_eq!(s.min_8bit_size, 4096);
        assert_eq!(s.precision_for(4095), StatePrecision::F32);
        assert_eq!(s.precision_for(4096), StatePrecision::Bit8);
        assert!(serde_json::from_value::<StateStorage>(
            serde_json::json!({"state_precision": "4bit"})
        )
        .is_err());
        let bad = StateStorage {
            block_size: 128,
            ..StateStorage::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidHyperparameter {
                name: "block_size",
                ..
            })
        ));
        assert!("fp8".parse::<StatePrecision>().is_err());
        assert_eq!(
            "bf16".parse::<StatePrecision>().unwrap(),
            StatePrecision::Bf16
        );
    }

    use crate::optim::adam::Adam;
    use crate::optim::lamb::Lamb;
    use crate::{Optimizer, ParamGroup, ParamInfo, RuleOptimizer};

    fn adamw(precision: StatePrecision, infos: Vec<ParamInfo>) -> RuleOptimizer<f32, Adam> {
        let mut group = ParamGroup::new(Adam::adamw(), infos);
        group.state = StateStorage {
            min_8bit_size: 100,
            ..StateStorage::new(precision)
        };
        RuleOptimizer::with_groups(vec![group]).unwrap()
    }

    fn infos() -> Vec<ParamInfo> {
        vec![ParamInfo::new("w", [30, 20]), ParamInfo::new("b", [20])]
    }

    fn run(opt: &mut RuleOptimizer<f32, Adam>, p: &mut [Vec<f32>], steps: std::ops::Range<u64>) {
        for s in steps {
            let g: Vec<Vec<f32>> = p
                .iter()
                .map(|t| {
                    (0..t.len())
                        .map(|i| ((i as u64 * 7 + s) as f32 * 0.3).sin())
                        .collect()
                })
                .collect();
            let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|t| &mut t[..]).collect();
            let gs: Vec<&[f32]> = g.iter().map(|t| &t[..]).collect();
            opt.step(&mut ps, &gs).unwrap();
        }
    }

    #[test]
    fn state_memory_is_the_precisions() {
        let big = vec![ParamInfo::new("w", [1 << 16])];
        let bytes = |p| adamw(p, big.clone()).state_bytes_per_param();
        assert_eq!(bytes(StatePrecision::F32), 8.0);
        assert_eq!(bytes(StatePrecision::Bf16), 4.0);
        assert_eq!(bytes(StatePrecision::Bit8), 2.0 * (1.0 + 4.0 / 256.0));
        // Traffic: p read and written, g read, each buffer read and written.
        assert_eq!(
            adamw(StatePrecision::Bit8, big).traffic_per_param(),
            12.0 + 4.0 * (1.0 + 4.0 / 256.0)
        );
        // The small tensor keeps f32 state under 8 bits.
        let opt = adamw(StatePrecision::Bit8, infos());
        assert!(opt.packed_buffer(0, 0).is_some() && opt.buffer(0, 0).is_none());
        assert!(opt.packed_buffer(1, 0).is_none() && opt.buffer(1, 0).is_some());
    }

    #[test]
    fn checkpoints_resume_bit_exactly_and_convert_between_precisions() {
        for precision in [StatePrecision::Bit8, StatePrecision::Bf16] {
            let mut a = adamw(precision, infos());
            let mut pa = vec![vec![0.5f32; 600], vec![-0.25f32; 20]];
            run(&mut a, &mut pa, 0..3);
            let bytes = crate::checkpoint::to_bytes(&a.state_dict()).unwrap();
            let mut b = adamw(precision, infos());
            b.load_state_dict(&crate::checkpoint::from_bytes(&bytes).unwrap())
                .unwrap();
            let mut pb = pa.clone();
            run(&mut a, &mut pa, 3..6);
            run(&mut b, &mut pb, 3..6);
            assert_eq!(pa, pb, "{precision}: resumed");
            assert_eq!(a.state_dict(), b.state_dict());
            // Another precision is refused unless asked for, and the refusal changes nothing.
            let mut full = adamw(StatePrecision::F32, infos());
            let before = full.state_dict();
            let e = full.load_state_dict(&a.state_dict()).unwrap_err();
            assert!(
                matches!(&e, crate::Error::State(m) if m.contains("convert_state_precision")),
                "{e}"
            );
            assert_eq!(full.state_dict(), before);
            // Asked: into f32 and back, the values the codes stand for, then the same codes.
            full.load_state_dict(&a.state_dict().convert_state_precision())
                .unwrap();
            let decoded = a.packed_buffer(0, 1).unwrap().decode();
            assert_eq!(full.buffer(0, 1).unwrap(), &decoded[..]);
            let mut again = adamw(precision, infos());
            assert!(again.load_state_dict(&full.state_dict()).is_err());
            again
                .load_state_dict(&full.state_dict().convert_state_precision())
                .unwrap();
            assert_eq!(again.state_dict(), a.state_dict());
        }
    }

    fn absmax(sd: &mut crate::StateDict) -> &mut Vec<f32> {
        match &mut sd.tensors.get_mut("g0.w.m.absmax").expect("absmax").data {
            TensorData::F32(a) => a,
            other => panic!("absmax stored as {}", other.type_name()),
        }
    }

    #[test]
    fn bad_checkpoints_are_refused_and_change_nothing() {
        let mut opt = adamw(StatePrecision::Bit8, infos());
        let mut p = vec![vec![0.5f32; 600], vec![-0.25f32; 20]];
        run(&mut opt, &mut p, 0..2);
        let good = opt.state_dict();
        let mut bad = Vec::new();
        for value in [f32::NAN, f32::INFINITY, -1.0] {
            let mut sd = good.clone();
            absmax(&mut sd)[1] = value;
            bad.push(sd);
        }
        let mut short = good.clone();
        absmax(&mut short).pop();
        bad.push(short);
        let mut truncated = good.clone();
        truncated.tensors.insert(
            "g0.w.v".into(),
            StateTensor {
                shape: vec![30, 20],
                data: TensorData::U8(vec![0; 599]),
            },
        );
        bad.push(truncated);
        let mut missing = good.clone();
        missing.tensors.remove("g0.w.v.absmax");
        bad.push(missing);
        for sd in &bad {
            let e = opt.load_state_dict(sd).unwrap_err();
            assert!(matches!(e, crate::Error::State(_)), "{e}");
            assert_eq!(opt.state_dict(), good, "a refused load changed the state");
        }
    }

    #[test]
    fn rules_that_read_state_outside_the_update_refuse_low_precision() {
        let mut group = ParamGroup::new(Lamb::default(), vec![ParamInfo::new("w", [10])]);
        group.state = StateStorage::new(StatePrecision::Bit8);
        let e = RuleOptimizer::<f32, _>::with_groups(vec![group]).unwrap_err();
        assert!(e.to_string().contains("element-wise"), "{e}");
        let bad = crate::registry::build::<f32>(
            "adamw",
            &serde_json::json!({"state_precision": "4bit"}),
            vec![ParamInfo::new("w", [10])],
            &Default::default(),
        );
        assert!(bad.is_err());
        let bad = crate::registry::build::<f32>(
            "adamw",
            &serde_json::json!({"state_precision": "8bit", "block_size": 64}),
            vec![ParamInfo::new("w", [10])],
            &Default::default(),
        );
        assert!(matches!(
            bad,
            Err(crate::Error::InvalidHyperparameter {
                name: "block_size",
                ..
            })
        ));
    }

    #[test]
    fn packed_buffers_round_trip_their_values() {
        let x: Vec<f32> = (0..600).map(|i| (i as f32 * 0.1).sin() * 0.01).collect();
        let q = PackedBuffer::encode(&x, StatePrecision::Bit8, QuantMap::Signed);
        assert_eq!(q.bytes(), 600 + 4 * 3);
        let back = q.decode();
        // The dynamic map's resolution near the block's absmax is under 1%.
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= 0.01 * 0.0101, "{a} vs {b}");
        }
        assert_eq!(
            PackedBuffer::encode(&back, StatePrecision::Bit8, QuantMap::Signed),
            q
        );
        let h = PackedBuffer::encode(&x, StatePrecision::Bf16, QuantMap::Signed);
        assert_eq!(h.bytes(), 1200);
        assert_eq!(
            PackedBuffer::encode(&h.decode(), StatePrecision::Bf16, QuantMap::Signed),
            h
        );
    }
}
