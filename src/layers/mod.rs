//! Layers in SVD form (linear, k×1/1×k convolution pair) or dense, BatchNorm and tensor
//! helpers.
//!
//! Activations are NHWC (`[batch, height, width, channels]`), so every convolution reduces to
//! matrix products over shifted copies of its input.

pub mod batch_norm;
pub mod dense;
pub mod kernels;
pub mod ops;
pub mod param;
pub mod pass;
pub mod svd_conv;
pub mod svd_factors;
pub mod svd_linear;

use std::sync::OnceLock;

use candle_core::{Tensor, Var};

pub use batch_norm::BatchNorm;
pub use dense::{DenseConv2d, DenseLinear};
pub use param::{Param, ParamGroup, WeightSource};
pub use pass::Pass;
pub use svd_conv::SvdConv2d;
pub use svd_factors::{Geometry, SvdFactors};
pub use svd_linear::SvdLinear;

use crate::error::Result;

/// Form of the weight layers of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `W = U diag(s) Vᵀ` (ssa, svd_bp).
    Svd,
    /// A full weight matrix (bp, dfa, fa, usf, brsf, drtp).
    Dense,
}

/// A weight layer seen from outside: the SVD factors, or the dense weight.
#[derive(Clone, Copy)]
pub enum LayerRef<'a> {
    Svd(&'a SvdFactors),
    Dense {
        name: &'a str,
        /// In the layer's own layout: `[out, in]` or `[k, k, C, F]`.
        weight: &'a Var,
        /// `[out, in]` for a linear layer, `[F, C, k, k]` for a convolution.
        shape: &'a [usize],
        geometry: &'a OnceLock<Geometry>,
    },
}

impl LayerRef<'_> {
    /// Layer name.
    pub fn name(&self) -> &str {
        match self {
            LayerRef::Svd(f) => &f.name,
            LayerRef::Dense { name, .. } => name,
        }
    }

    /// Shape of the dense weight: `[out, in]` or `[F, C, k, k]`.
    pub fn weight_shape(&self) -> &[usize] {
        match self {
            LayerRef::Svd(f) => &f.weight_shape,
            LayerRef::Dense { shape, .. } => shape,
        }
    }

    /// Inference cost, known once the layer has seen an input.
    pub fn geometry(&self) -> Geometry {
        match self {
            LayerRef::Svd(f) => f.geometry.get().copied().unwrap_or_default(),
            LayerRef::Dense { geometry, .. } => geometry.get().copied().unwrap_or_default(),
        }
    }

    /// Current rank of the matrix view; a dense layer has its full rank.
    pub fn rank(&self) -> usize {
        match self {
            LayerRef::Svd(f) => f.rank(),
            LayerRef::Dense { .. } => self.full_rank(),
        }
    }

    /// Largest possible rank: `min(rows, cols)` of the SVD view, `min(out, fan_in)` of a dense
    /// weight.
    pub fn full_rank(&self) -> usize {
        match self {
            LayerRef::Svd(f) => f.rows().min(f.cols()),
            LayerRef::Dense { shape, .. } => shape[0].min(shape[1..].iter().product()),
        }
    }

    /// Trainable numbers of the weight (no bias) at the current rank.
    pub fn weight_params(&self) -> usize {
        match self {
            LayerRef::Svd(f) => f.num_params(),
            LayerRef::Dense { shape, .. } => shape.iter().product(),
        }
    }

    /// Inference multiply-adds per image at the current rank.
    pub fn macs(&self) -> usize {
        let geometry = self.geometry();
        match self {
            LayerRef::Svd(f) => f.rank() * geometry.macs_per_rank,
            LayerRef::Dense { .. } => geometry.dense_macs,
        }
    }

    /// Shape of the matrix that the diagnostics compare updates in: `[rows, cols]` of the SVD
    /// view, or the dense weight's own layout.
    pub fn dense_view_dims(&self) -> Vec<usize> {
        match self {
            LayerRef::Svd(f) => vec![f.rows(), f.cols()],
            LayerRef::Dense { weight, .. } => weight.dims().to_vec(),
        }
    }
}

/// A linear layer of either kind.
#[derive(Debug, Clone)]
pub enum Linear {
    Svd(SvdLinear),
    Dense(DenseLinear, Vec<usize>, OnceLock<Geometry>),
}

impl Linear {
    /// Builds a layer of `kind` named `name` from `source`.
    pub fn new(kind: LayerKind, name: &str, in_features: usize, out_features: usize, source: &mut WeightSource) -> Result<Self> {
        Ok(match kind {
            LayerKind::Svd => Linear::Svd(SvdLinear::new(name, in_features, out_features, source)?),
            LayerKind::Dense => {
                let geometry = OnceLock::new();
                let _ = geometry.set(Geometry {
                    macs_per_rank: 0,
                    dense_macs: in_features * out_features,
                });
                Linear::Dense(
                    DenseLinear::new(name, in_features, out_features, source)?,
                    vec![out_features, in_features],
                    geometry,
                )
            }
        })
    }

    /// Maps `[N, in]` to `[N, out]`.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        match self {
            Linear::Svd(layer) => layer.forward(x, pass),
            Linear::Dense(layer, ..) => layer.forward(x, pass),
        }
    }

    /// Returns the trainable parameters.
    pub fn params(&self) -> Vec<Param> {
        match self {
            Linear::Svd(layer) => layer.params(),
            Linear::Dense(layer, ..) => layer.params(),
        }
    }

    /// Returns every tensor to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        match self {
            Linear::Svd(layer) => layer.named_tensors(),
            Linear::Dense(layer, ..) => layer.named_tensors(),
        }
    }

    /// Returns the layer for accounting and diagnostics.
    pub fn as_ref(&self) -> LayerRef<'_> {
        match self {
            Linear::Svd(layer) => LayerRef::Svd(&layer.factors),
            Linear::Dense(layer, shape, geometry) => LayerRef::Dense {
                name: &layer.name,
                weight: &layer.weight,
                shape,
                geometry,
            },
        }
    }

    /// Returns the SVD factors, for rank truncation.
    pub fn factors_mut(&mut self) -> Option<&mut SvdFactors> {
        match self {
            Linear::Svd(layer) => Some(&mut layer.factors),
            Linear::Dense(..) => None,
        }
    }
}

/// A convolution of either kind.
#[derive(Debug, Clone)]
pub enum Conv2d {
    Svd(SvdConv2d),
    Dense(DenseConv2d, Vec<usize>, OnceLock<Geometry>),
}

impl Conv2d {
    /// Builds a layer of `kind` named `name` from `source`, with padding `kernel / 2`.
    pub fn new(
        kind: LayerKind,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        source: &mut WeightSource,
    ) -> Result<Self> {
        Ok(match kind {
            LayerKind::Svd => Conv2d::Svd(SvdConv2d::new(name, in_channels, out_channels, kernel, stride, source)?),
            LayerKind::Dense => Conv2d::Dense(
                DenseConv2d::new(name, in_channels, out_channels, kernel, stride, source)?,
                vec![out_channels, in_channels, kernel, kernel],
                OnceLock::new(),
            ),
        })
    }

    /// Sets the zero padding of both axes (the default is `kernel / 2`).
    pub fn with_padding(mut self, padding: usize) -> Self {
        match &mut self {
            Conv2d::Svd(layer) => layer.padding = padding,
            Conv2d::Dense(layer, ..) => layer.padding = padding,
        }
        self
    }

    /// Maps `[N, H, W, C]` to `[N, H', W', F]`.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        match self {
            Conv2d::Svd(layer) => layer.forward(x, pass),
            Conv2d::Dense(layer, shape, geometry) => {
                let y = layer.forward(x, pass)?;
                let _ = geometry.get_or_init(|| {
                    let (_, ho, wo, _) = y.dims4().unwrap_or_default();
                    Geometry {
                        macs_per_rank: 0,
                        dense_macs: shape.iter().product::<usize>() * ho * wo,
                    }
                });
                Ok(y)
            }
        }
    }

    /// Returns the trainable parameters.
    pub fn params(&self) -> Vec<Param> {
        match self {
            Conv2d::Svd(layer) => layer.params(),
            Conv2d::Dense(layer, ..) => layer.params(),
        }
    }

    /// Returns every tensor to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        match self {
            Conv2d::Svd(layer) => layer.named_tensors(),
            Conv2d::Dense(layer, ..) => layer.named_tensors(),
        }
    }

    /// Returns the layer for accounting and diagnostics.
    pub fn as_ref(&self) -> LayerRef<'_> {
        match self {
            Conv2d::Svd(layer) => LayerRef::Svd(&layer.factors),
            Conv2d::Dense(layer, shape, geometry) => LayerRef::Dense {
                name: &layer.name,
                weight: &layer.weight,
                shape,
                geometry,
            },
        }
    }

    /// Returns the SVD factors, for rank truncation.
    pub fn factors_mut(&mut self) -> Option<&mut SvdFactors> {
        match self {
            Conv2d::Svd(layer) => Some(&mut layer.factors),
            Conv2d::Dense(..) => None,
        }
    }
}
