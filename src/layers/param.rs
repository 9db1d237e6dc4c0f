//! Trainable parameters with names and optimiser groups, and where their initial values come
//! from (a seeded initialiser or a checkpoint).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::linalg::{thin_svd, Matrix};
use crate::rng::{normal_vec, stream_rng, uniform_vec, Stream};

/// Optimiser group of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamGroup {
    /// U and V of an SVD layer: own learning rate, Stiefel tangent projection, no decay.
    Factor,
    /// Singular values and dense weights: main learning rate, weight decay.
    Weight,
    /// Biases and BatchNorm: main learning rate, no decay.
    Other,
}

/// A named trainable tensor.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub group: ParamGroup,
}

/// Origin of a layer's tensors when the model is built.
pub enum WeightSource {
    /// Fresh weights from the seeded generators.
    Init {
        init: ChaCha8Rng,
        feedback: ChaCha8Rng,
        device: Device,
    },
    /// Zero tensors of the full-rank shapes, for sizing a model without initialising it.
    Shapes { device: Device },
    /// Tensors read from a checkpoint, by name.
    Load {
        tensors: HashMap<String, Tensor>,
        path: std::path::PathBuf,
        device: Device,
    },
}

/// Tensors of one SVD layer: `W = U diag(s) Vᵀ`, with the feedback factors U_B and V_B.
pub struct FactorTensors {
    pub u: Tensor,
    pub s: Tensor,
    pub v: Tensor,
    pub u_b: Tensor,
    pub v_b: Tensor,
}

impl WeightSource {
    /// Creates a source of fresh weights seeded by `seed`.
    pub fn init(seed: u64, device: &Device) -> Self {
        WeightSource::Init {
            init: stream_rng(seed, Stream::Init, 0),
            feedback: stream_rng(seed, Stream::Feedback, 0),
            device: device.clone(),
        }
    }

    /// Returns the device that tensors are placed on.
    pub fn device(&self) -> &Device {
        match self {
            WeightSource::Init { device, .. }
            | WeightSource::Shapes { device }
            | WeightSource::Load { device, .. } => device,
        }
    }

    /// Returns the factors of a `rows × cols` matrix view, initialised from the SVD of a dense matrix
    /// drawn uniformly from ±1/√fan_in (PyTorch's default `kaiming_uniform` with a = √5).
    ///
    /// The feedback factors come from the SVD of a N(0, 1) matrix with unit-norm columns.
    pub fn svd_factors(&mut self, name: &str, rows: usize, cols: usize, fan_in: usize) -> Result<FactorTensors> {
        match self {
            WeightSource::Init { init, feedback, device } => {
                let bound = 1.0 / (fan_in as f32).sqrt();
                let dense = Matrix::new(rows, cols, uniform_vec(init, rows * cols, bound));
                let svd = thin_svd(&dense)?;
                let mut b = Matrix::new(rows, cols, normal_vec(feedback, rows * cols));
                b.normalize_columns();
                let target = thin_svd(&b)?;
                let rank = svd.s.len();
                Ok(FactorTensors {
                    u: svd.u.to_tensor(device)?,
                    s: Tensor::from_vec(svd.s, rank, device)?,
                    v: svd.v.to_tensor(device)?,
                    u_b: target.u.to_tensor(device)?,
                    v_b: target.v.to_tensor(device)?,
                })
            }
            WeightSource::Shapes { device } => {
                let rank = rows.min(cols);
                let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, device);
                Ok(FactorTensors {
                    u: zeros(&[rows, rank])?,
                    s: zeros(&[rank])?,
                    v: zeros(&[cols, rank])?,
                    u_b: zeros(&[rows, rank])?,
                    v_b: zeros(&[cols, rank])?,
                })
            }
            WeightSource::Load { .. } => {
                let u = self.take(&format!("{name}.u"))?;
                let rank = u.dims().get(1).copied().unwrap_or(0);
                let factors = FactorTensors {
                    s: self.take_shaped(&format!("{name}.s"), &[rank])?,
                    v: self.take_shaped(&format!("{name}.v"), &[cols, rank])?,
                    u_b: self.take_shaped(&format!("{name}.u_b"), &[rows, rank])?,
                    v_b: self.take_shaped(&format!("{name}.v_b"), &[cols, rank])?,
                    u,
                };
                self.check_shape(&format!("{name}.u"), &factors.u, &[rows, rank])?;
                if rank == 0 || rank > rows.min(cols) {
                    return Err(self.error(format!(
                        "tensor `{name}.u` has rank {rank}, expected 1 to {}",
                        rows.min(cols)
                    )));
                }
                Ok(factors)
            }
        }
    }

    /// Returns a dense weight of `shape`, drawn uniformly from ±1/√fan_in.
    pub fn dense_weight(&mut self, name: &str, shape: &[usize], fan_in: usize) -> Result<Tensor> {
        let len = shape.iter().product();
        match self {
            WeightSource::Init { init, device, .. } => {
                let bound = 1.0 / (fan_in as f32).sqrt();
                Ok(Tensor::from_vec(uniform_vec(init, len, bound), shape, device)?)
            }
            WeightSource::Shapes { device } => Ok(Tensor::zeros(shape, DType::F32, device)?),
            WeightSource::Load { .. } => self.take_shaped(name, shape),
        }
    }

    /// Returns a bias of `len` entries, drawn uniformly from ±1/√fan_in.
    pub fn bias(&mut self, name: &str, len: usize, fan_in: usize) -> Result<Tensor> {
        match self {
            WeightSource::Init { init, device, .. } => {
                let bound = 1.0 / (fan_in as f32).sqrt();
                Ok(Tensor::from_vec(uniform_vec(init, len, bound), len, device)?)
            }
            WeightSource::Shapes { device } => Ok(Tensor::zeros(len, DType::F32, device)?),
            WeightSource::Load { .. } => self.take_shaped(name, &[len]),
        }
    }

    /// Returns a vector of `len` copies of `value` (BatchNorm scale, shift and running statistics).
    pub fn constant(&mut self, name: &str, len: usize, value: f32) -> Result<Tensor> {
        match self {
            WeightSource::Init { device, .. } | WeightSource::Shapes { device } => {
                Ok((Tensor::ones(len, DType::F32, device)? * value as f64)?)
            }
            WeightSource::Load { .. } => self.take_shaped(name, &[len]),
        }
    }

    fn take(&mut self, name: &str) -> Result<Tensor> {
        let WeightSource::Load { tensors, device, .. } = self else {
            unreachable!("take is only called on a checkpoint source")
        };
        let tensor = tensors.remove(name);
        let device = device.clone();
        match tensor {
            Some(t) => Ok(t.to_dtype(DType::F32)?.to_device(&device)?),
            None => Err(self.error(format!(
                "tensor `{name}` is missing: the checkpoint was written for another architecture \
                 or by an incompatible version"
            ))),
        }
    }

    fn take_shaped(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self.take(name)?;
        self.check_shape(name, &tensor, shape)?;
        Ok(tensor)
    }

    fn check_shape(&self, name: &str, tensor: &Tensor, shape: &[usize]) -> Result<()> {
        if tensor.dims() == shape {
            return Ok(());
        }
        Err(self.error(format!(
            "tensor `{name}` has shape {:?}, the model expects {shape:?}: the checkpoint belongs \
             to another architecture or class count",
            tensor.dims()
        )))
    }

    fn error(&self, message: String) -> Error {
        match self {
            WeightSource::Load { path, .. } => Error::checkpoint(path, message),
            WeightSource::Init { .. } | WeightSource::Shapes { .. } => Error::Config(message),
        }
    }
}
