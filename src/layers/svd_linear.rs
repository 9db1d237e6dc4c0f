//! A linear layer in SVD form: `a = U (s ⊙ (Vᵀ x)) + b`, never forming W.

use candle_core::{Tensor, Var};

use super::dense::linear;
use super::ops::product;
use super::param::{Param, ParamGroup, WeightSource};
use super::pass::Pass;
use super::svd_factors::{Geometry, SvdFactors};
use crate::error::Result;

/// Linear layer `W = U diag(s) Vᵀ` with `W ∈ R^{out×in}`, costing `r(in + out)` multiply-adds
/// per sample.
#[derive(Debug, Clone)]
pub struct SvdLinear {
    pub factors: SvdFactors,
    /// `[out_features]`.
    pub bias: Var,
    pub in_features: usize,
    pub out_features: usize,
}

impl SvdLinear {
    /// Builds the layer `name` from `source`.
    pub fn new(name: &str, in_features: usize, out_features: usize, source: &mut WeightSource) -> Result<Self> {
        let tensors = source.svd_factors(name, out_features, in_features, in_features)?;
        let bias = source.bias(&format!("{name}.bias"), out_features, in_features)?;
        let factors = SvdFactors::new(name, vec![out_features, in_features], tensors)?;
        let _ = factors.geometry.set(Geometry {
            macs_per_rank: in_features + out_features,
            dense_macs: in_features * out_features,
        });
        Ok(Self {
            factors,
            bias: Var::from_tensor(&bias)?,
            in_features,
            out_features,
        })
    }

    /// Maps `[N, in]` to `[N, out]`.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let f = &self.factors;
        // Scaling V's columns by s costs r·in, scaling the activations would cost N·r.
        let vs = f.v.broadcast_mul(&f.s.unsqueeze(0)?)?;
        let hidden = product(x, &vs)?;
        let mut y = product(&hidden, &f.u.t()?)?;
        if let Some(z) = pass.probe_for(&f.name) {
            y = (y + linear(x, z.as_tensor())?)?;
        }
        Ok(y.broadcast_add(&self.bias)?)
    }

    /// Returns the trainable parameters.
    pub fn params(&self) -> Vec<Param> {
        let mut params = self.factors.params();
        params.push(Param {
            name: format!("{}.bias", self.factors.name),
            var: self.bias.clone(),
            group: ParamGroup::Other,
        });
        params
    }

    /// Returns every tensor to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.factors.named_tensors();
        tensors.push((format!("{}.bias", self.factors.name), self.bias.as_tensor().clone()));
        tensors
    }
}
