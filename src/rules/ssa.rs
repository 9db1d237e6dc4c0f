//! SVD-Space Alignment: every unit learns from the broadcast output error plus the alignment,
//! orthogonality and Hoyer terms of its SVD layers, with no gradient crossing units.

use candle_core::{DType, Tensor};
use candle_nn::{encoding::one_hot, loss::cross_entropy, ops::softmax_last_dim};

use super::{count_correct, LearningRule, StepStats};
use crate::config::MethodConfig;
use crate::data::Batch;
use crate::error::Result;
use crate::layers::ParamGroup;
use crate::linalg::{orthonormalize, Matrix};
use crate::models::{Model, Unit};
use crate::optim::{Adam, StepLr};
use crate::rng::{stream_rng, Stream};
use crate::ssa::feedback::broadcast_matrix;
use crate::ssa::losses::{alignment, hoyer, orthogonality, Alignment};
use crate::ssa::stiefel::project_tangent;

/// Feedback stream index of the broadcast matrices (index 0 draws the B matrices).
const BROADCAST_STREAM: u64 = 1;

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

    /// Adds the layer terms to `data_loss`, back-propagates inside the unit and updates it.
    fn update_unit(
        &self,
        unit: &dyn Unit,
        data_loss: Tensor,
        terms: &mut [Tensor; 4],
        optimizer: &mut Adam,
        lr: StepLr,
    ) -> Result<()> {
        let mut loss = data_loss;
        for factors in unit.svd_layers() {
            let align = alignment(factors, self.alignment)?;
            let orth = orthogonality(factors)?;
            let sparsity = hoyer(factors)?;
            loss = (loss + (&align * self.beta)? + (&orth * self.gamma)? + (&sparsity * self.hoyer)?)?;
            terms[1] = (&terms[1] + align.detach())?;
            terms[2] = (&terms[2] + orth.detach())?;
            terms[3] = (&terms[3] + sparsity.detach())?;
        }

        let grads = loss.backward()?;
        for param in unit.params() {
            let Some(grad) = grads.get(&param.var) else {
                continue;
            };
            let grad = if param.group == ParamGroup::Factor && self.stiefel_projection {
                project_tangent(param.var.as_tensor(), grad)?
            } else {
                grad.clone()
            };
            optimizer.step(&param, &grad, lr.for_param(&param))?;
        }
        Ok(())
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

        // Forward: every unit sees a detached input, so its graph ends at its own input.
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

        let zero = Tensor::zeros((), DType::F32, device)?;
        let mut terms = [zero.clone(), zero.clone(), zero.clone(), zero];

        // The classifier learns from the true cross-entropy on its detached input.
        let ce = cross_entropy(&logits, &batch.labels)?;
        let loss_sum = (ce.detach() * n as f64)?;
        let correct = count_correct(&logits.detach(), &batch.labels)?;
        let classifier = model.units.last().expect("a model has at least one unit");
        self.update_unit(classifier.as_ref(), ce, &mut terms, optimizer, lr)?;
        drop(logits);

        // Hidden units, last to first; each graph is dropped once its unit is updated.
        for (index, output) in outputs.into_iter().enumerate().rev() {
            let signal = error.matmul(&self.broadcast[index])?.reshape(output.shape())?;
            let surrogate = ((&output * &signal)?.sum_all()? / n as f64)?;
            terms[0] = (&terms[0] + surrogate.detach())?;
            let data_loss = (surrogate * self.alpha)?;
            self.update_unit(model.units[index].as_ref(), data_loss, &mut terms, optimizer, lr)?;
        }

        self.steps += 1;
        if self.retract_every > 0 && self.steps % self.retract_every == 0 {
            Self::retract(model)?;
        }
        Ok(StepStats { loss_sum, correct, terms })
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.broadcast
            .iter()
            .zip(&self.unit_names)
            .map(|(matrix, unit)| (format!("feedback.{unit}.broadcast"), matrix.clone()))
            .collect()
    }
}
