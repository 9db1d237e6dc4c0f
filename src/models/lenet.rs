//! LeNet-5 as used in the feedback-alignment literature: two 5×5 convolutions without padding
//! (6 and 16 channels), each followed by ReLU and 2×2 max pooling, then fully connected layers
//! of 120 and 84 units and the classifier. On 32×32 input the features are 16×5×5, on 28×28
//! input 16×4×4. The kernel size is fixed at 5; `model.kernel_size` does not apply.

use super::units::{fc_stack, ConvUnit};
use super::{scaled, Blueprint, Unit};
use crate::error::Result;
use crate::layers::WeightSource;

const KERNEL: usize = 5;
const CONV_CHANNELS: [usize; 2] = [6, 16];
const FC_UNITS: [usize; 2] = [120, 84];

/// Builds the units of LeNet-5.
pub fn build(bp: &Blueprint, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let (mut channels, mut side) = (bp.channels, bp.side);
    for (index, base) in CONV_CHANNELS.iter().enumerate() {
        let name = format!("conv{}", index + 1);
        let out = scaled(*base, bp.model.width);
        let conv = bp.conv(&name, channels, out, KERNEL, 1, source)?.with_padding(0);
        let bn = bp.batch_norm(&format!("{name}.bn"), out, source)?;
        units.push(Box::new(ConvUnit { name, conv, bn, pool: true }));
        channels = out;
        side = (side - KERNEL + 1) / 2;
    }

    let widths = FC_UNITS.map(|base| scaled(base, bp.model.width));
    units.extend(fc_stack(bp, side * side * channels, &widths, source)?);
    Ok(units)
}
