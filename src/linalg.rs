//! Host-side dense linear algebra (SVD, QR) on row-major f32 matrices, with faer underneath.

use candle_core::{Device, Tensor};
use faer::Mat;

use crate::error::{Error, Result};

/// A row-major f32 matrix on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// A thin SVD `A = U diag(s) Vᵀ` with `r = min(rows, cols)` components, s non-increasing.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Left singular vectors, `rows × r`.
    pub u: Matrix,
    pub s: Vec<f32>,
    /// Right singular vectors, `cols × r`.
    pub v: Matrix,
}

impl Matrix {
    /// Wraps row-major data of the given shape.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data does not match its shape");
        Self { rows, cols, data }
    }

    /// Copies a 2-D tensor to the host.
    pub fn from_tensor(tensor: &Tensor) -> Result<Self> {
        let (rows, cols) = tensor.dims2()?;
        let data = tensor
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::new(rows, cols, data))
    }

    /// Copies the matrix to a `[rows, cols]` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.data, (self.rows, self.cols), device)?)
    }

    /// Element at (`row`, `col`).
    pub fn at(&self, row: usize, col: usize) -> f32 {
        self.data[row * self.cols + col]
    }

    /// Scales every column to unit Euclidean norm (zero columns stay zero).
    pub fn normalize_columns(&mut self) {
        for col in 0..self.cols {
            let norm: f32 = (0..self.rows)
                .map(|row| self.at(row, col).powi(2))
                .sum::<f32>()
                .sqrt();
            if norm > 0.0 {
                for row in 0..self.rows {
                    self.data[row * self.cols + col] /= norm;
                }
            }
        }
    }

    fn to_faer(&self) -> Mat<f32> {
        Mat::from_fn(self.rows, self.cols, |i, j| self.at(i, j))
    }

    fn from_faer(mat: faer::MatRef<'_, f32>) -> Self {
        let (rows, cols) = (mat.nrows(), mat.ncols());
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(mat[(i, j)]);
            }
        }
        Self::new(rows, cols, data)
    }
}

/// Computes the thin SVD of `a`.
pub fn thin_svd(a: &Matrix) -> Result<Svd> {
    let svd = a.to_faer().thin_svd().map_err(|e| {
        Error::Diverged(format!("SVD of a {}×{} matrix did not converge: {e:?}", a.rows, a.cols))
    })?;
    let s = svd.S().column_vector().iter().copied().collect();
    Ok(Svd {
        u: Matrix::from_faer(svd.U()),
        s,
        v: Matrix::from_faer(svd.V()),
    })
}

/// Returns the orthonormal factor Q of the thin QR of `a` (`rows × cols`, rows ≥ cols), with
/// signs chosen so that R has a non-negative diagonal and Q is closest to `a`.
pub fn orthonormalize(a: &Matrix) -> Matrix {
    let qr = a.to_faer().qr();
    let mut q = Matrix::from_faer(qr.compute_thin_Q().as_ref());
    let r = qr.thin_R();
    for col in 0..q.cols.min(r.nrows()) {
        if r[(col, col)] < 0.0 {
            for row in 0..q.rows {
                q.data[row * q.cols + col] = -q.data[row * q.cols + col];
            }
        }
    }
    q
}

/// Returns the largest principal angle, in degrees, between the column spaces of `a` and `b`
/// (both `n × r`).
pub fn largest_principal_angle_deg(a: &Matrix, b: &Matrix) -> Result<f64> {
    let qa = orthonormalize(a);
    let qb = orthonormalize(b);
    let product = Mat::<f32>::from_fn(qa.cols, qb.cols, |i, j| {
        (0..qa.rows).map(|k| qa.at(k, i) * qb.at(k, j)).sum()
    });
    let sv = product
        .singular_values()
        .map_err(|e| Error::Diverged(format!("singular values did not converge: {e:?}")))?;
    let smallest = sv.iter().copied().fold(f32::INFINITY, f32::min).clamp(-1.0, 1.0);
    Ok((smallest as f64).acos().to_degrees())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_reconstructs_matrix() {
        let a = Matrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let svd = thin_svd(&a).unwrap();
        assert_eq!(svd.u.cols, 2);
        assert!(svd.s[0] >= svd.s[1]);
        for i in 0..3 {
            for j in 0..2 {
                let value: f32 = (0..2).map(|k| svd.u.at(i, k) * svd.s[k] * svd.v.at(j, k)).sum();
                assert!((value - a.at(i, j)).abs() < 1e-4, "({i},{j}): {value}");
            }
        }
    }

    #[test]
    fn principal_angle_of_same_space_is_zero() {
        let a = Matrix::new(3, 1, vec![1.0, 0.0, 0.0]);
        let b = Matrix::new(3, 1, vec![2.0, 0.0, 0.0]);
        assert!(largest_principal_angle_deg(&a, &b).unwrap() < 1e-2);
        let c = Matrix::new(3, 1, vec![0.0, 1.0, 0.0]);
        assert!((largest_principal_angle_deg(&a, &c).unwrap() - 90.0).abs() < 1e-2);
    }
}
