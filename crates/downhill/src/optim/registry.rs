//! Every optimizer by name, with PyTorch's defaults: one line per algorithm.
//!
//! Options are JSON objects with PyTorch's hyperparameter names (`{"lr": 0.01, "betas": [0.9,
//! 0.99]}`); absent ones take the entry's defaults, unknown ones are refused. Aliases
//! (`adamw`, `sgdw`) are the same rule with other defaults, not copies.
//!
//! `lookahead` takes `{"k": 5, "alpha": 0.5, "inner": {"optimizer": "adam", …options}}`.

use std::any::Any;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::precision::StateStorage;

use super::adabelief::AdaBelief;
use super::adadelta::Adadelta;
use super::adafactor::Adafactor;
use super::adagrad::Adagrad;
use super::adam::Adam;
use super::adamax::Adamax;
use super::adan::Adan;
use super::ademamix::AdEMAMix;
use super::adopt::Adopt;
use super::asgd::Asgd;
use super::lamb::Lamb;
use super::lion::Lion;
use super::lookahead::{Lookahead, LookaheadConfig};
use super::muon::Muon;
use super::nadam::NAdam;
use super::novograd::NovoGrad;
use super::prodigy::Prodigy;
use super::radam::RAdam;
use super::rmsprop::RmsProp;
use super::rprop::Rprop;
use super::schedule_free_adamw::ScheduleFreeAdamW;
use super::sgd::Sgd;
use super::swats::Swats;
use super::yogi::Yogi;
use super::Rule;
use crate::kernel::DType;
use crate::kernel::Float;
use crate::multi::{MultiOptimizer, Part};
use crate::optimizer::{NonFinite, Optimizer, ParamGroup, ParamInfo, RuleOptimizer, StepPlanner};
use crate::schedule::Schedule;
use crate::shard::Shard;
use crate::{Clip, Error, GradientNoise, Result};

/// What surrounds the rule in a built optimizer: schedule, clipping, non-finite policy,
/// gradient noise.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Learning-rate schedule (none: constant).
    pub schedule: Option<Arc<dyn Schedule>>,
    /// Gradient clipping.
    pub clip: Clip,
    /// What to do with a non-finite gradient.
    pub non_finite: NonFinite,
    /// Gradient noise added after clipping (none by default).
    pub noise: Option<GradientNoise>,
    /// This rank's share of a sharded optimizer (none: the whole state, one process;
    /// [`crate::shard`]).
    pub shard: Option<Shard>,
}

impl Setup {
    /// The step planner of `groups` with this setup's schedule, clipping, policy and noise:
    /// what every [`Backend`] starts from.
    pub fn planner<R: Rule>(&self, groups: Vec<ParamGroup<R>>) -> Result<StepPlanner<R>> {
        let mut planner = StepPlanner::with_groups(groups)?;
        planner.set_clip(self.clip)?;
        planner.set_non_finite(self.non_finite);
        if let Some(s) = &self.schedule {
            planner.set_schedule(s.clone())?;
        }
        if let Some(noise) = self.noise {
            planner.set_noise(noise)?;
        }
        if let Some(shard) = &self.shard {
            planner.set_shard(shard.clone())?;
        }
        Ok(planner)
    }
}

/// One parameter group for [`build_groups`]: options that override the optimizer's, and its
/// parameters.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// Hyperparameters of this group (a JSON object; may be empty).
    pub options: Value,
    /// Its parameters.
    pub params: Vec<ParamInfo>,
}

macro_rules! registry {
    ($($name:literal => $defaults:expr,)*) => {
        /// Every name [`build`] knows.
        pub const NAMES: &[&str] = &[$($name,)* "lookahead"];

        fn build_rule<F: Float, B: Backend<F>>(
            backend: &B,
            name: &str,
            options: &Value,
            groups: Vec<GroupSpec>,
            setup: &Setup,
        ) -> std::result::Result<Box<B::Optimizer>, B::Error> {
            match name {
                $($name => backend.rule(parse_groups(name, $defaults, options, groups)?, setup),)*
                _ => Err(unknown(name).into()),
            }
        }

        /// The options of `name` with nothing overridden: its defaults, under their names.
        pub fn defaults(name: &str) -> Result<Value> {
            let json = |v: std::result::Result<Value, serde_json::Error>| {
                v.map_err(|e| Error::Options { what: name.to_string(), message: e.to_string() })
            };
            match name {
                $($name => json(serde_json::to_value($defaults)),)*
                "lookahead" => json(serde_json::to_value(LookaheadConfig::default())),
                _ => Err(unknown(name)),
            }
        }
    };
}

/// Where the optimizers of this registry run: [`Host`] builds them over host memory; another
/// crate (`downhill-cuda`) builds the same rules, from the same names and options, for a GPU.
pub trait Backend<F: Float> {
    /// What is built (a trait object, such as `dyn Optimizer<F>`).
    type Optimizer: ?Sized;
    /// Its errors, which include the registry's own (unknown names, bad options).
    type Error: From<Error>;
    /// An optimizer of rule `R` over `groups`, with `setup`'s schedule, clipping, policy and
    /// noise.
    fn rule<R: Rule>(
        &self,
        groups: Vec<ParamGroup<R>>,
        setup: &Setup,
    ) -> std::result::Result<Box<Self::Optimizer>, Self::Error>;
    /// Lookahead around `inner`.
    fn lookahead(
        &self,
        inner: Box<Self::Optimizer>,
        config: LookaheadConfig,
    ) -> std::result::Result<Box<Self::Optimizer>, Self::Error>;
    /// Several optimizers stepped as one over `params` ([`MultiOptimizer`]): `parts` holds
    /// each one with its parameters' positions and its groups' numbers in the whole. They were
    /// built with `setup`'s schedule but without its clipping by norm, noise and non-finite
    /// check, which the whole does.
    fn multi(
        &self,
        params: Vec<ParamInfo>,
        parts: Vec<Part<Self::Optimizer>>,
        setup: &Setup,
    ) -> std::result::Result<Box<Self::Optimizer>, Self::Error>;
}

/// Optimizers over host memory: [`RuleOptimizer`] and [`Lookahead`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Host;

impl<F: Float> Backend<F> for Host {
    type Optimizer = dyn Optimizer<F>;
    type Error = Error;

    fn rule<R: Rule>(
        &self,
        groups: Vec<ParamGroup<R>>,
        setup: &Setup,
    ) -> Result<Box<dyn Optimizer<F>>> {
        Ok(Box::new(RuleOptimizer::<F, R>::from_planner(
            setup.planner(groups)?,
        )))
    }

    fn lookahead(
        &self,
        inner: Box<dyn Optimizer<F>>,
        config: LookaheadConfig,
    ) -> Result<Box<dyn Optimizer<F>>> {
        Ok(Box::new(Lookahead::new(inner, config)?))
    }

    fn multi(
        &self,
        params: Vec<ParamInfo>,
        parts: Vec<Part<dyn Optimizer<F>>>,
        setup: &Setup,
    ) -> Result<Box<dyn Optimizer<F>>> {
        Ok(Box::new(
            MultiOptimizer::new(params, parts, setup.clip, setup.non_finite, setup.noise)?
                .with_shard(setup.shard.clone())?,
        ))
    }
}

registry! {
    "sgd" => Sgd::default(),
    "sgdw" => Sgd::sgdw(),
    "adam" => Adam::default(),
    "adamw" => Adam::adamw(),
    "adagrad" => Adagrad::default(),
    "rmsprop" => RmsProp::default(),
    "adamax" => Adamax::default(),
    "adadelta" => Adadelta::default(),
    "nadam" => NAdam::default(),
    "radam" => RAdam::default(),
    "swats" => Swats::default(),
    "lion" => Lion::default(),
    "yogi" => Yogi::default(),
    "adabelief" => AdaBelief::default(),
    "adopt" => Adopt::default(),
    "adafactor" => Adafactor::default(),
    "muon" => Muon::default(),
    "rprop" => Rprop::default(),
    "asgd" => Asgd::default(),
    "schedule_free_adamw" => ScheduleFreeAdamW::default(),
    "prodigy" => Prodigy::default(),
    "adan" => Adan::default(),
    "ademamix" => AdEMAMix::default(),
    "novograd" => NovoGrad::default(),
    "lamb" => Lamb::default(),
}

fn unknown(name: &str) -> Error {
    Error::Unknown {
        kind: "optimizer",
        name: name.to_string(),
        known: NAMES.join(", "),
    }
}

/// Build optimizer `name` with `options` over `params` (one group).
pub fn build<F: Float>(
    name: &str,
    options: &Value,
    params: Vec<ParamInfo>,
    setup: &Setup,
) -> Result<Box<dyn Optimizer<F>>> {
    let groups = vec![GroupSpec {
        options: Value::Object(Map::new()),
        params,
    }];
    build_groups(name, options, groups, setup)
}

/// Build optimizer `name` over parameter groups: each group's options override `options`.
pub fn build_groups<F: Float>(
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> Result<Box<dyn Optimizer<F>>> {
    // Every rule's optimizer and kernels, for `f32` and `f64`, are compiled here, once, in
    // the two functions below: calling a generic builder from another crate would compile
    // them all again there (release builds do not share generic code between crates), which
    // cost each test binary and dependent crate about a minute.
    let built: Box<dyn Any> = match F::DTYPE {
        DType::F32 => Box::new(build_groups_f32(name, options, groups, setup)?),
        DType::F64 => Box::new(build_groups_f64(name, options, groups, setup)?),
    };
    built
        .downcast::<Box<dyn Optimizer<F>>>()
        .map(|b| *b)
        .map_err(|_| Error::Options {
            what: name.to_string(),
            message: format!("no host optimizer for element type {}", F::DTYPE.name()),
        })
}

fn build_groups_f32(
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> Result<Box<dyn Optimizer<f32>>> {
    build_groups_on(&Host, name, options, groups, setup)
}

fn build_groups_f64(
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> Result<Box<dyn Optimizer<f64>>> {
    build_groups_on(&Host, name, options, groups, setup)
}

/// [`build_groups`] on another [`Backend`].
///
/// A group whose options hold `"optimizer": "<name>"` other than `name` runs that algorithm
/// (with its own options from the group; `name`'s options are not inherited): the result is
/// a [`MultiOptimizer`] with one part per algorithm, e.g. Muon on the hidden matrices and
/// `{"optimizer": "adamw", "lr": 3e-4}` on the rest.
pub fn build_groups_on<F: Float, B: Backend<F>>(
    backend: &B,
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> std::result::Result<Box<B::Optimizer>, B::Error> {
    // (algorithm, its groups with their numbers in the whole, its parameters' positions)
    type Split = Vec<(String, Vec<(usize, GroupSpec)>, Vec<usize>)>;
    let mut split: Split = Vec::new();
    let mut params = Vec::new();
    for (gi, mut g) in groups.into_iter().enumerate() {
        let algo = match as_object("group", &g.options)?.get("optimizer") {
            None => name.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::Options {
                    what: format!("group {gi}"),
                    message: format!("`optimizer` must be a name, got {other}"),
                }
                .into())
            }
        };
        if let Some(m) = g.options.as_object_mut() {
            m.remove("optimizer");
        }
        let first = params.len();
        params.extend(g.params.iter().cloned());
        let members = first..params.len();
        match split.iter_mut().find(|(a, _, _)| *a == algo) {
            Some((_, gs, ms)) => {
                gs.push((gi, g));
                ms.extend(members);
            }
            None => split.push((algo, vec![(gi, g)], members.collect())),
        }
    }
    if split.len() == 1 && split[0].0 == name {
        let groups = split.pop().map(|(_, gs, _)| gs).unwrap_or_default();
        return build_one(
            backend,
            name,
            options,
            groups.into_iter().map(|(_, g)| g).collect(),
            setup,
        );
    }
    // The whole does clipping by norm, noise (which applies the value clipping) and the
    // non-finite check; each part the rest.
    let part_setup = Setup {
        schedule: setup.schedule.clone(),
        clip: Clip {
            max_norm: None,
            max_value: setup
                .noise
                .is_none()
                .then_some(setup.clip.max_value)
                .flatten(),
        },
        non_finite: NonFinite::Unchecked,
        noise: None,
        // Each part shards its own tensors; the whole puts their layouts together.
        shard: setup.shard.clone(),
    };
    let empty = Value::Object(Map::new());
    let mut parts = Vec::with_capacity(split.len());
    for (algo, gs, members) in split {
        let numbers = gs.iter().map(|(gi, _)| *gi).collect();
        let opts = if algo == name { options } else { &empty };
        let specs = gs.into_iter().map(|(_, g)| g).collect();
        parts.push(Part {
            optimizer: build_one(backend, &algo, opts, specs, &part_setup)?,
            members,
            groups: numbers,
        });
    }
    backend.multi(params, parts, setup)
}

/// One algorithm (a rule, or Lookahead around one) over `groups`.
fn build_one<F: Float, B: Backend<F>>(
    backend: &B,
    name: &str,
    options: &Value,
    groups: Vec<GroupSpec>,
    setup: &Setup,
) -> std::result::Result<Box<B::Optimizer>, B::Error> {
    if name != "lookahead" {
        return build_rule(backend, name, options, groups, setup);
    }
    let mut outer = as_object("lookahead", options)?.clone();
    let inner = outer.remove("inner").ok_or_else(|| Error::Options {
        what: "lookahead".into(),
        message: "missing field `inner` (the inner optimizer: {\"optimizer\": …, …})".into(),
    })?;
    let mut inner = as_object("lookahead inner", &inner)?.clone();
    let inner_name = match inner.remove("optimizer") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(Error::Options {
                what: "lookahead inner".into(),
                message: "missing string field `optimizer`".into(),
            }
            .into())
        }
    };
    if inner_name == "lookahead" {
        return Err(Error::Options {
            what: "lookahead inner".into(),
            message: "Lookahead cannot wrap Lookahead".into(),
        }
        .into());
    }
    let config: LookaheadConfig = parse("lookahead", LookaheadConfig::default(), &outer)?;
    let inner = build_rule(backend, &inner_name, &Value::Object(inner), groups, setup)?;
    backend.lookahead(inner, config)
}

fn as_object<'a>(what: &str, v: &'a Value) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| Error::Options {
        what: what.to_string(),
        message: format!("expected a JSON object, got {v}"),
    })
}

/// `defaults` with the fields of `overrides` replaced.
fn parse<T: serde::Serialize + serde::de::DeserializeOwned>(
    what: &str,
    defaults: T,
    overrides: &Map<String, Value>,
) -> Result<T> {
    let err = |e: serde_json::Error| Error::Options {
        what: what.to_string(),
        message: e.to_string(),
    };
    let mut merged = serde_json::to_value(defaults).map_err(err)?;
    if let Value::Object(m) = &mut merged {
        for (k, v) in overrides {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(merged).map_err(err)
}

/// The groups of rule `R` (named `name`): `defaults`, then `options`, then each group's.
fn parse_groups<R: Rule>(
    name: &str,
    defaults: R,
    options: &Value,
    groups: Vec<GroupSpec>,
) -> Result<Vec<ParamGroup<R>>> {
    let (base, base_storage) = split_storage(as_object(name, options)?);
    let base: R = parse(name, defaults, &base)?;
    groups
        .into_iter()
        .map(|g| {
            let (own, mut storage) = split_storage(as_object(name, &g.options)?);
            for (k, v) in &base_storage {
                storage.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Ok(ParamGroup {
                rule: parse(name, base.clone(), &own)?,
                params: g.params,
                state: parse(name, StateStorage::default(), &storage)?,
            })
        })
        .collect()
}

/// Options split into the rule's and the state storage's ([`StateStorage::OPTIONS`]).
fn split_storage(options: &Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| !StateStorage::OPTIONS.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one() -> Vec<ParamInfo> {
        vec![ParamInfo::new("x", [3])]
    }

    #[test]
    fn every_name_builds_with_defaults() {
        for name in NAMES {
            let opts = if *name == "lookahead" {
                json!({"inner": {"optimizer": "sgd"}})
            } else {
                json!({})
            };
            // Muon steps matrices only.
            let params = if *name == "muon" {
                vec![ParamInfo::new("x", [3, 2])]
            } else {
                one()
            };
            let opt = build::<f64>(name, &opts, params, &Setup::default()).unwrap();
            assert_eq!(opt.params().len(), 1, "{name}");
        }
    }

    #[test]
    fn aliases_change_defaults_only() {
        let opt = build::<f32>("adamw", &json!({}), one(), &Setup::default()).unwrap();
        assert_eq!(opt.name(), "adam");
        let meta = opt.state_dict().meta;
        assert!(meta["groups"].contains("\"decoupled_weight_decay\":true"));
        assert!(meta["groups"].contains("\"weight_decay\":0.01"));
    }

    #[test]
    fn unknown_names_and_fields_are_errors() {
        let s = Setup::default();
        assert!(matches!(
            build::<f64>("adamm", &json!({}), one(), &s),
            Err(Error::Unknown { .. })
        ));
        let e = build::<f64>("adam", &json!({"lrr": 1.0}), one(), &s).unwrap_err();
        assert!(e.to_string().contains("lrr"), "{e}");
        let e = build::<f64>("adam", &json!({"lr": "fast"}), one(), &s).unwrap_err();
        assert!(matches!(e, Error::Options { .. }), "{e}");
        let e = build::<f64>("sgd", &json!({"lr": -1.0}), one(), &s).unwrap_err();
        assert!(
            matches!(e, Error::InvalidHyperparameter { name: "lr", .. }),
            "{e}"
        );
        let e = build::<f64>("lookahead", &json!({"k": 3}), one(), &s).unwrap_err();
        assert!(e.to_string().contains("inner"), "{e}");
    }

    #[test]
    fn groups_override_options() {
        let groups = vec![
            GroupSpec {
                options: json!({}),
                params: vec![ParamInfo::new("w", [2])],
            },
            GroupSpec {
                options: json!({"lr": 0.5}),
                params: vec![ParamInfo::new("b", [1])],
            },
        ];
        let opt =
            build_groups::<f64>("sgd", &json!({"lr": 0.1}), groups, &Setup::default()).unwrap();
        assert_eq!(opt.num_groups(), 2);
        assert_eq!(opt.lr(0).unwrap(), 0.1);
        assert_eq!(opt.lr(1).unwrap(), 0.5);
    }
}
