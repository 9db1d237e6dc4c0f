//! Low-rank backpropagation (Yang et al. 2020): the SVD layers trained end to end on the
//! cross-entropy plus `gamma` times the orthogonality loss and `hoyer` times the Hoyer loss,
//! without feedback alignment. U and V get the Stiefel tangent projection when
//! `method.stiefel_projection` is on, as in SSA, so that the two SVD rules differ only in the
//! error signal.

use super::end_to_end::{EndToEnd, FactorTerms, Transposes};
use crate::config::MethodConfig;
use crate::models::Model;

/// Builds the SVD-BP rule.
pub fn new(config: &MethodConfig, _model: &Model) -> EndToEnd {
    let terms = FactorTerms {
        gamma: config.gamma,
        hoyer: config.hoyer,
        stiefel_projection: config.stiefel_projection,
        retract_every: config.retract_every,
    };
    EndToEnd::new("svd_bp", Box::new(Transposes), terms)
}
