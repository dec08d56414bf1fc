//! What can go wrong on the GPU.

use thiserror::Error;

/// An error of the GPU step.
#[derive(Debug, Error)]
pub enum CudaError {
    /// The CUDA driver library (`libcuda.so`) could not be loaded: no NVIDIA driver here.
    #[error("no CUDA driver: libcuda.so could not be loaded (is the NVIDIA driver installed?)")]
    NoDriver,
    /// NVRTC (`libnvrtc.so`), which compiles the kernels, could not be loaded.
    #[error(
        "no NVRTC: libnvrtc.so (or libnvrtc.so.12) could not be loaded; install the CUDA \
         toolkit, or `pip install nvidia-cuda-nvrtc-cu12` and add its `nvidia/cuda_nvrtc/lib` \
         to LD_LIBRARY_PATH (CUDA 13's libnvrtc.so.13 is loaded only as libnvrtc.so: link it \
         under that name)"
    )]
    NoNvrtc,
    /// The driver is there but reports no GPU with this ordinal.
    #[error("no CUDA GPU {ordinal}: the driver reports {count} device(s)")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices found.
        count: i32,
    },
    /// A driver call failed.
    #[error("CUDA driver error while {what}: {source}")]
    Driver {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
    /// NVRTC refused a kernel (a bug in downhill: please report it with the log).
    #[error("NVRTC could not compile kernel {kernel}: {log}")]
    Compile {
        /// The kernel's name.
        kernel: String,
        /// The compiler's log.
        log: String,
    },
    /// A tensor lives in another CUDA context than the optimizer's.
    #[error("tensor '{param}' lives in another CUDA context than the optimizer's")]
    OtherContext {
        /// The parameter.
        param: String,
    },
    /// A kernel layout ([`crate::codegen::Tuning`]) the kernels cannot take.
    #[error("invalid GPU kernel tuning: {0}")]
    Tuning(String),
    /// The rule needs a stage the GPU step does not run yet (a reading pass before the update,
    /// or whole-tensor work such as Muon's matrix products): use the CPU for it.
    #[error(
        "{optimizer} does not run on the GPU yet: it needs {what}, which the GPU step does not \
         have; run it on the CPU"
    )]
    Unsupported {
        /// The optimizer's name.
        optimizer: &'static str,
        /// What it needs.
        what: &'static str,
    },
    /// The optimizer refused: options, shapes, gradients or state (as on the CPU).
    #[error(transparent)]
    Optimizer(#[from] downhill::Error),
}

/// `Result` with [`CudaError`].
pub type Result<T> = std::result::Result<T, CudaError>;

/// Wrap a driver error with what was being done.
pub(crate) fn driver(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
    move |source| CudaError::Driver { what, source }
}
