//! Learning rules: how one batch turns into parameter updates.
//!
//! Each rule is one type behind [`LearningRule`]; `build` picks it by config name.

pub mod ssa;

use std::collections::HashMap;

use candle_core::Tensor;

use crate::config::Config;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::optim::{Adam, StepLr};

pub use ssa::Ssa;

/// Names of the local-loss terms reported per epoch, in `metrics.csv` column order.
pub const LOSS_TERMS: [&str; 4] = ["loss_dfa", "loss_align", "loss_orth", "loss_hoyer"];

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

/// A rule that updates the model from one batch.
pub trait LearningRule {
    /// Config name of the rule.
    fn name(&self) -> &'static str;

    /// Runs the forward pass, computes the rule's updates and applies them with `optimizer`.
    fn step(&mut self, model: &Model, batch: &Batch, optimizer: &mut Adam, lr: StepLr) -> Result<StepStats>;

    /// Returns the rule's fixed state (feedback matrices) to save in checkpoints.
    fn named_tensors(&self) -> Vec<(String, Tensor)>;

    /// Number of steps taken.
    fn steps(&self) -> usize;

    /// Restores the state saved by [`LearningRule::named_tensors`] and the step count.
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> std::result::Result<(), String>;
}

/// Builds the rule named in `config.method.rule` for `model`.
pub fn build(config: &Config, model: &Model) -> Result<Box<dyn LearningRule>> {
    match config.method.rule.as_str() {
        "ssa" => Ok(Box::new(Ssa::new(&config.method, config.experiment.seed, model)?)),
        other => Err(Error::Config(format!(
            "key `method.rule` = \"{other}\" is not supported: expected one of {:?}",
            crate::config::RULES
        ))),
    }
}

/// Counts the rows of `logits` whose largest entry is at `labels`, as an f32 scalar tensor.
pub fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let predicted = logits.argmax(1)?;
    Ok(predicted.eq(labels)?.to_dtype(candle_core::DType::F32)?.sum_all()?)
}
