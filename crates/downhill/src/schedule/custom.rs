//! A schedule given by a closure.
//!
//! $$\eta_t = f(\eta_{\text{base}}, t)$$
//!
//! PyTorch: `torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)` computes
//! `base_lr * lr_lambda(t)`; here the closure receives the base rate itself, so
//! `Custom::new("name", |base, t| base * lambda(t))` is `LambdaLR`. It has no parameters to
//! validate and no JSON form ([`Schedule::to_json`] returns `None`); its `Debug` shows only
//! its name.

use std::fmt;
use std::sync::Arc;

use super::Schedule;
use crate::Result;

/// The closure type of a [`Custom`] schedule: `(base_lr, step) -> lr`.
pub type ScheduleFn = dyn Fn(f64, u64) -> f64 + Send + Sync;

/// A named closure `(base_lr, step) -> lr`.
#[derive(Clone)]
pub struct Custom {
    /// A name for messages and `Debug`.
    pub name: String,
    /// The schedule: `(base_lr, step) -> lr`, with `step` 0-based.
    pub func: Arc<ScheduleFn>,
}

impl Custom {
    /// Wrap `func` under `name`.
    pub fn new(
        name: impl Into<String>,
        func: impl Fn(f64, u64) -> f64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            func: Arc::new(func),
        }
    }
}

impl fmt::Debug for Custom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Custom").field(&self.name).finish()
    }
}

impl Schedule for Custom {
    fn lr(&self, base_lr: f64, step: u64) -> f64 {
        (self.func)(base_lr, step)
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_the_closure() {
        let s = Custom::new("halve-every-10", |base, t| {
            base * 0.5f64.powi((t / 10) as i32)
        });
        assert!(s.validate().is_ok());
        assert_eq!(s.lr(0.1, 0), 0.1);
        assert_eq!(s.lr(0.1, 9), 0.1);
        assert_eq!(s.lr(0.1, 10), 0.05);
        assert_eq!(s.to_json(), None);
        assert_eq!(format!("{s:?}"), "Custom(\"halve-every-10\")");
        let shared: Arc<dyn Schedule> = Arc::new(s.clone());
        assert_eq!(shared.lr(1.0, 25), 0.25);
    }
}
