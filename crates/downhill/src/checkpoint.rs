//! Checkpoints: an optimizer's [`StateDict`] as one safetensors file.
//!
//! Tensors are stored under their state keys (`g0.fc1.weight.m`, …); the safetensors
//! `__metadata__` holds the format version, optimizer name, element type, configuration,
//! step counts and a CRC-32 over everything else, so a corrupted file is detected on load.
//!
//! Saving is crash-safe: the file is written to a temporary file beside the target, flushed
//! to disk, then renamed over it, so a failed or interrupted save leaves the previous
//! checkpoint intact.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::kernel::Float;
use crate::optimizer::Optimizer;
use crate::state::{StateDict, StateTensor, TensorData};
use crate::{Error, Result};

const CHECKSUM_KEY: &str = "crc32";

fn bytes_of(data: &TensorData) -> (Dtype, Vec<u8>) {
    match data {
        TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::U8(v) => (Dtype::U8, v.clone()),
        TensorData::Bf16(v) => (
            Dtype::BF16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    }
}

fn checksum(
    meta: &HashMap<String, String>,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != CHECKSUM_KEY).collect();
    keys.sort();
    for k in keys {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(meta[k].as_bytes());
        h.update(&[0]);
    }
    for (name, dtype, shape, data) in tensors {
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}{shape:?}").as_bytes());
        h.update(data);
    }
    h.finalize()
}

/// Encode a state as safetensors bytes.
pub fn to_bytes(state: &StateDict) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = state
        .tensors
        .iter()
        .map(|(k, t)| {
            let (dtype, bytes) = bytes_of(&t.data);
            (k.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let mut meta: HashMap<String, String> = state.meta.clone().into_iter().collect();
    meta.insert(CHECKSUM_KEY.into(), checksum(&meta, &tensors).to_string());
    let views = tensors
        .iter()
        .map(|(k, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::State(format!("tensor '{k}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| Error::State(format!("cannot encode: {e}")))
}

/// Decode safetensors bytes into a state, verifying the checksum.
pub fn from_bytes(bytes: &[u8]) -> Result<StateDict> {
    let corrupt = |what: String| Error::State(format!("corrupt or truncated checkpoint: {what}"));
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| corrupt("no metadata".into()))?;
    let mut tensors = Vec::new();
    let mut state = StateDict::default();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F64 => TensorData::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            Dtype::U8 => TensorData::U8(raw.to_vec()),
            Dtype::BF16 => TensorData::Bf16(
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            other => return Err(corrupt(format!("tensor '{name}' has dtype {other:?}"))),
        };
        tensors.push((name.clone(), view.dtype(), shape.clone(), raw.to_vec()));
        state.tensors.insert(name, StateTensor { shape, data });
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let stored = meta
        .get(CHECKSUM_KEY)
        .ok_or_else(|| corrupt("no checksum".into()))?;
    let actual = checksum(&meta, &tensors).to_string();
    if *stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored}, computed {actual})"
        )));
    }
    state.meta = meta
        .into_iter()
        .filter(|(k, _)| k != CHECKSUM_KEY)
        .collect();
    Ok(state)
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Write `state` to `path` crash-safely (temporary file, flush, rename).
pub fn save_state(path: &Path, state: &StateDict) -> Result<()> {
    let bytes = to_bytes(state)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_err(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}

/// Read a state from `path`.
pub fn load_state(path: &Path) -> Result<StateDict> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    from_bytes(&bytes).map_err(|e| io_err(path, e))
}

/// Save an optimizer's whole state to `path`.
pub fn save<F: Float>(path: &Path, optimizer: &(impl Optimizer<F> + ?Sized)) -> Result<()> {
    save_state(path, &optimizer.state_dict())
}

/// Load an optimizer's state from `path`; on error the optimizer is unchanged.
pub fn load<F: Float>(path: &Path, optimizer: &mut (impl Optimizer<F> + ?Sized)) -> Result<()> {
    let state = load_state(path)?;
    optimizer
        .load_state_dict(&state)
        .map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file: its 8-byte header length, the JSON header, the data.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    /// Files that claim more than they hold are refused with an error, before anything of
    /// the claimed size is allocated (a test that allocated 2⁴⁰ × 8 bytes would abort).
    #[test]
    fn claims_of_huge_shapes_or_headers_are_refused() {
        let meta = r#""__metadata__":{"downhill_crc32":"0"}"#;
        for (what, bytes) in [
            (
                "a tensor of 2^40 elements over 8 bytes",
                file(
                    &format!(
                        r#"{{{meta},"g0.x.m":{{"dtype":"F64","shape":[1099511627776],"data_offsets":[0,8]}}}}"#
                    ),
                    &[0; 8],
                ),
            ),
            (
                "a shape whose product overflows",
                file(
                    &format!(
                        r#"{{{meta},"g0.x.m":{{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}}}"#
                    ),
                    &[0; 8],
                ),
            ),
            (
                "offsets beyond the file",
                file(
                    &format!(
                        r#"{{{meta},"g0.x.m":{{"dtype":"F64","shape":[1099511627776],"data_offsets":[0,8796093022208]}}}}"#
                    ),
                    &[0; 8],
                ),
            ),
            ("a header length of 2^63", {
                let mut b = (1u64 << 63).to_le_bytes().to_vec();
                b.extend_from_slice(b"{}");
                b
            }),
        ] {
            match from_bytes(&bytes) {
                Err(Error::State(msg)) => assert!(msg.contains("corrupt"), "{what}: {msg}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
