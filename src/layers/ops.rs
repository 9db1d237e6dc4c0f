//! Tensor helpers shared by the layers.

use candle_core::{DType, Result, Tensor};

use super::kernels::{MaxPool2, Product, Shift};

/// Selects `count` positions along `dim`, starting at `start` and `stride` apart.
pub fn strided_narrow(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, count);
    }
    let positions: Vec<u32> = (0..count).map(|i| (start + i * stride) as u32).collect();
    let index = Tensor::new(positions.as_slice(), x.device())?;
    x.index_select(&index, dim)
}

/// Concatenates `k` shifted copies of `x` along the last axis: copy `i` contains the positions
/// `i, i + stride, …` of axis `dim` (after zero padding of `padding` on both sides).
///
/// The result has `count` positions along `dim` and `k × channels` columns, column
/// `i × channels + c`. A k-wide convolution along `dim` is then one matrix product.
/// On the CPU, 4-D f32 input runs the [`Shift`] kernel. Other devices use Candle's generic
/// copies.
pub fn shifted_columns(x: &Tensor, dim: usize, k: usize, padding: usize, stride: usize) -> Result<Tensor> {
    let size = x.dim(dim)?;
    if x.device().is_cpu() && x.rank() == 4 && (1..3).contains(&dim) && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Shift { dim, k, padding, stride, size });
    }
    generic_shifted_columns(x, dim, k, padding, stride)
}

/// Computes [`shifted_columns`] with Candle's `pad`, `narrow` and `cat`, for any device and rank.
pub fn generic_shifted_columns(x: &Tensor, dim: usize, k: usize, padding: usize, stride: usize) -> Result<Tensor> {
    let size = x.dim(dim)?;
    let count = (size + 2 * padding - k) / stride + 1;
    let padded = if padding > 0 {
        x.pad_with_zeros(dim, padding, padding)?
    } else {
        x.clone()
    };
    if k == 1 {
        return strided_narrow(&padded, dim, 0, count, stride);
    }
    let copies = (0..k)
        .map(|i| strided_narrow(&padded, dim, i, count, stride))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&copies, x.rank() - 1)
}

/// Max pooling with a 2×2 window and stride 2 on NHWC input with even height and width.
///
/// On the CPU this runs the [`MaxPool2`] kernel, whose gradient goes to one maximum per window.
/// Other devices reduce a 6-D view, whose gradient goes to every tied maximum.
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(MaxPool2);
    }
    generic_max_pool2(x)
}

/// Computes [`max_pool2`] with Candle's reductions, for any device.
pub fn generic_max_pool2(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.reshape((n, h / 2, 2, w / 2, 2, c))?.max(4)?.max(2)
}

/// Mean over the spatial axes of NHWC input: `[N, H, W, C]` to `[N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.reshape((n, h * w, c))?.mean(1)
}

/// Multiplies 2-D tensors `a · b`, with no gradient work for an operand that tracks no variable
/// (a unit's detached input, say).
pub fn product(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, Product)
}
