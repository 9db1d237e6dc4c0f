//! The end-to-end engine shared by bp, svd_bp, fa, usf and brsf: one forward pass through the
//! whole network, the cross-entropy, and one backward pass. The feedback-alignment rules send
//! the error back through matrices of their own instead of the weight transposes.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_nn::loss::cross_entropy;

use super::{count_correct, param_gradient, retract, LearningRule, StepStats, Update};
use crate::data::Batch;
use crate::error::Result;
use crate::layers::{LayerRef, Pass};
use crate::models::Model;
use crate::ssa::losses::{factor_terms, hoyer};

/// Source of the matrices that carry the error backwards.
pub trait Feedback {
    /// Feedback matrix of each layer for step `step` (counted from 0), in the layer's weight
    /// layout; `None` means the true transposes (backpropagation).
    fn matrices(&mut self, model: &Model, step: usize) -> Result<Option<HashMap<String, Tensor>>>;

    /// Fixed matrices to save in checkpoints.
    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Restores the matrices saved by [`Feedback::named_tensors`].
    fn load(&mut self, _tensors: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// The true transposes: plain backpropagation.
pub struct Transposes;

impl Feedback for Transposes {
    fn matrices(&mut self, _model: &Model, _step: usize) -> Result<Option<HashMap<String, Tensor>>> {
        Ok(None)
    }
}

/// Terms added to the cross-entropy for SVD layers (svd_bp).
#[derive(Debug, Clone, Copy, Default)]
pub struct FactorTerms {
    pub gamma: f64,
    pub hoyer: f64,
    pub stiefel_projection: bool,
    /// Re-orthonormalise U and V every this many steps (0 = never).
    pub retract_every: usize,
}

/// An end-to-end rule.
pub struct EndToEnd {
    name: &'static str,
    feedback: Box<dyn Feedback>,
    terms: FactorTerms,
    steps: usize,
}

impl EndToEnd {
    /// Creates the rule `name`, which sends the error back through `feedback`.
    pub fn new(name: &'static str, feedback: Box<dyn Feedback>, terms: FactorTerms) -> Self {
        Self {
            name,
            feedback,
            terms,
            steps: 0,
        }
    }
}

/// Returns the dense weight layers that pass the error to an earlier layer: every layer but the first,
/// whose input is the image.
pub fn receiving_layers(model: &Model) -> Vec<LayerRef<'_>> {
    model.layers().into_iter().skip(1).collect()
}

/// Fan-in of a dense layer of weight shape `[out, in]` or `[F, C, k, k]`.
pub fn fan_in(shape: &[usize]) -> usize {
    shape.iter().skip(1).product()
}

/// Computes `sign(w)` (with `sign(0) = 1`), optionally times `|magnitude|`, scaled to the Frobenius norm of `w`.
pub fn scaled_sign(w: &Tensor, magnitude: Option<&Tensor>) -> Result<Tensor> {
    let w = w.detach();
    let sign = ((w.ge(0f64)?.to_dtype(DType::F32)? * 2.0)? - 1.0)?;
    let b = match magnitude {
        Some(m) => (sign * m.abs()?)?,
        None => sign,
    };
    let norm_w = w.sqr()?.sum_all()?.sqrt()?;
    let norm_b = (b.sqr()?.sum_all()?.sqrt()? + 1e-12)?;
    Ok(b.broadcast_mul(&(norm_w / norm_b)?)?)
}

impl LearningRule for EndToEnd {
    fn name(&self) -> &'static str {
        self.name
    }

    fn compute(&mut self, model: &Model, batch: &Batch) -> Result<Update> {
        let n = batch.labels.dim(0)?;
        let device = batch.images.device();
        let feedback = self.feedback.matrices(model, self.steps)?;
        let pass = Pass {
            train: true,
            feedback: feedback.as_ref(),
            probe: None,
        };
        let logits = model.forward_with(&batch.images, &pass)?;
        let ce = cross_entropy(&logits, &batch.labels)?;
        let zero = Tensor::zeros((), DType::F32, device)?;
        let mut stats = StepStats {
            loss_sum: (ce.detach() * n as f64)?,
            correct: count_correct(&logits.detach(), &batch.labels)?,
            terms: [zero.clone(), zero.clone(), zero.clone(), zero],
        };
        let mut parts = vec![("network".to_string(), "cross-entropy", ce.detach())];
        let mut loss = ce;
        // The orthogonality gradient is added in closed form after the backward pass.
        let mut closed_form = HashMap::new();
        for factors in model.svd_layers() {
            let terms = factor_terms(factors, None, 0.0, self.terms.gamma)?;
            let sparsity = hoyer(factors)?;
            loss = (loss + (&sparsity * self.terms.hoyer)?)?;
            closed_form.insert(format!("{}.u", factors.name), terms.grad_u);
            closed_form.insert(format!("{}.v", factors.name), terms.grad_v);
            for (term, value, slot) in [("orthogonality", terms.orthogonality, 2), ("hoyer", sparsity, 3)] {
                let value = value.detach();
                stats.terms[slot] = (&stats.terms[slot] + &value)?;
                parts.push((factors.name.clone(), term, value));
            }
        }

        let grads = loss.backward()?;
        let mut out = Vec::new();
        for param in model.params() {
            if let Some(grad) = param_gradient(&param, &grads, &mut closed_form, self.terms.stiefel_projection)? {
                out.push((param, grad));
            }
        }
        Ok(Update { grads: out, parts, stats })
    }

    fn finish_step(&mut self, model: &Model) -> Result<()> {
        self.steps += 1;
        let every = self.terms.retract_every;
        if every > 0 && self.steps % every == 0 {
            retract(model)?;
        }
        Ok(())
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.feedback.named_tensors()
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> std::result::Result<(), String> {
        self.feedback.load(tensors)?;
        self.steps = steps;
        Ok(())
    }
}
