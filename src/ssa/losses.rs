//! The local loss terms of one SVD layer, besides the broadcast-error surrogate.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::layers::SvdFactors;

/// Form of the alignment loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alignment {
    /// `‖U − U_B‖² + ‖V − V_B‖²`.
    Factor,
    /// `‖UUᵀ − U_B U_Bᵀ‖² + ‖VVᵀ − V_B V_Bᵀ‖²`, blind to sign and rotation inside the subspace.
    Subspace,
}

impl Alignment {
    /// Parses the config name (`factor`, `subspace`).
    pub fn from_name(name: &str) -> Self {
        match name {
            "subspace" => Alignment::Subspace,
            _ => Alignment::Factor,
        }
    }
}

/// Alignment loss between the layer's factors and its feedback factors.
pub fn alignment(f: &SvdFactors, form: Alignment) -> Result<Tensor> {
    let term = |x: &Tensor, target: &Tensor| -> Result<Tensor> {
        match form {
            Alignment::Factor => Ok((x - target)?.sqr()?.sum_all()?),
            Alignment::Subspace => {
                // ‖XXᵀ − TTᵀ‖² = ‖XᵀX‖² − 2‖TᵀX‖² + ‖TᵀT‖², with ‖TᵀT‖² = r since T has
                // orthonormal columns; this avoids forming the rows × rows projectors.
                let gram = x.t()?.matmul(x)?.sqr()?.sum_all()?;
                let cross = target.t()?.matmul(x)?.sqr()?.sum_all()?;
                let rank = x.dim(1)? as f64;
                Ok(((gram - (cross * 2.0)?)? + rank)?)
            }
        }
    };
    Ok((term(f.u.as_tensor(), &f.u_b)? + term(f.v.as_tensor(), &f.v_b)?)?)
}

/// Orthogonality loss `(‖UᵀU − I‖² + ‖VᵀV − I‖²) / r²`.
pub fn orthogonality(f: &SvdFactors) -> Result<Tensor> {
    let rank = f.rank();
    let identity = Tensor::eye(rank, DType::F32, f.u.device())?;
    let term = |x: &Tensor| -> Result<Tensor> {
        Ok((x.t()?.matmul(x)? - &identity)?.sqr()?.sum_all()?)
    };
    let total = (term(f.u.as_tensor())? + term(f.v.as_tensor())?)?;
    Ok((total / (rank * rank) as f64)?)
}

/// Hoyer sparsity `‖s‖₁ / ‖s‖₂` of the singular values.
pub fn hoyer(f: &SvdFactors) -> Result<Tensor> {
    let s = f.s.as_tensor();
    let l1 = s.abs()?.sum_all()?;
    let l2 = (s.sqr()?.sum_all()? + 1e-12)?.sqrt()?;
    Ok((l1 / l2)?)
}

/// Values and gradients of the alignment and orthogonality terms of one layer.
#[derive(Debug, Clone)]
pub struct FactorTerms {
    /// [`alignment`], or zero when the term is off.
    pub alignment: Tensor,
    /// [`orthogonality`].
    pub orthogonality: Tensor,
    /// Gradient of `beta · alignment + gamma · orthogonality` with respect to U, `[rows, r]`.
    pub grad_u: Tensor,
    /// The same with respect to V, `[cols, r]`.
    pub grad_v: Tensor,
}

/// Computes [`alignment`] (when `form` is given) and [`orthogonality`] with their gradients in
/// closed form. With `S = XᵀX` for a factor X and its target T:
///
/// - `∂‖S − I‖² / ∂X = 4 X (S − I)`;
/// - `∂‖X − T‖² / ∂X = 2 (X − T)` (factor form);
/// - `∂(‖S‖² − 2‖TᵀX‖²) / ∂X = 4 X S − 4 T (TᵀX)` (subspace form).
///
/// Autograd spends three products of the factor's size per factor: the Gram matrix and its two
/// operand gradients. This spends two (S, then X times one r×r matrix), plus two for the
/// subspace form.
pub fn factor_terms(f: &SvdFactors, form: Option<Alignment>, beta: f64, gamma: f64) -> Result<FactorTerms> {
    let rank = f.rank();
    let identity = Tensor::eye(rank, DType::F32, f.u.device())?;
    let orth_scale = 4.0 * gamma / (rank * rank) as f64;
    let term = |x: &Tensor, target: &Tensor| -> Result<(Tensor, Tensor, Tensor)> {
        let gram = x.t()?.matmul(x)?;
        let off = (&gram - &identity)?;
        let orth = off.sqr()?.sum_all()?;
        let (align, grad) = match form {
            None => (Tensor::zeros((), DType::F32, x.device())?, x.matmul(&(off * orth_scale)?)?),
            Some(Alignment::Factor) => {
                let diff = (x - target)?;
                let grad = (x.matmul(&(off * orth_scale)?)? + (&diff * (2.0 * beta))?)?;
                (diff.sqr()?.sum_all()?, grad)
            }
            Some(Alignment::Subspace) => {
                let cross = target.t()?.matmul(x)?;
                let value = ((gram.sqr()?.sum_all()? - (cross.sqr()?.sum_all()? * 2.0)?)? + rank as f64)?;
                let inner = ((off * orth_scale)? + (gram * (4.0 * beta))?)?;
                let grad = (x.matmul(&inner)? - (target.matmul(&cross)? * (4.0 * beta))?)?;
                (value, grad)
            }
        };
        Ok((align, orth, grad))
    };
    let (align_u, orth_u, grad_u) = term(&f.u.as_tensor().detach(), &f.u_b)?;
    let (align_v, orth_v, grad_v) = term(&f.v.as_tensor().detach(), &f.v_b)?;
    Ok(FactorTerms {
        alignment: (align_u + align_v)?,
        orthogonality: ((orth_u + orth_v)? / (rank * rank) as f64)?,
        grad_u,
        grad_v,
    })
}
