//! SVD-Space Alignment: the broadcast error plus the alignment, orthogonality and Hoyer terms
//! of every SVD layer, with Stiefel tangent projection of U and V.

use super::broadcast::{Broadcast, LocalLoss, Signal};
use crate::config::MethodConfig;
use crate::error::Result;
use crate::models::Model;

/// Builds the SSA rule for `model` (SVD layers).
pub fn new(config: &MethodConfig, seed: u64, model: &Model) -> Result<Broadcast> {
    Broadcast::new("ssa", Signal::Error, LocalLoss::from_config(config), config, seed, model)
}
