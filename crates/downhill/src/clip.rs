//! Gradient clipping: by global L2 norm over all tensors, and by value.

use crate::kernel::{self, Float, Plan, RawSlice, CHUNK};
use crate::{error::check, Result};

/// How gradients are clipped before each step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Clip {
    /// Scale all gradients by `min(1, max_norm / (‖g‖₂ + 1e-6))`, where ‖g‖₂ is the L2 norm
    /// over all tensors of all groups (`torch.nn.utils.clip_grad_norm_`).
    pub max_norm: Option<f64>,
    /// Clamp every gradient element to `[-max_value, max_value]`
    /// (`torch.nn.utils.clip_grad_value_`).
    pub max_value: Option<f64>,
}

impl Clip {
    /// Refuse negative or non-finite limits.
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = self.max_norm {
            check::non_negative("clip_grad_norm", "max_norm", n)?;
        }
        if let Some(v) = self.max_value {
            check::non_negative("clip_grad_value", "clip_value", v)?;
        }
        Ok(())
    }
}

/// The L2 norm of all gradients together, as norm clipping computes it: squares summed per
/// chunk (in the element type), chunks summed in `f64` in a fixed order.
pub fn global_norm<F: Float>(grads: &[&[F]]) -> f64 {
    let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    let plan = Plan::new(&lens, CHUNK);
    let mut partials = vec![[0.0; 2]; plan.num_segments()];
    kernel::scan_grads(
        &plan,
        grads,
        &vec![true; grads.len()],
        true,
        RawSlice::new(&mut partials),
    )
    .sum_squares
    .sqrt()
}

/// The factor `clip_grad_norm` multiplies every gradient by: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_coef(max_norm: f64, norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_over_all_tensors() {
        let a = [3.0f64];
        let b = [0.0f64, 4.0];
        assert_eq!(global_norm::<f64>(&[&a, &b]), 5.0);
    }

    #[test]
    fn coef_never_above_one() {
        assert_eq!(clip_coef(10.0, 5.0), 1.0);
        let c = clip_coef(1.0, 5.0);
        assert!((c - 1.0 / (5.0 + 1e-6)).abs() < 1e-15);
        assert!(c * 5.0 <= 1.0);
    }

    #[test]
    fn refuses_negative_limits() {
        assert!(Clip {
            max_norm: Some(-1.0),
            max_value: None
        }
        .validate()
        .is_err());
        assert!(Clip {
            max_norm: None,
            max_value: Some(f64::NAN)
        }
        .validate()
        .is_err());
        assert!(Clip {
            max_norm: Some(1.0),
            max_value: Some(0.5)
        }
        .validate()
        .is_ok());
    }
}
