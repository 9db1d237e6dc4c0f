//! Multilayer perceptron: the flattened image, two hidden layers of `model.hidden` ReLU units
//! (times `model.width`), and the classifier.

use super::units::{LinearInput, LinearUnit};
use super::{scaled, Blueprint, Unit};
use crate::error::Result;
use crate::layers::WeightSource;

/// Hidden layers before the classifier.
const HIDDEN_LAYERS: usize = 2;

/// Builds the units of the MLP.
pub fn build(bp: &Blueprint, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let mut features = bp.side * bp.side * bp.channels;
    let hidden = scaled(bp.model.hidden, bp.model.width);
    for index in 0..HIDDEN_LAYERS {
        let name = format!("fc{}", index + 1);
        units.push(Box::new(LinearUnit {
            input: if index == 0 { LinearInput::Flatten } else { LinearInput::Flat },
            linear: bp.linear(&name, features, hidden, source)?,
            relu: true,
            name,
        }));
        features = hidden;
    }
    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: LinearInput::Flat,
        linear: bp.linear("classifier", features, bp.num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}
