//! Adam with moment tensors that checkpoints can save and rank truncation can slice.
//!
//! Candle's `AdamW` keeps its moments private; this one stores them by parameter name.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::config::TrainConfig;
use crate::error::Result;
use crate::layers::{Param, ParamGroup};

/// First and second moments of one parameter and its number of updates.
#[derive(Debug, Clone)]
pub struct AdamState {
    pub m: Tensor,
    pub v: Tensor,
    pub step: usize,
}

/// Adam (Kingma and Ba 2015) with decoupled weight decay on the `Weight` group.
#[derive(Debug, Clone)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Moments by parameter name.
    pub state: HashMap<String, AdamState>,
}

impl Adam {
    /// Reads the hyper-parameters from the `[train]` section.
    pub fn from_config(config: &TrainConfig) -> Self {
        Self {
            beta1: config.adam_beta1,
            beta2: config.adam_beta2,
            eps: config.adam_eps,
            weight_decay: config.weight_decay,
            state: HashMap::new(),
        }
    }

    /// Restores the moments saved as `optim.<name>.m` and `optim.<name>.v`, with their step counts.
    pub fn load_state(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        steps: &HashMap<String, usize>,
    ) -> std::result::Result<(), String> {
        for (name, step) in steps {
            let get = |suffix: &str| {
                tensors
                    .get(&format!("optim.{name}.{suffix}"))
                    .cloned()
                    .ok_or_else(|| format!("tensor `optim.{name}.{suffix}` is missing"))
            };
            let state = AdamState { m: get("m")?, v: get("v")?, step: *step };
            self.state.insert(name.clone(), state);
        }
        Ok(())
    }

    /// Applies one update with gradient `grad` and learning rate `lr` to `param`.
    pub fn step(&mut self, param: &Param, grad: &Tensor, lr: f64) -> Result<()> {
        let (b1, b2) = (self.beta1, self.beta2);
        // Detached copies keep the moments from chaining one step's graph to the next.
        let grad = grad.detach();
        let value = param.var.as_tensor().detach();
        let state = match self.state.remove(&param.name) {
            Some(state) => state,
            None => AdamState {
                m: value.zeros_like()?,
                v: value.zeros_like()?,
                step: 0,
            },
        };
        let m = ((state.m * b1)? + (&grad * (1.0 - b1))?)?;
        let v = ((state.v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
        let step = state.step + 1;

        let m_hat_scale = 1.0 / (1.0 - b1.powi(step as i32));
        let v_hat_scale = 1.0 / (1.0 - b2.powi(step as i32));
        let denominator = ((&v * v_hat_scale)?.sqrt()? + self.eps)?;
        let update = ((&m * m_hat_scale)? / denominator)?;
        let mut next = (&value - (update * lr)?)?;
        if param.group == ParamGroup::Weight && self.weight_decay > 0.0 {
            next = (next - (&value * (lr * self.weight_decay))?)?;
        }
        param.var.set(&next)?;
        self.state.insert(param.name.clone(), AdamState { m, v, step });
        Ok(())
    }
}

/// Learning rates of one step.
#[derive(Debug, Clone, Copy)]
pub struct StepLr {
    /// Rate of s, biases, BatchNorm and dense weights.
    pub lr: f64,
    /// Rate of the SVD factors U and V, before rank scaling.
    pub lr_factors: f64,
    /// Divide the factors' rate by √r.
    pub rank_scaling: bool,
}

impl StepLr {
    /// Returns the configured rates multiplied by `multiplier` (the schedule's value at this step).
    pub fn from_config(config: &TrainConfig, multiplier: f64) -> Self {
        Self {
            lr: config.lr * multiplier,
            lr_factors: config.lr_factors * multiplier,
            rank_scaling: config.lr_factors_rank_scaling,
        }
    }

    /// Learning rate of `param`; a factor's rank r is its number of columns.
    pub fn for_param(&self, param: &Param) -> f64 {
        match param.group {
            ParamGroup::Factor if self.rank_scaling => {
                let rank = param.var.dims().last().copied().unwrap_or(1).max(1);
                self.lr_factors / (rank as f64).sqrt()
            }
            ParamGroup::Factor => self.lr_factors,
            ParamGroup::Weight | ParamGroup::Other => self.lr,
        }
    }
}

/// Multiplier of the learning rates at `epoch` (from 0) and step `step_in_epoch` of
/// `steps_per_epoch`, for the schedule named in the config.
pub fn lr_multiplier(config: &TrainConfig, epoch: usize, step_in_epoch: usize, steps_per_epoch: usize) -> f64 {
    match config.lr_schedule.as_str() {
        "cosine" => {
            let total = (config.epochs * steps_per_epoch).max(1) as f64;
            let done = (epoch * steps_per_epoch + step_in_epoch) as f64;
            0.5 * (1.0 + (std::f64::consts::PI * done / total).cos())
        }
        "step" => config.lr_gamma.powi((epoch / config.lr_step_epochs) as i32),
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn first_step_moves_by_lr() {
        // With bias correction, the first Adam step is lr · sign(g) for |g| ≫ eps.
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let param = Param { name: "w".into(), var: var.clone(), group: ParamGroup::Other };
        let grad = Tensor::new(&[0.5f32, -3.0], &Device::Cpu).unwrap();
        let mut adam = Adam::from_config(&TrainConfig::default());
        adam.step(&param, &grad, 0.1).unwrap();
        let value = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((value[0] - 0.9).abs() < 1e-5, "{value:?}");
        assert!((value[1] + 1.9).abs() < 1e-5, "{value:?}");
        assert_eq!(adam.state["w"].step, 1);
    }

    #[test]
    fn cosine_schedule_ends_near_zero() {
        let config = TrainConfig { epochs: 2, lr_schedule: "cosine".into(), ..TrainConfig::default() };
        assert!((lr_multiplier(&config, 0, 0, 10) - 1.0).abs() < 1e-12);
        assert!((lr_multiplier(&config, 1, 0, 10) - 0.5).abs() < 1e-12);
        assert!(lr_multiplier(&config, 1, 9, 10) < 0.01);
    }
}
