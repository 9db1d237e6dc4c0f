//! Networks built from units: the blocks that each train on their own local loss.
//!
//! A unit is a conv (+BatchNorm) + ReLU (+pool), a linear (+ReLU), or a residual block; the
//! classifier is the last unit. Every unit's input is detached during local training, so no
//! gradient crosses a unit boundary.

pub mod lenet;
pub mod mlp;
pub mod resnet;
pub mod smallconv;
pub mod units;
pub mod vgg;

use candle_core::{DType, Device, Tensor};

use crate::config::{Config, ModelConfig};
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::layers::{BatchNorm, Conv2d, LayerKind, LayerRef, Linear, Param, Pass, SvdFactors, WeightSource};

pub use units::{ConvUnit, LinearUnit, ResidualBlock};

/// Everything that decides a model's shapes: the `[model]` section, the layer form and the
/// input.
#[derive(Debug, Clone)]
pub struct Blueprint {
    pub model: ModelConfig,
    pub layers: LayerKind,
    /// Image side length and channels of the input.
    pub side: usize,
    pub channels: usize,
    pub num_classes: usize,
}

impl Blueprint {
    /// Reads the blueprint from a whole config: dataset shape, rule's layer form, `[model]`.
    pub fn from_config(config: &Config) -> Result<Self> {
        let kind = DatasetKind::from_name(&config.data.dataset)?;
        Ok(Self {
            model: config.model.clone(),
            layers: crate::rules::layer_kind(&config.method.rule)?,
            side: kind.side(),
            channels: kind.channels(),
            num_classes: kind.num_classes(),
        })
    }

    /// Builds a linear layer of the blueprint's form.
    pub fn linear(&self, name: &str, inputs: usize, outputs: usize, source: &mut WeightSource) -> Result<Linear> {
        Linear::new(self.layers, name, inputs, outputs, source)
    }

    /// Builds a convolution of the blueprint's form with padding `kernel / 2`.
    pub fn conv(&self, name: &str, inputs: usize, outputs: usize, kernel: usize, stride: usize, source: &mut WeightSource) -> Result<Conv2d> {
        Conv2d::new(self.layers, name, inputs, outputs, kernel, stride, source)
    }

    /// BatchNorm for `channels` when `model.batch_norm` is on.
    pub fn batch_norm(&self, name: &str, channels: usize, source: &mut WeightSource) -> Result<Option<BatchNorm>> {
        if self.model.batch_norm {
            Ok(Some(BatchNorm::new(name, channels, source)?))
        } else {
            Ok(None)
        }
    }

    /// Rejects architectures whose pooling needs 32×32 input.
    fn require_side(&self, side: usize) -> Result<()> {
        if self.side == side {
            return Ok(());
        }
        Err(Error::Config(format!(
            "key `model.arch` = \"{}\" needs {side}×{side} input, but the dataset's images are {}×{}: \
             use lenet, mlp or a resnet for this dataset",
            self.model.arch, self.side, self.side
        )))
    }
}

/// One block trained by one local loss.
pub trait Unit: Send + Sync {
    /// Name, used as the prefix of its tensors.
    fn name(&self) -> &str;

    /// Maps the unit's input to its output with the options of `pass`.
    fn forward_with(&self, x: &Tensor, pass: &Pass) -> Result<Tensor>;

    /// Maps the unit's input to its output; BatchNorm uses batch statistics when `train`.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, &Pass::plain(train))
    }

    /// Returns the trainable parameters.
    fn params(&self) -> Vec<Param>;

    /// Returns the weight layers inside the unit, in order.
    fn layers(&self) -> Vec<LayerRef<'_>>;

    /// Returns the SVD layers inside the unit.
    fn svd_layers(&self) -> Vec<&SvdFactors> {
        self.layers()
            .into_iter()
            .filter_map(|layer| match layer {
                LayerRef::Svd(factors) => Some(factors),
                LayerRef::Dense { .. } => None,
            })
            .collect()
    }

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
    /// Form of the weight layers.
    pub layer_kind: LayerKind,
    /// Input image side and channels.
    pub input_side: usize,
    pub input_channels: usize,
    pub units: Vec<Box<dyn Unit>>,
    /// Per-sample output shape of each unit, from a forward pass at build time.
    pub output_shapes: Vec<Vec<usize>>,
}

/// Rounds `base × width` to a whole number of channels, at least 1.
pub fn scaled(base: usize, width: f64) -> usize {
    ((base as f64 * width).round() as usize).max(1)
}

impl Model {
    /// Builds the model that `config` describes, taking tensors from `source`.
    pub fn build(config: &Config, source: &mut WeightSource) -> Result<Self> {
        Self::from_blueprint(&Blueprint::from_config(config)?, source)
    }

    /// Builds the architecture of `blueprint`, taking tensors from `source`.
    pub fn from_blueprint(blueprint: &Blueprint, source: &mut WeightSource) -> Result<Self> {
        let units = match blueprint.model.arch.as_str() {
            "smallconv" => {
                blueprint.require_side(32)?;
                smallconv::build(blueprint, source)?
            }
            "vgg13" => {
                blueprint.require_side(32)?;
                vgg::build_vgg13(blueprint, source)?
            }
            "resnet20" => resnet::build(blueprint, 3, source)?,
            "resnet32" => resnet::build(blueprint, 5, source)?,
            "resnet56" => resnet::build(blueprint, 9, source)?,
            "lenet" => lenet::build(blueprint, source)?,
            "mlp" => mlp::build(blueprint, source)?,
            other => {
                return Err(Error::Config(format!(
                    "key `model.arch` = \"{other}\" is not supported: expected one of {:?}",
                    crate::config::ARCHS
                )))
            }
        };
        let mut model = Self {
            arch: blueprint.model.arch.clone(),
            num_classes: blueprint.num_classes,
            layer_kind: blueprint.layers,
            input_side: blueprint.side,
            input_channels: blueprint.channels,
            units,
            output_shapes: Vec::new(),
        };
        model.output_shapes = model.probe_shapes(source.device())?;
        Ok(model)
    }

    fn probe_shapes(&self, device: &Device) -> Result<Vec<Vec<usize>>> {
        let mut x = Tensor::zeros((1, self.input_side, self.input_side, self.input_channels), DType::F32, device)?;
        let mut shapes = Vec::new();
        for unit in &self.units {
            x = unit.forward(&x, false)?.detach();
            shapes.push(x.dims()[1..].to_vec());
        }
        Ok(shapes)
    }

    /// Runs the whole network; returns the logits `[N, classes]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, &Pass::plain(train))
    }

    /// Runs the whole network with the options of `pass`, keeping the graph across units.
    pub fn forward_with(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let mut h = x.clone();
        for unit in &self.units {
            h = unit.forward_with(&h, pass)?;
        }
        Ok(h)
    }

    /// Returns every trainable parameter.
    pub fn params(&self) -> Vec<Param> {
        self.units.iter().flat_map(|u| u.params()).collect()
    }

    /// Returns every weight layer, in network order.
    pub fn layers(&self) -> Vec<LayerRef<'_>> {
        self.units.iter().flat_map(|u| u.layers()).collect()
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
