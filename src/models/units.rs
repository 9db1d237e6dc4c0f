//! The three kinds of unit: convolution, linear and residual block.

use candle_core::Tensor;

use super::{Blueprint, Unit};
use crate::error::Result;
use crate::layers::ops::{global_avg_pool, max_pool2};
use crate::layers::{BatchNorm, Conv2d, LayerRef, Linear, Param, Pass, SvdFactors, WeightSource};

/// Convolution pair, optional BatchNorm, ReLU, optional 2×2 max pooling.
pub struct ConvUnit {
    pub name: String,
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
    pub pool: bool,
}

impl Unit for ConvUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn forward_with(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let mut h = bn_relu(&self.bn, self.conv.forward(x, pass)?, pass.train)?;
        if self.pool {
            h = max_pool2(&h)?;
        }
        Ok(h)
    }

    fn params(&self) -> Vec<Param> {
        let mut params = self.conv.params();
        params.extend(self.bn.iter().flat_map(|bn| bn.params()));
        params
    }

    fn layers(&self) -> Vec<LayerRef<'_>> {
        vec![self.conv.as_ref()]
    }

    fn svd_layers_mut(&mut self) -> Vec<&mut SvdFactors> {
        self.conv.factors_mut().into_iter().collect()
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        self.bn.iter().collect()
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.conv.named_tensors();
        tensors.extend(self.bn.iter().flat_map(|bn| bn.named_tensors()));
        tensors
    }
}

/// Builds fully connected ReLU units `fc1, fc2, …` of the given widths on the flattened
/// `features`, then the linear classifier.
pub fn fc_stack(bp: &Blueprint, features: usize, widths: &[usize], source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let mut features = features;
    for (index, &width) in widths.iter().enumerate() {
        let name = format!("fc{}", index + 1);
        units.push(Box::new(LinearUnit {
            input: if index == 0 { LinearInput::Flatten } else { LinearInput::Flat },
            linear: bp.linear(&name, features, width, source)?,
            relu: true,
            name,
        }));
        features = width;
    }
    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: if widths.is_empty() { LinearInput::Flatten } else { LinearInput::Flat },
        linear: bp.linear("classifier", features, bp.num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}

/// Reshaping of a linear unit's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearInput {
    /// The input is already `[N, features]`.
    Flat,
    /// Flatten `[N, H, W, C]` to `[N, H·W·C]`.
    Flatten,
    /// Average `[N, H, W, C]` over H and W.
    GlobalAvgPool,
}

/// Linear layer with an optional ReLU; the classifier is a linear unit without ReLU.
pub struct LinearUnit {
    pub name: String,
    pub input: LinearInput,
    pub linear: Linear,
    pub relu: bool,
}

impl Unit for LinearUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn forward_with(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let flat = match self.input {
            LinearInput::Flat => x.clone(),
            LinearInput::Flatten => x.flatten_from(1)?,
            LinearInput::GlobalAvgPool => global_avg_pool(x)?,
        };
        let h = self.linear.forward(&flat, pass)?;
        Ok(if self.relu { h.relu()? } else { h })
    }

    fn params(&self) -> Vec<Param> {
        self.linear.params()
    }

    fn layers(&self) -> Vec<LayerRef<'_>> {
        vec![self.linear.as_ref()]
    }

    fn svd_layers_mut(&mut self) -> Vec<&mut SvdFactors> {
        self.linear.factors_mut().into_iter().collect()
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        Vec::new()
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.linear.named_tensors()
    }
}

/// Shortcut of a residual block whose shape changes.
pub enum Shortcut {
    /// The input as it is (same shape).
    Identity,
    /// Subsample by the stride and zero-pad the new channels (option A of the CIFAR ResNet).
    PadChannels { stride: usize, extra: usize },
    /// 1×1 convolution pair with BatchNorm (option B).
    Projection { conv: Conv2d, bn: Option<BatchNorm> },
}

/// Basic residual block: `relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))`.
pub struct ResidualBlock {
    pub name: String,
    pub conv1: Conv2d,
    pub bn1: Option<BatchNorm>,
    pub conv2: Conv2d,
    pub bn2: Option<BatchNorm>,
    pub shortcut: Shortcut,
}

impl ResidualBlock {
    fn shortcut(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        match &self.shortcut {
            Shortcut::Identity => Ok(x.clone()),
            Shortcut::PadChannels { stride, extra } => {
                let (n, h, w, c) = x.dims4()?;
                let sub = x
                    .reshape((n, h / stride, *stride, w / stride, *stride, c))?
                    .narrow(4, 0, 1)?
                    .narrow(2, 0, 1)?
                    .reshape((n, h / stride, w / stride, c))?;
                let front = extra / 2;
                Ok(sub.pad_with_zeros(3, front, extra - front)?)
            }
            Shortcut::Projection { conv, bn } => maybe_bn(bn, conv.forward(x, pass)?, pass.train),
        }
    }
}

fn maybe_bn(bn: &Option<BatchNorm>, x: Tensor, train: bool) -> Result<Tensor> {
    match bn {
        Some(bn) => bn.forward(&x, train),
        None => Ok(x),
    }
}

/// Applies the optional BatchNorm, then ReLU (fused into one op where the BatchNorm can).
fn bn_relu(bn: &Option<BatchNorm>, x: Tensor, train: bool) -> Result<Tensor> {
    match bn {
        Some(bn) => bn.forward_with_relu(&x, train, true),
        None => Ok(x.relu()?),
    }
}

impl Unit for ResidualBlock {
    fn name(&self) -> &str {
        &self.name
    }

    fn forward_with(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let h = bn_relu(&self.bn1, self.conv1.forward(x, pass)?, pass.train)?;
        let h = maybe_bn(&self.bn2, self.conv2.forward(&h, pass)?, pass.train)?;
        Ok((h + self.shortcut(x, pass)?)?.relu()?)
    }

    fn params(&self) -> Vec<Param> {
        let mut params = self.conv1.params();
        params.extend(self.conv2.params());
        if let Shortcut::Projection { conv, .. } = &self.shortcut {
            params.extend(conv.params());
        }
        params.extend(self.batch_norms().into_iter().flat_map(|bn| bn.params()));
        params
    }

    fn layers(&self) -> Vec<LayerRef<'_>> {
        let mut layers = vec![self.conv1.as_ref(), self.conv2.as_ref()];
        if let Shortcut::Projection { conv, .. } = &self.shortcut {
            layers.push(conv.as_ref());
        }
        layers
    }

    fn svd_layers_mut(&mut self) -> Vec<&mut SvdFactors> {
        let mut layers: Vec<&mut SvdFactors> = Vec::new();
        layers.extend(self.conv1.factors_mut());
        layers.extend(self.conv2.factors_mut());
        if let Shortcut::Projection { conv, .. } = &mut self.shortcut {
            layers.extend(conv.factors_mut());
        }
        layers
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut norms: Vec<&BatchNorm> = self.bn1.iter().chain(self.bn2.iter()).collect();
        if let Shortcut::Projection { bn: Some(bn), .. } = &self.shortcut {
            norms.push(bn);
        }
        norms
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.conv1.named_tensors();
        tensors.extend(self.conv2.named_tensors());
        if let Shortcut::Projection { conv, .. } = &self.shortcut {
            tensors.extend(conv.named_tensors());
        }
        tensors.extend(self.batch_norms().into_iter().flat_map(|bn| bn.named_tensors()));
        tensors
    }
}
