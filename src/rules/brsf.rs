//! Batchwise Random-magnitude Sign-concordant Feedback (Moskovitz et al. 2018): the error goes
//! back through `|R| ⊙ sign(W)` with R ~ N(0, 1) redrawn every batch, scaled to the norm of W.
//! R of step t comes from a generator seeded by the experiment seed and t, so a resumed run
//! draws the same matrices.

use std::collections::HashMap;

use candle_core::Tensor;

use super::end_to_end::{receiving_layers, scaled_sign, EndToEnd, FactorTerms, Feedback};
use crate::error::Result;
use crate::layers::LayerRef;
use crate::models::Model;
use crate::rng::{normal_vec, stream_rng, Stream};

/// First feedback stream index of the per-step magnitudes (index + step).
const MAGNITUDE_STREAMS: u64 = 1 << 32;

/// `|R| ⊙ sign(W)` with R redrawn every step.
pub struct RandomMagnitudeSign {
    pub seed: u64,
}

impl Feedback for RandomMagnitudeSign {
    fn matrices(&mut self, model: &Model, step: usize) -> Result<Option<HashMap<String, Tensor>>> {
        let mut rng = stream_rng(self.seed, Stream::Feedback, MAGNITUDE_STREAMS + step as u64);
        let mut matrices = HashMap::new();
        for layer in receiving_layers(model) {
            if let LayerRef::Dense { name, weight, .. } = layer {
                let r = Tensor::from_vec(normal_vec(&mut rng, weight.elem_count()), weight.dims(), weight.device())?;
                matrices.insert(name.to_string(), scaled_sign(weight.as_tensor(), Some(&r))?);
            }
        }
        Ok(Some(matrices))
    }
}

/// Builds the brSF rule.
pub fn new(seed: u64, _model: &Model) -> EndToEnd {
    EndToEnd::new("brsf", Box::new(RandomMagnitudeSign { seed }), FactorTerms::default())
}
