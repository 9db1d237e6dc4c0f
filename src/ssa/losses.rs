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
