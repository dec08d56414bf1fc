//! The generated step kernels, run on the CPU: compiled by the host's C++ compiler with a
//! shim for CUDA's keywords, each block's threads run one after the other. That is exact
//! for kernels without reductions (their threads are independent), so this checks, without
//! a GPU, everything of a step kernel but the GPU itself: the table layouts, the chunk walk,
//! 16-byte and scalar paths, tails, constants' offsets, and the emitted math against the CPU
//! optimizer, bit for bit. Skipped (with the reason) where no C++ compiler is found.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use downhill::kernel::trace::{trace, trace_measure};

use downhill::noise::GradientNoise;
use downhill::optim::adabelief::AdaBelief;
use downhill::optim::adam::Adam;
use downhill::optim::adan::Adan;
use downhill::optim::ademamix::AdEMAMix;
use downhill::optim::adopt::Adopt;
use downhill::optim::asgd::Asgd;
use downhill::optim::lion::Lion;
use downhill::optim::rmsprop::RmsProp;
use downhill::optim::rprop::Rprop;
use downhill::optim::schedule_free_adamw::ScheduleFreeAdamW;
use downhill::optim::sgd::Sgd;
use downhill::optim::swats::Swats;
use downhill::optim::yogi::Yogi;
use downhill::optim::Rule;
use downhill::optim::TensorScalars;
use downhill::{Optimizer, ParamGroup, ParamInfo, RuleOptimizer, StepPlanner};
use downhill_cuda::codegen::{
    chunks, noise_kernel, reduces, scan_kernel, step_kernel, tensor_row, Tuning, CHUNK_WORDS,
    GPU_CHUNK, THREADS,
};
use downhill_cuda::GpuFloat;

/// CUDA's keywords for the host compiler, and `run_blocks` (shared with the fake driver).
const SHIM: &str = include_str!("fake_cuda/shim.h");

type Launch = unsafe extern "C" fn(u32, *const u64, u64, *const u64, *const u8, *mut f64);

/// Compile step kernel `kernel` (named `name`) for the host, with `host_launch`; `None`
/// when there is no C++ compiler.
fn compile(kernel: &str, name: &str, dir: &Path) -> Option<libloading::Library> {
    let launcher = format!(
        "extern \"C\" void host_launch(unsigned grid, const Chunk* c, unsigned long long n, \
         const Tensor* t, const T* k, double* partials) {{\n\
         run_blocks(grid, {THREADS}, [=] {{ {name}(c, n, t, k, partials); }});\n}}\n"
    );
    build(kernel, &launcher, name, dir)
}

/// Compile `kernel` and `launcher` into a shared library (`name`.so in `dir`).
fn build(kernel: &str, launcher: &str, name: &str, dir: &Path) -> Option<libloading::Library> {
    let src = format!("{SHIM}{kernel}\n{launcher}");
    let cpp = dir.join(format!("{name}.cpp"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&cpp, src).ok()?;
    let out = Command::new("c++")
        .args([
            "-std=c++20",
            "-O1",
            "-ffp-contract=off",
            "-pthread",
            "-shared",
            "-fPIC",
            "-o",
        ])
        .arg(&so)
        .arg(&cpp)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("skipped: no C++ compiler (`c++`: {e})");
            return None;
        }
    }
    // SAFETY: a library this test just built, with no initializers of its own.
    Some(unsafe { libloading::Library::new(&so) }.expect("load the compiled kernel"))
}

/// Host buffers at a chosen misalignment (in elements) from a 16-byte boundary.
struct Buf<F> {
    raw: Vec<F>,
    at: usize,
    len: usize,
}

impl<F: GpuFloat> Buf<F> {
    fn new(values: &[F], shift: usize) -> Self {
        let mut raw = vec![F::from_f64(0.0); values.len() + 2 * F::WIDTH];
        let base = raw.as_ptr() as usize;
        let size = std::mem::size_of::<F>();
        let at = ((16 - base % 16) % 16) / size + shift;
        raw[at..at + values.len()].copy_from_slice(values);
        Buf {
            raw,
            at,
            len: values.len(),
        }
    }
    fn addr(&mut self) -> u64 {
        self.raw[self.at..].as_mut_ptr() as u64
    }
    fn values(&self) -> &[F] {
        &self.raw[self.at..self.at + self.len]
    }
}

/// One pass of a step (the update, or with `measure` the reading pass) over the emulated
/// kernels, with the planner's constants: one trace per run of tensors sharing constants,
/// one launch per variant (compiled on first use, kept in `libs` by trace key); each
/// tensor's sums over its chunks in chunk order. `None` without a C++ compiler.
#[allow(clippy::too_many_arguments)]
fn emulate_pass<F: GpuFloat, R: Rule>(
    planner: &StepPlanner<R>,
    tuning: &Tuning,
    dir: &Path,
    libs: &mut HashMap<String, Option<libloading::Library>>,
    lens: &[usize],
    nbuf: usize,
    params: &mut [Buf<F>],
    grads: &mut [Buf<F>],
    state: &mut [Vec<Buf<F>>],
    measure: bool,
) -> Option<Vec<[f64; 2]>> {
    // One trace per run of tensors sharing constants; their constants side by side.
    let mut consts: Vec<F> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut offsets = Vec::new();
    let mut tapes: HashMap<String, downhill::kernel::trace::Tape<F>> = HashMap::new();
    for t in 0..lens.len() {
        let first = planner.runs()[t];
        if first < t {
            keys.push(keys[first].clone());
            offsets.push(offsets[first]);
            continue;
        }
        let (pre, coef) = (&planner.preludes()[0], &planner.coefs()[t]);
        let tape = if measure {
            trace_measure::<F, R>(pre, coef, nbuf)
        } else {
            trace::<F, R>(pre, coef, nbuf)
        };
        keys.push(tape.key());
        offsets.push(consts.len());
        consts.extend_from_slice(&tape.consts);
        tapes.insert(tape.key(), tape);
    }
    let mut table = Vec::new();
    for t in 0..lens.len() {
        let st: [u64; 4] = std::array::from_fn(|k| state[t].get_mut(k).map_or(0, |b| b.addr()));
        table.extend(tensor_row(
            params[t].addr(),
            grads[t].addr(),
            st,
            offsets[t] as u64,
        ));
    }
    let mut sums = vec![[0.0f64; 2]; lens.len()];
    for (key, tape) in &tapes {
        let name = format!("{}_{}_{}", R::NAME, F::DTYPE, libs.len());
        let lib = libs
            .entry(key.clone())
            .or_insert_with(|| compile(&step_kernel(tape, &name, tuning), &name, dir));
        let lib = lib.as_ref()?;
        let mine = chunks(lens, tuning.chunk, |t| keys[t] == *key);
        let n = mine.len() / CHUNK_WORDS;
        let mut partials = vec![0.0f64; 2 * n];
        // SAFETY: the signature `host_launch` was compiled with; the tables point into
        // buffers alive for the call, with the lengths of the chunk table.
        unsafe {
            let launch: libloading::Symbol<Launch> = lib.get(b"host_launch").expect("host_launch");
            launch(
                3,
                mine.as_ptr(),
                n as u64,
                table.as_ptr(),
                consts.as_ptr() as *const u8,
                partials.as_mut_ptr(),
            );
        }
        if reduces(tape) {
            for (c, e) in mine.chunks(CHUNK_WORDS).enumerate() {
                sums[e[0] as usize][0] += partials[2 * c];
                sums[e[0] as usize][1] += partials[2 * c + 1];
            }
        }
    }
    Some(sums)
}

/// Run `steps` steps of rule `R` (one group) with the emulated kernels and with the CPU
/// optimizer; compare every bit (`exact`), or to 1e-5 where reductions are summed in another
/// order (SWATS' dot products; the reading pass of LAMB, NovoGrad and Prodigy, run first
/// when the rule has one, its sums handed to the planner), and the per-tensor scalars the
/// reductions feed.
fn same_as_cpu<F: GpuFloat, R: Rule>(
    tuning: &Tuning,
    rule: R,
    pre_clip: bool,
    steps: usize,
    exact: bool,
) -> Vec<Vec<f64>> {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("downhill-emulation-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Lengths: vector body plus tail, a tail only, several chunks; shifts make some
    // tensors misaligned (the scalar path).
    let lens = [1usize, 7, 64, 1000, 33_000, 70_001];
    let infos: Vec<ParamInfo> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| ParamInfo::new(format!("t{i}"), [n]))
        .collect();
    let init = |i: usize, n: usize| -> Vec<F> {
        (0..n)
            .map(|j| F::from_f64(((i * 31 + j) as f64 * 0.013).sin()))
            .collect()
    };
    let grad = |i: usize, n: usize, s: usize| -> Vec<F> {
        (0..n)
            .map(|j| F::from_f64(((i + 3 * j + 17 * s) as f64 * 0.29).cos() * 1.5))
            .collect()
    };
    let mut planner = StepPlanner::with_groups(vec![ParamGroup::new(rule.clone(), infos.clone())])
        .expect("planner");
    let clip = downhill::Clip {
        max_norm: None,
        max_value: pre_clip.then_some(1.0),
    };
    planner.set_clip(clip).expect("clip");
    let mut cpu = RuleOptimizer::<F, R>::new(rule.clone(), infos.clone())
        .expect("cpu")
        .with_clip(clip)
        .expect("clip");
    let mut cpu_params: Vec<Vec<F>> = lens.iter().enumerate().map(|(i, &n)| init(i, n)).collect();
    let mut params: Vec<Buf<F>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| Buf::new(&init(i, n), if i % 2 == 1 { 1 } else { 0 }))
        .collect();
    let nbuf = rule.buffers().len();
    let mut state: Vec<Vec<Buf<F>>> = lens
        .iter()
        .map(|&n| {
            (0..nbuf)
                .map(|k| Buf::new(&vec![F::from_f64(rule.buffer_init(k)); n], 0))
                .collect()
        })
        .collect();
    // Compiled variants by trace key, as the GPU optimizer keeps them.
    let mut libs: HashMap<String, Option<libloading::Library>> = HashMap::new();
    for s in 0..steps {
        let mut grads: Vec<Buf<F>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| Buf::new(&grad(i, n, s), if i == 3 { 1 } else { 0 }))
            .collect();
        planner.prepare(None, true);
        // A rule with a reading pass runs it first and hands its sums to the planner, as
        // the GPU optimizer does.
        if R::MEASURES {
            let before: Vec<Vec<F>> = params.iter().map(|b| b.values().to_vec()).collect();
            let before_state: Vec<Vec<Vec<F>>> = (state.iter())
                .map(|bufs| bufs.iter().map(|b| b.values().to_vec()).collect())
                .collect();
            let Some(sums) = emulate_pass(
                &planner,
                tuning,
                &dir,
                &mut libs,
                &lens,
                nbuf,
                &mut params,
                &mut grads,
                &mut state,
                true,
            ) else {
                return Vec::new();
            };
            // The reading pass wrote nothing.
            for (t, b) in params.iter().enumerate() {
                assert!(
                    b.values() == &before[t][..],
                    "{}: the reading pass wrote",
                    R::NAME
                );
                for (k, buf) in state[t].iter().enumerate() {
                    assert!(buf.values() == &before_state[t][k][..]);
                }
            }
            planner.absorb(|t| sums[t]);
        }
        let Some(sums) = emulate_pass(
            &planner,
            tuning,
            &dir,
            &mut libs,
            &lens,
            nbuf,
            &mut params,
            &mut grads,
            &mut state,
            false,
        ) else {
            return Vec::new();
        };
        planner.finish(|t| sums[t]);
        let g: Vec<Vec<F>> = grads.iter().map(|b| b.values().to_vec()).collect();
        let mut ps: Vec<&mut [F]> = cpu_params.iter_mut().map(|p| &mut p[..]).collect();
        let gs: Vec<&[F]> = g.iter().map(|g| &g[..]).collect();
        cpu.step(&mut ps, &gs).expect("cpu step");
        for t in 0..lens.len() {
            let (want, got) = (&cpu_params[t][..], params[t].values());
            if exact {
                assert!(
                    got == want,
                    "{} {}: tensor {t} differs at step {s}",
                    R::NAME,
                    F::DTYPE
                );
                for (k, buf) in state[t].iter().enumerate() {
                    assert!(buf.values() == cpu.buffer(t, k).expect("buffer"));
                }
            } else {
                for (a, b) in got.iter().zip(want) {
                    let (a, b) = (a.to_f64(), b.to_f64());
                    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
                }
            }
            // The scalars the reductions feed (SWATS' estimates and phase).
            let (got, want) = (
                planner.scalars(t).expect("scalars").to_values(),
                cpu.scalars(t).expect("scalars").to_values(),
            );
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1e-12),
                    "{} tensor {t} step {s}: scalars {got:?} vs {want:?}",
                    R::NAME
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (0..lens.len())
        .map(|t| planner.scalars(t).expect("scalars").to_values())
        .collect()
}

#[test]
fn generated_kernels_compute_the_cpu_step_bit_for_bit() {
    same_as_cpu::<f32, Adam>(&Tuning::default(), Adam::adamw(), true, 3, true);
    same_as_cpu::<f64, Adam>(
        &Tuning::default(),
        Adam {
            amsgrad: true,
            maximize: true,
            ..Adam::default()
        },
        false,
        3,
        true,
    );
    let nesterov = Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
        ..Sgd::default()
    };
    same_as_cpu::<f32, Sgd>(&Tuning::default(), nesterov, true, 3, true);
    let rms = RmsProp {
        centered: true,
        momentum: 0.5,
        ..RmsProp::default()
    };
    same_as_cpu::<f64, RmsProp>(&Tuning::default(), rms, false, 2, true);
}

/// The element-wise optimizers newer than the lecture without a reading pass trace into GPU
/// kernels that compute the CPU's bits (`sign` built from max/min, first-step flags, decay
/// inside the rule); LAMB, NovoGrad and Prodigy, whose sums are taken in another order, are
/// checked to a tolerance below.
#[test]
fn newer_element_wise_rules_compute_the_cpu_step_bit_for_bit() {
    let t = Tuning::default();
    same_as_cpu::<f32, Lion>(
        &t,
        Lion {
            weight_decay: 0.1,
            ..Lion::default()
        },
        true,
        3,
        true,
    );
    same_as_cpu::<f64, Yogi>(
        &t,
        Yogi {
            maximize: true,
            ..Yogi::default()
        },
        false,
        3,
        true,
    );
    same_as_cpu::<f32, AdaBelief>(&t, AdaBelief::default(), true, 3, true);
    same_as_cpu::<f64, Adopt>(&t, Adopt::default(), false, 3, true);
    same_as_cpu::<f32, Adan>(
        &t,
        Adan {
            weight_decay: 0.02,
            ..Adan::default()
        },
        true,
        3,
        true,
    );
    same_as_cpu::<f64, AdEMAMix>(&t, AdEMAMix::default(), false, 3, true);
    same_as_cpu::<f32, Rprop>(&t, Rprop::default(), false, 4, true);
    same_as_cpu::<f64, Asgd>(
        &t,
        Asgd {
            weight_decay: 0.01,
            ..Asgd::default()
        },
        true,
        3,
        true,
    );
    let sf = ScheduleFreeAdamW {
        weight_decay: 0.01,
        ..ScheduleFreeAdamW::default()
    };
    same_as_cpu::<f32, ScheduleFreeAdamW>(&t, sf, false, 3, true);
}

/// Other kernel layouts (several vectors per thread and turn, small chunks, a register
/// bound) compute the same bits, and SWATS' reductions still give the CPU's estimates.
#[test]
fn tuned_kernels_compute_the_same_bits() {
    let tuning = Tuning {
        chunk: 1024,
        unroll: 3,
        min_blocks: 4,
    };
    same_as_cpu::<f32, Adam>(&tuning, Adam::adamw(), true, 2, true);
    let nesterov = Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        ..Sgd::default()
    };
    same_as_cpu::<f64, Sgd>(&tuning, nesterov, false, 2, true);
    let swats = Swats {
        lr: 1e-2,
        switch_eps: 1e-3,
        ..Swats::default()
    };
    let unroll2 = Tuning {
        unroll: 2,
        ..Tuning::default()
    };
    same_as_cpu::<f64, Swats>(&unroll2, swats, false, 4, false);
}

/// SWATS reduces (its dot products): the kernels' per-chunk block sums, summed per tensor,
/// give the CPU's switch decisions and estimates; tensors switch at different steps, so a
/// step runs two variants (Adam phase and SGD phase).
#[test]
fn swats_reductions_and_phases_match_the_cpu() {
    let swats = Swats {
        lr: 1e-2,
        switch_eps: 1e-3,
        ..Swats::default()
    };
    let fields = <<Swats as Rule>::Scalars as TensorScalars>::FIELDS;
    let at = fields
        .iter()
        .position(|f| *f == "switched_at")
        .expect("field");
    let scalars = same_as_cpu::<f64, Swats>(&Tuning::default(), swats.clone(), false, 12, false);
    if scalars.is_empty() {
        return; // no C++ compiler
    }
    let switched: Vec<f64> = scalars.iter().map(|s| s[at]).collect();
    // Tensors switched, at different steps: in between, a step ran both phases' kernels.
    let first = switched.iter().copied().fold(f64::INFINITY, f64::min);
    let last = switched.iter().copied().fold(0.0, f64::max);
    assert!(
        first > 0.0 && last > first,
        "want switches at different steps: {switched:?}"
    );
    same_as_cpu::<f32, Swats>(&Tuning::default(), swats, true, 6, false);
}

/// The rules with a reading pass (LAMB's norms, NovoGrad's ‖g‖², Prodigy's group sums):
/// the measure kernel writes nothing, its block-summed sums go to the planner, and the update
/// follows; the GPU sums in another order than the CPU (per chunk by a block tree, in `T` per
/// thread, against 16 running sums per CPU segment), so parameters and scalars match to 1e-5
/// relative, not bit for bit. Prodigy's estimate sums over all six tensors of the group.
#[test]
fn reading_pass_rules_match_the_cpu_to_rounding() {
    use downhill::optim::lamb::Lamb;
    use downhill::optim::novograd::NovoGrad;
    use downhill::optim::prodigy::Prodigy;
    let t = Tuning::default();
    let lamb = Lamb {
        weight_decay: 0.01,
        ..Lamb::default()
    };
    for clip in [false, true] {
        same_as_cpu::<f32, Lamb>(&t, lamb.clone(), clip, 4, false);
        same_as_cpu::<f64, Lamb>(&t, lamb.clone(), clip, 4, false);
        same_as_cpu::<f32, NovoGrad>(&t, NovoGrad::default(), clip, 4, false);
        same_as_cpu::<f64, NovoGrad>(&t, NovoGrad::default(), clip, 4, false);
    }
    let prodigy = Prodigy {
        weight_decay: 0.01,
        ..Prodigy::default()
    };
    let fields = <<Prodigy as Rule>::Scalars as TensorScalars>::FIELDS;
    let r = (fields.iter())
        .position(|f| *f == "numerator_weighted")
        .expect("field numerator_weighted");
    for clip in [false, true] {
        let scalars = same_as_cpu::<f64, Prodigy>(&t, prodigy.clone(), clip, 5, false);
        if scalars.is_empty() {
            return; // no C++ compiler
        }
        // The weighted numerator (from the group's sums, matched above to 1e-5) is not zero
        // and the same in every tensor: the group's sums, not each tensor's, were used.
        assert!(scalars[0][r] != 0.0, "{scalars:?}");
        assert!(scalars.iter().all(|s| s[r] == scalars[0][r]), "{scalars:?}");
        same_as_cpu::<f32, Prodigy>(&t, prodigy.clone(), clip, 5, false);
    }
    // Another layout: several vectors per thread and small chunks (more partial sums).
    let tuned = Tuning {
        chunk: 1024,
        unroll: 2,
        min_blocks: 0,
    };
    same_as_cpu::<f32, Lamb>(&tuned, lamb, true, 3, false);
    same_as_cpu::<f64, Prodigy>(&tuned, prodigy, false, 3, false);
}

type Scan = unsafe extern "C" fn(u32, *const u64, u64, *const u64, *mut f64, *mut f64);

/// The gradient scan: sum of squares and non-finite count over tensors of many sizes, with
/// the block and total sums of the kernels.
#[test]
fn the_scan_sums_squares_and_counts_non_finite_elements() {
    let dir = std::env::temp_dir().join(format!("downhill-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let launcher = format!(
        "extern \"C\" void host_scan(unsigned grid, const Chunk* c, \
         unsigned long long n, const Tensor* t, double* partials, double* out) {{\n\
         run_blocks(grid, {THREADS}, [=] {{ scan(c, n, t, partials); }});\n\
         run_blocks(1, {THREADS}, [=] {{ total(partials, n, out); }});\n}}\n"
    );
    let Some(lib) = build(&scan_kernel::<f32>(), &launcher, "scan", &dir) else {
        return;
    };
    let lens = [3usize, 1000, 40_000, 70_001];
    let mut grads: Vec<Buf<f32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let g: Vec<f32> = (0..n).map(|j| ((i + j) as f32 * 0.7).sin()).collect();
            Buf::new(&g, i % 2)
        })
        .collect();
    let want: f64 = grads
        .iter()
        .flat_map(|b| b.values().iter().map(|&x| f64::from(x) * f64::from(x)))
        .sum();
    let scan = |grads: &mut Vec<Buf<f32>>| -> [f64; 2] {
        let mut table = Vec::new();
        for b in grads.iter_mut() {
            table.extend(tensor_row(0, b.addr(), [0; 4], 0));
        }
        let c = chunks(&lens, GPU_CHUNK, |_| true);
        let n = c.len() / CHUNK_WORDS;
        let mut partials = vec![0.0; 2 * n];
        let mut out = [0.0; 2];
        // SAFETY: the signature `host_scan` was compiled with; the tables point into live
        // buffers of the chunk table's lengths.
        unsafe {
            let f: libloading::Symbol<Scan> = lib.get(b"host_scan").expect("host_scan");
            f(
                3,
                c.as_ptr(),
                n as u64,
                table.as_ptr(),
                partials.as_mut_ptr(),
                out.as_mut_ptr(),
            );
        }
        out
    };
    let [sq, bad] = scan(&mut grads);
    assert!((sq - want).abs() <= 1e-12 * want, "{sq} vs {want}");
    assert_eq!(bad, 0.0);
    assert_eq!(
        scan(&mut grads)[0].to_bits(),
        sq.to_bits(),
        "not deterministic"
    );
    let at = grads[2].at + 12_345;
    grads[2].raw[at] = f32::NAN;
    let at = grads[3].at + 70_000;
    grads[3].raw[at] = f32::INFINITY;
    assert_eq!(scan(&mut grads)[1], 2.0);
    let _ = std::fs::remove_dir_all(&dir);
}

type Noise = unsafe extern "C" fn(u32, *const u64, u64, *const u64, u64, f64, f64, f64);

/// Gradient noise: the kernel's noisy copy (Philox, logarithm and cosine in C) is the CPU's
/// [`GradientNoise::apply`], bit for bit, with and without clipping, in `f32` and `f64`.
fn noise_same_as_cpu<F: GpuFloat>(dir: &Path) {
    let launcher = format!(
        "extern \"C\" void host_noise(unsigned grid, const Chunk* c, unsigned long long n, \
         const Tensor* t, unsigned long long key, double sigma, double scale, double clamp) {{\n\
         run_blocks(grid, {THREADS}, [=] {{ noise(c, n, t, key, sigma, scale, clamp); }});\n}}\n"
    );
    let name = format!("noise_{}", F::DTYPE);
    let Some(lib) = build(&noise_kernel::<F>(), &launcher, &name, dir) else {
        return;
    };
    let lens = [1usize, 5, 1000, 40_000];
    let grads: Vec<Vec<F>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|j| F::from_f64(((i * 7 + j) as f64 * 0.37).sin() * 3.0))
                .collect()
        })
        .collect();
    let noise = GradientNoise {
        eta: 0.3,
        gamma: 0.55,
        seed: 42,
    };
    for (t, scale, clamp) in [(0u64, None, None), (7, Some(0.25), Some(0.5))] {
        let gs: Vec<&[F]> = grads.iter().map(Vec::as_slice).collect();
        let mut want = vec![Vec::new(); lens.len()];
        noise.apply(t, &gs, scale, clamp, &mut want);
        let mut src: Vec<Buf<F>> = grads.iter().map(|g| Buf::new(g, 1)).collect();
        let mut out: Vec<Buf<F>> = lens
            .iter()
            .map(|&n| Buf::new(&vec![F::from_f64(0.0); n], 0))
            .collect();
        let mut table = Vec::new();
        for (o, g) in out.iter_mut().zip(&mut src) {
            table.extend(tensor_row(o.addr(), g.addr(), [0; 4], 0));
        }
        let c = chunks(&lens, GPU_CHUNK, |_| true);
        // SAFETY: the signature `host_noise` was compiled with; the table points into live
        // buffers of the chunk table's lengths.
        unsafe {
            let f: libloading::Symbol<Noise> = lib.get(b"host_noise").expect("host_noise");
            f(
                3,
                c.as_ptr(),
                (c.len() / CHUNK_WORDS) as u64,
                table.as_ptr(),
                noise.key(t),
                noise.variance(t).sqrt(),
                scale.unwrap_or(1.0),
                clamp.unwrap_or(f64::INFINITY),
            );
        }
        for (i, (o, w)) in out.iter().zip(&want).enumerate() {
            let bits = |v: &[F]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
            assert!(
                bits(o.values()) == bits(w),
                "{}: tensor {i} at step {t} differs from the CPU's noise",
                F::DTYPE
            );
        }
        // It is noise: the copy moved away from the clipped gradient.
        assert!(out[3].values().iter().zip(&grads[3]).any(|(a, b)| a != b));
    }
}

#[test]
fn gradient_noise_is_the_cpus_bit_for_bit() {
    let dir = std::env::temp_dir().join(format!("downhill-noise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    noise_same_as_cpu::<f32>(&dir);
    noise_same_as_cpu::<f64>(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
