//! Hand-written CPU kernels for the operations that dominate a convolution step, as Candle
//! custom ops with their own gradients.
//!
//! - [`Shift`] builds the shifted copies of a k-wide convolution along one axis (the columns
//!   that make it one matrix product). Candle's `pad`, `narrow` and `cat` chain takes several
//!   single-threaded strided copies for this, and as many more for its gradient. The kernel
//!   copies contiguous channel runs in one pass, split across threads.
//! - [`Product`] is a matrix product whose backward pass skips the gradient of an operand that
//!   tracks no variable. Candle's own product always computes both, so for a unit whose input is
//!   detached (every unit under ssa, dfa and drtp) a whole input-gradient product was wasted.
//! - [`BatchNormTrain`] is BatchNorm with batch statistics (and an optional ReLU) in two passes
//!   each way, and [`MaxPool2`] is 2×2 max pooling in one.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
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

/// Per-channel batch statistics saved by [`BatchNormTrain`] for its backward pass and for the
/// running averages.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    /// Biased variance (divided by the number of rows).
    pub var: Vec<f32>,
}

/// BatchNorm with batch statistics over the rows of `[rows, channels]`, optionally followed by
/// ReLU, as one op: arguments `(x, weight, bias)`.
///
/// Candle's generic BatchNorm is about ten single-threaded passes over the activations forward
/// and more backward. This op makes two passes forward (statistics, then the normalisation) and
/// two backward (the two channel sums, then the input gradient), split across threads.
#[derive(Debug, Clone)]
pub struct BatchNormTrain {
    pub relu: bool,
    pub eps: f64,
    /// Filled by the forward pass.
    pub stats: Arc<Mutex<Option<ChannelStats>>>,
}

/// Returns the rows per parallel task: about 64 tasks, enough to balance the threads while each
/// stays large enough to amortise its start.
fn rows_per_task(rows: usize) -> usize {
    (rows / 64).max(1)
}

/// Sums `f(row)` into two per-channel accumulators over every row of `data`, in parallel.
fn channel_sums(data: &[f32], channels: usize, f: impl Fn(usize, &[f32], &mut [f64], &mut [f64]) + Sync) -> (Vec<f64>, Vec<f64>) {
    let rows = data.len() / channels;
    let task = rows_per_task(rows);
    data.par_chunks(task * channels)
        .enumerate()
        .map(|(index, part)| {
            let (mut first, mut second) = (vec![0f64; channels], vec![0f64; channels]);
            for (offset, row) in part.chunks_exact(channels).enumerate() {
                f(index * task + offset, row, &mut first, &mut second);
            }
            (first, second)
        })
        .reduce(
            || (vec![0f64; channels], vec![0f64; channels]),
            |(mut a1, mut a2), (b1, b2)| {
                a1.iter_mut().zip(&b1).for_each(|(a, b)| *a += b);
                a2.iter_mut().zip(&b2).for_each(|(a, b)| *a += b);
                (a1, a2)
            },
        )
}

/// Calls `f` with the f32 values of a CPU tensor (made contiguous first).
fn with_f32<T>(tensor: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{op} expected a CPU tensor");
    };
    f(contiguous_f32(cpu, layout, op)?)
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "batch-norm")?;
        let weight = contiguous_f32(s2, l2, "batch-norm")?;
        let bias = contiguous_f32(s3, l3, "batch-norm")?;
        let (rows, channels) = l1.shape().dims2()?;
        let (sum, squares) = channel_sums(x, channels, |_, row, sum, squares| {
            for (j, &v) in row.iter().enumerate() {
                sum[j] += v as f64;
                squares[j] += v as f64 * v as f64;
            }
        });
        let mean: Vec<f64> = sum.iter().map(|s| s / rows as f64).collect();
        let var: Vec<f64> = squares.iter().zip(&mean).map(|(q, m)| (q / rows as f64 - m * m).max(0.0)).collect();
        let scale: Vec<f32> = var.iter().zip(weight).map(|(v, w)| (*w as f64 / (v + self.eps).sqrt()) as f32).collect();
        let shift: Vec<f32> = (0..channels).map(|j| bias[j] - mean[j] as f32 * scale[j]).collect();

        let mut out = vec![0f32; x.len()];
        let task = rows_per_task(rows) * channels;
        out.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(out, x)| {
            for (out_row, x_row) in out.chunks_exact_mut(channels).zip(x.chunks_exact(channels)) {
                for j in 0..channels {
                    let y = x_row[j] * scale[j] + shift[j];
                    out_row[j] = if self.relu { y.max(0.0) } else { y };
                }
            }
        });
        let stats = ChannelStats {
            mean: mean.iter().map(|&m| m as f32).collect(),
            var: var.iter().map(|&v| v as f32).collect(),
        };
        *self.stats.lock().expect("BatchNorm statistics lock") = Some(stats);
        Ok((CpuStorage::F32(out), Shape::from((rows, channels))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(stats) = self.stats.lock().expect("BatchNorm statistics lock").clone() else {
            candle_core::bail!("batch-norm backward ran before its forward pass");
        };
        let (rows, channels) = x.dims2()?;
        let inv_std: Vec<f32> = stats.var.iter().map(|v| 1.0 / (*v as f64 + self.eps).sqrt() as f32).collect();
        let w = weight.to_vec1::<f32>()?;
        let op = "batch-norm backward";
        let (grad_x, grad_weight, grad_bias) = with_f32(x, op, |x| {
            with_f32(res, op, |y| {
                with_f32(grad, op, |g| {
                    // g' = g where the output passed the ReLU; x̂ = (x − mean) / std.
                    let passed = |i: usize| !self.relu || y[i] > 0.0;
                    let (sum_g, sum_gx) = channel_sums(x, channels, |row, x_row, sum_g, sum_gx| {
                        for (j, &v) in x_row.iter().enumerate() {
                            let i = row * channels + j;
                            if passed(i) {
                                sum_g[j] += g[i] as f64;
                                sum_gx[j] += g[i] as f64 * ((v - stats.mean[j]) * inv_std[j]) as f64;
                            }
                        }
                    });
                    let mean_g: Vec<f32> = sum_g.iter().map(|s| (s / rows as f64) as f32).collect();
                    let mean_gx: Vec<f32> = sum_gx.iter().map(|s| (s / rows as f64) as f32).collect();
                    let mut grad_x = vec![0f32; x.len()];
                    let task = rows_per_task(rows) * channels;
                    grad_x.par_chunks_mut(task).enumerate().for_each(|(index, out)| {
                        for (offset, value) in out.iter_mut().enumerate() {
                            let i = index * task + offset;
                            let j = i % channels;
                            let g_passed = if passed(i) { g[i] } else { 0.0 };
                            let normalised = (x[i] - stats.mean[j]) * inv_std[j];
                            *value = w[j] * inv_std[j] * (g_passed - mean_g[j] - normalised * mean_gx[j]);
                        }
                    });
                    let grad_weight: Vec<f32> = sum_gx.iter().map(|&s| s as f32).collect();
                    let grad_bias: Vec<f32> = sum_g.iter().map(|&s| s as f32).collect();
                    Ok((grad_x, grad_weight, grad_bias))
                })
            })
        })?;
        let device = x.device();
        let grad_x = x.track_op().then(|| Tensor::from_vec(grad_x, (rows, channels), device)).transpose()?;
        let grad_weight = weight.track_op().then(|| Tensor::from_vec(grad_weight, channels, device)).transpose()?;
        let grad_bias = bias.track_op().then(|| Tensor::from_vec(grad_bias, channels, device)).transpose()?;
        Ok((grad_x, grad_weight, grad_bias))
    }
}

/// Max pooling with a 2×2 window and stride 2 on NHWC input with even height and width.
///
/// The gradient goes to the first maximum of each window (row by row), as in PyTorch. Candle's
/// reductions over a 6-D view send it to every tied maximum instead, which after a ReLU means
/// all four zeros of a window that the ReLU cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2;

/// Offset, within a 2×2 window of an NHWC input, of the window's first maximum for channel `c`.
fn window_argmax(x: &[f32], top_left: usize, row: usize, channels: usize, c: usize) -> usize {
    let candidates = [0, channels, row, row + channels];
    let mut best = candidates[0];
    for &offset in &candidates[1..] {
        if x[top_left + offset + c] > x[top_left + best + c] {
            best = offset;
        }
    }
    best
}

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "max-pool-2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "max-pool-2")?;
        let (n, h, w, c) = layout.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let row = w * c; // one input row
        let mut out = vec![0f32; n * ho * wo * c];
        out.par_chunks_mut(wo * c).enumerate().for_each(|(index, out_row)| {
            let (sample, i) = (index / ho, index % ho);
            for j in 0..wo {
                let top_left = ((sample * h + 2 * i) * w + 2 * j) * c;
                for channel in 0..c {
                    let best = window_argmax(x, top_left, row, c, channel);
                    out_row[j * c + channel] = x[top_left + best + channel];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, ho, wo, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let (n, h, w, c) = arg.dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let row = w * c;
        let grad = with_f32(arg, "max-pool-2 backward", |x| {
            with_f32(grad_res, "max-pool-2 backward", |g| {
                let mut grad = vec![0f32; x.len()];
                // Each output row owns two input rows, so the chunks do not overlap.
                grad.par_chunks_mut(2 * row).enumerate().for_each(|(index, rows)| {
                    let (sample, i) = (index / ho, index % ho);
                    let base = (sample * h + 2 * i) * row;
                    for j in 0..wo {
                        for channel in 0..c {
                            let best = window_argmax(x, base + 2 * j * c, row, c, channel);
                            rows[2 * j * c + best + channel] = g[((sample * ho + i) * wo + j) * c + channel];
                        }
                    }
                });
                Ok(grad)
            })
        })?;
        Ok(Some(Tensor::from_vec(grad, (n, h, w, c), arg.device())?))
    }
}
