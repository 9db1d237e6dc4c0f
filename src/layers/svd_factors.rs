//! The factors `U diag(s) Vᵀ` of one SVD layer, with its fixed feedback factors.

use std::sync::OnceLock;

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
    /// Inference cost per sample, known once the layer has seen an input.
    pub geometry: OnceLock<Geometry>,
}

/// Inference cost of one layer per sample, in multiply-adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    /// Multiply-adds per unit of rank: `m + n` for a linear layer, `k·C·H'·W + k·F·H'·W'` for a
    /// conv pair with input width W and output size H'×W'.
    pub macs_per_rank: usize,
    /// Multiply-adds of the dense layer: `m·n`, or `k²·C·F·H'·W'`.
    pub dense_macs: usize,
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
            geometry: OnceLock::new(),
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

    /// Trainable numbers at the current rank: `r·(rows + cols + 1)`.
    pub fn num_params(&self) -> usize {
        self.rank() * (self.rows() + self.cols() + 1)
    }

    /// Numbers of the dense weight.
    pub fn dense_params(&self) -> usize {
        self.weight_shape.iter().product()
    }

    /// Returns the trainable parameters: U and V in the factor group, s in the weight group.
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

    /// Returns every tensor to save, with its checkpoint name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            (format!("{}.u", self.name), self.u.as_tensor().clone()),
            (format!("{}.s", self.name), self.s.as_tensor().clone()),
            (format!("{}.v", self.name), self.v.as_tensor().clone()),
            (format!("{}.u_b", self.name), self.u_b.clone()),
            (format!("{}.v_b", self.name), self.v_b.clone()),
        ]
    }

    /// Computes the dense matrix view `U diag(s) Vᵀ`, `[rows, cols]`.
    pub fn dense(&self) -> Result<Tensor> {
        let us = self.u.broadcast_mul(&self.s.unsqueeze(0)?)?;
        Ok(us.matmul(&self.v.t()?)?)
    }
}
