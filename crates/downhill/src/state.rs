//! An optimizer's whole state as named tensors plus metadata: what checkpoints store.
//!
//! Keys follow `g{group}.{param}.{field}`: `g0.fc1.weight.m` is the first moment (PyTorch's
//! `exp_avg`) of parameter `fc1.weight` in group 0. Per-tensor scalars (step counts, SWATS'
//! phase) are 0-d `f64` tensors under the same scheme. Wrappers add their own keys
//! (Lookahead: `…slow`). Matching is by name, never by position.

use std::collections::BTreeMap;

use crate::kernel::{DType, Float};
use crate::{Error, Result};

/// The version of the state layout; stored in every checkpoint.
pub const FORMAT_VERSION: u32 = 1;

/// A tensor's elements.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// Bytes (8-bit quantization codes).
    U8(Vec<u8>),
    /// bfloat16 elements, as their bits.
    Bf16(Vec<u16>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bf16(v) => v.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The element type's name: `f32`, `f64`, `u8` or `bf16`.
    pub fn type_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => DType::F32.name(),
            TensorData::F64(_) => DType::F64.name(),
            TensorData::U8(_) => "u8",
            TensorData::Bf16(_) => "bf16",
        }
    }
}

/// One named tensor of optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensor {
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: TensorData,
}

impl StateTensor {
    /// A 0-d `f64` tensor.
    pub fn scalar(x: f64) -> Self {
        StateTensor {
            shape: vec![],
            data: TensorData::F64(vec![x]),
        }
    }
    /// A buffer of a parameter's element type.
    pub fn buffer<F: Float>(shape: &[usize], values: Vec<F>) -> Self {
        StateTensor {
            shape: shape.to_vec(),
            data: F::wrap(values),
        }
    }
}

/// An optimizer's state: named tensors and string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    /// Metadata: `format_version`, `optimizer`, `dtype`, `config`, `step`, … .
    pub meta: BTreeMap<String, String>,
    /// The tensors, by key.
    pub tensors: BTreeMap<String, StateTensor>,
}

/// The metadata entry that asks a load to convert state stored in another precision
/// ([`StateDict::convert_state_precision`]).
pub const CONVERT_STATE_PRECISION: &str = "convert_state_precision";

impl StateDict {
    /// Ask the optimizer that loads this state to convert buffers stored in another precision
    /// than its own (`f32`, `bf16`, `8bit`: an `f32` checkpoint into an optimizer with 8-bit
    /// state, or back): decoded, rounded to `f32`, encoded. Without it such a load is refused
    /// with [`Error::State`] naming the tensor and both precisions, and changes nothing.
    pub fn convert_state_precision(mut self) -> Self {
        self.meta
            .insert(CONVERT_STATE_PRECISION.into(), "true".into());
        self
    }

    /// Whether [`convert_state_precision`](StateDict::convert_state_precision) was asked.
    pub fn converts_state_precision(&self) -> bool {
        self.meta.get(CONVERT_STATE_PRECISION).map(String::as_str) == Some("true")
    }

    /// A metadata entry, or an error naming it.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::State(format!("metadata '{key}' is missing")))
    }

    /// A metadata entry parsed as an integer.
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        let s = self.meta(key)?;
        s.parse()
            .map_err(|_| Error::State(format!("metadata '{key}' = '{s}' is not an integer")))
    }

    /// Refuse a state saved by another optimizer, element type or format.
    pub fn expect(&self, optimizer: &str, dtype: DType) -> Result<()> {
        let version = self.meta_u64("format_version")?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(Error::State(format!(
                "format version {version} is not supported (this build reads {FORMAT_VERSION})"
            )));
        }
        let saved = self.meta("optimizer")?;
        if saved != optimizer {
            return Err(Error::State(format!(
                "state is from optimizer '{saved}', this optimizer is '{optimizer}'"
            )));
        }
        let saved = self.meta("dtype")?;
        if saved != dtype.name() {
            return Err(Error::State(format!(
                "state holds {saved} parameters, this optimizer steps {dtype}"
            )));
        }
        Ok(())
    }

    /// A `f64` scalar by key.
    pub fn scalar(&self, key: &str) -> Result<f64> {
        match self.tensors.get(key) {
            Some(StateTensor {
                shape,
                data: TensorData::F64(v),
            }) if shape.is_empty() && v.len() == 1 => Ok(v[0]),
            Some(_) => Err(Error::State(format!("'{key}' is not an f64 scalar"))),
            None => Err(Error::State(format!("'{key}' is missing"))),
        }
    }

    /// A buffer of `len` elements of type `F` by key.
    pub fn buffer<F: Float>(&self, key: &str, shape: &[usize]) -> Result<&[F]> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| Error::State(format!("'{key}' is missing")))?;
        if t.shape != shape {
            return Err(Error::State(format!(
                "'{key}' has shape {:?}, the parameter has shape {shape:?}",
                t.shape
            )));
        }
        let values = F::unwrap(&t.data).ok_or_else(|| {
            Error::State(format!(
                "'{key}' holds {}, expected {}",
                t.data.type_name(),
                F::DTYPE
            ))
        })?;
        let n: usize = shape.iter().product();
        if values.len() != n {
            return Err(Error::State(format!(
                "'{key}' holds {} elements for shape {shape:?}",
                values.len()
            )));
        }
        Ok(values)
    }

    /// Refuse keys that `known` does not accept (a state for other parameters).
    pub fn reject_unknown_keys(&self, known: impl Fn(&str) -> bool) -> Result<()> {
        let extra: Vec<&str> = self
            .tensors
            .keys()
            .map(String::as_str)
            .filter(|k| !known(k))
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(Error::State(format!(
                "state has entries for parameters this optimizer does not hold: {}",
                extra.join(", ")
            )))
        }
    }
}
