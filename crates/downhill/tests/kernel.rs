//! The fused parallel step: the same bits whatever the thread count or SIMD level, and no
//! allocation in a step after the first.

use downhill::registry::{self, Setup};
use downhill::{kernel, Clip, Float, Optimizer, ParamInfo};
use serde_json::{json, Value};

/// Tensors that span several chunks, with odd sizes (vector bodies and scalar tails) and
/// many small ones sharing chunks.
fn infos() -> Vec<ParamInfo> {
    let mut v = vec![
        ParamInfo::new("big", [70_001]),
        ParamInfo::new("mat", [97, 131]),
    ];
    v.extend((0..40).map(|i| ParamInfo::new(format!("small{i}"), [1 + 37 * i])));
    v.push(ParamInfo::new("empty", [0]));
    v
}

/// The tensors `name` takes: Muon takes matrices only (its own set, odd sizes, tall and
/// wide; its products run one tensor per thread).
fn infos_for(name: &str) -> Vec<ParamInfo> {
    if name == "muon" {
        return vec![
            ParamInfo::new("mat", [97, 131]),
            ParamInfo::new("tall", [130, 17]),
            ParamInfo::new("wide", [5, 300]),
            ParamInfo::new("square", [64, 64]),
        ];
    }
    infos()
}

fn options(name: &str) -> Value {
    match name {
        "lookahead" => {
            json!({"k": 2, "inner": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.01}})
        }
        // a large switch_eps so that tensors switch to SGD during the run
        "swats" => json!({"lr": 0.01, "switch_eps": 1.0, "weight_decay": 0.01}),
        _ => json!({"lr": 0.01, "weight_decay": 0.01}),
    }
}

fn data<F: Float>(infos: &[ParamInfo], seed: u64) -> Vec<Vec<F>> {
    let mut x = seed;
    infos
        .iter()
        .map(|i| {
            (0..i.len())
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    F::from_f64(((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
                })
                .collect()
        })
        .collect()
}

/// Run 6 steps of `name` (with global-norm clipping) and return the parameters and state.
fn trajectory<F: Float>(name: &str) -> (Vec<Vec<F>>, downhill::StateDict) {
    trajectory_with::<F>(name, options(name))
}

/// Run 6 steps of `name` with `options`.
fn trajectory_with<F: Float>(name: &str, options: Value) -> (Vec<Vec<F>>, downhill::StateDict) {
    let setup = Setup {
        clip: Clip {
            max_norm: Some(5.0),
            max_value: None,
        },
        ..Setup::default()
    };
    let infos = infos_for(name);
    let mut opt = registry::build::<F>(name, &options, infos.clone(), &setup).unwrap();
    let mut p = data::<F>(&infos, 1);
    for s in 0..6 {
        let g = data::<F>(&infos, 100 + s);
        let mut ps: Vec<&mut [F]> = p.iter_mut().map(|t| &mut t[..]).collect();
        let gs: Vec<&[F]> = g.iter().map(|t| &t[..]).collect();
        opt.step(&mut ps, &gs).unwrap();
    }
    (p, opt.state_dict())
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The bit patterns, summarized for a readable failure: (count differing from `other`, first).
fn bits<F: Float>(p: &[Vec<F>]) -> Vec<u64> {
    p.iter().flatten().map(|x| x.to_f64().to_bits()).collect()
}

fn same(a: &[u64], b: &[u64]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} vs {} elements", a.len(), b.len()));
    }
    let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    match diff.first() {
        None => Ok(()),
        Some(&i) => Err(format!("{} elements differ, first at {i}", diff.len())),
    }
}

#[test]
fn thread_count_and_simd_level_do_not_change_a_bit() {
    for name in registry::NAMES {
        let (p1, s1) = in_pool(1, || trajectory::<f32>(name));
        for threads in [2, 3, 4] {
            let (p, s) = in_pool(threads, || trajectory::<f32>(name));
            assert_eq!(
                same(&bits(&p), &bits(&p1)),
                Ok(()),
                "{name}: f32 params at {threads} threads"
            );
            assert!(s == s1, "{name}: f32 state at {threads} threads");
        }
        let (q1, t1) = in_pool(1, || trajectory::<f64>(name));
        let (q, t) = in_pool(3, || trajectory::<f64>(name));
        assert_eq!(same(&bits(&q), &bits(&q1)), Ok(()), "{name}: f64 params");
        assert!(t == t1, "{name}: f64 state");

        kernel::set_simd_enabled(false);
        let (ps, ss) = in_pool(2, || trajectory::<f32>(name));
        kernel::set_simd_enabled(true);
        assert_eq!(
            same(&bits(&ps), &bits(&p1)),
            Ok(()),
            "{name}: scalar vs {}",
            kernel::simd_level()
        );
        assert!(ss == s1, "{name}: scalar state");
    }
}

/// State in 8 bits and bf16: blocks are coded by one thread each (the plan splits tensors
/// on block boundaries), and the AVX-512 codecs give the scalar ones' codes.
#[test]
fn low_precision_state_is_the_same_bits_at_any_thread_count_and_simd_level() {
    for name in [
        "adamw", "sgd", "lion", "rmsprop", "adagrad", "ademamix", "yogi",
    ] {
        for precision in ["8bit", "bf16"] {
            let mut o = options(name);
            o["state_precision"] = json!(precision);
            o["min_8bit_size"] = json!(100);
            if name == "sgd" {
                o["momentum"] = json!(0.9);
            }
            let (p1, s1) = in_pool(1, || trajectory_with::<f32>(name, o.clone()));
            let (p3, s3) = in_pool(3, || trajectory_with::<f32>(name, o.clone()));
            assert_eq!(same(&bits(&p3), &bits(&p1)), Ok(()), "{name} {precision}");
            assert!(s3 == s1, "{name} {precision}: state at 3 threads");
            kernel::set_simd_enabled(false);
            let (ps, ss) = in_pool(2, || trajectory_with::<f32>(name, o.clone()));
            kernel::set_simd_enabled(true);
            assert_eq!(
                same(&bits(&ps), &bits(&p1)),
                Ok(()),
                "{name} {precision}: scalar"
            );
            assert!(ss == s1, "{name} {precision}: scalar state");
        }
    }
}

#[test]
fn swats_switches_in_this_test() {
    let (_, s) = trajectory::<f64>("swats");
    let switched = s
        .tensors
        .keys()
        .filter(|k| k.ends_with(".switched_at"))
        .filter(|k| s.scalar(k).unwrap() > 0.0)
        .count();
    assert!(
        switched > 0,
        "no tensor switched: the SWATS reductions are not exercised"
    );
}

#[test]
fn global_norm_is_thread_independent() {
    let g = data::<f32>(&infos(), 7);
    let gs: Vec<&[f32]> = g.iter().map(|t| &t[..]).collect();
    let n1 = in_pool(1, || downhill::clip::global_norm(&gs));
    let n4 = in_pool(4, || downhill::clip::global_norm(&gs));
    assert_eq!(n1.to_bits(), n4.to_bits());
    let exact: f64 = g
        .iter()
        .flatten()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    assert!((n1 - exact).abs() < 1e-5 * exact);
}
