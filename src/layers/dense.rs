//! Dense layers, for the rules that train full weight matrices (bp, dfa, fa, usf, brsf, drtp).

use candle_core::{Tensor, Var};

use super::ops::{product, shifted_columns};
use super::param::{Param, ParamGroup, WeightSource};
use super::pass::{with_feedback, Pass};
use crate::error::Result;

/// Linear layer `y = x Wᵀ + b` with `W ∈ R^{out×in}`.
#[derive(Debug, Clone)]
pub struct DenseLinear {
    pub name: String,
    /// `[out, in]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
}

/// `x Wᵀ` for `x: [N, in]`, `w: [out, in]`.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    product(x, &w.t()?)
}

impl DenseLinear {
    /// Builds the layer `name` from `source`.
    pub fn new(name: &str, in_features: usize, out_features: usize, source: &mut WeightSource) -> Result<Self> {
        let weight = source.dense_weight(&format!("{name}.weight"), &[out_features, in_features], in_features)?;
        let bias = source.bias(&format!("{name}.bias"), out_features, in_features)?;
        Ok(Self {
            name: name.to_string(),
            weight: Var::from_tensor(&weight)?,
            bias: Var::from_tensor(&bias)?,
        })
    }

    /// Maps `[N, in]` to `[N, out]`.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let mut y = with_feedback(x, self.weight.as_tensor(), pass.feedback_for(&self.name), linear)?;
        if let Some(z) = pass.probe_for(&self.name) {
            y = (y + linear(x, z.as_tensor())?)?;
        }
        Ok(y.broadcast_add(&self.bias)?)
    }

    /// Returns the weight and bias.
    pub fn params(&self) -> Vec<Param> {
        dense_params(&self.name, &self.weight, &self.bias)
    }

    /// Returns every tensor to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            (format!("{}.weight", self.name), self.weight.as_tensor().clone()),
            (format!("{}.bias", self.name), self.bias.as_tensor().clone()),
        ]
    }
}

/// k×k convolution on NHWC input with its kernel stored as `[k, k, C, F]` (height, width,
/// input channel, output channel), so that the kernel reshaped to `[k·k·C, F]` multiplies the
/// shifted copies of the input.
#[derive(Debug, Clone)]
pub struct DenseConv2d {
    pub name: String,
    /// `[k, k, C, F]`.
    pub weight: Var,
    /// `[F]`.
    pub bias: Var,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Convolution of NHWC `x` with a `[k, k, C, F]` kernel: the width copies first, then the
/// height copies, so that column `(i·k + j)·C + c` of the shifted input meets kernel row
/// `(i, j, c)`.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> candle_core::Result<Tensor> {
    let (k, _, c, f) = w.dims4()?;
    let n = x.dim(0)?;
    let cols = shifted_columns(x, 2, k, padding, stride)?;
    let patches = shifted_columns(&cols, 1, k, padding, stride)?;
    let (ho, wo) = (patches.dim(1)?, patches.dim(2)?);
    let y = product(&patches.reshape((n * ho * wo, k * k * c))?, &w.reshape((k * k * c, f))?)?;
    y.reshape((n, ho, wo, f))
}

impl DenseConv2d {
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
        let shape = [kernel, kernel, in_channels, out_channels];
        let weight = source.dense_weight(&format!("{name}.weight"), &shape, fan_in)?;
        let bias = source.bias(&format!("{name}.bias"), out_channels, fan_in)?;
        Ok(Self {
            name: name.to_string(),
            weight: Var::from_tensor(&weight)?,
            bias: Var::from_tensor(&bias)?,
            kernel,
            stride,
            padding: kernel / 2,
        })
    }

    /// Maps `[N, H, W, C]` to `[N, H', W', F]`.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let (p, t) = (self.padding, self.stride);
        let conv = |x: &Tensor, w: &Tensor| conv2d(x, w, p, t);
        let mut y = with_feedback(x, self.weight.as_tensor(), pass.feedback_for(&self.name), conv)?;
        if let Some(z) = pass.probe_for(&self.name) {
            y = (y + conv(x, z.as_tensor())?)?;
        }
        Ok(y.broadcast_add(&self.bias)?)
    }

    /// Returns the weight and bias.
    pub fn params(&self) -> Vec<Param> {
        dense_params(&self.name, &self.weight, &self.bias)
    }

    /// Returns every tensor to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            (format!("{}.weight", self.name), self.weight.as_tensor().clone()),
            (format!("{}.bias", self.name), self.bias.as_tensor().clone()),
        ]
    }
}

fn dense_params(name: &str, weight: &Var, bias: &Var) -> Vec<Param> {
    vec![
        Param {
            name: format!("{name}.weight"),
            var: weight.clone(),
            group: ParamGroup::Weight,
        },
        Param {
            name: format!("{name}.bias"),
            var: bias.clone(),
            group: ParamGroup::Other,
        },
    ]
}
