//! The factors `U diag(s) Vᵀ` of one SVD layer, with its fixed feedback factors.

use candle_core::{Tensor, Var};

use super::param::{FactorTensors, Param, ParamGroup};
use crate::error::Result;

/// Trainable factors of a `rows × cols` matrix view and the alignment targets U_B, V_B.
#[derive(Debug, Clone)]
pub struct SvdFactors {
    /// Layer name; the factors are stored as `<name>.u`, `<name>.s`, `<name>.v`.
    pub name: String,
    /// Shape of the dense weight: `[out, in]` for a linear layer, `[F, C, k, k]` for a
    /// convolution.
    pub weight_shape: Vec<usize>,
    /// `[rows, r]`.
    pub u: Var,
    /// `[r]`.
    pub s: Var,
    /// `[cols, r]`.
    pub v: Var,
    /// Left factor of the feedback matrix B, `[rows, r]`, fixed.
    pub u_b: Tensor,
    /// Right factor of the feedback matrix B, `[cols, r]`, fixed.
    pub v_b: Tensor,
}

impl SvdFactors {
    /// Wraps freshly drawn or loaded tensors.
    pub fn new(name: &str, weight_shape: Vec<usize>, tensors: FactorTensors) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            weight_shape,
            u: Var::from_tensor(&tensors.u)?,
            s: Var::from_tensor(&tensors.s)?,
            v: Var::from_tensor(&tensors.v)?,
            u_b: tensors.u_b,
            v_b: tensors.v_b,
        })
    }

    /// Current rank r.
    pub fn rank(&self) -> usize {
        self.s.dims()[0]
    }

    /// Rows of the matrix view.
    pub fn rows(&self) -> usize {
        self.u.dims()[0]
    }

    /// Columns of the matrix view.
    pub fn cols(&self) -> usize {
        self.v.dims()[0]
    }

    /// The trainable parameters: U and V in the factor group, s in the weight group.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param {
                name: format!("{}.u", self.name),
                var: self.u.clone(),
                group: ParamGroup::Factor,
            },
            Param {
                name: format!("{}.s", self.name),
                var: self.s.clone(),
                group: ParamGroup::Weight,
            },
            Param {
                name: format!("{}.v", self.name),
                var: self.v.clone(),
                group: ParamGroup::Factor,
            },
        ]
    }

    /// Every tensor to save, with its checkpoint name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            (format!("{}.u", self.name), self.u.as_tensor().clone()),
            (format!("{}.s", self.name), self.s.as_tensor().clone()),
            (format!("{}.v", self.name), self.v.as_tensor().clone()),
            (format!("{}.u_b", self.name), self.u_b.clone()),
            (format!("{}.v_b", self.name), self.v_b.clone()),
        ]
    }

    /// The dense matrix view `U diag(s) Vᵀ`, `[rows, cols]`.
    pub fn dense(&self) -> Result<Tensor> {
        let us = self.u.broadcast_mul(&self.s.unsqueeze(0)?)?;
        Ok(us.matmul(&self.v.t()?)?)
    }
}
