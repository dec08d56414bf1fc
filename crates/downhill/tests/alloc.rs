//! No allocation in a step after the first, for every optimizer (a counting allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use downhill::registry::{self, Setup};
use downhill::{Clip, ParamInfo};
use serde_json::json;

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steps_after_the_first_do_not_allocate() {
    // One thread: the count is then ours alone (a pool's workers could allocate for their
    // own bookkeeping); the step's code path is the same.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let infos: Vec<ParamInfo> = (0..30)
            .map(|i| ParamInfo::new(format!("t{i}"), [5000 + i]))
            .collect();
        let setup = Setup {
            clip: Clip {
                max_norm: Some(1.0),
                max_value: Some(0.5),
            },
            ..Setup::default()
        };
        for name in registry::NAMES {
            // Muon (matrices only) multiplies matrices each step through `matrixmultiply`,
            // which allocates its packing buffers per product: the one optimizer that
            // allocates in its step (its Newton–Schulz iteration is cubic in the matrix side,
            // the allocations are not what it costs).
            if *name == "muon" {
                eprintln!("muon: not checked (its matrix products allocate)");
                continue;
            }
            let options = if *name == "lookahead" {
                json!({"k": 2, "inner": {"optimizer": "adam"}})
            } else {
                json!({"weight_decay": 0.01})
            };
            let mut opt = registry::build::<f32>(name, &options, infos.clone(), &setup).unwrap();
            let mut p: Vec<Vec<f32>> = infos.iter().map(|i| vec![0.5; i.len()]).collect();
            let g: Vec<Vec<f32>> = infos.iter().map(|i| vec![0.25; i.len()]).collect();
            let gs: Vec<&[f32]> = g.iter().map(|t| &t[..]).collect();
            let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|t| &mut t[..]).collect();
            opt.step(&mut ps, &gs).unwrap();
            ALLOCS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            for _ in 0..4 {
                opt.step(&mut ps, &gs).unwrap();
            }
            COUNTING.store(false, Ordering::SeqCst);
            assert_eq!(
                ALLOCS.load(Ordering::SeqCst),
                0,
                "{name} allocated in a step"
            );
        }
    });
}
