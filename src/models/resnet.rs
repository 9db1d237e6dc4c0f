//! CIFAR ResNets (He et al. 2016, section 4.2): a 3×3 stem with 16 channels, three stages of
//! basic blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2),
//! global average pooling and a linear classifier. ResNet-20, -32 and -56 have three, five
//! and nine blocks per stage.

use super::units::{ConvUnit, LinearInput, LinearUnit, ResidualBlock, Shortcut};
use super::{scaled, Blueprint, Unit};
use crate::error::Result;
use crate::layers::WeightSource;

const STAGE_CHANNELS: [usize; 3] = [16, 32, 64];

/// Builds a CIFAR ResNet with `blocks` basic blocks per stage (depth `6·blocks + 2`).
pub fn build(bp: &Blueprint, blocks: usize, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let config = &bp.model;
    let k = config.kernel_size;
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let stem_channels = scaled(STAGE_CHANNELS[0], config.width);
    units.push(Box::new(ConvUnit {
        name: "stem".into(),
        conv: bp.conv("stem", bp.channels, stem_channels, k, 1, source)?,
        bn: bp.batch_norm("stem.bn", stem_channels, source)?,
        pool: false,
    }));

    let mut channels = stem_channels;
    for (stage, base) in STAGE_CHANNELS.iter().enumerate() {
        let out = scaled(*base, config.width);
        for block in 0..blocks {
            let name = format!("stage{}.block{}", stage + 1, block + 1);
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let shortcut = if stride == 1 && channels == out {
                Shortcut::Identity
            } else if config.shortcut == "a" {
                Shortcut::PadChannels { stride, extra: out - channels }
            } else {
                let conv_name = format!("{name}.shortcut");
                Shortcut::Projection {
                    conv: bp.conv(&conv_name, channels, out, 1, stride, source)?,
                    bn: bp.batch_norm(&format!("{conv_name}.bn"), out, source)?,
                }
            };
            units.push(Box::new(ResidualBlock {
                conv1: bp.conv(&format!("{name}.conv1"), channels, out, k, stride, source)?,
                bn1: bp.batch_norm(&format!("{name}.bn1"), out, source)?,
                conv2: bp.conv(&format!("{name}.conv2"), out, out, k, 1, source)?,
                bn2: bp.batch_norm(&format!("{name}.bn2"), out, source)?,
                shortcut,
                name,
            }));
            channels = out;
        }
    }

    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: LinearInput::GlobalAvgPool,
        linear: bp.linear("classifier", channels, bp.num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}
