//! The state-file loader: any bytes are decoded (safetensors, checksum) without a panic, and
//! whatever decodes is offered to an optimizer, which takes it whole or refuses it unchanged.
#![no_main]

use downhill::registry::{self, Setup};
use downhill::{checkpoint, Optimizer, ParamInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = checkpoint::from_bytes(data) else {
        return;
    };
    for name in ["adam", "sgd", "lookahead"] {
        let options = match name {
            "lookahead" => serde_json::json!({"inner": {"optimizer": "adam"}}),
            "sgd" => serde_json::json!({"lr": 0.1, "momentum": 0.9}),
            _ => serde_json::json!({"lr": 0.1}),
        };
        let params = vec![ParamInfo::new("w", [2, 3]), ParamInfo::new("b", [3])];
        let mut opt = registry::build::<f32>(name, &options, params, &Setup::default())
            .expect("the target's own optimizers build");
        let before = opt.state_dict();
        if opt.load_state_dict(&state).is_err() {
            assert!(
                opt.state_dict() == before,
                "a refused load changed the state"
            );
        }
    }
});
