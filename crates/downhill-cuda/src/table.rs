//! The device-side table of tensors a launch walks ([`codegen`](crate::codegen)'s `Tensor`
//! rows), kept on the host too so that a step uploads it only when something in it changed.
//!
//! A step's host half is one pass over the tensors: for each, its two addresses are read and
//! compared with the row's (a row is one 64-byte line); the state addresses are set when the
//! arenas are made. With 10 000 tensors this pass is most of what the host does per step, so
//! it is kept to that.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use downhill::{Error, ParamInfo};

use crate::codegen::{tensor_row, TENSOR_WORDS};
use crate::device::{Gpu, GpuFloat};
use crate::error::{driver, CudaError, Result};
use crate::optimizer::{addr, addr_mut};

/// A table of tensors on the host and the device.
#[derive(Debug)]
pub(crate) struct TensorTable {
    host: Vec<u64>,
    dev: CudaSlice<u64>,
    /// The host table differs from the device's.
    dirty: bool,
}

impl TensorTable {
    /// A table of `n` empty rows (every row is written before the first upload).
    pub fn new(gpu: &Gpu, n: usize) -> Result<Self> {
        Ok(TensorTable {
            host: vec![0; n * TENSOR_WORDS],
            dev: gpu.zeros(n * TENSOR_WORDS)?,
            dirty: true,
        })
    }

    /// Set tensor `t`'s state buffers' addresses (0 where unused): where its arenas are.
    pub fn set_state(&mut self, t: usize, state: [u64; 4]) {
        let row = &mut self.host[t * TENSOR_WORDS..(t + 1) * TENSOR_WORDS];
        if row[2..6] != state {
            let new = tensor_row(row[0], row[1], state, row[6]);
            row.copy_from_slice(&new);
            self.dirty = true;
        }
    }

    /// Set tensor `t`'s parameter (what the kernel writes) and gradient (what it reads)
    /// addresses. The alignment flag follows them.
    pub fn set(&mut self, t: usize, p: u64, g: u64) {
        let row = &mut self.host[t * TENSOR_WORDS..(t + 1) * TENSOR_WORDS];
        if row[0] != p || row[1] != g {
            let new = tensor_row(p, g, [row[2], row[3], row[4], row[5]], row[6]);
            row.copy_from_slice(&new);
            self.dirty = true;
        }
    }

    /// Set the offset of tensor `t`'s constants.
    pub fn set_coef(&mut self, t: usize, coef: u64) {
        let slot = &mut self.host[t * TENSOR_WORDS + 6];
        if *slot != coef {
            *slot = coef;
            self.dirty = true;
        }
    }

    /// The table on the device, uploaded first if it changed.
    pub fn upload(&mut self, gpu: &Gpu) -> Result<&CudaSlice<u64>> {
        if self.dirty {
            gpu.stream()
                .memcpy_htod(&self.host, &mut self.dev)
                .map_err(driver("copying a tensor table"))?;
            self.dirty = false;
        }
        Ok(&self.dev)
    }
}

/// Whether a buffer made on `stream` belongs to `gpu`'s context (the stream itself, the
/// usual case, answers without reading the context).
fn on_gpu(gpu: &Gpu, stream: &Arc<CudaStream>) -> bool {
    Arc::ptr_eq(stream, gpu.stream()) || Arc::ptr_eq(stream.context(), gpu.context())
}

/// Check counts and lengths of a step's tensors (`lens`: the lengths of `infos`, cached), and
/// that they are on `gpu`; then give each tensor's parameter and gradient addresses to
/// `each` (`None`: the tensor has no gradient this step, [`GpuOptimizer::step_some`]). One
/// pass over the tensors.
///
/// [`GpuOptimizer::step_some`]: crate::GpuOptimizer::step_some
pub(crate) fn bind<F: GpuFloat>(
    gpu: &Gpu,
    infos: &[ParamInfo],
    lens: &[usize],
    params: &mut [&mut CudaSlice<F>],
    grads: &[Option<&CudaSlice<F>>],
    mut each: impl FnMut(usize, u64, Option<u64>),
) -> Result<()> {
    downhill::check_tensor_counts(infos.len(), params.len(), grads.len())?;
    for (t, (p, g)) in params.iter_mut().zip(grads).enumerate() {
        let n = lens[t];
        let g_ok = g.is_none_or(|g| g.len() == n && on_gpu(gpu, g.stream()));
        if p.len() != n || !g_ok || !on_gpu(gpu, p.stream()) {
            return Err(mismatch(gpu, &infos[t], p, *g));
        }
        each(t, addr_mut(gpu, p), g.map(|g| addr(gpu, g)));
    }
    Ok(())
}

/// What is wrong with tensor `info`'s buffers.
fn mismatch<F>(
    gpu: &Gpu,
    info: &ParamInfo,
    p: &CudaSlice<F>,
    g: Option<&CudaSlice<F>>,
) -> CudaError {
    let buffers = [("params", Some(p)), ("grads", g)];
    for (what, buf) in buffers.iter().filter_map(|(w, b)| b.map(|b| (*w, b))) {
        if buf.len() != info.len() {
            return Error::LengthMismatch {
                what,
                param: info.name.clone(),
                expected: info.len(),
                got: buf.len(),
            }
            .into();
        }
        if !on_gpu(gpu, buf.stream()) {
            return CudaError::OtherContext {
                param: info.name.clone(),
            };
        }
    }
    CudaError::OtherContext {
        param: info.name.clone(),
    }
}
