//! SmallConv: conv96-pool-conv192-pool-conv512-pool-fc1024-fc.

use super::units::{ConvUnit, LinearInput, LinearUnit};
use super::{scaled, Unit, INPUT_CHANNELS, INPUT_SIDE};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::{BatchNorm, SvdConv2d, SvdLinear, WeightSource};

/// Channels of the three convolutions and width of the hidden fc layer at `width = 1`.
const CONV_CHANNELS: [usize; 3] = [96, 192, 512];
const FC_UNITS: usize = 1024;

/// Builds the units of SmallConv.
pub fn build(config: &ModelConfig, num_classes: usize, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let mut channels = INPUT_CHANNELS;
    for (index, base) in CONV_CHANNELS.iter().enumerate() {
        let name = format!("conv{}", index + 1);
        let out = scaled(*base, config.width);
        let conv = SvdConv2d::new(&name, channels, out, config.kernel_size, 1, source)?;
        let bn = if config.batch_norm {
            Some(BatchNorm::new(&format!("{name}.bn"), out, source)?)
        } else {
            None
        };
        units.push(Box::new(ConvUnit { name, conv, bn, pool: true }));
        channels = out;
    }

    let side = INPUT_SIDE >> CONV_CHANNELS.len();
    let features = side * side * channels;
    let hidden = scaled(FC_UNITS, config.width);
    units.push(Box::new(LinearUnit {
        name: "fc1".into(),
        input: LinearInput::Flatten,
        linear: SvdLinear::new("fc1", features, hidden, source)?,
        relu: true,
    }));
    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: LinearInput::Flat,
        linear: SvdLinear::new("classifier", hidden, num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}
