//! The project's seeded random numbers.
//!
//! Candle's CPU backend cannot be seeded, so every random draw (initialisation, feedback
//! matrices, shuffling, augmentation) comes from ChaCha8 generators derived from the
//! experiment seed. Each purpose has its own stream, so changing one (say, the number of
//! epochs) leaves the others' numbers unchanged.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;

/// The purpose of a generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Layer initialisation.
    Init = 1,
    /// Fixed feedback matrices D_l and B_l.
    Feedback = 2,
    /// Shuffling and augmentation; one sub-stream per epoch.
    Data = 3,
}

/// Returns the generator of `stream` and `index` (an epoch, a layer number) for `seed`.
pub fn stream_rng(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((stream as u64) << 48) | index);
    rng
}

/// Draws `len` values from N(0, 1).
pub fn normal_vec(rng: &mut impl Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| StandardNormal.sample(rng)).collect()
}

/// Draws `len` values uniformly from [-bound, bound).
pub fn uniform_vec(rng: &mut impl Rng, len: usize, bound: f32) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-bound..bound)).collect()
}

/// Draws a tensor of the given shape uniformly from [-bound, bound).
pub fn uniform_tensor(rng: &mut impl Rng, shape: &[usize], bound: f32, device: &Device) -> Result<Tensor> {
    let len = shape.iter().product();
    Ok(Tensor::from_vec(uniform_vec(rng, len, bound), shape, device)?)
}
