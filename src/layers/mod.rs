//! Layers in SVD form (linear, k×1/1×k convolution pair), BatchNorm and tensor helpers.
//!
//! Activations are NHWC (`[batch, height, width, channels]`), so every convolution reduces to
//! one matrix product over shifted copies of its input.

pub mod batch_norm;
pub mod ops;
pub mod param;
pub mod svd_conv;
pub mod svd_factors;
pub mod svd_linear;

pub use batch_norm::BatchNorm;
pub use param::{Param, ParamGroup, WeightSource};
pub use svd_conv::SvdConv2d;
pub use svd_factors::{Geometry, SvdFactors};
pub use svd_linear::SvdLinear;
