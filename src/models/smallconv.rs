//! SmallConv: conv96-pool-conv192-pool-conv512-pool-fc1024-fc.

use super::units::{ConvUnit, LinearInput, LinearUnit};
use super::{scaled, Blueprint, Unit};
use crate::error::Result;
use crate::layers::WeightSource;

/// Channels of the three convolutions and width of the hidden fc layer at `width = 1`.
const CONV_CHANNELS: [usize; 3] = [96, 192, 512];
const FC_UNITS: usize = 1024;

/// Builds the units of SmallConv.
pub fn build(bp: &Blueprint, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let config = &bp.model;
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let mut channels = bp.channels;
    for (index, base) in CONV_CHANNELS.iter().enumerate() {
        let name = format!("conv{}", index + 1);
        let out = scaled(*base, config.width);
        let conv = bp.conv(&name, channels, out, config.kernel_size, 1, source)?;
        let bn = bp.batch_norm(&format!("{name}.bn"), out, source)?;
        units.push(Box::new(ConvUnit { name, conv, bn, pool: true }));
        channels = out;
    }

    let side = bp.side >> CONV_CHANNELS.len();
    let features = side * side * channels;
    let hidden = scaled(FC_UNITS, config.width);
    units.push(Box::new(LinearUnit {
        name: "fc1".into(),
        input: LinearInput::Flatten,
        linear: bp.linear("fc1", features, hidden, source)?,
        relu: true,
    }));
    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: LinearInput::Flat,
        linear: bp.linear("classifier", hidden, bp.num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}
