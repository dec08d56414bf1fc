//! One GPU: its context and stream, and the kernels compiled for it (once per process and
//! source).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileError, CompileOptions};
use downhill::Float;

use crate::codegen::{Tuning, THREADS};
use crate::error::{driver, CudaError, Result};

/// An element type the GPU step runs on: `f32` or `f64`.
pub trait GpuFloat: Float + DeviceRepr + ValidAsZeroBits + Unpin {
    /// The C type.
    const C: &'static str;
    /// The vector type of a 16-byte load.
    const VEC: &'static str;
    /// Elements per 16-byte load.
    const WIDTH: usize;
    /// Square root and absolute value, correctly rounded.
    const SQRT: &'static str;
    /// Absolute value.
    const ABS: &'static str;
}

impl GpuFloat for f32 {
    const C: &'static str = "float";
    const VEC: &'static str = "float4";
    const WIDTH: usize = 4;
    const SQRT: &'static str = "sqrtf";
    const ABS: &'static str = "fabsf";
}

impl GpuFloat for f64 {
    const C: &'static str = "double";
    const VEC: &'static str = "double2";
    const WIDTH: usize = 2;
    const SQRT: &'static str = "sqrt";
    const ABS: &'static str = "fabs";
}

/// Whether a CUDA driver can be loaded here (without loading it for good).
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether NVRTC can be loaded here.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compile CUDA C `source` to PTX for `arch` (`None`: NVRTC's default), without contracting
/// multiplications and additions into FMAs, so the GPU rounds as the CPU kernel does.
pub fn compile(source: &str, kernel: &str, arch: Option<&'static str>) -> Result<String> {
    if !nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    let opts = CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        arch,
        name: Some(format!("{kernel}.cu")),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(source, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, .. }) => Err(CudaError::Compile {
            kernel: kernel.to_string(),
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(CudaError::Compile {
            kernel: kernel.to_string(),
            log: format!("{e:?}"),
        }),
    }
}

/// A GPU, ready for optimizers: a context, the stream every step runs on, and a cache of
/// compiled kernels.
///
/// The context's event tracking is off: every optimizer step and copy of this crate runs on
/// the one stream, in order, so per-buffer events (which would cost a driver call per tensor
/// per step) are not needed. Tensors given to an optimizer must come from this GPU's context
/// and be used on its stream (or synchronized with it).
#[derive(Debug)]
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    sms: u32,
    /// The layout of the step kernels that optimizers made on this handle use.
    tuning: Tuning,
    /// By source: its module (compiled once) and the kernels taken from it, by name (shared
    /// by the handles of one GPU).
    kernels: Arc<Mutex<HashMap<String, Compiled>>>,
}

/// A compiled source: its module, and the kernels taken from it so far.
#[derive(Debug)]
struct Compiled {
    module: Arc<CudaModule>,
    functions: HashMap<String, Kernel>,
}

/// A compiled kernel, and how many of its blocks of [`THREADS`] threads one multiprocessor
/// holds at once.
#[derive(Clone, Debug)]
pub(crate) struct Kernel {
    pub function: CudaFunction,
    resident: u32,
}

impl Kernel {
    /// The launch over `chunks` chunks: one wave of blocks, all resident at once (no more
    /// than there are chunks). Block `b` takes chunks `b, b + grid, …`, so blocks differ by
    /// at most one chunk and none starts late, after the others are done.
    pub fn config(&self, gpu: &Gpu, chunks: usize) -> LaunchConfig {
        let wave = (self.resident.max(1) * gpu.sms) as usize;
        LaunchConfig {
            grid_dim: (wave.min(chunks).max(1) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

impl Gpu {
    /// Open GPU `ordinal` (0 for the first). Errors name what is missing: the driver, a
    /// device, or NVRTC.
    pub fn new(ordinal: usize) -> Result<Arc<Gpu>> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        // A driver without a GPU (a container given the library but no device) fails `cuInit`
        // with CUDA_ERROR_NO_DEVICE: that is "no device", not a driver fault.
        let count = match CudaContext::device_count() {
            Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_NO_DEVICE => 0,
            other => other.map_err(driver("counting devices"))?,
        };
        if ordinal as i64 >= i64::from(count) {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        if !nvrtc_present() {
            return Err(CudaError::NoNvrtc);
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("creating a context"))?;
        // SAFETY: see the type's docs: one stream, in order.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("counting multiprocessors"))?;
        Ok(Arc::new(Gpu {
            arch: arch_name(major, minor),
            sms: sms.max(1) as u32,
            ctx,
            stream,
            tuning: Tuning::default(),
            kernels: Arc::new(Mutex::new(HashMap::new())),
        }))
    }

    /// Another handle on this GPU (same context, stream and compiled kernels) whose
    /// optimizers lay their step kernels out as `tuning` says; tensors move freely between
    /// the two. An invalid tuning is refused.
    pub fn tuned(&self, tuning: Tuning) -> Result<Arc<Gpu>> {
        tuning.validate().map_err(CudaError::Tuning)?;
        Ok(Arc::new(Gpu {
            ctx: self.ctx.clone(),
            stream: self.stream.clone(),
            arch: self.arch,
            sms: self.sms,
            tuning,
            kernels: self.kernels.clone(),
        }))
    }

    /// The layout of the step kernels.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "CUDA device".into())
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream steps run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Streaming multiprocessors.
    pub fn multiprocessors(&self) -> u32 {
        self.sms
    }

    /// Copy `host` to a new device buffer.
    pub fn upload<F: DeviceRepr>(&self, host: &[F]) -> Result<CudaSlice<F>> {
        self.stream
            .clone_htod(host)
            .map_err(driver("copying to the GPU"))
    }

    /// Copy a device buffer to the host.
    pub fn download<F: DeviceRepr>(&self, dev: &CudaSlice<F>) -> Result<Vec<F>> {
        self.stream
            .clone_dtoh(dev)
            .map_err(driver("copying from the GPU"))
    }

    /// A zeroed device buffer.
    pub fn zeros<F: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<F>> {
        self.stream
            .alloc_zeros(len.max(1))
            .map_err(driver("allocating GPU memory"))
    }

    /// Wait for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver("synchronizing"))
    }

    /// Kernel `name` of `source`, compiled on first use and kept: a source is compiled once,
    /// however many of its kernels are asked for (the gradient scan's source holds two).
    pub(crate) fn function(&self, name: &str, source: &str) -> Result<Kernel> {
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = kernels.get(source).and_then(|c| c.functions.get(name)) {
            return Ok(f.clone());
        }
        let compiled = match kernels.entry(source.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let ptx = compile(source, name, Some(self.arch))?;
                let module = self
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(driver("loading a compiled kernel"))?;
                e.insert(Compiled {
                    module,
                    functions: HashMap::new(),
                })
            }
        };
        let function = compiled
            .module
            .load_function(name)
            .map_err(driver("finding a kernel in its module"))?;
        let resident = function
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, 0, None)
            .map_err(driver("reading a kernel's occupancy"))?;
        let kernel = Kernel { function, resident };
        compiled.functions.insert(name.to_string(), kernel.clone());
        Ok(kernel)
    }
}

/// NVRTC's name of a virtual architecture (`compute_90`), kept for the process.
fn arch_name(major: i32, minor: i32) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let name = format!("compute_{major}{minor}");
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}
