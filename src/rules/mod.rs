//! Learning rules: how one batch turns into parameter updates.
//!
//! Each rule has its own file, and [`build`] picks it by config name. Two engines do the work
//! that rules share. [`broadcast`] sends the output error (or the target) to every unit through
//! fixed random matrices (ssa, dfa, drtp). [`end_to_end`] back-propagates through the whole
//! network, optionally through feedback matrices instead of the weight transposes (bp, svd_bp,
//! fa, usf, brsf).

pub mod bp;
pub mod broadcast;
pub mod brsf;
pub mod dfa;
pub mod drtp;
pub mod end_to_end;
pub mod fa;
pub mod ssa;
pub mod svd_bp;
pub mod usf;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use crate::config::Config;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::layers::{LayerKind, Param, ParamGroup};
use crate::models::Model;
use crate::linalg::{orthonormalize, Matrix};
use crate::optim::{Adam, StepLr};
use crate::ssa::stiefel::project_tangent;

/// Config names of the rules.
pub const RULES: [&str; 8] = ["ssa", "svd_bp", "bp", "dfa", "fa", "usf", "brsf", "drtp"];

/// Names of the local-loss terms reported per epoch, in `metrics.csv` column order.
pub const LOSS_TERMS: [&str; 4] = ["loss_dfa", "loss_align", "loss_orth", "loss_hoyer"];

/// Returns the layer form that `rule` trains: SVD for ssa and svd_bp, dense for the others.
pub fn layer_kind(rule: &str) -> Result<LayerKind> {
    match rule {
        "ssa" | "svd_bp" => Ok(LayerKind::Svd),
        "bp" | "dfa" | "fa" | "usf" | "brsf" | "drtp" => Ok(LayerKind::Dense),
        other => Err(Error::Config(format!(
            "key `method.rule` = \"{other}\" is not supported: expected one of {RULES:?}"
        ))),
    }
}

/// Builds the rule named in `config.method.rule` for `model`.
pub fn build(config: &Config, model: &Model) -> Result<Box<dyn LearningRule>> {
    let (method, seed) = (&config.method, config.experiment.seed);
    Ok(match method.rule.as_str() {
        "ssa" => Box::new(ssa::new(method, seed, model)?),
        "dfa" => Box::new(dfa::new(method, seed, model)?),
        "drtp" => Box::new(drtp::new(method, seed, model)?),
        "bp" => Box::new(bp::new(model)),
        "svd_bp" => Box::new(svd_bp::new(method, model)),
        "fa" => Box::new(fa::new(seed, model)?),
        "usf" => Box::new(usf::new(model)),
        "brsf" => Box::new(brsf::new(seed, model)),
        other => {
            return Err(Error::Config(format!(
                "key `method.rule` = \"{other}\" is not supported: expected one of {RULES:?}"
            )))
        }
    })
}

/// Sums over one batch, kept on the device so that the step does not wait for the host.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Sum over samples of the classifier's cross-entropy.
    pub loss_sum: Tensor,
    /// Number of correct top-1 predictions (f32).
    pub correct: Tensor,
    /// Local-loss terms summed over the model's layers, in [`LOSS_TERMS`] order.
    pub terms: [Tensor; 4],
}

/// A loss term of one layer or unit: (layer name, term name, detached value).
pub type Part = (String, &'static str, Tensor);

/// The gradients a rule computed for one batch, before the optimiser uses them.
pub struct Update {
    pub grads: Vec<(Param, Tensor)>,
    /// Loss terms, for the finiteness check and its message.
    pub parts: Vec<Part>,
    pub stats: StepStats,
}

impl Update {
    /// Fails with [`Error::Diverged`] naming the first non-finite term or gradient. Reads one
    /// scalar from the device when everything is finite.
    pub fn check_finite(&self, step: usize) -> Result<()> {
        let device = self.stats.loss_sum.device();
        let mut total = Tensor::zeros((), DType::F32, device)?;
        for (_, _, value) in &self.parts {
            total = (total + value)?;
        }
        for (_, grad) in &self.grads {
            total = (total + grad.sqr()?.sum_all()?)?;
        }
        if total.to_scalar::<f32>()?.is_finite() {
            return Ok(());
        }
        for (layer, term, value) in &self.parts {
            let v = value.to_scalar::<f32>()?;
            if !v.is_finite() {
                return Err(Error::Diverged(format!("step {step}: {term} loss of layer {layer} is {v}")));
            }
        }
        for (param, grad) in &self.grads {
            if !grad.sqr()?.sum_all()?.to_scalar::<f32>()?.is_finite() {
                return Err(Error::Diverged(format!(
                    "step {step}: gradient of {} has non-finite entries",
                    param.name
                )));
            }
        }
        Err(Error::Diverged(format!("step {step}: a loss term is not finite")))
    }

    /// Applies every gradient with `optimizer`.
    pub fn apply(&self, optimizer: &mut Adam, lr: StepLr) -> Result<()> {
        for (param, grad) in &self.grads {
            optimizer.step(param, grad, lr.for_param(param))?;
        }
        Ok(())
    }
}

/// A rule that updates the model from one batch.
pub trait LearningRule {
    /// Config name of the rule.
    fn name(&self) -> &'static str;

    /// Runs the forward pass and computes the rule's gradients, without changing any weight
    /// (BatchNorm running statistics do move).
    fn compute(&mut self, model: &Model, batch: &Batch) -> Result<Update>;

    /// Counts the step and does what the rule does after an update (retraction).
    fn finish_step(&mut self, model: &Model) -> Result<()>;

    /// Number of steps taken.
    fn steps(&self) -> usize;

    /// Returns the rule's fixed state (feedback matrices) to save in checkpoints.
    fn named_tensors(&self) -> Vec<(String, Tensor)>;

    /// Restores the state saved by [`LearningRule::named_tensors`] and the step count.
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> std::result::Result<(), String>;

    /// Computes the update of one batch, checks it is finite and applies it with `optimizer`.
    fn step(&mut self, model: &Model, batch: &Batch, optimizer: &mut Adam, lr: StepLr) -> Result<StepStats> {
        let update = self.compute(model, batch)?;
        update.check_finite(self.steps() + 1)?;
        update.apply(optimizer, lr)?;
        self.finish_step(model)?;
        Ok(update.stats)
    }
}

/// Counts the rows of `logits` whose largest entry is at `labels`, as an f32 scalar tensor.
pub fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let predicted = logits.argmax(1)?;
    Ok(predicted.eq(labels)?.to_dtype(candle_core::DType::F32)?.sum_all()?)
}

/// Reads the tensor `name` from a checkpoint's tensors and checks its shape against `expected`.
pub fn saved_tensor(tensors: &HashMap<String, Tensor>, name: &str, expected: &[usize]) -> std::result::Result<Tensor, String> {
    let saved = tensors.get(name).ok_or_else(|| format!("tensor `{name}` is missing"))?;
    if saved.dims() != expected {
        return Err(format!("tensor `{name}` has shape {:?}, expected {expected:?}", saved.dims()));
    }
    Ok(saved.clone())
}

/// Returns the update of `param`: its autograd gradient plus its closed-form gradient, which is
/// removed from `closed_form` (keyed by parameter name). U and V are projected onto the Stiefel
/// tangent space when `stiefel_projection`. Returns `None` when neither source has a gradient.
pub fn param_gradient(
    param: &Param,
    grads: &GradStore,
    closed_form: &mut HashMap<String, Tensor>,
    stiefel_projection: bool,
) -> Result<Option<Tensor>> {
    let grad = match (grads.get(&param.var), closed_form.remove(&param.name)) {
        (Some(grad), Some(terms)) => (grad.detach() + terms)?,
        (Some(grad), None) => grad.detach(),
        (None, Some(terms)) => terms,
        (None, None) => return Ok(None),
    };
    if param.group == ParamGroup::Factor && stiefel_projection {
        return Ok(Some(project_tangent(param.var.as_tensor(), &grad)?));
    }
    Ok(Some(grad))
}

/// Replaces U and V of every SVD layer by the orthonormal factor of their QR decomposition.
pub fn retract(model: &Model) -> Result<()> {
    for factors in model.svd_layers() {
        for var in [&factors.u, &factors.v] {
            let q = orthonormalize(&Matrix::from_tensor(var.as_tensor())?);
            var.set(&q.to_tensor(var.device())?)?;
        }
    }
    Ok(())
}
