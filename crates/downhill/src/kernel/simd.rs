//! SIMD vectors as [`Lane`]s, through `pulp`: the rules' element math, written once over
//! `Lane`, runs on whole vectors with the same operations (and so the same rounding) as on
//! scalars.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

use pulp::Simd;

use super::{Float, Lane};

// `SimdFloat` is a supertrait of `Float`, so it needs only what vectors need.

/// A [`Float`] with pulp vector operations.
pub trait SimdFloat: Copy + Debug + Send + Sync + 'static {
    /// The vector of this element for SIMD level `S`.
    type V<S: Simd>: Copy + Debug;
    /// Split a slice into a vector body and a scalar tail.
    fn split<S: Simd>(x: &[Self]) -> (&[Self::V<S>], &[Self]);
    /// Split a mutable slice into a vector body and a scalar tail.
    fn split_mut<S: Simd>(x: &mut [Self]) -> (&mut [Self::V<S>], &mut [Self]);
    /// Every lane `x`.
    fn splat<S: Simd>(s: S, x: Self) -> Self::V<S>;
    /// `a + b`.
    fn add<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    /// `a - b`.
    fn sub<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    /// `a * b`.
    fn mul<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    /// `a / b`.
    fn div<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    /// `√a`.
    fn sqrt<S: Simd>(s: S, a: Self::V<S>) -> Self::V<S>;
    /// Lane-wise maximum.
    fn max<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    /// Lane-wise minimum.
    fn min<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    /// `|a|`.
    fn abs<S: Simd>(s: S, a: Self::V<S>) -> Self::V<S>;
    /// `−a`.
    fn neg<S: Simd>(s: S, a: Self::V<S>) -> Self::V<S>;
    /// Sum of the lanes (in a fixed order for a given SIMD level).
    fn reduce_sum<S: Simd>(s: S, a: Self::V<S>) -> Self;
}

macro_rules! impl_simd_float {
    ($t:ty, $v:ident, $split:ident, $split_mut:ident, $splat:ident, $add:ident, $sub:ident,
     $mul:ident, $div:ident, $sqrt:ident, $max:ident, $min:ident, $abs:ident, $neg:ident,
     $sum:ident) => {
        impl SimdFloat for $t {
            type V<S: Simd> = S::$v;
            #[inline(always)]
            fn split<S: Simd>(x: &[$t]) -> (&[S::$v], &[$t]) {
                S::$split(x)
            }
            #[inline(always)]
            fn split_mut<S: Simd>(x: &mut [$t]) -> (&mut [S::$v], &mut [$t]) {
                S::$split_mut(x)
            }
            #[inline(always)]
            fn splat<S: Simd>(s: S, x: $t) -> S::$v {
                s.$splat(x)
            }
            #[inline(always)]
            fn add<S: Simd>(s: S, a: S::$v, b: S::$v) -> S::$v {
                s.$add(a, b)
            }
            #[inline(always)]
            fn sub<S: Simd>(s: S, a: S::$v, b: S::$v) -> S::$v {
                s.$sub(a, b)
            }
            #[inline(always)]
            fn mul<S: Simd>(s: S, a: S::$v, b: S::$v) -> S::$v {
                s.$mul(a, b)
            }
            #[inline(always)]
            fn div<S: Simd>(s: S, a: S::$v, b: S::$v) -> S::$v {
                s.$div(a, b)
            }
            #[inline(always)]
            fn sqrt<S: Simd>(s: S, a: S::$v) -> S::$v {
                s.$sqrt(a)
            }
            #[inline(always)]
            fn max<S: Simd>(s: S, a: S::$v, b: S::$v) -> S::$v {
                s.$max(a, b)
            }
            #[inline(always)]
            fn min<S: Simd>(s: S, a: S::$v, b: S::$v) -> S::$v {
                s.$min(a, b)
            }
            #[inline(always)]
            fn abs<S: Simd>(s: S, a: S::$v) -> S::$v {
                s.$abs(a)
            }
            #[inline(always)]
            fn neg<S: Simd>(s: S, a: S::$v) -> S::$v {
                s.$neg(a)
            }
            #[inline(always)]
            fn reduce_sum<S: Simd>(s: S, a: S::$v) -> $t {
                s.$sum(a)
            }
        }
    };
}

impl_simd_float!(
    f32,
    f32s,
    as_simd_f32s,
    as_mut_simd_f32s,
    splat_f32s,
    add_f32s,
    sub_f32s,
    mul_f32s,
    div_f32s,
    sqrt_f32s,
    max_f32s,
    min_f32s,
    abs_f32s,
    neg_f32s,
    reduce_sum_f32s
);
impl_simd_float!(
    f64,
    f64s,
    as_simd_f64s,
    as_mut_simd_f64s,
    splat_f64s,
    add_f64s,
    sub_f64s,
    mul_f64s,
    div_f64s,
    sqrt_f64s,
    max_f64s,
    min_f64s,
    abs_f64s,
    neg_f64s,
    reduce_sum_f64s
);

/// A SIMD vector of `F` at level `S`, usable as a [`Lane`]. Only ever built inside
/// `Arch::dispatch`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vector<S: Simd, F: SimdFloat> {
    simd: S,
    /// The lanes.
    pub v: F::V<S>,
}

impl<S: Simd, F: SimdFloat> Vector<S, F> {
    /// Wrap a vector.
    #[inline(always)]
    pub(crate) fn new(simd: S, v: F::V<S>) -> Self {
        Vector { simd, v }
    }
}

macro_rules! vector_binop {
    ($tr:ident, $f:ident) => {
        impl<S: Simd, F: SimdFloat> $tr for Vector<S, F> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: Self) -> Self {
                Vector::new(self.simd, <F as SimdFloat>::$f(self.simd, self.v, o.v))
            }
        }
    };
}
vector_binop!(Add, add);
vector_binop!(Sub, sub);
vector_binop!(Mul, mul);
vector_binop!(Div, div);

impl<S: Simd, F: SimdFloat> Neg for Vector<S, F> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Vector::new(self.simd, <F as SimdFloat>::neg(self.simd, self.v))
    }
}

impl<S: Simd, F: Float> Lane for Vector<S, F> {
    type Elem = F;
    #[inline(always)]
    fn splat(x: F) -> Self {
        const { assert!(std::mem::size_of::<S>() == 0) };
        // SAFETY: a pulp SIMD token is a zero-sized proof that the CPU supports its level.
        // `Vector`s exist only inside `Arch::dispatch` for that same level (the type is private
        // to the kernel), so the proof holds here too; a zero-sized value has no bytes.
        let simd: S = unsafe { std::mem::zeroed() };
        Vector::new(simd, <F as SimdFloat>::splat(simd, x))
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Vector::new(self.simd, <F as SimdFloat>::sqrt(self.simd, self.v))
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        Vector::new(self.simd, <F as SimdFloat>::max(self.simd, self.v, o.v))
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        Vector::new(self.simd, <F as SimdFloat>::min(self.simd, self.v, o.v))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Vector::new(self.simd, <F as SimdFloat>::abs(self.simd, self.v))
    }
}
