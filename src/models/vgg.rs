//! VGG-13 for 32×32 input: ten 3×3 convolutions with BatchNorm, five max-pools, one linear
//! classifier on the final 1×1×512 features.

use super::units::{ConvUnit, LinearInput, LinearUnit};
use super::{scaled, Unit, INPUT_CHANNELS};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::{BatchNorm, SvdConv2d, SvdLinear, WeightSource};

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
pub fn build_vgg13(config: &ModelConfig, num_classes: usize, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let mut channels = INPUT_CHANNELS;
    for (index, (base, pool)) in VGG13.iter().enumerate() {
        let name = format!("conv{}", index + 1);
        let out = scaled(*base, config.width);
        let conv = SvdConv2d::new(&name, channels, out, config.kernel_size, 1, source)?;
        let bn = if config.batch_norm {
            Some(BatchNorm::new(&format!("{name}.bn"), out, source)?)
        } else {
            None
        };
        units.push(Box::new(ConvUnit { name, conv, bn, pool: *pool }));
        channels = out;
    }
    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: LinearInput::Flatten,
        linear: SvdLinear::new("classifier", channels, num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}
