//! Train a small MLP (64-32-10, ReLU) on the embedded digits with candle, once with downhill's
//! AdamW and once with SGD-momentum, and print the test accuracy after each epoch; then save
//! the optimizer's state and load it into a fresh optimizer, as a resumed run would.
//!
//! ```sh
//! cargo run --release -p downhill-candle --example train_digits
//! ```

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{linear, loss, Linear, Module, Optimizer, VarBuilder, VarMap};
use downhill_candle::{Config, DownhillOptimizer};

struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Mlp {
            hidden: linear(64, 32, vb.pp("hidden"))?,
            out: linear(32, 10, vb.pp("out"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.hidden.forward(x)?.relu()?)
    }
}

fn tensors(d: &downhill_data::Dataset, dev: &Device) -> Result<(Tensor, Tensor)> {
    let x = Tensor::from_slice(&d.x, (d.len(), d.features), dev)?;
    let y = Tensor::from_slice(&d.y, d.len(), dev)?;
    Ok((x, y))
}

fn accuracy(model: &Mlp, x: &Tensor, y: &Tensor) -> Result<f32> {
    let pred = model.forward(x)?.argmax(D::Minus1)?;
    let correct = pred
        .eq(y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(correct / y.dims()[0] as f32)
}

fn train(label: &str, config: Config) -> Result<()> {
    let dev = Device::Cpu;
    let mut split = downhill_data::by_name("digits", None, 0).map_err(candle_core::Error::msg)?;
    split.standardize_global();
    let (x_train, y_train) = tensors(&split.train, &dev)?;
    let (x_test, y_test) = tensors(&split.test, &dev)?;
    let varmap = VarMap::new();
    let model = Mlp::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let mut opt = DownhillOptimizer::from_varmap(&varmap, config.clone())?;
    let n = split.train.len();
    let batch = 64;
    for epoch in 1..=10 {
        for start in (0..n).step_by(batch) {
            let len = batch.min(n - start);
            let logits = model.forward(&x_train.narrow(0, start, len)?)?;
            let loss = loss::cross_entropy(&logits, &y_train.narrow(0, start, len)?)?;
            opt.backward_step(&loss)?;
        }
        let acc = accuracy(&model, &x_test, &y_test)?;
        println!(
            "{label:<14} epoch {epoch:>2}: test accuracy {:.1}%",
            100.0 * acc
        );
    }
    // The optimizer's state, keyed by the VarMap's names ("hidden.weight", …), to resume
    // from: a fresh optimizer over the same variables picks up where this one stopped.
    let path = std::env::temp_dir().join(format!("downhill-digits-{label}.safetensors"));
    opt.save(&path)?;
    let mut resumed = DownhillOptimizer::from_varmap(&varmap, config)?;
    resumed.load(&path)?;
    println!(
        "{label:<14} state saved and reloaded: {} steps",
        resumed.steps_taken()
    );
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn main() -> Result<()> {
    train("adamw", Config::adamw(1e-3))?;
    train("sgd-momentum", Config::sgd_momentum(0.05))
}
