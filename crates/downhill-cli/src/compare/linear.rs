//! A fully connected layer as one candle op, `y = x·Wᵀ + b`, with `W` stored `[out, in]` as
//! in PyTorch's `nn.Linear`.
//!
//! Written as a [`CustomOp3`] rather than `x.matmul(&w.t()?)?.broadcast_add(&b)?` for its
//! backward pass. candle's own backward of that chain
//! - computes the gradient of the *input* even when nothing needs it (the data batch of the
//!   first layer: for 784 inputs that is a third of the layer's backward work), and
//! - produces the weight's gradient as the transpose of a `[in, out]` product, which it then
//!   adds into the `[out, in]` gradient element by element through strides (slower than the
//!   product itself).
//!
//! Here the backward computes `∂W = gᵀ·x` directly in `W`'s layout, `∂b = Σ_rows g`, and
//! `∂x = g·W` only when `x` carries a gradient (PyTorch's autograd skips it the same way).
//!
//! An activation whose derivative is a function of its output (ReLU, tanh, sigmoid) is
//! applied in the same pass as the bias, and its derivative taken from the output in one pass
//! of the backward: no separate op, tensor and gradient for the pre-activation.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The activation applied to `x·Wᵀ + b` in the same op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fused {
    /// None: the layer's output is `x·Wᵀ + b`.
    Identity,
    /// `max(0, z)`; derivative `[y > 0]`.
    Relu,
    /// `tanh(z)`; derivative `1 − y²`.
    Tanh,
    /// `1 / (1 + e^−z)`; derivative `y (1 − y)`.
    Sigmoid,
}

impl Fused {
    /// `y = act(z)` in place over `y`, after adding `b` to every row (`[rows, b.len()]`).
    fn bias_and_apply<T: num_traits::Float>(self, y: &mut [T], b: &[T]) {
        // One loop per activation: each is a plain loop the compiler vectorizes.
        let zero = T::zero();
        match self {
            Fused::Identity => rows(y, b, |z| z),
            // `z < 0`, not `max`: a NaN stays NaN, so divergence shows in the loss.
            Fused::Relu => rows(y, b, |z| if z < zero { zero } else { z }),
            Fused::Tanh => rows(y, b, T::tanh),
            Fused::Sigmoid => rows(y, b, |z| T::one() / (T::one() + (-z).exp())),
        }
    }

    /// `g · act'(z)` elementwise from the gradient `g` and the output `y = act(z)`.
    fn grad<T: num_traits::Float>(self, g: &[T], y: &[T]) -> Vec<T> {
        let (zero, one) = (T::zero(), T::one());
        match self {
            Fused::Identity => g.to_vec(),
            Fused::Relu => g
                .iter()
                .zip(y)
                .map(|(&g, &y)| if y > zero { g } else { zero })
                .collect(),
            Fused::Tanh => g.iter().zip(y).map(|(&g, &y)| g * (one - y * y)).collect(),
            Fused::Sigmoid => g.iter().zip(y).map(|(&g, &y)| g * y * (one - y)).collect(),
        }
    }
}

#[inline(always)]
fn rows<T: num_traits::Float>(y: &mut [T], b: &[T], f: impl Fn(T) -> T) {
    for row in y.chunks_exact_mut(b.len()) {
        for (o, &v) in row.iter_mut().zip(b) {
            *o = f(*o + v);
        }
    }
}

struct LinearOp(Fused);

/// `act(x·Wᵀ + b)` for `x` `[batch, in]`, `w` `[out, in]`, `b` `[out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, act: Fused) -> Result<Tensor> {
    x.apply_op3(w, b, LinearOp(act))
}

/// `g · act'(z)` elementwise from the gradient `g` and the output `y`, in one pass.
struct ActGrad(Fused);

impl ActGrad {
    fn map<T: num_traits::Float>(
        &self,
        g: &[T],
        gl: &Layout,
        y: &[T],
        yl: &Layout,
    ) -> Result<Vec<T>> {
        match (gl.contiguous_offsets(), yl.contiguous_offsets()) {
            (Some((g0, g1)), Some((y0, y1))) if g1 - g0 == y1 - y0 => {
                Ok(self.0.grad(&g[g0..g1], &y[y0..y1]))
            }
            _ => bail!("linear: activation gradient needs contiguous tensors of one shape"),
        }
    }
}

/// The sum of the rows of a contiguous `[rows, cols]` tensor, row after row (candle's
/// `sum(0)` walks it column-wise, through strides).
struct SumRows;

impl SumRows {
    fn map<T: num_traits::Float>(s: &[T], l: &Layout) -> Result<(Vec<T>, usize)> {
        let (_, cols) = l.shape().dims2()?;
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("linear: bias gradient needs a contiguous tensor");
        };
        let mut acc = vec![T::zero(); cols];
        for row in s[a..b].chunks_exact(cols.max(1)) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = *a + v;
            }
        }
        Ok((acc, cols))
    }
}

impl candle_core::CustomOp1 for SumRows {
    fn name(&self) -> &'static str {
        "downhill-linear-sum-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, cols) = match s {
            CpuStorage::F32(v) => {
                let (o, c) = Self::map(v, l)?;
                (CpuStorage::F32(o), c)
            }
            CpuStorage::F64(v) => {
                let (o, c) = Self::map(v, l)?;
                (CpuStorage::F64(o), c)
            }
            _ => bail!("linear: bias gradient of an unsupported dtype"),
        };
        Ok((out, Shape::from(cols)))
    }
}

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "downhill-linear-activation-grad"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        gl: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (g, y) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => CpuStorage::F32(self.map(g, gl, y, yl)?),
            (CpuStorage::F64(g), CpuStorage::F64(y)) => CpuStorage::F64(self.map(g, gl, y, yl)?),
            _ => bail!("linear: activation gradient of mixed or unsupported dtypes"),
        };
        Ok((out, gl.shape().clone()))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "downhill-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, k_w) = wl.shape().dims2()?;
        let n_b = bl.shape().dims1()?;
        if k != k_w || n != n_b {
            bail!(
                "linear: input [{m}, {k}], weight [{n}, {k_w}] and bias [{n_b}] do not fit together"
            );
        }
        let Some((b_start, b_end)) = bl.contiguous_offsets() else {
            bail!("linear: the bias must be contiguous");
        };
        // The product reads Wᵀ through strides: no copy of the weight.
        let y = x.matmul(w, (1, m, n, k), xl, &wl.transpose(0, 1)?)?;
        let y = match (y, b) {
            (CpuStorage::F32(mut y), CpuStorage::F32(b)) => {
                self.0.bias_and_apply(&mut y, &b[b_start..b_end]);
                CpuStorage::F32(y)
            }
            (CpuStorage::F64(mut y), CpuStorage::F64(b)) => {
                self.0.bias_and_apply(&mut y, &b[b_start..b_end]);
                CpuStorage::F64(y)
            }
            (y, b) => bail!(
                "linear: supports f32 and f64 of one dtype, got {:?} and {:?}",
                y.dtype(),
                b.dtype()
            ),
        };
        Ok((y, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The gradient of the pre-activation.
        let g = &match self.0 {
            Fused::Identity => g.clone(),
            act => g.contiguous()?.apply_op2_no_bwd(y, &ActGrad(act))?,
        };
        let dx = if x.track_op() {
            Some(g.matmul(w)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(g.t()?.matmul(x)?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(g.contiguous()?.apply_op1_no_bwd(&SumRows)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The op against candle's matmul, broadcast add and activation: same values, same
    /// gradients for the weight, the bias and (when it carries one) the input.
    #[test]
    fn matches_candle_with_every_fused_activation() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 7), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 7), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 3, &dev).unwrap()).unwrap();
        let target = Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap();
        let z = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        for (act, theirs) in [
            (Fused::Identity, z.clone()),
            (Fused::Relu, z.relu().unwrap()),
            (Fused::Tanh, z.tanh().unwrap()),
            (Fused::Sigmoid, candle_nn::ops::sigmoid(&z).unwrap()),
        ] {
            let ours = linear(&x, &w, &b, act).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-5, "{act:?}");
            // A loss that weighs every output differently, so a transposed gradient shows.
            let loss = |y: &Tensor| (y * &target).unwrap().sum_all().unwrap();
            let g1 = loss(&ours).backward().unwrap();
            let g2 = loss(&theirs).backward().unwrap();
            for v in [&x, &w, &b] {
                let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                assert_eq!(a.dims(), e.dims());
                assert!(max_diff(a, e) < 1e-5, "{act:?}");
            }
        }
    }

    #[test]
    fn skips_the_gradient_of_an_input_that_carries_none() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (4, 2), &dev).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (3, 2), &dev).unwrap()).unwrap();
        let b = Var::zeros(3, DType::F64, &dev).unwrap();
        let grads = linear(&x, &w, &b, Fused::Identity)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&x).is_none());
        // d/db of a sum over 4 rows is 4 for every output.
        let db = grads.get(&b).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(db, vec![4.0; 3]);
        assert_eq!(grads.get(&w).unwrap().dims(), &[3, 2]);
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, &b, Fused::Relu).is_err());
    }
}
