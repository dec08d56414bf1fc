//! Every optimizer of [`downhill::registry`], by the same names and options, on a GPU.

use std::sync::Arc;

use downhill::optim::lookahead::LookaheadConfig;
use downhill::optim::Rule;
use downhill::registry::{self, Backend, GroupSpec, Setup};
use downhill::{ParamGroup, ParamInfo, StepPlanner};
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

    fn rule<R: Rule>(
        &self,
        groups: Vec<ParamGroup<R>>,
        setup: &Setup,
    ) -> downhill::Result<Box<dyn GpuOptimizer<F>>> {
        let mut planner = StepPlanner::with_groups(groups)?;
        planner.set_clip(setup.clip)?;
        planner.set_non_finite(setup.non_finite);
        if let Some(s) = &setup.schedule {
            planner.set_schedule(s.clone())?;
        }
        if let Some(noise) = setup.noise {
            planner.set_noise(noise)?;
        }
        CudaRuleOptimizer::<F, R>::from_planner(self.0.clone(), planner)
            .map(|o| Box::new(o) as Box<dyn GpuOptimizer<F>>)
            .map_err(into_core)
    }

    fn lookahead(
        &self,
        inner: Box<dyn GpuOptimizer<F>>,
        config: LookaheadConfig,
    ) -> downhill::Result<Box<dyn GpuOptimizer<F>>> {
        CudaLookahead::new(self.0.clone(), inner, config)
            .map(|o| Box::new(o) as Box<dyn GpuOptimizer<F>>)
            .map_err(into_core)
    }
}

/// The registry speaks [`downhill::Error`]: a GPU failure while building travels as a setup
/// error with its message (it is turned back into a [`CudaError`] by [`build_groups`]).
fn into_core(e: CudaError) -> downhill::Error {
    match e {
        CudaError::Optimizer(e) => e,
        other => downhill::Error::Setup(other.to_string()),
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
    Ok(registry::build_groups_on(
        &Device(gpu.clone()),
        name,
        options,
        groups,
        setup,
    )?)
}
