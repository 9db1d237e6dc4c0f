//! `ssa summary`: the per-layer table of a model, to size a run before starting it.

use candle_core::Device;

use crate::accounting::{model_cost, ModelCost};
use crate::config::Config;
use crate::error::Result;
use crate::layers::WeightSource;
use crate::models::Model;
use crate::ssa::rank::RankBounds;

/// Builds the model of `config` with zero weights (no SVD is computed) and measures it.
pub fn summarize(config: &Config) -> Result<ModelCost> {
    let mut source = WeightSource::Shapes { device: Device::Cpu };
    let model = Model::build(config, &mut source)?;
    Ok(model_cost(&model))
}

/// Renders `cost` as an aligned table; with `min_fraction`, adds the rank at the end of the
/// linear phase of the hybrid schedule.
pub fn cost_table(cost: &ModelCost, min_fraction: Option<f64>) -> String {
    let mut out = format!(
        "{:<22} {:<6} {:<16} {:>6} {:>6} {:>11} {:>11} {:>9} {:>9}\n",
        "layer", "type", "shape", "rank", "target", "params", "dense", "MFLOPs", "dense"
    );
    for layer in &cost.layers {
        let shape: Vec<String> = layer.shape.iter().map(|d| d.to_string()).collect();
        let target = match min_fraction {
            Some(fraction) => {
                let (rows, cols) = matrix_view(&layer.shape);
                RankBounds::new(rows, cols, fraction).linear_target().to_string()
            }
            None => "-".into(),
        };
        out.push_str(&format!(
            "{:<22} {:<6} {:<16} {:>6} {:>6} {:>11} {:>11} {:>9.2} {:>9.2}\n",
            layer.name,
            layer.kind,
            shape.join("×"),
            layer.rank,
            target,
            layer.params,
            layer.dense_params,
            2.0 * layer.macs as f64 / 1e6,
            2.0 * layer.dense_macs as f64 / 1e6,
        ));
    }
    out.push_str(&format!(
        "total (BatchNorm included): {} params ({:.2}× dense {}), {:.2} MFLOPs per image ({:.2}× dense {:.2})\n",
        cost.params,
        cost.params as f64 / cost.dense_params.max(1) as f64,
        cost.dense_params,
        cost.mflops(),
        cost.mflops() / cost.dense_mflops().max(f64::MIN_POSITIVE),
        cost.dense_mflops(),
    ));
    out
}

/// Rows and columns of the matrix view of a weight shape: `[out, in]`, or `(C·k, F·k)` for
/// `[F, C, k, k]`.
fn matrix_view(shape: &[usize]) -> (usize, usize) {
    match shape {
        [f, c, k, _] => (c * k, f * k),
        [out, inp] => (*out, *inp),
        _ => (1, 1),
    }
}
