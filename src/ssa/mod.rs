//! The parts of SVD-Space Alignment: broadcast feedback, local losses, Stiefel projection.

pub mod feedback;
pub mod losses;
pub mod rank;
pub mod stiefel;
