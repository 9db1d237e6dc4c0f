//! Parameter, inference-cost and memory accounting, at the current ranks and for the dense
//! model with the same shapes.

use serde::Serialize;

use crate::models::Model;

/// Costs of one weight layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    pub name: String,
    /// `conv` or `linear`.
    pub kind: String,
    /// Dense weight shape: `[out, in]` or `[F, C, k, k]`.
    pub shape: Vec<usize>,
    pub rank: usize,
    pub full_rank: usize,
    /// `r·(m + n + 1)` plus the bias (SVD), or `m·n` plus the bias (dense).
    pub params: usize,
    /// `m·n` plus the bias.
    pub dense_params: usize,
    /// Inference multiply-adds per image at the current rank.
    pub macs: usize,
    /// Inference multiply-adds per image of the dense layer.
    pub dense_macs: usize,
}

/// Costs of a whole model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCost {
    pub layers: Vec<LayerCost>,
    /// Every trainable number: weight layers, biases and BatchNorm.
    pub params: usize,
    /// The same for the dense model with the same shapes.
    pub dense_params: usize,
    /// Inference multiply-adds per image of the weight layers.
    pub macs: usize,
    pub dense_macs: usize,
}

impl ModelCost {
    /// Inference cost in millions of floating-point operations per image (2 per multiply-add).
    pub fn mflops(&self) -> f64 {
        2.0 * self.macs as f64 / 1e6
    }

    /// Dense inference cost in MFLOPs per image.
    pub fn dense_mflops(&self) -> f64 {
        2.0 * self.dense_macs as f64 / 1e6
    }
}

/// Measures `model` at its current ranks.
pub fn model_cost(model: &Model) -> ModelCost {
    let layers: Vec<LayerCost> = model
        .layers()
        .iter()
        .map(|layer| {
            let shape = layer.weight_shape();
            let bias = shape[0];
            LayerCost {
                name: layer.name().to_string(),
                kind: if shape.len() == 4 { "conv" } else { "linear" }.to_string(),
                shape: shape.to_vec(),
                rank: layer.rank(),
                full_rank: layer.full_rank(),
                params: layer.weight_params() + bias,
                dense_params: shape.iter().product::<usize>() + bias,
                macs: layer.macs(),
                dense_macs: layer.geometry().dense_macs,
            }
        })
        .collect();
    let params = model.num_params();
    let svd_params: usize = layers.iter().map(|l| l.params).sum();
    let other = params.saturating_sub(svd_params);
    ModelCost {
        params,
        dense_params: layers.iter().map(|l| l.dense_params).sum::<usize>() + other,
        macs: layers.iter().map(|l| l.macs).sum(),
        dense_macs: layers.iter().map(|l| l.dense_macs).sum(),
        layers,
    }
}

/// Peak resident memory of this process in MiB (`VmHWM` of `/proc/self/status`), where the
/// operating system reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
