//! Lookahead on the GPU: any [`GpuOptimizer`] inside, the slow weights in one device arena,
//! and one launch over all tensors every `k` steps. See [`downhill::optim::lookahead`] for
//! the algorithm; checkpoints are the CPU's.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, PushKernelArg};
use downhill::optim::lookahead::{LookaheadConfig, SyncState};
use downhill::{ParamInfo, StateDict, StepOutcome};

use crate::codegen::{self, CHUNK_WORDS};
use crate::device::Kernel;
use crate::device::{Gpu, GpuFloat};
use crate::error::{driver, Result};
use crate::optimizer::{addr_mut, GpuOptimizer};
use crate::table::{self, TensorTable};

/// Lookahead around a GPU optimizer.
#[derive(Debug)]
pub struct CudaLookahead<F: GpuFloat> {
    gpu: Arc<Gpu>,
    inner: Box<dyn GpuOptimizer<F>>,
    state: SyncState,
    offsets: Vec<usize>,
    slow: CudaSlice<F>,
    /// Each tensor's length.
    lens: Vec<usize>,
    /// The synchronization's tensor table: fast and slow weights' addresses.
    table: TensorTable,
    chunks: CudaSlice<u64>,
    nchunks: usize,
    sync: Kernel,
}

impl<F: GpuFloat> CudaLookahead<F> {
    /// Wrap `inner` (the configuration checked as the CPU's [`downhill::Lookahead::new`]
    /// checks it).
    pub fn new(
        gpu: Arc<Gpu>,
        inner: Box<dyn GpuOptimizer<F>>,
        config: LookaheadConfig,
    ) -> Result<Self> {
        config.validate()?;
        let lens: Vec<usize> = inner.params().iter().map(ParamInfo::len).collect();
        let (offsets, total) = codegen::arena_offsets(&lens, F::WIDTH);
        let chunks = codegen::chunks(&lens, gpu.tuning().chunk, |_| true);
        let mut opt = CudaLookahead {
            slow: gpu.zeros(total)?,
            table: TensorTable::new(&gpu, lens.len())?,
            chunks: gpu.upload(&chunks)?,
            nchunks: chunks.len() / CHUNK_WORDS,
            sync: gpu.function("lookahead_sync", &codegen::lookahead_kernel::<F>())?,
            gpu,
            inner,
            state: SyncState {
                config,
                count: 0,
                ready: false,
            },
            offsets,
            lens,
        };
        opt.bind_slow();
        Ok(opt)
    }

    /// Write the slow weights' addresses into the table.
    fn bind_slow(&mut self) {
        let elem = std::mem::size_of::<F>() as u64;
        let slow = addr_mut(&self.gpu, &mut self.slow);
        for (t, &o) in self.offsets.iter().enumerate() {
            self.table.set_state(t, [slow + o as u64 * elem, 0, 0, 0]);
        }
    }

    /// Copy the parameters into the slow weights.
    fn take_slow(&mut self, params: &[&mut CudaSlice<F>]) -> Result<()> {
        for (t, p) in params.iter().enumerate() {
            let o = self.offsets[t];
            let mut dst = self.slow.slice_mut(o..o + p.len());
            self.gpu
                .stream()
                .memcpy_dtod(&**p, &mut dst)
                .map_err(driver("copying the slow weights"))?;
        }
        Ok(())
    }

    /// `slow ← slow + α(p − slow); p ← slow` over every tensor, in one launch (the table
    /// written by this step's `bind`).
    fn synchronize(&mut self) -> Result<()> {
        let gpu = self.gpu.clone();
        let table = self.table.upload(&gpu)?;
        let alpha = F::from_f64(self.state.config.alpha);
        let n = self.nchunks as u64;
        // SAFETY: the kernel's signature matches; the table holds each parameter's and
        // slow buffer's address, valid for the chunks' ranges.
        unsafe {
            gpu.stream()
                .launch_builder(&self.sync.function)
                .arg(&self.chunks)
                .arg(&n)
                .arg(table)
                .arg(&alpha)
                .launch(self.sync.config(&gpu, self.nchunks))
                .map_err(driver("launching Lookahead's synchronization"))?;
        }
        Ok(())
    }
}

impl<F: GpuFloat> GpuOptimizer<F> for CudaLookahead<F> {
    fn name(&self) -> String {
        "lookahead".into()
    }

    fn params(&self) -> &[ParamInfo] {
        self.inner.params()
    }

    /// Parameters without a gradient are skipped by the inner optimizer; the synchronization
    /// every `k` steps still moves every tensor's slow weights toward its fast ones (as the
    /// CPU's Lookahead).
    fn step_some(
        &mut self,
        params: &mut [&mut CudaSlice<F>],
        grads: &[Option<&CudaSlice<F>>],
    ) -> Result<StepOutcome> {
        let table = &mut self.table;
        table::bind(
            &self.gpu,
            self.inner.params(),
            &self.lens,
            params,
            grads,
            |t, p, _| {
                table.set(t, p, 0);
            },
        )?;
        if !self.state.ready {
            self.take_slow(params)?;
        }
        let outcome = self.inner.step_some(params, grads);
        if !matches!(outcome, Ok(StepOutcome::Applied)) {
            if !self.state.ready {
                // As on the CPU: the slow weights are not taken until a step is applied.
                self.gpu
                    .stream()
                    .memset_zeros(&mut self.slow)
                    .map_err(driver("clearing the slow weights"))?;
            }
            return outcome;
        }
        self.state.ready = true;
        self.state.count += 1;
        if self.state.count.is_multiple_of(self.state.config.k) {
            self.synchronize()?;
        }
        Ok(StepOutcome::Applied)
    }

    fn steps_taken(&self) -> u64 {
        self.inner.steps_taken()
    }

    fn steps_skipped(&self) -> u64 {
        self.inner.steps_skipped()
    }

    fn num_groups(&self) -> usize {
        self.inner.num_groups()
    }

    fn lr(&self, group: usize) -> Result<f64> {
        self.inner.lr(group)
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.inner.set_lr(group, lr)
    }

    fn state_dict(&self) -> Result<StateDict> {
        let slow = self.gpu.download(&self.slow)?;
        let params = self.inner.params();
        Ok(self.state.wrap(self.inner.state_dict()?, params, |i| {
            let o = self.offsets[i];
            slow[o..o + params[i].len()].to_vec()
        }))
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let (state, slow, inner_sd) = SyncState::unwrap::<F>(sd, self.inner.params())?;
        let mut host = vec![F::from_f64(0.0); self.slow.len()];
        for (t, s) in slow.iter().enumerate() {
            host[self.offsets[t]..self.offsets[t] + s.len()].copy_from_slice(s);
        }
        let slow = self.gpu.upload(&host)?;
        self.inner.load_state_dict(&inner_sd)?;
        self.slow = slow;
        self.bind_slow();
        self.state.count = state.count;
        self.state.ready = state.ready;
        Ok(())
    }

    fn traffic_per_param(&self) -> f64 {
        let sync = 4.0 * std::mem::size_of::<F>() as f64 / self.state.config.k as f64;
        self.inner.traffic_per_param() + sync
    }
}
