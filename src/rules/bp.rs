//! Backpropagation through a dense network: the reference every rule is compared with.

use super::end_to_end::{EndToEnd, FactorTerms, Transposes};
use crate::models::Model;

/// Builds the BP rule.
pub fn new(_model: &Model) -> EndToEnd {
    EndToEnd::new("bp", Box::new(Transposes), FactorTerms::default())
}
