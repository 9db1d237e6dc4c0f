//! CIFAR ResNets (He et al. 2016, section 4.2): a 3×3 stem with 16 channels, three stages of
//! basic blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2),
//! global average pooling and a linear classifier. ResNet-32 has five blocks per stage.

use super::units::{ConvUnit, LinearInput, LinearUnit, ResidualBlock, Shortcut};
use super::{scaled, Unit, INPUT_CHANNELS};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::{BatchNorm, SvdConv2d, SvdLinear, WeightSource};

const STAGE_CHANNELS: [usize; 3] = [16, 32, 64];

fn batch_norm(config: &ModelConfig, name: &str, channels: usize, source: &mut WeightSource) -> Result<Option<BatchNorm>> {
    if config.batch_norm {
        Ok(Some(BatchNorm::new(name, channels, source)?))
    } else {
        Ok(None)
    }
}

/// Builds a CIFAR ResNet with `blocks` basic blocks per stage (depth `6·blocks + 2`).
pub fn build(config: &ModelConfig, blocks: usize, num_classes: usize, source: &mut WeightSource) -> Result<Vec<Box<dyn Unit>>> {
    let k = config.kernel_size;
    let mut units: Vec<Box<dyn Unit>> = Vec::new();
    let stem_channels = scaled(STAGE_CHANNELS[0], config.width);
    units.push(Box::new(ConvUnit {
        name: "stem".into(),
        conv: SvdConv2d::new("stem", INPUT_CHANNELS, stem_channels, k, 1, source)?,
        bn: batch_norm(config, "stem.bn", stem_channels, source)?,
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
                    conv: SvdConv2d::new(&conv_name, channels, out, 1, stride, source)?,
                    bn: batch_norm(config, &format!("{conv_name}.bn"), out, source)?,
                }
            };
            units.push(Box::new(ResidualBlock {
                conv1: SvdConv2d::new(&format!("{name}.conv1"), channels, out, k, stride, source)?,
                bn1: batch_norm(config, &format!("{name}.bn1"), out, source)?,
                conv2: SvdConv2d::new(&format!("{name}.conv2"), out, out, k, 1, source)?,
                bn2: batch_norm(config, &format!("{name}.bn2"), out, source)?,
                shortcut,
                name,
            }));
            channels = out;
        }
    }

    units.push(Box::new(LinearUnit {
        name: "classifier".into(),
        input: LinearInput::GlobalAvgPool,
        linear: SvdLinear::new("classifier", channels, num_classes, source)?,
        relu: false,
    }));
    Ok(units)
}
