//! BatchNorm over the channel (last) axis of NHWC activations.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, Var};

use super::kernels::BatchNormTrain;

use super::param::{Param, ParamGroup, WeightSource};
use crate::error::Result;

/// Weight of the newest batch in the running statistics (PyTorch's default).
pub const MOMENTUM: f64 = 0.1;
const EPS: f64 = 1e-5;

/// Per-channel normalisation with a learned scale and shift.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub name: String,
    pub weight: Var,
    pub bias: Var,
    pub running_mean: Var,
    pub running_var: Var,
}

impl BatchNorm {
    /// Builds `name` for `channels` channels from `source`.
    pub fn new(name: &str, channels: usize, source: &mut WeightSource) -> Result<Self> {
        let mut tensor = |suffix: &str, value: f32| -> Result<Var> {
            let t = source.constant(&format!("{name}.{suffix}"), channels, value)?;
            Ok(Var::from_tensor(&t)?)
        };
        Ok(Self {
            name: name.to_string(),
            weight: tensor("weight", 1.0)?,
            bias: tensor("bias", 0.0)?,
            running_mean: tensor("running_mean", 0.0)?,
            running_var: tensor("running_var", 1.0)?,
        })
    }

    /// Normalises with batch statistics (and updates the running ones) when `train`, with the
    /// running statistics otherwise. Works on any shape whose last axis is the channel.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with_relu(x, train, false)
    }

    /// Runs [`BatchNorm::forward`], then ReLU when `relu`. In training on the CPU both run as
    /// one [`BatchNormTrain`] op.
    pub fn forward_with_relu(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let channels = *dims.last().expect("BatchNorm input has at least one axis");
        let flat = x.reshape(((), channels))?;
        if train && x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = BatchNormTrain { relu, eps: EPS, stats: Arc::new(Mutex::new(None)) };
            let stats = op.stats.clone();
            let y = flat.contiguous()?.apply_op3(self.weight.as_tensor(), self.bias.as_tensor(), op)?;
            let stats = stats.lock().expect("BatchNorm statistics lock").clone();
            let stats = stats.expect("the forward pass saves the statistics");
            let device = x.device();
            let mean = Tensor::from_vec(stats.mean, (1, channels), device)?;
            let var = Tensor::from_vec(stats.var, (1, channels), device)?;
            self.update_running(&mean, &var, flat.dim(0)?)?;
            return Ok(y.reshape(dims)?);
        }
        let y = self.generic_forward(&flat, train)?.reshape(dims)?;
        Ok(if relu { y.relu()? } else { y })
    }

    /// Runs BatchNorm on `[rows, channels]` with Candle's generic operations.
    fn generic_forward(&self, flat: &Tensor, train: bool) -> Result<Tensor> {
        let (mean, var) = if train {
            let mean = flat.mean_keepdim(0)?;
            let centred = flat.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(0)?;
            self.update_running(&mean, &var, flat.dim(0)?)?;
            (mean, var)
        } else {
            let mean = self.running_mean.as_tensor().unsqueeze(0)?;
            let var = self.running_var.as_tensor().unsqueeze(0)?;
            (mean, var)
        };
        let scale = (var + EPS)?.sqrt()?.recip()?.broadcast_mul(&self.weight.unsqueeze(0)?)?;
        Ok(flat.broadcast_sub(&mean)?.broadcast_mul(&scale)?.broadcast_add(&self.bias.unsqueeze(0)?)?)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let unbiased = (var.detach().squeeze(0)? * (count as f64 / (count.max(2) - 1) as f64))?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - MOMENTUM))? + (mean.detach().squeeze(0)? * MOMENTUM)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - MOMENTUM))? + (unbiased * MOMENTUM)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }

    /// Returns the trainable scale and shift.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param {
                name: format!("{}.weight", self.name),
                var: self.weight.clone(),
                group: ParamGroup::Other,
            },
            Param {
                name: format!("{}.bias", self.name),
                var: self.bias.clone(),
                group: ParamGroup::Other,
            },
        ]
    }

    /// Returns every tensor to save, including the running statistics.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        [
            ("weight", &self.weight),
            ("bias", &self.bias),
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
        ]
        .into_iter()
        .map(|(suffix, var)| (format!("{}.{suffix}", self.name), var.as_tensor().clone()))
        .collect()
    }
}
