//! Dense matrix products for whole-tensor stages (Muon's Newton–Schulz iteration), over
//! [`matrixmultiply`].
//!
//! Why `matrixmultiply`: it is small and pure Rust (one dependency, `rawpointer`; it builds
//! in seconds, where `gemm` pulls in half a dozen crates and `faer` far more), well kept (it
//! is `ndarray`'s product), fast enough for the matrices of a hidden layer (packed, blocked
//! kernels with AVX/FMA/NEON chosen at run time), and takes strides, so a transposed operand
//! costs nothing. Built without its `threading` feature, every product runs on the calling
//! thread in a fixed blocking order, so the bits do not depend on rayon's thread count (the
//! stages run tensors in parallel, one product per tensor at a time). They may depend on the
//! CPU: it uses fused multiply-add where the CPU has it, unlike the element kernels.

use super::{DType, Float};

/// A row-major (or strided) matrix operand: `rows × cols`, element `(i, j)` at
/// `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a, F> {
    pub data: &'a [F],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, F> Mat<'a, F> {
    /// `data` as a dense row-major `rows × cols` matrix.
    pub fn new(data: &'a [F], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data of the wrong length");
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `c ← alpha·a·b + beta·c`, with `c` dense row-major `a.rows × b.cols` (with `beta = 0`,
/// `c` is not read). `alpha` and `beta` are rounded to `F` first, as PyTorch passes the
/// scalars of `addmm` to a kernel of the tensors' type.
pub(crate) fn gemm<F: Float>(alpha: f64, a: Mat<'_, F>, b: Mat<'_, F>, beta: f64, c: &mut [F]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert_eq!(c.len(), m * n, "output of the wrong size");
    let reach = |x: &Mat<'_, F>| {
        x.rows == 0
            || x.cols == 0
            || (x.rows - 1) * x.row_stride + (x.cols - 1) * x.col_stride < x.data.len()
    };
    assert!(
        reach(&a) && reach(&b),
        "operand strides reach past its data"
    );
    if m == 0 || n == 0 {
        return;
    }
    let s = |x: usize| x as isize;
    // SAFETY: the asserts above keep every index of `a`, `b` (through their strides) and `c`
    // (dense `m × n`) in bounds; `c` is a unique borrow, so it overlaps neither operand; and
    // `F` is `f32` or `f64` exactly as `F::DTYPE` says, so the pointer casts are identities.
    unsafe {
        match F::DTYPE {
            DType::F32 => matrixmultiply::sgemm(
                m,
                k,
                n,
                alpha as f32,
                a.data.as_ptr().cast(),
                s(a.row_stride),
                s(a.col_stride),
                b.data.as_ptr().cast(),
                s(b.row_stride),
                s(b.col_stride),
                beta as f32,
                c.as_mut_ptr().cast(),
                s(n),
                1,
            ),
            DType::F64 => matrixmultiply::dgemm(
                m,
                k,
                n,
                alpha,
                a.data.as_ptr().cast(),
                s(a.row_stride),
                s(a.col_stride),
                b.data.as_ptr().cast(),
                s(b.row_stride),
                s(b.col_stride),
                beta,
                c.as_mut_ptr().cast(),
                s(n),
                1,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat<'_, f64>, b: Mat<'_, f64>) -> Vec<f64> {
        let at = |x: &Mat<'_, f64>, i: usize, j: usize| x.data[i * x.row_stride + j * x.col_stride];
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols).map(|k| at(&a, i, k) * at(&b, k, j)).sum();
            }
        }
        c
    }

    #[test]
    fn products_with_transposes_and_beta() {
        let x: Vec<f64> = (0..15).map(|i| (i as f64 * 0.7).sin()).collect();
        let y: Vec<f64> = (0..12).map(|i| (i as f64 * 1.3).cos()).collect();
        let (x, y) = (Mat::new(&x, 5, 3), Mat::new(&y, 4, 3));
        // x·yᵀ: 5 × 4.
        let want = naive(x, y.t());
        let mut c = vec![1.0; 20];
        gemm(2.0, x, y.t(), 0.5, &mut c);
        for (c, w) in c.iter().zip(&want) {
            assert!((c - (2.0 * w + 0.5)).abs() < 1e-14, "{c} vs {w}");
        }
        // xᵀ·x: 3 × 3, symmetric.
        let mut g = vec![f64::NAN; 9];
        gemm(1.0, x.t(), x, 0.0, &mut g);
        let want = naive(x.t(), x);
        for (c, w) in g.iter().zip(&want) {
            assert!((c - w).abs() < 1e-14);
        }
        // f32 goes through sgemm.
        let xf: Vec<f32> = x.data.iter().map(|&v| v as f32).collect();
        let mut gf = vec![0.0f32; 9];
        gemm(
            1.0,
            Mat::new(&xf, 5, 3).t(),
            Mat::new(&xf, 5, 3),
            0.0,
            &mut gf,
        );
        for (c, w) in gf.iter().zip(&want) {
            assert!((*c as f64 - w).abs() < 1e-5);
        }
    }

    #[test]
    #[should_panic(expected = "inner dimensions")]
    fn mismatched_shapes_panic() {
        let x = [0.0f64; 6];
        gemm(
            1.0,
            Mat::new(&x, 2, 3),
            Mat::new(&x, 2, 3),
            0.0,
            &mut [0.0; 9],
        );
    }
}
