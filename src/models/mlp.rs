//! Multilayer perceptron: the flattened image, two hidden layers of `model.hidden` ReLU units
//! (times `model.width`), and the classifier.

use super::units::fc_stack;
use super::{scaled, Blueprint, Unit};
use crate::error::Result;
use crate::layers::WeightSource;

/// Hidden layers before the classifier.
const HIDDEN_LAYERS: usize = 2;

/// Builds the units of the MLP.
pub fn build(bp: &Blueprint, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let hidden = scaled(bp.model.hidden, bp.model.width);
    fc_stack(bp, bp.side * bp.side * bp.channels, &[hidden; HIDDEN_LAYERS], source)
}
