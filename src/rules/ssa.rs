//! SVD-Space Alignment: every unit learns from the broadcast output error plus the alignment,
//! orthogonality and Hoyer terms of its SVD layers, with no gradient crossing units.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_nn::{encoding::one_hot, loss::cross_entropy, ops::softmax_last_dim};

use super::{count_correct, LearningRule, StepStats};
use crate::config::MethodConfig;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::layers::{Param, ParamGroup};
use crate::linalg::{orthonormalize, Matrix};
use crate::models::{Model, Unit};
use crate::optim::{Adam, StepLr};
use crate::rng::{stream_rng, Stream};
use crate::ssa::feedback::broadcast_matrix;
use crate::ssa::losses::{alignment, hoyer, orthogonality, Alignment};
use crate::ssa::stiefel::project_tangent;

/// Feedback stream index of the broadcast matrices (index 0 draws the B matrices).
const BROADCAST_STREAM: u64 = 1;

/// Gradients of one unit, and its loss terms by layer for error messages and metrics.
struct UnitUpdate {
    /// (layer or unit name, term name, detached value).
    parts: Vec<(String, &'static str, Tensor)>,
    grads: Vec<(Param, Tensor)>,
}

impl UnitUpdate {
    /// Sum of the loss terms and the squared gradients: finite exactly when all of them are.
    fn health(&self) -> Result<Tensor> {
        let mut total = Tensor::zeros((), DType::F32, self.parts[0].2.device())?;
        for (_, _, value) in &self.parts {
            total = (total + value)?;
        }
        for (_, grad) in &self.grads {
            total = (total + grad.sqr()?.sum_all()?)?;
        }
        Ok(total)
    }

    /// Describes the first non-finite term or gradient.
    fn describe_non_finite(&self) -> Result<String> {
        for (layer, term, value) in &self.parts {
            let v = value.to_scalar::<f32>()?;
            if !v.is_finite() {
                return Ok(format!("{term} loss of layer {layer} is {v}"));
            }
        }
        for (param, grad) in &self.grads {
            let v = grad.sqr()?.sum_all()?.to_scalar::<f32>()?;
            if !v.is_finite() {
                return Ok(format!("gradient of {} has non-finite entries", param.name));
            }
        }
        Ok("a loss term is not finite".into())
    }
}

/// The SSA rule and its fixed broadcast matrices.
pub struct Ssa {
    alpha: f64,
    beta: f64,
    gamma: f64,
    hoyer: f64,
    alignment: Alignment,
    stiefel_projection: bool,
    retract_every: usize,
    steps: usize,
    /// `Dᵀ` of each hidden unit, `[classes, outputs per sample]`.
    broadcast: Vec<Tensor>,
    unit_names: Vec<String>,
}

impl Ssa {
    /// Draws the broadcast matrices of every hidden unit of `model`.
    pub fn new(config: &MethodConfig, seed: u64, model: &Model) -> Result<Self> {
        let device = model.units[0].params()[0].var.device().clone();
        let mut rng = stream_rng(seed, Stream::Feedback, BROADCAST_STREAM);
        let hidden = model.units.len() - 1;
        let broadcast = model.output_shapes[..hidden]
            .iter()
            .map(|shape| {
                let outputs = shape.iter().product();
                broadcast_matrix(&mut rng, model.num_classes, outputs, config.feedback_scale, &device)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            alpha: config.alpha,
            beta: config.beta,
            gamma: config.gamma,
            hoyer: config.hoyer,
            alignment: Alignment::from_name(&config.alignment),
            stiefel_projection: config.stiefel_projection,
            retract_every: config.retract_every,
            steps: 0,
            broadcast,
            unit_names: model.units.iter().map(|u| u.name().to_string()).collect(),
        })
    }

    /// Adds the layer terms to `data_loss` and back-propagates inside the unit; the update is
    /// applied later, once every unit's gradients are known to be finite.
    fn unit_gradients(&self, unit: &dyn Unit, data_loss: Tensor, data_term: &'static str) -> Result<UnitUpdate> {
        let mut loss = data_loss.clone();
        let mut parts = vec![(unit.name().to_string(), data_term, data_loss.detach())];
        for factors in unit.svd_layers() {
            let align = alignment(factors, self.alignment)?;
            let orth = orthogonality(factors)?;
            let sparsity = hoyer(factors)?;
            loss = (loss + (&align * self.beta)? + (&orth * self.gamma)? + (&sparsity * self.hoyer)?)?;
            parts.push((factors.name.clone(), "alignment", align.detach()));
            parts.push((factors.name.clone(), "orthogonality", orth.detach()));
            parts.push((factors.name.clone(), "hoyer", sparsity.detach()));
        }

        let grads = loss.backward()?;
        let mut updates = Vec::new();
        for param in unit.params() {
            let Some(grad) = grads.get(&param.var) else {
                continue;
            };
            let grad = if param.group == ParamGroup::Factor && self.stiefel_projection {
                project_tangent(param.var.as_tensor(), grad)?
            } else {
                grad.detach()
            };
            updates.push((param, grad));
        }
        Ok(UnitUpdate { parts, grads: updates })
    }

    /// Replaces U and V of every layer by the orthonormal factor of their QR decomposition.
    fn retract(model: &Model) -> Result<()> {
        for factors in model.svd_layers() {
            for var in [&factors.u, &factors.v] {
                let q = orthonormalize(&Matrix::from_tensor(var.as_tensor())?);
                var.set(&q.to_tensor(var.device())?)?;
            }
        }
        Ok(())
    }
}

impl LearningRule for Ssa {
    fn name(&self) -> &'static str {
        "ssa"
    }

    fn step(&mut self, model: &Model, batch: &Batch, optimizer: &mut Adam, lr: StepLr) -> Result<StepStats> {
        let n = batch.labels.dim(0)?;
        let device = batch.images.device();

        // Forward: every unit gets a detached input, so its graph ends at its own input.
        let mut outputs = Vec::with_capacity(model.units.len());
        let mut input = batch.images.clone();
        for unit in &model.units {
            let output = unit.forward(&input, true)?;
            input = output.detach();
            outputs.push(output);
        }
        let logits = outputs.pop().expect("a model has at least one unit");

        // Output error e = softmax − onehot, detached.
        let probs = softmax_last_dim(&logits.detach())?;
        let targets = one_hot(batch.labels.clone(), model.num_classes, 1f32, 0f32)?;
        let error = (probs - targets)?;

        // The classifier learns from the true cross-entropy on its detached input.
        let ce = cross_entropy(&logits, &batch.labels)?;
        let loss_sum = (ce.detach() * n as f64)?;
        let correct = count_correct(&logits.detach(), &batch.labels)?;
        let classifier = model.units.last().expect("a model has at least one unit");
        let mut updates = vec![self.unit_gradients(classifier.as_ref(), ce, "cross-entropy")?];
        drop(logits);

        // Hidden units, last to first; each graph is dropped once its gradients are computed.
        let mut dfa_total = Tensor::zeros((), DType::F32, device)?;
        for (index, output) in outputs.into_iter().enumerate().rev() {
            let signal = error.matmul(&self.broadcast[index])?.reshape(output.shape())?;
            let surrogate = ((&output * &signal)?.sum_all()? / n as f64)?;
            dfa_total = (dfa_total + surrogate.detach())?;
            let data_loss = (surrogate * self.alpha)?;
            updates.push(self.unit_gradients(model.units[index].as_ref(), data_loss, "broadcast-error")?);
        }

        // One host read per step: a NaN or infinity anywhere makes the sum non-finite.
        let mut health = Tensor::zeros((), DType::F32, device)?;
        for update in &updates {
            health = (health + update.health()?)?;
        }
        if !health.to_scalar::<f32>()?.is_finite() {
            let culprit = updates
                .iter()
                .find_map(|u| match u.health().and_then(|h| Ok(h.to_scalar::<f32>()?)) {
                    Ok(v) if v.is_finite() => None,
                    _ => Some(u),
                })
                .map(|u| u.describe_non_finite())
                .transpose()?
                .unwrap_or_default();
            return Err(Error::Diverged(format!("step {}: {culprit}", self.steps + 1)));
        }

        let mut terms = [dfa_total, Tensor::zeros((), DType::F32, device)?, Tensor::zeros((), DType::F32, device)?, Tensor::zeros((), DType::F32, device)?];
        for update in updates {
            for (_, term, value) in &update.parts {
                let slot = match *term {
                    "alignment" => 1,
                    "orthogonality" => 2,
                    "hoyer" => 3,
                    _ => continue,
                };
                terms[slot] = (&terms[slot] + value)?;
            }
            for (param, grad) in &update.grads {
                optimizer.step(param, grad, lr.for_param(param))?;
            }
        }

        self.steps += 1;
        if self.retract_every > 0 && self.steps % self.retract_every == 0 {
            Self::retract(model)?;
        }
        Ok(StepStats { loss_sum, correct, terms })
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> std::result::Result<(), String> {
        for (matrix, unit) in self.broadcast.iter_mut().zip(&self.unit_names) {
            let name = format!("feedback.{unit}.broadcast");
            let saved = tensors.get(&name).ok_or_else(|| format!("tensor `{name}` is missing"))?;
            if saved.dims() != matrix.dims() {
                return Err(format!("tensor `{name}` has shape {:?}, expected {:?}", saved.dims(), matrix.dims()));
            }
            *matrix = saved.clone();
        }
        self.steps = steps;
        Ok(())
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.broadcast
            .iter()
            .zip(&self.unit_names)
            .map(|(matrix, unit)| (format!("feedback.{unit}.broadcast"), matrix.clone()))
            .collect()
    }
}
