//! VGG-13 for 32×32 input: ten 3×3 convolutions with BatchNorm, five max-pools, one linear
//! classifier on the final 1×1×512 features.

use super::units::{ConvUnit, LinearInput, LinearUnit};
use super::{scaled, Blueprint, Unit};
use crate::error::Result;
use crate::layers::WeightSource;

/// Output channels of each convolution; `true` marks a max-pool after it.
const VGG13: [(usize, bool); 10] = [
    (64, false),
    (64, true),
    (128, false),
    (128, true),
    (256, false),
    (256, true),
    (512, false),
    (512, true),
    (512, false),
    (512, true),
];

/// Builds the units of VGG-13.
pub fn build_vgg13(bp: &Blueprint, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let config = &bp.model;
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let mut channels = bp.channels;
    for (index, (base, pool)) in VGG13.iter().enumerate() {
        let name = format!("conv{}", index + 1);
        let out = scaled(*base, config.width);
        let conv = bp.conv(&name, channels, out, config.kernel_size, 1, source)?;
        let bn = bp.batch_norm(&format!("{name}.bn"), out, source)?;
        units.push(Box::new(ConvUnit { name, conv, bn, pool: *pool }));
        channels = out;
    }
    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: LinearInput::Flatten,
        linear: bp.linear("classifier", channels, bp.num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}
