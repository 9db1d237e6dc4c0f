//! Uniform Sign-concordant Feedback (Liao et al. 2016): the error goes back through `sign(W)`,
//! recomputed from the current weights every step and scaled to the norm of W.

use std::collections::HashMap;

use candle_core::Tensor;

use super::end_to_end::{receiving_layers, scaled_sign, EndToEnd, FactorTerms, Feedback};
use crate::error::Result;
use crate::layers::LayerRef;
use crate::models::Model;

/// `sign(W)` of every receiving layer.
pub struct SignOfWeights;

impl Feedback for SignOfWeights {
    fn matrices(&mut self, model: &Model, _step: usize) -> Result<Option<HashMap<String, Tensor>>> {
        let mut matrices = HashMap::new();
        for layer in receiving_layers(model) {
            if let LayerRef::Dense { name, weight, .. } = layer {
                matrices.insert(name.to_string(), scaled_sign(weight.as_tensor(), None)?);
            }
        }
        Ok(Some(matrices))
    }
}

/// Builds the uSF rule.
pub fn new(_model: &Model) -> EndToEnd {
    EndToEnd::new("usf", Box::new(SignOfWeights), FactorTerms::default())
}
