//! Projection onto the tangent space of the Stiefel manifold.

use candle_core::Tensor;

use crate::error::Result;

/// Projects `grad` onto the tangent space of the Stiefel manifold at `u`:
/// `G − U sym(UᵀG)` with `sym(A) = (A + Aᵀ)/2`. Both are `[n, r]`.
pub fn project_tangent(u: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let a = u.t()?.matmul(grad)?;
    let sym = ((&a + a.t()?)? * 0.5)?;
    Ok((grad - u.matmul(&sym)?)?)
}
