//! Feedback Alignment (Lillicrap et al. 2016): the error goes back layer by layer through fixed
//! random matrices shaped like the weights, drawn like the weights' initialisation.

use std::collections::HashMap;

use candle_core::Tensor;

use super::end_to_end::{fan_in, receiving_layers, EndToEnd, FactorTerms, Feedback};
use super::saved_tensor;
use crate::error::Result;
use crate::models::Model;
use crate::rng::{stream_rng, uniform_vec, Stream};

/// Feedback stream index of the FA matrices.
const FA_STREAM: u64 = 2;

/// Fixed random feedback matrices, by layer name.
pub struct FixedRandom {
    pub matrices: HashMap<String, Tensor>,
}

impl FixedRandom {
    /// Draws one matrix per receiving layer, uniform in ±1/√fan_in.
    pub fn draw(seed: u64, model: &Model) -> Result<Self> {
        let mut rng = stream_rng(seed, Stream::Feedback, FA_STREAM);
        let mut matrices = HashMap::new();
        for layer in receiving_layers(model) {
            if let crate::layers::LayerRef::Dense { name, weight, shape, .. } = layer {
                let bound = 1.0 / (fan_in(shape) as f32).sqrt();
                let values = uniform_vec(&mut rng, weight.elem_count(), bound);
                matrices.insert(name.to_string(), Tensor::from_vec(values, weight.dims(), weight.device())?);
            }
        }
        Ok(Self { matrices })
    }
}

impl Feedback for FixedRandom {
    fn matrices(&mut self, _model: &Model, _step: usize) -> Result<Option<HashMap<String, Tensor>>> {
        Ok(Some(self.matrices.clone()))
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors: Vec<_> = self
            .matrices
            .iter()
            .map(|(name, b)| (format!("feedback.{name}.b"), b.clone()))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    }

    fn load(&mut self, tensors: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        for (name, b) in self.matrices.iter_mut() {
            *b = saved_tensor(tensors, &format!("feedback.{name}.b"), b.dims())?;
        }
        Ok(())
    }
}

/// Builds the FA rule for `model` (dense layers).
pub fn new(seed: u64, model: &Model) -> Result<EndToEnd> {
    Ok(EndToEnd::new("fa", Box::new(FixedRandom::draw(seed, model)?), FactorTerms::default()))
}
