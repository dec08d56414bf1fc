//! The optimizers the `checkpoint` target loads states into, and whose states `make_seeds`
//! writes: one list, so that the seeds always fit the target.

use downhill::registry::{self, Setup};
use downhill::{Optimizer, ParamInfo};

/// Adam, SGD with momentum and Lookahead(Adam) over `w` [2, 3] and `b` [3], by name.
pub fn checkpoint_optimizers() -> Vec<(&'static str, Box<dyn Optimizer<f32>>)> {
    ["adam", "sgd", "lookahead"]
        .into_iter()
        .map(|name| {
            let options = match name {
                "lookahead" => serde_json::json!({"inner": {"optimizer": "adam"}}),
                "sgd" => serde_json::json!({"lr": 0.1, "momentum": 0.9}),
                _ => serde_json::json!({"lr": 0.1}),
            };
            let params = vec![ParamInfo::new("w", [2, 3]), ParamInfo::new("b", [3])];
            let opt = registry::build::<f32>(name, &options, params, &Setup::default())
                .expect("the checkpoint optimizers build");
            (name, opt)
        })
        .collect()
}
