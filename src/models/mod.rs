//! Networks built from units: the blocks that each train on their own local loss.
//!
//! A unit is a conv (+BatchNorm) + ReLU (+pool), a linear (+ReLU), or a residual block; the
//! classifier is the last unit. Every unit's input is detached during local training, so no
//! gradient crosses a unit boundary.

pub mod resnet;
pub mod smallconv;
pub mod units;
pub mod vgg;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::layers::{BatchNorm, Param, SvdFactors, WeightSource};

pub use units::{ConvUnit, LinearUnit, ResidualBlock};

/// Image side and channels of the network input (CIFAR).
pub const INPUT_SIDE: usize = 32;
pub const INPUT_CHANNELS: usize = 3;

/// One block trained by one local loss.
pub trait Unit: Send + Sync {
    /// Name, used as the prefix of its tensors.
    fn name(&self) -> &str;

    /// Maps the unit's input to its output; BatchNorm uses batch statistics when `train`.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// Returns the trainable parameters.
    fn params(&self) -> Vec<Param>;

    /// Returns the SVD layers inside the unit.
    fn svd_layers(&self) -> Vec<&SvdFactors>;

    /// Returns the SVD layers inside the unit, for rank truncation.
    fn svd_layers_mut(&mut self) -> Vec<&mut SvdFactors>;

    /// Returns the BatchNorm layers inside the unit.
    fn batch_norms(&self) -> Vec<&BatchNorm>;

    /// Returns every tensor to save, with its checkpoint name.
    fn named_tensors(&self) -> Vec<(String, Tensor)>;
}

/// A network: units applied in order, the last one producing the logits.
pub struct Model {
    pub arch: String,
    pub num_classes: usize,
    pub units: Vec<Box<dyn Unit>>,
    /// Per-sample output shape of each unit, from a forward pass at build time.
    pub output_shapes: Vec<Vec<usize>>,
}

/// Rounds `base × width` to a whole number of channels, at least 1.
pub fn scaled(base: usize, width: f64) -> usize {
    ((base as f64 * width).round() as usize).max(1)
}

impl Model {
    /// Builds the architecture named in `config`, taking tensors from `source`.
    pub fn build(config: &ModelConfig, num_classes: usize, source: &mut WeightSource) -> Result<Self> {
        let units = match config.arch.as_str() {
            "smallconv" => smallconv::build(config, num_classes, source)?,
            "vgg13" => vgg::build_vgg13(config, num_classes, source)?,
            "resnet32" => resnet::build(config, 5, num_classes, source)?,
            other => {
                return Err(Error::Config(format!(
                    "key `model.arch` = \"{other}\" is not supported: expected one of {:?}",
                    crate::config::ARCHS
                )))
            }
        };
        let mut model = Self {
            arch: config.arch.clone(),
            num_classes,
            units,
            output_shapes: Vec::new(),
        };
        model.output_shapes = model.probe_shapes(source.device())?;
        Ok(model)
    }

    fn probe_shapes(&self, device: &Device) -> Result<Vec<Vec<usize>>> {
        let mut x = Tensor::zeros((1, INPUT_SIDE, INPUT_SIDE, INPUT_CHANNELS), DType::F32, device)?;
        let mut shapes = Vec::new();
        for unit in &self.units {
            x = unit.forward(&x, false)?.detach();
            shapes.push(x.dims()[1..].to_vec());
        }
        Ok(shapes)
    }

    /// Runs the whole network; returns the logits `[N, classes]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for unit in &self.units {
            h = unit.forward(&h, train)?;
        }
        Ok(h)
    }

    /// Returns every trainable parameter.
    pub fn params(&self) -> Vec<Param> {
        self.units.iter().flat_map(|u| u.params()).collect()
    }

    /// Returns every SVD layer, in network order.
    pub fn svd_layers(&self) -> Vec<&SvdFactors> {
        self.units.iter().flat_map(|u| u.svd_layers()).collect()
    }

    /// Returns every SVD layer, in network order, for rank truncation.
    pub fn svd_layers_mut(&mut self) -> Vec<&mut SvdFactors> {
        self.units.iter_mut().flat_map(|u| u.svd_layers_mut()).collect()
    }

    /// Returns every tensor to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.units.iter().flat_map(|u| u.named_tensors()).collect()
    }

    /// Number of trainable parameters at the current ranks (BatchNorm statistics excluded).
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.var.elem_count()).sum()
    }
}
