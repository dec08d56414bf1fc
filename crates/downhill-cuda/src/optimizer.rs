//! The GPU optimizer interface, and [`CudaRuleOptimizer`]: a [`StepPlanner`] driving
//! generated kernels over device memory.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use downhill::kernel::trace::{trace, trace_measure, Tape};
use downhill::noise::GradientNoise;
use downhill::optim::Rule;
use downhill::{Admit, ParamGroup, ParamInfo, StateDict, StepOutcome, StepPlanner};

use crate::codegen::{self, CHUNK_WORDS, THREADS};
use crate::device::{Gpu, GpuFloat, Kernel};
use crate::error::{driver, CudaError, Result};
use crate::table::{self, TensorTable};

/// An optimizer whose parameters, gradients and state live on a GPU: the GPU's
/// [`downhill::Optimizer`]. Tensors are passed in the order of [`GpuOptimizer::params`]; a
/// step that returns `Err` changes nothing (unless the GPU itself fails).
pub trait GpuOptimizer<F: GpuFloat>: Send + Debug {
    /// The algorithm's name, as in checkpoints.
    fn name(&self) -> String;
    /// The parameters, in the order `step` takes them.
    fn params(&self) -> &[ParamInfo];
    /// Take one step: update `params` in place from `grads`.
    fn step(
        &mut self,
        params: &mut [&mut CudaSlice<F>],
        grads: &[&CudaSlice<F>],
    ) -> Result<StepOutcome> {
        let grads: Vec<Option<&CudaSlice<F>>> = grads.iter().map(|&g| Some(g)).collect();
        self.step_some(params, &grads)
    }
    /// Take one step in which some parameters may have no gradient (`None`), skipped as the
    /// CPU's [`downhill::Optimizer::step_some`] skips them (as PyTorch skips a parameter whose
    /// `.grad` is `None`): not read, not decayed, their state and scalars unchanged, left out
    /// of clipping's global norm, the gradient scan, the noise and the group sums. The step
    /// itself is still counted.
    fn step_some(
        &mut self,
        params: &mut [&mut CudaSlice<F>],
        grads: &[Option<&CudaSlice<F>>],
    ) -> Result<StepOutcome>;
    /// Steps applied so far.
    fn steps_taken(&self) -> u64;
    /// Steps skipped because of non-finite gradients.
    fn steps_skipped(&self) -> u64;
    /// Number of parameter groups.
    fn num_groups(&self) -> usize;
    /// The learning rate the next step will use in `group`.
    fn lr(&self, group: usize) -> Result<f64>;
    /// Set the base learning rate of `group`.
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()>;
    /// The whole state, copied to the host (the CPU's format: a checkpoint moves between
    /// CPU and GPU).
    fn state_dict(&self) -> Result<StateDict>;
    /// Restore a state. On error nothing is changed.
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()>;
    /// Bytes a step must move per parameter (as [`downhill::Optimizer::traffic_per_param`]).
    fn traffic_per_param(&self) -> f64;
}

/// The device address of a buffer (event tracking is off: nothing to record).
pub(crate) fn addr<F>(gpu: &Gpu, s: &CudaSlice<F>) -> u64 {
    s.device_ptr(gpu.stream()).0
}

/// The device address of a buffer to be written.
pub(crate) fn addr_mut<F>(gpu: &Gpu, s: &mut CudaSlice<F>) -> u64 {
    s.device_ptr_mut(gpu.stream()).0
}

/// One compiled variant of a pass and the chunks of the tensors that use it this step.
#[derive(Debug)]
struct Variant {
    kernel: Kernel,
    reduces: bool,
    /// Its tensors' chunks, on the host (to sum reductions per tensor) and uploaded.
    table: Vec<u64>,
    chunks: Option<CudaSlice<u64>>,
    nchunks: usize,
}

/// The compiled variants of one pass (the update, or a rule's reading pass) and this step's
/// chunk tables: one instance per pass, so that the two passes of a step do not rebuild each
/// other's tables.
#[derive(Debug)]
struct Pass {
    /// Kernel names start with this (`lamb_measure_f32_0`).
    what: &'static str,
    /// Compiled variants by trace key.
    variants: Vec<Variant>,
    by_key: HashMap<String, usize>,
    /// Each tensor's variant the chunk tables were built for (`usize::MAX`: a tensor not in
    /// the step, which has no chunks): the cache key of the tables, the assignment and the
    /// mask of active tensors in one.
    assigned: Vec<usize>,
}

impl Pass {
    fn new(what: &'static str, n: usize) -> Self {
        Pass {
            what,
            variants: Vec::new(),
            by_key: HashMap::new(),
            assigned: vec![usize::MAX; n],
        }
    }
}

/// Gradient noise on the GPU: the noisy copy of the gradients that the step reads, as the
/// CPU makes one ([`GradientNoise::apply`]; the same bits).
#[derive(Debug)]
struct NoiseStage<F> {
    config: GradientNoise,
    /// The noisy gradients, laid out as the state arenas.
    arena: CudaSlice<F>,
    /// Per tensor: the noisy copy (written) and the caller's gradient (read; the scan
    /// reads it here too).
    table: TensorTable,
    kernel: Kernel,
}

/// A rule optimizer over GPU memory: the CPU's [`StepPlanner`] (groups, schedule, clipping,
/// scalars, checkpoints) with the element pass in generated kernels.
///
/// Each step, the tensors are traced ([`downhill::kernel::trace`]) once per run of tensors
/// with the same group and scalars (once per group, usually); equal traces share a kernel,
/// compiled on first use. Then one launch per variant (one per group, unless SWATS has
/// tensors in both phases) covers all its tensors. State lives in one device arena per state
/// buffer, allocated once.
///
/// A rule with a reading pass ([`Rule::MEASURES`]: LAMB, NovoGrad, Prodigy) first runs that
/// pass (traced by [`trace_measure`], a kernel that stores nothing but per-chunk sums), sums
/// each tensor's chunks in chunk order on the host, hands the sums to the planner
/// ([`StepPlanner::absorb`]), then runs the update. Those sums are taken in another order
/// than the CPU's (a block tree per GPU chunk, in `T` per thread, then chunks in order;
/// the CPU sums per segment in 16 running sums), so these rules match the CPU to rounding,
/// not bit for bit (as SWATS' dot products). Rules with whole-tensor work
/// ([`Rule::TRANSFORMS`]: Muon, Adafactor) are refused.
///
/// Parameters without a gradient ([`GpuOptimizer::step_some`]) get no chunks in any table of
/// the step (scan, noise, reading pass, update): their memory is not touched.
#[derive(Debug)]
pub struct CudaRuleOptimizer<F: GpuFloat, R: Rule> {
    gpu: Arc<Gpu>,
    planner: StepPlanner<R>,
    /// Each tensor's length (cached: a step checks every one).
    lens: Vec<usize>,
    /// Each tensor's first element in the arenas.
    offsets: Vec<usize>,
    /// One arena per state buffer.
    arenas: Vec<CudaSlice<F>>,
    /// The tensor table of the step and the scan.
    table: TensorTable,
    /// The reading pass's tensor table (the step's addresses, the reading pass's constants),
    /// for rules that [measure](Rule::MEASURES): each pass keeps its constants' offsets, so
    /// a steady step uploads neither table.
    measure_table: Option<TensorTable>,
    /// The chunks of the tensors in the step (for the scan and the noise; `None`: none), and
    /// which tensors they were made for.
    active_chunks: Option<CudaSlice<u64>>,
    nchunks: usize,
    chunks_for: Vec<bool>,
    /// Per chunk of a step's launch, two sums (the scan's, or the rule's reductions).
    partials: CudaSlice<f64>,
    scan_out: CudaSlice<f64>,
    scan: Option<(Kernel, Kernel)>,
    /// The update pass and the reading pass: compiled variants and chunk tables.
    update: Pass,
    measure: Pass,
    /// This step's constants, on the host and the device.
    consts: Vec<F>,
    consts_dev: CudaSlice<F>,
    noise: Option<NoiseStage<F>>,
}

impl<F: GpuFloat, R: Rule> CudaRuleOptimizer<F, R> {
    /// A rule optimizer on `gpu` over parameter groups (as
    /// [`RuleOptimizer::with_groups`](downhill::RuleOptimizer::with_groups)), with the state
    /// allocated now.
    pub fn with_groups(gpu: Arc<Gpu>, groups: Vec<ParamGroup<R>>) -> Result<Self> {
        Self::from_planner(gpu, StepPlanner::with_groups(groups)?)
    }

    /// Drive `planner` (configured: schedule, clipping, policy) on `gpu`.
    pub fn from_planner(gpu: Arc<Gpu>, planner: StepPlanner<R>) -> Result<Self> {
        if R::TRANSFORMS {
            return Err(CudaError::Unsupported {
                optimizer: R::NAME,
                what: "whole-tensor work (matrix products or factored statistics)",
            });
        }
        if planner.has_low_precision() {
            return Err(CudaError::Unsupported {
                optimizer: R::NAME,
                what: "state in bf16 or 8 bits (the GPU kernels keep f32 state for now)",
            });
        }
        let lens: Vec<usize> = planner.params().iter().map(ParamInfo::len).collect();
        let (offsets, total) = codegen::arena_offsets(&lens, F::WIDTH);
        let nbuf = (0..lens.len())
            .map(|t| planner.buffer_inits(t).len())
            .max()
            .unwrap_or(0);
        let mut arenas = Vec::with_capacity(nbuf);
        for k in 0..nbuf {
            let mut host = vec![F::from_f64(0.0); total];
            for (t, &n) in lens.iter().enumerate() {
                if let Some(&init) = planner.buffer_inits(t).get(k) {
                    host[offsets[t]..offsets[t] + n].fill(F::from_f64(init));
                }
            }
            arenas.push(gpu.upload(&host)?);
        }
        let noise = match planner.noise() {
            None => None,
            Some(config) => Some(NoiseStage {
                config,
                arena: gpu.zeros(total)?,
                table: TensorTable::new(&gpu, lens.len())?,
                kernel: gpu.function("noise", &codegen::noise_kernel::<F>())?,
            }),
        };
        let all = codegen::chunks(&lens, gpu.tuning().chunk, |_| true);
        let nchunks = all.len() / CHUNK_WORDS;
        let measure_table = if R::MEASURES {
            Some(TensorTable::new(&gpu, lens.len())?)
        } else {
            None
        };
        let mut opt = CudaRuleOptimizer {
            table: TensorTable::new(&gpu, lens.len())?,
            measure_table,
            active_chunks: if all.is_empty() {
                None
            } else {
                Some(gpu.upload(&all)?)
            },
            nchunks,
            chunks_for: vec![true; lens.len()],
            partials: gpu.zeros(2 * nchunks)?,
            scan_out: gpu.zeros(2)?,
            scan: None,
            update: Pass::new("step", lens.len()),
            measure: Pass::new("measure", lens.len()),
            consts: Vec::new(),
            consts_dev: gpu.zeros(64)?,
            noise,
            gpu,
            planner,
            lens,
            offsets,
            arenas,
        };
        opt.bind_arenas();
        Ok(opt)
    }

    /// The planner (configuration, scalars, step counts).
    pub fn planner(&self) -> &StepPlanner<R> {
        &self.planner
    }

    /// Check the step's tensors and write their addresses into the tables (one pass). With
    /// noise, the step reads the noisy copy, and the noise table the caller's gradients. A
    /// tensor without a gradient gets address 0 for it (it has no chunks: never read).
    fn bind(
        &mut self,
        params: &mut [&mut CudaSlice<F>],
        grads: &[Option<&CudaSlice<F>>],
    ) -> Result<()> {
        let elem = std::mem::size_of::<F>() as u64;
        let (table, offsets) = (&mut self.table, &self.offsets);
        let mut measure_table = self.measure_table.as_mut();
        let mut noise = self
            .noise
            .as_mut()
            .map(|n| (addr_mut(&self.gpu, &mut n.arena), &mut n.table));
        let infos = self.planner.params();
        table::bind(&self.gpu, infos, &self.lens, params, grads, |t, p, g| {
            let g = g.unwrap_or(0);
            let read = match &mut noise {
                None => g,
                Some((base, noise_table)) => {
                    let noisy = *base + offsets[t] as u64 * elem;
                    noise_table.set(t, noisy, g);
                    noisy
                }
            };
            table.set(t, p, read);
            if let Some(m) = &mut measure_table {
                m.set(t, p, read);
            }
        })
    }

    /// The chunk table of the scan and the noise: the tensors in this step (rebuilt only
    /// when they change).
    fn chunk_active(&mut self) -> Result<()> {
        let active = self.planner.active();
        if active == self.chunks_for.as_slice() {
            return Ok(());
        }
        let table = codegen::chunks(&self.lens, self.gpu.tuning().chunk, |t| active[t]);
        let chunks = if table.is_empty() {
            None
        } else {
            Some(self.gpu.upload(&table)?)
        };
        self.active_chunks = chunks;
        self.nchunks = table.len() / CHUNK_WORDS;
        self.chunks_for.copy_from_slice(active);
        Ok(())
    }

    /// Write the noisy copy of the gradients (after clipping by `grad_scale` and the
    /// clipping value), as the CPU's [`GradientNoise::apply`] for this step.
    fn add_noise(&mut self, grad_scale: Option<f64>) -> Result<()> {
        let (Some(noise), Some(chunks)) = (&mut self.noise, &self.active_chunks) else {
            return Ok(());
        };
        let t = self.planner.steps_taken();
        let key = noise.config.key(t);
        let sigma = noise.config.variance(t).sqrt();
        let scale = grad_scale.unwrap_or(1.0);
        let clamp = self.planner.clip().max_value.unwrap_or(f64::INFINITY);
        let n = self.nchunks as u64;
        let table = noise.table.upload(&self.gpu)?;
        // SAFETY: the kernel's signature matches; the table holds each tensor's gradient and
        // noisy copy, valid for the chunks' ranges (checked and written by `bind`).
        unsafe {
            self.gpu
                .stream()
                .launch_builder(&noise.kernel.function)
                .arg(chunks)
                .arg(&n)
                .arg(table)
                .arg(&key)
                .arg(&sigma)
                .arg(&scale)
                .arg(&clamp)
                .launch(noise.kernel.config(&self.gpu, self.nchunks))
                .map_err(driver("launching the gradient noise"))?;
        }
        Ok(())
    }

    /// Write the state arenas' addresses into the table.
    fn bind_arenas(&mut self) {
        let gpu = self.gpu.clone();
        let elem = std::mem::size_of::<F>() as u64;
        let bases: [Option<u64>; 4] =
            std::array::from_fn(|k| self.arenas.get_mut(k).map(|a| addr_mut(&gpu, a)));
        for (t, &o) in self.offsets.iter().enumerate() {
            let state = bases.map(|b| b.map_or(0, |b| b + o as u64 * elem));
            self.table.set_state(t, state);
            if let Some(m) = &mut self.measure_table {
                m.set_state(t, state);
            }
        }
    }

    /// Scan the gradients (NaN/inf, sum of squares); returns `(finite, sum of squares)`.
    fn scan_gradients(&mut self) -> Result<(bool, f64)> {
        if self.scan.is_none() {
            let src = codegen::scan_kernel::<F>();
            self.scan = Some((
                self.gpu.function("scan", &src)?,
                self.gpu.function("total", &src)?,
            ));
        }
        let (Some((scan, total)), Some(chunks)) = (&self.scan, &self.active_chunks) else {
            return Ok((true, 0.0));
        };
        let stream = self.gpu.stream();
        let n = self.nchunks as u64;
        // The caller's gradients: in the noise table when there is noise.
        let table = match &mut self.noise {
            Some(noise) => noise.table.upload(&self.gpu)?,
            None => self.table.upload(&self.gpu)?,
        };
        // SAFETY: the kernels' signatures match these arguments; the tables hold valid
        // addresses and lengths (checked and written by `bind`).
        unsafe {
            stream
                .launch_builder(&scan.function)
                .arg(chunks)
                .arg(&n)
                .arg(table)
                .arg(&mut self.partials)
                .launch(scan.config(&self.gpu, self.nchunks))
                .map_err(driver("launching the gradient scan"))?;
            let one = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            stream
                .launch_builder(&total.function)
                .arg(&self.partials)
                .arg(&n)
                .arg(&mut self.scan_out)
                .launch(one)
                .map_err(driver("launching the scan's sum"))?;
        }
        let out = self.gpu.download(&self.scan_out)?;
        Ok((out[1] == 0.0, out[0]))
    }

    /// Trace every run of tensors in the step sharing constants ([`StepPlanner::runs`]),
    /// for the update or (`measure`) the reading pass; assign each tensor its variant of that
    /// pass (compiling new ones; `usize::MAX` for a tensor not in the step) and write the
    /// offset of its constants in `self.consts` into the pass's table.
    fn trace_variants(&mut self, measure: bool) -> Result<Vec<usize>> {
        let n = self.planner.params().len();
        let mut variant = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        self.consts.clear();
        for t in 0..n {
            if !self.planner.active()[t] {
                variant.push(usize::MAX);
                offsets.push(0);
                continue;
            }
            let first = self.planner.runs()[t];
            if first < t {
                // Same constants as an earlier tensor: same trace.
                variant.push(variant[first]);
                offsets.push(offsets[first]);
                continue;
            }
            let group = self.planner.group_of(t);
            let nbuf = self.planner.buffer_inits(t).len();
            let (pre, coef) = (&self.planner.preludes()[group], &self.planner.coefs()[t]);
            let tape: Tape<F> = if measure {
                trace_measure::<F, R>(pre, coef, nbuf)
            } else {
                trace::<F, R>(pre, coef, nbuf)
            };
            let pass = if measure {
                &mut self.measure
            } else {
                &mut self.update
            };
            variant.push(Self::variant(&self.gpu, pass, &tape)?);
            offsets.push(self.consts.len());
            self.consts.extend_from_slice(&tape.consts);
        }
        let table = match &mut self.measure_table {
            Some(m) if measure => m,
            _ => &mut self.table,
        };
        for (t, &o) in offsets.iter().enumerate() {
            table.set_coef(t, o as u64);
        }
        Ok(variant)
    }

    /// The variant of `pass` compiled from `tape`'s code (compiled now if new).
    fn variant(gpu: &Gpu, pass: &mut Pass, tape: &Tape<F>) -> Result<usize> {
        let key = tape.key();
        if let Some(&v) = pass.by_key.get(&key) {
            return Ok(v);
        }
        let name = format!(
            "{}_{}_{}_{}",
            R::NAME,
            pass.what,
            F::DTYPE,
            pass.variants.len()
        );
        let src = codegen::step_kernel(tape, &name, gpu.tuning());
        let kernel = gpu.function(&name, &src)?;
        pass.variants.push(Variant {
            kernel,
            reduces: codegen::reduces(tape),
            table: Vec::new(),
            chunks: None,
            nchunks: 0,
        });
        pass.by_key.insert(key, pass.variants.len() - 1);
        Ok(pass.variants.len() - 1)
    }

    /// Rebuild each variant's chunk table of `pass` when the assignment of tensors (and with
    /// it the mask of tensors in the step) changed.
    fn assign(gpu: &Gpu, lens: &[usize], pass: &mut Pass, variant: Vec<usize>) -> Result<()> {
        if variant == pass.assigned {
            return Ok(());
        }
        for (v, var) in pass.variants.iter_mut().enumerate() {
            let table = codegen::chunks(lens, gpu.tuning().chunk, |t| variant[t] == v);
            var.nchunks = table.len() / CHUNK_WORDS;
            var.chunks = if table.is_empty() {
                None
            } else {
                Some(gpu.upload(&table)?)
            };
            var.table = table;
        }
        pass.assigned = variant;
        Ok(())
    }

    /// Trace, assign and launch the update or (`measure`) the reading pass; returns each
    /// tensor's reduction sums.
    fn run_pass(&mut self, measure: bool) -> Result<Vec<[f64; 2]>> {
        let variant = self.trace_variants(measure)?;
        let pass = if measure {
            &mut self.measure
        } else {
            &mut self.update
        };
        Self::assign(&self.gpu, &self.lens, pass, variant)?;
        self.launch(measure)
    }

    /// Launch every variant of a pass; returns each tensor's reduction sums (each tensor's
    /// chunks summed in chunk order).
    fn launch(&mut self, measure: bool) -> Result<Vec<[f64; 2]>> {
        if self.consts_dev.len() < self.consts.len() {
            self.consts_dev = self.gpu.zeros(self.consts.len().next_power_of_two())?;
        }
        if !self.consts.is_empty() {
            self.gpu
                .stream()
                .memcpy_htod(&self.consts, &mut self.consts_dev)
                .map_err(driver("copying the step's constants"))?;
        }
        let mut sums = vec![[0.0; 2]; self.planner.params().len()];
        let stream = self.gpu.stream().clone();
        let (pass, table) = match &mut self.measure_table {
            Some(m) if measure => (&self.measure, m),
            _ => (&self.update, &mut self.table),
        };
        let table = table.upload(&self.gpu)?;
        for var in &pass.variants {
            let Some(chunks) = &var.chunks else { continue };
            let n = var.nchunks as u64;
            // SAFETY: the kernel's signature matches; the tables hold valid addresses and
            // lengths (a tensor without gradient has no chunks: its address 0 is not read);
            // `partials` has two doubles per chunk of the whole plan, more than any
            // variant's.
            unsafe {
                stream
                    .launch_builder(&var.kernel.function)
                    .arg(chunks)
                    .arg(&n)
                    .arg(table)
                    .arg(&self.consts_dev)
                    .arg(&mut self.partials)
                    .launch(var.kernel.config(&self.gpu, var.nchunks))
                    .map_err(driver(if measure {
                        "launching a reading pass"
                    } else {
                        "launching a step"
                    }))?;
            }
            if var.reduces {
                let partials = self.gpu.download(&self.partials)?;
                for (c, e) in var.table.chunks(CHUNK_WORDS).enumerate() {
                    let s = &mut sums[e[0] as usize];
                    s[0] += partials[2 * c];
                    s[1] += partials[2 * c + 1];
                }
            }
        }
        Ok(sums)
    }

    /// The gradients on the host (to name a non-finite element; empty without one).
    fn download_grads(&self, grads: &[Option<&CudaSlice<F>>]) -> Result<Vec<Vec<F>>> {
        grads
            .iter()
            .map(|g| g.map_or(Ok(Vec::new()), |g| self.gpu.download(g)))
            .collect()
    }
}

impl<F: GpuFloat, R: Rule> GpuOptimizer<F> for CudaRuleOptimizer<F, R> {
    fn name(&self) -> String {
        R::NAME.to_string()
    }

    fn params(&self) -> &[ParamInfo] {
        self.planner.params()
    }

    fn step_some(
        &mut self,
        params: &mut [&mut CudaSlice<F>],
        grads: &[Option<&CudaSlice<F>>],
    ) -> Result<StepOutcome> {
        // Everything that can refuse the step runs before anything is written.
        self.bind(params, grads)?;
        let active: Vec<bool> = grads.iter().map(Option::is_some).collect();
        self.planner.set_active(Some(&active));
        self.chunk_active()?;
        let (check, norm) = self.planner.scan();
        let (finite, sum_squares) = if check || norm {
            self.scan_gradients()?
        } else {
            (true, 0.0)
        };
        let grad_scale = match self.planner.admit(finite, sum_squares) {
            Admit::Step { grad_scale } => grad_scale,
            Admit::Skip => return Ok(StepOutcome::Skipped),
            Admit::Refuse => {
                let host = self.download_grads(grads)?;
                let views: Vec<&[F]> = host.iter().map(Vec::as_slice).collect();
                return Err(self.planner.non_finite_error(&views).into());
            }
        };
        // Clipping is applied while the noisy copy is made, not again in the step.
        let clip_in_step = self.noise.is_none();
        self.add_noise(grad_scale)?;
        // Nothing below refuses: `prepare` (and `absorb`) advance the scalars.
        let before = self.planner.all_scalars().to_vec();
        self.planner.prepare(grad_scale, clip_in_step);
        let run = (|| {
            if R::MEASURES {
                let sums = self.run_pass(true)?;
                self.planner.absorb(|t| sums[t]);
            }
            self.run_pass(false)
        })();
        match run {
            Ok(sums) => {
                self.planner.finish(|t| sums[t]);
                Ok(StepOutcome::Applied)
            }
            Err(e) => {
                self.planner.restore_scalars(before);
                Err(e)
            }
        }
    }

    fn steps_taken(&self) -> u64 {
        self.planner.steps_taken()
    }

    fn steps_skipped(&self) -> u64 {
        self.planner.steps_skipped()
    }

    fn num_groups(&self) -> usize {
        self.planner.num_groups()
    }

    fn lr(&self, group: usize) -> Result<f64> {
        Ok(self.planner.lr(group)?)
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        Ok(self.planner.set_lr(group, lr)?)
    }

    fn state_dict(&self) -> Result<StateDict> {
        let host: Vec<Vec<F>> = self
            .arenas
            .iter()
            .map(|a| self.gpu.download(a))
            .collect::<Result<_>>()?;
        let params = self.planner.params();
        Ok(self.planner.state_dict(|t, k| {
            let o = self.offsets[t];
            host[k][o..o + params[t].len()].to_vec()
        }))
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let state = self.planner.read_state::<F>(sd)?;
        // New arenas first: if a copy fails, the old state stays.
        let mut arenas = Vec::with_capacity(self.arenas.len());
        for (k, old) in self.arenas.iter().enumerate() {
            let mut host = vec![F::from_f64(0.0); old.len()];
            for (t, bufs) in state.buffers.iter().enumerate() {
                if let Some(b) = bufs.get(k) {
                    host[self.offsets[t]..self.offsets[t] + b.len()].copy_from_slice(b);
                }
            }
            arenas.push(self.gpu.upload(&host)?);
        }
        self.planner.apply_state(state);
        self.arenas = arenas;
        self.bind_arenas();
        Ok(())
    }

    fn traffic_per_param(&self) -> f64 {
        self.planner.traffic_per_param(std::mem::size_of::<F>())
    }
}
