//! The configuration parsers: an optimizer's options and a schedule, as JSON. Anything is
//! either built or refused with an error, never a panic; what is built takes a step.
#![no_main]

use downhill::registry::{self, Setup};
use downhill::ParamInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let mut setup = Setup::default();
    if let Some(s) = value.get("schedule") {
        match downhill::schedule::from_json(s) {
            Ok(s) => setup.schedule = Some(s),
            Err(_) => return,
        }
    }
    let name = registry::NAMES[usize::from(pick) % registry::NAMES.len()];
    let params = vec![ParamInfo::new("x", [3])];
    if let Ok(mut opt) = registry::build::<f64>(name, &value, params, &setup) {
        let mut x = vec![1.0, -2.0, 0.5];
        let _ = opt.step(&mut [&mut x[..]], &[&[0.1, 0.2, -0.3][..]]);
    }
});
