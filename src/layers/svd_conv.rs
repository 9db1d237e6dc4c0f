//! A k×k convolution in SVD form, run as a k×1 convolution followed by a 1×k convolution.
//!
//! The kernel `K ∈ R^{F×C×k×k}` is viewed as `M ∈ R^{(C·k)×(F·k)}` with
//! `M[c·k + i, f·k + j] = K[f, c, i, j]`, and `M = U diag(s) Vᵀ`. The first convolution has
//! kernel `K1[ρ, c, i] = U[c·k + i, ρ]` (height axis, padding p, stride t), the second
//! `K2[f, ρ, j] = V[f·k + j, ρ]` (width axis). At full rank `r = min(C·k, F·k)` the pair equals
//! the k×k convolution exactly.

use candle_core::{Tensor, Var};

use super::ops::{product, shifted_columns};
use super::dense::conv2d;
use super::param::{Param, ParamGroup, WeightSource};
use super::pass::Pass;
use super::svd_factors::{Geometry, SvdFactors};
use crate::error::Result;

/// The convolution pair; input and output are NHWC.
#[derive(Debug, Clone)]
pub struct SvdConv2d {
    pub factors: SvdFactors,
    /// `[out_channels]`.
    pub bias: Var,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl SvdConv2d {
    /// Builds the layer `name` from `source`, with padding `kernel / 2` ("same" at stride 1).
    pub fn new(
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        source: &mut WeightSource,
    ) -> Result<Self> {
        let fan_in = in_channels * kernel * kernel;
        let tensors = source.svd_factors(name, in_channels * kernel, out_channels * kernel, fan_in)?;
        let bias = source.bias(&format!("{name}.bias"), out_channels, fan_in)?;
        Ok(Self {
            factors: SvdFactors::new(
                name,
                vec![out_channels, in_channels, kernel, kernel],
                tensors,
            )?,
            bias: Var::from_tensor(&bias)?,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
        })
    }

    /// Maps `[N, H, W, C]` to `[N, H', W', F]`.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let f = &self.factors;
        let (n, _, w, c) = x.dims4()?;
        let (k, r, out) = (self.kernel, f.rank(), self.out_channels);

        // k×1 along the height: column i·C + c of the shifted copies meets row c·k + i of U.
        let rows = shifted_columns(x, 1, k, self.padding, self.stride)?;
        let ho = rows.dim(1)?;
        let u = f.u.reshape((c, k, r))?.transpose(0, 1)?.reshape((k * c, r))?;
        let us = u.broadcast_mul(&f.s.unsqueeze(0)?)?;
        let hidden = product(&rows.reshape((n * ho * w, k * c))?, &us)?.reshape((n, ho, w, r))?;

        // 1×k along the width: column j·r + ρ of the shifted copies meets row f·k + j of V.
        let cols = shifted_columns(&hidden, 2, k, self.padding, self.stride)?;
        let wo = cols.dim(2)?;
        let v = f.v.reshape((out, k, r))?.permute((1, 2, 0))?.reshape((k * r, out))?;
        let mut y = product(&cols.reshape((n * ho * wo, k * r))?, &v)?;
        if let Some(z) = pass.probe_for(&f.name) {
            // The dense view [(c, i), (f, j)] as a [k, k, C, F] kernel.
            let kernel = z.reshape((c, k, out, k))?.permute((1, 3, 0, 2))?.contiguous()?;
            y = (y + conv2d(x, &kernel, self.padding, self.stride)?.reshape((n * ho * wo, out))?)?;
        }
        let _ = f.geometry.get_or_init(|| Geometry {
            macs_per_rank: k * c * ho * w + k * out * ho * wo,
            dense_macs: k * k * c * out * ho * wo,
        });
        Ok(y.broadcast_add(&self.bias)?.reshape((n, ho, wo, out))?)
    }

    /// Returns the dense kernel `[F, C, k, k]` that the pair computes.
    pub fn dense_kernel(&self) -> Result<Tensor> {
        let (c, f, k) = (self.in_channels, self.out_channels, self.kernel);
        let m = self.factors.dense()?; // [(c,i), (f,j)]
        Ok(m.reshape((c, k, f, k))?.permute((2, 0, 1, 3))?.contiguous()?)
    }

    /// Returns the trainable parameters.
    pub fn params(&self) -> Vec<Param> {
        let mut params = self.factors.params();
        params.push(Param {
            name: format!("{}.bias", self.factors.name),
            var: self.bias.clone(),
            group: ParamGroup::Other,
        });
        params
    }

    /// Returns every tensor to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.factors.named_tensors();
        tensors.push((format!("{}.bias", self.factors.name), self.bias.as_tensor().clone()));
        tensors
    }
}
