//! The state-file loader: any bytes are decoded (safetensors, checksum) without a panic, and
//! whatever decodes is offered to an optimizer, which takes it whole or refuses it unchanged.
#![no_main]

use downhill::checkpoint;
use libfuzzer_sys::fuzz_target;

#[path = "../shared/checkpoint_optimizers.rs"]
mod shared;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = checkpoint::from_bytes(data) else {
        return;
    };
    for (_, mut opt) in shared::checkpoint_optimizers() {
        let before = opt.state_dict();
        if opt.load_state_dict(&state).is_err() {
            assert!(
                opt.state_dict() == before,
                "a refused load changed the state"
            );
        }
    }
});
