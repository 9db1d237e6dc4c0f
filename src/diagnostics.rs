//! Gradient-alignment diagnostics (paper Fig. 2): on a fixed probe batch, the angle between
//! each layer's update under the rule and the true BP gradient, both in the dense weight view.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
use candle_nn::loss::cross_entropy;

use crate::data::Batch;
use crate::error::Result;
use crate::layers::{LayerRef, Pass, SvdFactors};
use crate::models::Model;
use crate::rules::LearningRule;

/// Copies of every BatchNorm running statistic, to undo forward passes in training mode.
pub struct SavedStatistics(Vec<(Var, Tensor)>);

impl SavedStatistics {
    /// Copies the running statistics of every BatchNorm of `model`.
    pub fn take(model: &Model) -> Result<Self> {
        let mut saved = Vec::new();
        for unit in &model.units {
            for bn in unit.batch_norms() {
                for var in [&bn.running_mean, &bn.running_var] {
                    saved.push((var.clone(), var.as_tensor().copy()?));
                }
            }
        }
        Ok(Self(saved))
    }

    /// Writes the copied statistics back.
    pub fn restore(&self) -> Result<()> {
        for (var, value) in &self.0 {
            var.set(value)?;
        }
        Ok(())
    }
}

/// Angle in degrees between two tensors of the same shape; 90 when either is zero.
pub fn angle_deg(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (a.flatten_all()?, b.flatten_all()?);
    let dot = (&a * &b)?.sum_all()?.to_scalar::<f32>()? as f64;
    let norms = a.sqr()?.sum_all()?.to_scalar::<f32>()? as f64 * b.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    if norms <= 0.0 {
        return Ok(90.0);
    }
    Ok((dot / norms.sqrt()).clamp(-1.0, 1.0).acos().to_degrees())
}

/// First-order change of `U diag(s) Vᵀ` for parameter gradients dU, ds, dV:
/// `dU diag(s) Vᵀ + U diag(ds) Vᵀ + U diag(s) dVᵀ` (missing gradients count as zero).
pub fn svd_dense_update(factors: &SvdFactors, grads: &HashMap<String, Tensor>) -> Result<Tensor> {
    let (u, s, v) = (factors.u.as_tensor(), factors.s.as_tensor(), factors.v.as_tensor());
    let scale = |m: &Tensor, d: &Tensor| m.broadcast_mul(&d.unsqueeze(0)?);
    let mut total = Tensor::zeros((factors.rows(), factors.cols()), DType::F32, u.device())?;
    if let Some(du) = grads.get(&format!("{}.u", factors.name)) {
        total = (total + scale(du, s)?.matmul(&v.t()?)?)?;
    }
    if let Some(ds) = grads.get(&format!("{}.s", factors.name)) {
        total = (total + scale(u, ds)?.matmul(&v.t()?)?)?;
    }
    if let Some(dv) = grads.get(&format!("{}.v", factors.name)) {
        total = (total + scale(u, s)?.matmul(&dv.t()?)?)?;
    }
    Ok(total)
}

/// Computes the true gradient of the mean cross-entropy on `batch` with respect to each layer's
/// dense weight, by layer name, in the layer's dense view.
pub fn bp_gradients(model: &Model, batch: &Batch) -> Result<HashMap<String, Tensor>> {
    let mut probes = HashMap::new();
    for layer in model.layers() {
        let zeros = Tensor::zeros(layer.dense_view_dims(), DType::F32, batch.images.device())?;
        probes.insert(layer.name().to_string(), Var::from_tensor(&zeros)?);
    }
    let pass = Pass {
        train: true,
        feedback: None,
        probe: Some(&probes),
    };
    let logits = model.forward_with(&batch.images, &pass)?;
    let grads = cross_entropy(&logits, &batch.labels)?.backward()?;
    let mut out = HashMap::new();
    for (name, z) in probes {
        let grad = grads.get(&z).cloned().unwrap_or(z.zeros_like()?);
        out.insert(name, grad);
    }
    Ok(out)
}

/// Measures the angle between the rule's update and the BP gradient for every layer of `model`,
/// in network order. No weight changes, and BatchNorm statistics are restored.
pub fn gradient_angles(model: &Model, rule: &mut dyn LearningRule, batch: &Batch) -> Result<Vec<(String, f64)>> {
    let saved = SavedStatistics::take(model)?;
    let update = rule.compute(model, batch);
    saved.restore()?;
    let grads: HashMap<String, Tensor> = update?.grads.into_iter().map(|(p, g)| (p.name, g)).collect();
    let reference = bp_gradients(model, batch);
    saved.restore()?;
    let reference = reference?;

    let mut angles = Vec::new();
    for layer in model.layers() {
        let name = layer.name().to_string();
        let ours = match layer {
            LayerRef::Svd(factors) => svd_dense_update(factors, &grads)?,
            LayerRef::Dense { weight, .. } => match grads.get(&format!("{name}.weight")) {
                Some(g) => g.clone(),
                None => weight.zeros_like()?,
            },
        };
        angles.push((name.clone(), angle_deg(&ours, &reference[&name])?));
    }
    Ok(angles)
}
