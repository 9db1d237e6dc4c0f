//! Direct Feedback Alignment (Nøkland 2016). Each hidden unit of a dense network learns from the
//! output error sent through a fixed random matrix, and the classifier from the cross-entropy.

use super::broadcast::{Broadcast, LocalLoss, Signal};
use crate::config::MethodConfig;
use crate::error::Result;
use crate::models::Model;

/// Builds the DFA rule for `model` (dense layers), with the same broadcast matrices as SSA.
pub fn new(config: &MethodConfig, seed: u64, model: &Model) -> Result<Broadcast> {
    Broadcast::new("dfa", Signal::Error, LocalLoss::signal_only(config), config, seed, model)
}
