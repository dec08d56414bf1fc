//! Replay of the cases whose state is stored in fewer bits (`tests/reference/lowbit/`, whose
//! README is the specification), step by step and teacher-forced.
//!
//! Quantization makes a trajectory discontinuous (a value at a midpoint between two codes
//! can round either way), so each step starts from the case's recorded parameters and
//! state of the step before, loaded through a checkpoint ([`Stepper::load_state_dict`]),
//! and is checked on what it stores:
//! - the parameters within 1e-6 (relative to the case's scale, as every case);
//! - bf16 state bit for bit; `f32` state (tensors under `min_8bit_size`) within 1e-6
//!   relative;
//! - 8-bit state: absmax within 1e-6 relative, and the same codes, except a code whose
//!   unrounded value lies within 1e-6 relative of the midpoint between the two codes'
//!   entries. The unrounded value comes from a second optimizer with the same rule and
//!   bitsandbytes' order of operations but `f32` state, stepped from the same recorded
//!   state.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    infos_of, options, setup_of, step_error, to_float, Build, Case, Executor, Replay, Stepper,
};
use crate::kernel::lowbit::{dynamic_map, f32_from_bf16, QuantMap, BLOCK};
use crate::precision::PackedBuffer;
use crate::state::{StateTensor, TensorData};
use crate::{DType, StatePrecision};

/// The threshold of the lowbit cases (parameters, absmax and `f32` state).
const THRESHOLD: f64 = 1e-6;

/// One state buffer of a case, as stored after a step.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StoredState {
    /// 8-bit: codes and one absmax per block.
    Codes {
        /// One code per element.
        codes: Vec<u8>,
        /// One absmax per block of 256.
        absmax: Vec<f64>,
    },
    /// bf16 or `f32` values.
    Values {
        /// One value per element.
        values: Vec<f64>,
    },
}

/// The case's state precision under downhill's name.
fn precision(name: &str) -> Result<StatePrecision, String> {
    match name {
        "8bit-blockwise" | "8bit" => Ok(StatePrecision::Bit8),
        "bf16" => Ok(StatePrecision::Bf16),
        "f32" => Ok(StatePrecision::F32),
        other => Err(format!("state_precision: unknown '{other}'")),
    }
}

/// Replay a lowbit case (see the module docs).
pub(super) fn replay_on<E: Executor>(case: &Case, executor: &E) -> Result<Replay, String> {
    let name = case.state_precision.as_deref().unwrap_or("f32");
    let precision = precision(name)?;
    if case.dtype != "f32" {
        return Err(format!("dtype: lowbit cases are f32, got {}", case.dtype));
    }
    let setup = setup_of(case)?;
    let infos = infos_of(case);
    let mut opts = options(case)?;
    let Some(map) = opts.as_object_mut() else {
        return Err("options: expected an object".into());
    };
    map.insert("state_precision".into(), Value::from(precision.name()));
    map.insert(
        "block_size".into(),
        Value::from(case.block_size.unwrap_or(BLOCK)),
    );
    if let Some(m) = case.min_8bit_size {
        map.insert("min_8bit_size".into(), Value::from(m));
    }
    // The same rule and order of operations with every tensor's state in f32: the
    // unrounded state a step computes.
    let mut unrounded = opts.clone();
    if let Some(m) = unrounded.as_object_mut() {
        m.insert("min_8bit_size".into(), Value::from(u64::MAX));
    }
    let init: Vec<Vec<f32>> = case
        .init
        .iter()
        .map(|v| to_float("init", v))
        .collect::<Result<_, _>>()?;
    let build = |o: &Value| {
        let what = Build {
            name: &case.optimizer,
            options: o,
            params: &infos,
            setup: &setup,
        };
        executor.f32(what, &init)
    };
    let mut opt = build(&opts)?;
    let mut oracle = match precision {
        StatePrecision::Bit8 => Some(build(&unrounded)?),
        _ => None,
    };
    let mut report = Replay {
        name: case.name.clone(),
        dtype: DType::F32,
        steps: case.steps.len(),
        worst: 0.0,
        worst_step: 0,
        threshold: THRESHOLD,
        notes: Vec::new(),
        info: Vec::new(),
    };
    check_maps(case, &mut report.notes);
    let mut params = init.clone();
    let mut flips = 0usize;
    for (i, step) in case.steps.iter().enumerate() {
        let recorded = step
            .state
            .as_ref()
            .ok_or_else(|| format!("steps[{i}]: no state"))?;
        if recorded.len() != case.shapes.len() {
            return Err(format!("steps[{i}].state: {} tensors", recorded.len()));
        }
        if i > 0 {
            let before = &case.steps[i - 1];
            params = before
                .params
                .iter()
                .map(|v| to_float("params", v))
                .collect::<Result<_, _>>()?;
            let state = before.state.as_ref().ok_or("no state")?;
            force_state(&case.optimizer, &mut *opt, state, &case.shapes, false)?;
            if let Some(o) = &mut oracle {
                force_state(&case.optimizer, &mut **o, state, &case.shapes, true)?;
            }
        }
        let grads: Vec<Vec<f32>> = step
            .grads
            .iter()
            .map(|v| to_float("grads", v))
            .collect::<Result<_, _>>()?;
        let mut exact = None;
        if let Some(o) = &mut oracle {
            let mut p = params.clone();
            o.step(&mut p, &grads)
                .map_err(|e| format!("step {}: {e}", i + 1))?;
            exact = Some(o.state_dict()?);
        }
        opt.step(&mut params, &grads)
            .map_err(|e| format!("step {}: {e}", i + 1))?;
        let err = step_error(&params, &step.params);
        if err > report.worst {
            report.worst = err;
            report.worst_step = i + 1;
        }
        let ours = opt.state_dict()?;
        for (t, buffers) in recorded.iter().enumerate() {
            for (name, want) in buffers {
                let key = format!("g0.p{t}.{}", our_name(&case.optimizer, name));
                let at = format!("step {} {key}", i + 1);
                let got = ours
                    .tensors
                    .get(&key)
                    .ok_or_else(|| format!("{at}: not in the state"))?;
                let absmax = ours.tensors.get(&format!("{key}.absmax"));
                let unrounded = exact.as_ref().and_then(|e| e.tensors.get(&key));
                compare(
                    &at,
                    got,
                    absmax,
                    unrounded,
                    want,
                    &mut flips,
                    &mut report.notes,
                );
            }
        }
    }
    if flips > 0 {
        report.info.push(format!(
            "{flips} 8-bit codes rounded the other way at a midpoint (allowed)"
        ));
    }
    Ok(report)
}

/// Note a difference between the maps the case recorded and ours.
fn check_maps(case: &Case, notes: &mut Vec<String>) {
    let Some(maps) = &case.quantization_maps else {
        return;
    };
    for (name, signed) in [("signed", true), ("unsigned", false)] {
        let Some(want) = maps.get(name) else { continue };
        let ours = dynamic_map(signed);
        let same = want.len() == 256
            && ours
                .iter()
                .zip(want)
                .all(|(a, &b)| a.to_bits() == (b as f32).to_bits());
        if !same {
            notes.push(format!("the {name} map differs from the case's"));
        }
    }
}

/// Load the recorded `state` (and keep everything else of the optimizer's own state): as
/// stored, or (`decoded`) as `f32` values.
fn force_state(
    optimizer: &str,
    opt: &mut dyn Stepper<f32>,
    state: &[BTreeMap<String, StoredState>],
    shapes: &[Vec<usize>],
    decoded: bool,
) -> Result<(), String> {
    let mut sd = opt.state_dict()?;
    for (t, buffers) in state.iter().enumerate() {
        for (name, stored) in buffers {
            let key = format!("g0.p{t}.{}", our_name(optimizer, name));
            let shape = shapes[t].clone();
            sd.tensors.remove(&format!("{key}.absmax"));
            match stored {
                StoredState::Values { values } => {
                    let v = values.iter().map(|&x| x as f32).collect();
                    sd.tensors.insert(
                        key,
                        StateTensor {
                            shape,
                            data: TensorData::F32(v),
                        },
                    );
                }
                StoredState::Codes { codes, absmax } => {
                    // bitsandbytes' choice: the unsigned map for a second moment beside a
                    // first one (Adam's `v`), the signed one otherwise.
                    let map = if name == "v" && buffers.contains_key("m") {
                        QuantMap::Unsigned
                    } else {
                        QuantMap::Signed
                    };
                    let coded = PackedBuffer::Q8 {
                        codes: codes.clone(),
                        absmax: absmax.iter().map(|&x| x as f32).collect(),
                        map,
                    };
                    if decoded {
                        let data = TensorData::F32(coded.decode());
                        sd.tensors.insert(key, StateTensor { shape, data });
                    } else {
                        coded.insert_into(&mut sd, key, &shape);
                    }
                }
            }
        }
    }
    // Recorded bf16 values come as numbers (f32 in the checkpoint): converted on load.
    opt.load_state_dict(&sd.convert_state_precision())
        .map_err(|e| e.to_string())
}

/// downhill's name of a buffer the cases name as bitsandbytes does (`v` for Adagrad's sum of
/// squares, PyTorch's `state_sum`).
fn our_name<'a>(optimizer: &str, name: &'a str) -> &'a str {
    match (optimizer, name) {
        ("adagrad", "v") => "sum",
        _ => name,
    }
}

/// Whether `a` is within [`THRESHOLD`] of `b`, relative to `b`.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= THRESHOLD * b.abs()
}

/// Compare one stored buffer with the case's; record failures in `notes` (the first few of
/// each buffer) and allowed midpoint flips in `flips`.
fn compare(
    at: &str,
    got: &StateTensor,
    absmax: Option<&StateTensor>,
    unrounded: Option<&StateTensor>,
    want: &StoredState,
    flips: &mut usize,
    notes: &mut Vec<String>,
) {
    let mut bad = Vec::new();
    match (want, &got.data) {
        (StoredState::Values { values }, TensorData::Bf16(bits)) => {
            for (j, (&b, &w)) in bits.iter().zip(values).enumerate() {
                if f32_from_bf16(b).to_bits() != (w as f32).to_bits() {
                    bad.push(format!("[{j}] {} vs {w}", f32_from_bf16(b)));
                }
            }
        }
        (StoredState::Values { values }, TensorData::F32(v)) => {
            for (j, (&x, &w)) in v.iter().zip(values).enumerate() {
                if !close(f64::from(x), w) {
                    bad.push(format!("[{j}] {x} vs {w}"));
                }
            }
        }
        (
            StoredState::Codes {
                codes,
                absmax: want_absmax,
            },
            TensorData::U8(ours),
        ) => {
            let absmax = match absmax {
                Some(StateTensor {
                    data: TensorData::F32(a),
                    ..
                }) => a,
                _ => {
                    notes.push(format!("{at}: no absmax"));
                    return;
                }
            };
            for (b, (&a, &w)) in absmax.iter().zip(want_absmax).enumerate() {
                if !close(f64::from(a), w) {
                    bad.push(format!("absmax[{b}] {a} vs {w}"));
                }
            }
            let exact = match unrounded {
                Some(StateTensor {
                    data: TensorData::F32(x),
                    ..
                }) => Some(x),
                _ => None,
            };
            for (j, (&c, &w)) in ours.iter().zip(codes).enumerate() {
                if c == w {
                    continue;
                }
                let midpoint = exact.and_then(|x| {
                    let a = *want_absmax.get(j / BLOCK)? as f32;
                    let y = f64::from(x[j] / a);
                    Some(y)
                });
                match midpoint {
                    Some(y) if at_midpoint(y, c, w) => *flips += 1,
                    _ => bad.push(format!("code[{j}] {c} vs {w}")),
                }
            }
        }
        (_, other) => {
            notes.push(format!("{at}: stored as {}", other.type_name()));
            return;
        }
    }
    if got.data.len() != want_len(want) {
        notes.push(format!("{at}: {} elements", got.data.len()));
    }
    if !bad.is_empty() {
        let n = bad.len();
        bad.truncate(3);
        notes.push(format!("{at}: {n} differ ({})", bad.join(", ")));
    }
}

fn want_len(s: &StoredState) -> usize {
    match s {
        StoredState::Codes { codes, .. } => codes.len(),
        StoredState::Values { values } => values.len(),
    }
}

/// Whether `y` lies within [`THRESHOLD`] (relative) of the midpoint between the entries of
/// two neighbouring codes `a` and `b` (of either map: both are checked).
fn at_midpoint(y: f64, a: u8, b: u8) -> bool {
    if a.abs_diff(b) != 1 {
        return false;
    }
    let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
    [QuantMap::Signed, QuantMap::Unsigned].iter().any(|map| {
        let m = &map.codebook().values;
        let mid = (f64::from(m[lo]) + f64::from(m[hi])) / 2.0;
        (y - mid).abs() <= THRESHOLD * mid.abs()
    })
}
