//! Writes the checkpoint corpus's seeds: real checkpoints of the optimizers the `checkpoint`
//! target loads into, over its parameters (`w` [2, 3], `b` [3]), after two steps.
//!
//! ```sh
//! cd fuzz && cargo +nightly run --bin make_seeds
//! ```

use downhill::checkpoint;

#[path = "shared/checkpoint_optimizers.rs"]
mod shared;

fn main() {
    let dir = std::path::Path::new("corpus/checkpoint");
    std::fs::create_dir_all(dir).expect("corpus directory");
    for (name, mut opt) in shared::checkpoint_optimizers() {
        let (mut w, mut b) = (vec![0.5f32; 6], vec![-0.5f32; 3]);
        for k in 0..2 {
            let gw: Vec<f32> = (0..6).map(|j| (j + k) as f32 * 0.1).collect();
            let gb = vec![0.2f32; 3];
            opt.step(&mut [&mut w[..], &mut b[..]], &[&gw[..], &gb[..]])
                .expect("step");
        }
        let bytes = checkpoint::to_bytes(&opt.state_dict()).expect("encode");
        std::fs::write(dir.join(format!("{name}.safetensors")), bytes).expect("write seed");
    }
}
