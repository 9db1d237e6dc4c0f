//! Fixed random matrices that broadcast the output error to every hidden unit (Direct
//! Feedback Alignment).

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::error::Result;
use crate::rng::normal_vec;

/// Draws `Dᵀ ∈ R^{classes × outputs}` for a unit with `outputs` elements per sample: N(0, 1)
/// entries, each column of D (each row of Dᵀ) scaled to unit norm, then by `scale`.
///
/// The broadcast signal of error `e ∈ R^{N×classes}` is `e Dᵀ`, reshaped to the unit output.
pub fn broadcast_matrix(rng: &mut impl Rng, classes: usize, outputs: usize, scale: f64, device: &Device) -> Result<Tensor> {
    let mut data = normal_vec(rng, classes * outputs);
    for row in data.chunks_mut(outputs) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        let factor = scale as f32 / norm.max(f32::MIN_POSITIVE);
        row.iter_mut().for_each(|x| *x *= factor);
    }
    Ok(Tensor::from_vec(data, (classes, outputs), device)?)
}
