//! Every optimizer of [`downhill::registry`], by the same names and options, on a GPU.

use std::any::Any;
use std::sync::Arc;

use downhill::kernel::DType;
use downhill::multi::Part;
use downhill::optim::lookahead::LookaheadConfig;
use downhill::optim::Rule;
use downhill::registry::{self, Backend, GroupSpec, Setup};
use downhill::{ParamGroup, ParamInfo};
use serde_json::{Map, Value};

use crate::device::{Gpu, GpuFloat};
use crate::error::{CudaError, Result};
use crate::lookahead::CudaLookahead;
use crate::optimizer::{CudaRuleOptimizer, GpuOptimizer};

/// The GPU as a [`Backend`] of the registry.
#[derive(Clone, Debug)]
pub struct Device(pub Arc<Gpu>);

impl<F: GpuFloat> Backend<F> for Device {
    type Optimizer = dyn GpuOptimizer<F>;
    type Error = CudaError;

    fn rule<R: Rule>(
        &self,
        groups: Vec<ParamGroup<R>>,
        setup: &Setup,
    ) -> Result<Box<dyn GpuOptimizer<F>>> {
        Ok(Box::new(CudaRuleOptimizer::<F, R>::from_planner(
            self.0.clone(),
            setup.planner(groups)?,
        )?))
    }

    fn lookahead(
        &self,
        inner: Box<dyn GpuOptimizer<F>>,
        config: LookaheadConfig,
    ) -> Result<Box<dyn GpuOptimizer<F>>> {
        Ok(Box::new(CudaLookahead::new(self.0.clone(), inner, config)?))
    }

    fn multi(
        &self,
        _params: Vec<ParamInfo>,
        _parts: Vec<Part<dyn GpuOptimizer<F>>>,
        _setup: &Setup,
    ) -> Result<Box<dyn GpuOptimizer<F>>> {
        Err(CudaError::Unsupported {
            optimizer: "multi",
            what: "several algorithms in one optimizer (groups naming another `optimizer`)",
        })
    }
}

/// Build optimizer `name` on `gpu`, as [`registry::build`].
pub fn build<F: GpuFloat>(
    gpu: &Arc<Gpu>,
    name: &str,
    options: &Value,
    params: Vec<ParamInfo>,
    setup: &Setup,
) -> Result<Box<dyn GpuOptimizer<F>>> {
    let groups = vec![GroupSpec {
        options: Value::Object(Map::new()),
        params,
    }];
    build_groups(gpu, name, options, groups, setup)
}

/// Build optimizer `name` over parameter groups on `gpu`, as [`registry::build_groups`].
pub fn build_groups<F: GpuFloat>(
    gpu: &Arc<Gpu>,
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> Result<Box<dyn GpuOptimizer<F>>> {
    // Compiled here once per element type, not again in every calling crate (as in
    // `downhill::registry::build_groups`).
    let built: Box<dyn Any> = match F::DTYPE {
        DType::F32 => Box::new(build_groups_f32(gpu, name, options, groups, setup)?),
        DType::F64 => Box::new(build_groups_f64(gpu, name, options, groups, setup)?),
    };
    built
        .downcast::<Box<dyn GpuOptimizer<F>>>()
        .map(|b| *b)
        .map_err(|_| {
            downhill::Error::Options {
                what: name.to_string(),
                message: format!("no GPU optimizer for element type {}", F::DTYPE.name()),
            }
            .into()
        })
}

fn build_groups_f32(
    gpu: &Arc<Gpu>,
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> Result<Box<dyn GpuOptimizer<f32>>> {
    registry::build_groups_on(&Device(gpu.clone()), name, options, groups, setup)
}

fn build_groups_f64(
    gpu: &Arc<Gpu>,
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> Result<Box<dyn GpuOptimizer<f64>>> {
    registry::build_groups_on(&Device(gpu.clone()), name, options, groups, setup)
}
