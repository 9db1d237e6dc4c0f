//! Hand-written CPU kernels for the two operations that dominate a convolution step, as Candle
//! custom ops with their own gradients.
//!
//! - [`Shift`] builds the shifted copies of a k-wide convolution along one axis (the columns
//!   that make it one matrix product). Candle's `pad`, `narrow` and `cat` chain takes several
//!   single-threaded strided copies for this, and as many more for its gradient. The kernel
//!   copies contiguous channel runs in one pass, split across threads.
//! - [`Product`] is a matrix product whose backward pass skips the gradient of an operand that
//!   tracks no variable. Candle's own product always computes both, so for a unit whose input is
//!   detached (every unit under ssa, dfa and drtp) a whole input-gradient product was wasted.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of a k-wide window along one axis of a 4-D channels-last tensor.
///
/// The input is viewed as `[outer, size, middle, channels]`, where `size` is the shifted axis.
/// The output is `[outer, count, middle, k·channels]` with
/// `out[o, q, m, i·channels + c] = x[o, q·stride + i − padding, m, c]`, zero outside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    pub dim: usize,
    pub k: usize,
    pub padding: usize,
    pub stride: usize,
    /// Length of the shifted axis in the input (needed by the adjoint to rebuild the input).
    pub size: usize,
}

impl Shift {
    /// Returns the number of positions along the shifted axis in the output.
    pub fn count(&self) -> usize {
        (self.size + 2 * self.padding - self.k) / self.stride + 1
    }

    /// Returns the input position that output position `q` reads through tap `i`, if it lies
    /// inside the input.
    fn source(&self, q: usize, i: usize) -> Option<usize> {
        (q * self.stride + i).checked_sub(self.padding).filter(|&p| p < self.size)
    }

    /// Returns `(outer, middle, channels)` of a tensor whose axis `dim` is the shifted one.
    fn view(&self, dims: &[usize], channels: usize) -> (usize, usize, usize) {
        let outer = dims[..self.dim].iter().product();
        let middle = dims[self.dim + 1..dims.len() - 1].iter().product();
        (outer, middle, channels)
    }
}

/// The gradient of [`Shift`]: sums each tap's column block back onto the input positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftAdjoint(pub Shift);

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("invalid dtype {:?} for {op}: expected f32", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op} expected a contiguous input; call `contiguous()` first"),
    }
}

impl CustomOp1 for Shift {
    fn name(&self) -> &'static str {
        "shift"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "shift")?;
        let dims = layout.dims();
        let channels = dims[dims.len() - 1];
        let (outer, middle, c) = self.view(dims, channels);
        let count = self.count();
        let row = middle * self.k * c; // one output position along the shifted axis
        let mut out = vec![0f32; outer * count * row];
        out.par_chunks_mut(row).enumerate().for_each(|(index, block)| {
            let (o, q) = (index / count, index % count);
            for i in 0..self.k {
                let Some(p) = self.source(q, i) else { continue };
                let input = &x[(o * self.size + p) * middle * c..][..middle * c];
                for m in 0..middle {
                    block[(m * self.k + i) * c..][..c].copy_from_slice(&input[m * c..][..c]);
                }
            }
        });
        let mut shape = dims.to_vec();
        shape[self.dim] = count;
        *shape.last_mut().expect("4-D input") = self.k * c;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        Ok(Some(grad_res.contiguous()?.apply_op1(ShiftAdjoint(*self))?))
    }
}

impl CustomOp1 for ShiftAdjoint {
    fn name(&self) -> &'static str {
        "shift-adjoint"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = self.0;
        let g = contiguous_f32(storage, layout, "shift-adjoint")?;
        let dims = layout.dims();
        let c = dims[dims.len() - 1] / s.k;
        let (outer, middle, _) = s.view(dims, c);
        let count = s.count();
        let plane = s.size * middle * c; // one outer index of the input
        let mut out = vec![0f32; outer * plane];
        out.par_chunks_mut(plane).enumerate().for_each(|(o, input)| {
            for q in 0..count {
                let block = &g[(o * count + q) * middle * s.k * c..][..middle * s.k * c];
                for i in 0..s.k {
                    let Some(p) = s.source(q, i) else { continue };
                    let target = &mut input[p * middle * c..][..middle * c];
                    for m in 0..middle {
                        let from = &block[(m * s.k + i) * c..][..c];
                        for (t, f) in target[m * c..][..c].iter_mut().zip(from) {
                            *t += f;
                        }
                    }
                }
            }
        });
        let mut shape = dims.to_vec();
        shape[s.dim] = s.size;
        *shape.last_mut().expect("4-D input") = c;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        Ok(Some(grad_res.contiguous()?.apply_op1(self.0)?))
    }
}

/// `a · b` for 2-D `a: [m, k]`, `b: [k, n]`, differentiated only with respect to the operands
/// that track a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product;

fn product_dims(l1: &Layout, l2: &Layout) -> Result<(usize, usize, usize)> {
    let (m, k) = l1.shape().dims2()?;
    let (k2, n) = l2.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("invalid product of [{m}, {k}] and [{k2}, {n}]: the inner sizes differ");
    }
    Ok((m, k, n))
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "product"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k, n) = product_dims(l1, l2)?;
        Ok((s1.matmul(s2, (1, m, n, k), l1, l2)?, Shape::from((m, n))))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let (m, k, n) = product_dims(l1, l2)?;
        Ok((s1.matmul(s2, (1, m, n, k), l1, l2)?, Shape::from((m, n))))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_a = if a.track_op() { Some(grad.matmul(&b.t()?)?) } else { None };
        let grad_b = if b.track_op() { Some(a.t()?.matmul(grad)?) } else { None };
        Ok((grad_a, grad_b))
    }
}
