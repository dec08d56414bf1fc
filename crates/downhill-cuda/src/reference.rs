//! Replaying reference cases on the GPU ([`downhill::reference`]): the parameters stay on
//! the GPU, each step's gradients go up, the new parameters come back to be compared.

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use downhill::reference::{Build, Executor, Stepper};
use downhill::StateDict;

use crate::device::{Gpu, GpuFloat};
use crate::error::CudaError;
use crate::optimizer::GpuOptimizer;
use crate::registry::build;

/// The GPU as a place to replay cases.
#[derive(Clone, Debug)]
pub struct OnGpu(pub Arc<Gpu>);

struct GpuStepper<F: GpuFloat> {
    gpu: Arc<Gpu>,
    opt: Box<dyn GpuOptimizer<F>>,
    params: Vec<CudaSlice<F>>,
}

impl<F: GpuFloat> Stepper<F> for GpuStepper<F> {
    fn step(&mut self, params: &mut [Vec<F>], grads: &[Vec<F>]) -> Result<(), String> {
        let mut run = || -> crate::Result<()> {
            let grads: Vec<CudaSlice<F>> = grads
                .iter()
                .map(|g| self.gpu.upload(g))
                .collect::<crate::Result<_>>()?;
            let mut ps: Vec<&mut CudaSlice<F>> = self.params.iter_mut().collect();
            let gs: Vec<&CudaSlice<F>> = grads.iter().collect();
            self.opt.step(&mut ps, &gs)?;
            for (host, dev) in params.iter_mut().zip(&self.params) {
                *host = self.gpu.download(dev)?;
            }
            Ok(())
        };
        run().map_err(|e| e.to_string())
    }

    fn state_dict(&self) -> Result<StateDict, String> {
        self.opt.state_dict().map_err(|e| e.to_string())
    }
}

fn stepper<F: GpuFloat>(
    gpu: &Arc<Gpu>,
    b: Build<'_>,
    init: &[Vec<F>],
) -> Result<Box<dyn Stepper<F>>, String> {
    let opt = build::<F>(gpu, b.name, b.options, b.params.to_vec(), b.setup).map_err(|e| {
        match e {
            // Skipped, with the reason, not failed (Muon and Adafactor).
            CudaError::Unsupported { .. } => format!("{}{e}", downhill::reference::UNSUPPORTED),
            e => e.to_string(),
        }
    })?;
    let params = init
        .iter()
        .map(|p| gpu.upload(p))
        .collect::<crate::Result<_>>()
        .map_err(|e| e.to_string())?;
    Ok(Box::new(GpuStepper {
        gpu: gpu.clone(),
        opt,
        params,
    }))
}

impl Executor for OnGpu {
    fn f32(&self, b: Build<'_>, init: &[Vec<f32>]) -> Result<Box<dyn Stepper<f32>>, String> {
        stepper(&self.0, b, init)
    }
    fn f64(&self, b: Build<'_>, init: &[Vec<f64>]) -> Result<Box<dyn Stepper<f64>>, String> {
        stepper(&self.0, b, init)
    }
}
