//! `downhill compare`'s TOML configuration: any text is parsed and validated without a panic,
//! and a configuration that validates builds every optimizer as `compare` does (through the
//! candle adapter), each taking a step on a tiny parameter. No dataset is loaded and nothing
//! is written: `data_dir` is never followed.
//!
//! Comment lines stand for the flags given over the file: `#optimizers=LABELS` for
//! `--optimizers` and `#set=LABEL.KEY=VALUE` for `--set`, applied in that order as
//! `CompareConfig::from_args` does, before `validate`.
#![no_main]

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use downhill_candle::DownhillOptimizer;
use downhill_cli::compare::{apply_set, select, CompareConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = CompareConfig::from_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    for line in text.lines() {
        if let Some(labels) = line.strip_prefix("#optimizers=") {
            let labels: Vec<String> = labels.split(',').map(str::to_string).collect();
            match select(&labels, &config.optimizers) {
                Ok(entries) => config.optimizers = entries,
                Err(_) => return,
            }
        }
    }
    for line in text.lines() {
        if let Some(set) = line.strip_prefix("#set=") {
            if apply_set(&mut config.optimizers, set).is_err() {
                return;
            }
        }
    }
    if config.validate().is_err() {
        return;
    }
    // What `--print-config` prints and the run directory keeps must read back.
    if let Ok(written) = config.to_toml() {
        if let Err(e) = CompareConfig::from_toml(&written, Path::new("config.toml")) {
            panic!("the written configuration does not read back: {e}\n{written}");
        }
    }
    let seed = config.seeds[0];
    for entry in &config.optimizers {
        let Ok(setup) = entry.setup(&config, seed) else {
            continue;
        };
        let Ok(p) =
            Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).and_then(|t| Var::from_tensor(&t))
        else {
            continue;
        };
        let Ok(mut opt) = DownhillOptimizer::with_names(vec![("p".to_string(), p.clone())], setup)
        else {
            continue;
        };
        if let Ok(grads) = p
            .as_tensor()
            .sqr()
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
        {
            let _ = opt.try_step(&grads);
        }
    }
});
