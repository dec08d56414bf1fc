//! The element type the update rules are written in.
//!
//! Every rule's element-wise math is written once, generic over [`Lane`]: a value that
//! behaves like one float but may hold several (a SIMD vector). The scalar path instantiates
//! it with `f32`/`f64` themselves; vector paths instantiate it with SIMD registers. Only IEEE
//! operations that round identically in scalar and vector form are offered (no fused
//! multiply-add), so every instantiation gives the same bits.

use std::fmt::{Debug, Display};
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A float, or a vector of floats, that an update rule computes with.
pub trait Lane:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// The scalar element type.
    type Elem: Float;
    /// Every lane set to `x`.
    fn splat(x: Self::Elem) -> Self;
    /// Every lane set to `x`, rounded to the element type (how PyTorch passes Python scalars
    /// into a kernel of the tensor's dtype).
    #[inline(always)]
    fn c(x: f64) -> Self {
        Self::splat(Self::Elem::from_f64(x))
    }
    /// Square root, correctly rounded.
    fn sqrt(self) -> Self;
    /// Lane-wise maximum, `if self > other { self } else { other }` (x86's `maxps`: with a
    /// NaN operand the result is `other`). Only NaN inputs can round differently between
    /// SIMD levels.
    fn max(self, other: Self) -> Self;
    /// Lane-wise minimum, `if self < other { self } else { other }` (x86's `minps`).
    fn min(self, other: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;

    /// `torch.sign`: −1, 0 or 1 (±0 for ±0, NaN for NaN), exactly. Built from the operations
    /// above: the value is scaled by powers of two until the smallest subnormal reaches 1
    /// (exact), then clamped to [−1, 1].
    #[inline(always)]
    fn sign(self) -> Self {
        let big = match Self::Elem::DTYPE {
            DType::F32 => Self::c(2f64.powi(100)),
            DType::F64 => Self::c(2f64.powi(600)),
        };
        let scaled = self * big * big;
        // `max`/`min` return their second operand when one is NaN: keep the NaN there.
        Self::c(1.0).min(Self::c(-1.0).max(scaled))
    }

    /// `torch.lerp(self, end, weight)` with a scalar weight, rounded as PyTorch's CPU kernel
    /// does: `self + w·(end − self)` for |w| < 0.5, else `end − (end − self)·(1 − w)`.
    #[inline(always)]
    fn lerp(self, end: Self, weight: f64) -> Self {
        let w = Self::Elem::from_f64(weight);
        if weight.abs() < 0.5 {
            self + Self::splat(w) * (end - self)
        } else {
            end - (end - self) * Self::splat(Self::Elem::from_f64(1.0) - w)
        }
    }
}

/// Data type tag of a [`Float`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
}

impl DType {
    /// `"f32"` or `"f64"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The parameter element types downhill optimizes: `f32` and `f64`.
pub trait Float:
    Lane<Elem = Self>
    + super::simd::SimdFloat
    + PartialOrd
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// This type's tag.
    const DTYPE: DType;
    /// Round an `f64` to this type.
    fn from_f64(x: f64) -> Self;
    /// Widen to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// Wrap a vector of this type as state-tensor data.
    fn wrap(values: Vec<Self>) -> crate::state::TensorData;
    /// The elements of `data` if they are of this type.
    fn unwrap(data: &crate::state::TensorData) -> Option<&[Self]>;
}

macro_rules! impl_float {
    ($t:ty, $tag:expr, $variant:ident) => {
        impl Lane for $t {
            type Elem = $t;
            #[inline(always)]
            fn splat(x: $t) -> $t {
                x
            }
            #[inline(always)]
            fn sqrt(self) -> $t {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn max(self, other: $t) -> $t {
                if self > other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn min(self, other: $t) -> $t {
                if self < other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn abs(self) -> $t {
                <$t>::abs(self)
            }
        }
        impl Float for $t {
            const DTYPE: DType = $tag;
            #[inline(always)]
            fn from_f64(x: f64) -> $t {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn wrap(values: Vec<$t>) -> crate::state::TensorData {
                crate::state::TensorData::$variant(values)
            }
            fn unwrap(data: &crate::state::TensorData) -> Option<&[$t]> {
                match data {
                    crate::state::TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_float!(f32, DType::F32, F32);
impl_float!(f64, DType::F64, F64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lerp_matches_both_torch_branches() {
        assert_eq!(Lane::lerp(1.0f64, 3.0, 0.25), 1.5);
        assert_eq!(Lane::lerp(1.0f64, 3.0, 0.75), 2.5);
        assert_eq!(Lane::lerp(2.0f32, 4.0, 0.0), 2.0);
        assert_eq!(Lane::lerp(2.0f32, 4.0, 1.0), 4.0);
    }

    #[test]
    fn sign_is_exact_at_every_magnitude() {
        for x in [
            1.0f32,
            -3.5,
            f32::MIN_POSITIVE / 1e6,
            -1e-45,
            3e38,
            f32::INFINITY,
        ] {
            assert_eq!(Lane::sign(x), x.signum(), "{x}");
        }
        assert_eq!(Lane::sign(-0.0f32), 0.0);
        for x in [5e-324f64, -5e-324, 1e308, -1.0, 0.25] {
            assert_eq!(Lane::sign(x), x.signum(), "{x}");
        }
        assert_eq!(Lane::sign(0.0f64), 0.0);
        assert!(Lane::sign(f64::NAN).is_nan());
        assert!(Lane::sign(f32::NAN).is_nan());
    }

    #[test]
    fn max_min_follow_x86() {
        assert!(Lane::max(1.0, f64::NAN).is_nan());
        assert_eq!(Lane::max(f64::NAN, 1.0), 1.0);
        assert!(Lane::min(1.0f32, f32::NAN).is_nan());
        assert_eq!(Lane::max(-1.0f64, 2.0), 2.0);
        assert_eq!(Lane::min(-1.0f64, 2.0), -1.0);
    }
}
