//! The broadcast engine shared by ssa, dfa and drtp. Every hidden unit learns from a signal
//! sent straight from the output through a fixed random matrix, plus the alignment,
//! orthogonality and Hoyer terms of its SVD layers. No gradient crosses a unit boundary.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_nn::{encoding::one_hot, loss::cross_entropy, ops::softmax_last_dim};

use super::{count_correct, param_gradient, retract, saved_tensor, LearningRule, Part, StepStats, Update};
use crate::config::MethodConfig;
use crate::data::Batch;
use crate::error::Result;
use crate::models::{Model, Unit};
use crate::rng::{stream_rng, Stream};
use crate::ssa::feedback::broadcast_matrix;
use crate::ssa::losses::{factor_terms, hoyer, Alignment};

/// Feedback stream index of the broadcast matrices (index 0 draws the B matrices).
const BROADCAST_STREAM: u64 = 1;

/// Signal that the output sends to the hidden units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The error `softmax(logits) − onehot(label)` (DFA, SSA).
    Error,
    /// The negated one-hot target `−onehot(label)` (DRTP): known before the forward pass
    /// ends, and of the error's sign at the true class.
    Target,
}

/// Weights of the local loss.
#[derive(Debug, Clone, Copy)]
pub struct LocalLoss {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub hoyer: f64,
    pub alignment: Alignment,
    pub stiefel_projection: bool,
    pub retract_every: usize,
}

impl LocalLoss {
    /// Returns the full SSA loss of `[method]`.
    pub fn from_config(config: &MethodConfig) -> Self {
        Self {
            alpha: config.alpha,
            beta: config.beta,
            gamma: config.gamma,
            hoyer: config.hoyer,
            alignment: Alignment::from_name(&config.alignment),
            stiefel_projection: config.stiefel_projection,
            retract_every: config.retract_every,
        }
    }

    /// Returns the broadcast term alone (dense layers have no factor terms).
    pub fn signal_only(config: &MethodConfig) -> Self {
        Self {
            beta: 0.0,
            gamma: 0.0,
            hoyer: 0.0,
            stiefel_projection: false,
            retract_every: 0,
            ..Self::from_config(config)
        }
    }
}

/// A broadcast rule and its fixed matrices.
pub struct Broadcast {
    name: &'static str,
    signal: Signal,
    loss: LocalLoss,
    steps: usize,
    /// `Dᵀ` of each hidden unit, `[classes, outputs per sample]`.
    broadcast: Vec<Tensor>,
    unit_names: Vec<String>,
}

impl Broadcast {
    /// Draws the broadcast matrices of every hidden unit of `model`.
    pub fn new(name: &'static str, signal: Signal, loss: LocalLoss, config: &MethodConfig, seed: u64, model: &Model) -> Result<Self> {
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
            name,
            signal,
            loss,
            steps: 0,
            broadcast,
            unit_names: model.units.iter().map(|u| u.name().to_string()).collect(),
        })
    }

    /// Adds the layer terms to `data_loss` and back-propagates inside the unit.
    fn unit_gradients(&self, unit: &dyn Unit, data_loss: Tensor, data_term: &'static str, update: &mut Update) -> Result<()> {
        let l = &self.loss;
        let mut loss = data_loss.clone();
        update.parts.push((unit.name().to_string(), data_term, data_loss.detach()));
        // The alignment and orthogonality gradients are added in closed form after the
        // backward pass; only the Hoyer term (on s) goes through autograd.
        let mut closed_form = HashMap::new();
        for factors in unit.svd_layers() {
            let terms = factor_terms(factors, Some(l.alignment), l.beta, l.gamma)?;
            let sparsity = hoyer(factors)?;
            loss = (loss + (&sparsity * l.hoyer)?)?;
            closed_form.insert(format!("{}.u", factors.name), terms.grad_u);
            closed_form.insert(format!("{}.v", factors.name), terms.grad_v);
            for (term, value, slot) in [("alignment", terms.alignment, 1), ("orthogonality", terms.orthogonality, 2), ("hoyer", sparsity, 3)] {
                let value = value.detach();
                update.stats.terms[slot] = (&update.stats.terms[slot] + &value)?;
                update.parts.push((factors.name.clone(), term, value));
            }
        }

        let grads = loss.backward()?;
        for param in unit.params() {
            if let Some(grad) = param_gradient(&param, &grads, &mut closed_form, l.stiefel_projection)? {
                update.grads.push((param, grad));
            }
        }
        Ok(())
    }

}

impl LearningRule for Broadcast {
    fn name(&self) -> &'static str {
        self.name
    }

    fn compute(&mut self, model: &Model, batch: &Batch) -> Result<Update> {
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

        let targets = one_hot(batch.labels.clone(), model.num_classes, 1f32, 0f32)?;
        let signal = match self.signal {
            Signal::Error => (softmax_last_dim(&logits.detach())? - targets)?,
            Signal::Target => targets.neg()?,
        };

        // The classifier learns from the true cross-entropy on its detached input.
        let ce = cross_entropy(&logits, &batch.labels)?;
        let zero = Tensor::zeros((), DType::F32, device)?;
        let mut update = Update {
            grads: Vec::new(),
            parts: Vec::<Part>::new(),
            stats: StepStats {
                loss_sum: (ce.detach() * n as f64)?,
                correct: count_correct(&logits.detach(), &batch.labels)?,
                terms: [zero.clone(), zero.clone(), zero.clone(), zero],
            },
        };
        let classifier = model.units.last().expect("a model has at least one unit");
        self.unit_gradients(classifier.as_ref(), ce, "cross-entropy", &mut update)?;
        drop(logits);

        // Hidden units, last to first; each graph is dropped once its gradients are computed.
        for (index, output) in outputs.into_iter().enumerate().rev() {
            let projected = signal.matmul(&self.broadcast[index])?.reshape(output.shape())?;
            let surrogate = ((&output * &projected)?.sum_all()? / n as f64)?;
            update.stats.terms[0] = (&update.stats.terms[0] + surrogate.detach())?;
            let data_loss = (surrogate * self.loss.alpha)?;
            self.unit_gradients(model.units[index].as_ref(), data_loss, "broadcast-signal", &mut update)?;
        }
        Ok(update)
    }

    fn finish_step(&mut self, model: &Model) -> Result<()> {
        self.steps += 1;
        let every = self.loss.retract_every;
        if every > 0 && self.steps % every == 0 {
            retract(model)?;
        }
        Ok(())
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> std::result::Result<(), String> {
        for (matrix, unit) in self.broadcast.iter_mut().zip(&self.unit_names) {
            *matrix = saved_tensor(tensors, &format!("feedback.{unit}.broadcast"), matrix.dims())?;
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
