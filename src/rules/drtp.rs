//! Direct Random Target Projection (Frenkel et al. 2021): as DFA, but the hidden units receive
//! the one-hot target instead of the error, so no unit waits for the output.

use super::broadcast::{Broadcast, LocalLoss, Signal};
use crate::config::MethodConfig;
use crate::error::Result;
use crate::models::Model;

/// Builds the DRTP rule for `model` (dense layers).
pub fn new(config: &MethodConfig, seed: u64, model: &Model) -> Result<Broadcast> {
    Broadcast::new("drtp", Signal::Target, LocalLoss::signal_only(config), config, seed, model)
}
