//! `ssa eval`: rebuild a model from a checkpoint alone and score it on the test set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::accounting::{model_cost, ModelCost};
use crate::summary::cost_table;
use crate::checkpoint;
use crate::data::{load_split, BatchLoader, DatasetKind, Normalization, Split};
use crate::device::open_device;
use crate::error::{Error, Result};
use crate::metrics::evaluate;

/// Options of `ssa eval`; `None` takes the value stored in the checkpoint's config.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub data_dir: Option<PathBuf>,
    pub limit: Option<usize>,
    pub batch_size: Option<usize>,
    pub device: Option<String>,
    /// Re-estimate BatchNorm statistics over this many training batches before evaluating.
    pub recalibrate_batches: usize,
}

/// Report printed by `ssa eval`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub checkpoint: PathBuf,
    pub arch: String,
    pub rule: String,
    pub dataset: String,
    pub epoch: usize,
    pub test_images: usize,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    /// Inference MFLOPs per image at the stored ranks, and of the dense model.
    pub mflops: f64,
    pub dense_mflops: f64,
    /// Parameters and multiply-adds, in total and per layer.
    #[serde(flatten)]
    pub cost: ModelCost,
}

/// Loads the checkpoint at `path` and evaluates it.
pub fn evaluate_checkpoint(path: &Path, options: &EvalOptions) -> Result<EvalReport> {
    let config_device = String::from("cpu");
    let device = open_device(options.device.as_ref().unwrap_or(&config_device))?;
    // A run directory stands for its last checkpoint, as with `ssa train --resume`.
    let path = if path.is_dir() { path.join("checkpoints").join("last.safetensors") } else { path.to_path_buf() };
    if !path.exists() {
        return Err(Error::checkpoint(&path, "not found: pass a checkpoint file, or a run directory that has checkpoints/last.safetensors"));
    }
    let checkpoint = checkpoint::load(&path, &device)?;
    let config = &checkpoint.meta.config;
    let model = checkpoint.build_model(&device)?;

    let kind = DatasetKind::from_name(&config.data.dataset)?;
    // The stored data.dir may be relative to where training ran: fall back to the absolute
    // path recorded at training time when it does not resolve from here.
    let stored = PathBuf::from(config.data_dir());
    let data_dir = match (&options.data_dir, &checkpoint.meta.data_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(absolute)) if !stored.exists() && absolute.exists() => absolute.clone(),
        (None, _) => stored,
    };
    let limit = options.limit.unwrap_or(config.data.test_limit);
    let test_set = load_split(kind, &data_dir, Split::Test, limit)?;
    let loader = BatchLoader {
        dataset: Arc::new(test_set),
        batch_size: options.batch_size.unwrap_or(config.train.batch_size),
        normalization: Normalization::for_dataset(kind),
        shuffle: false,
        augment: false,
        seed: config.experiment.seed,
    };
    if options.recalibrate_batches > 0 {
        let train_set = load_split(kind, &data_dir, Split::Train, config.data.train_limit)?;
        let train_loader = BatchLoader {
            dataset: Arc::new(train_set),
            shuffle: true,
            augment: config.data.augment,
            ..loader.clone()
        };
        let batches = train_loader.epoch(1_000_000).take(options.recalibrate_batches);
        crate::train::recalibrate_batch_norm(&model, batches, &device)?;
    }
    let result = evaluate(&model, &loader, &device)?;
    let cost = model_cost(&model);
    Ok(EvalReport {
        checkpoint: path.to_path_buf(),
        arch: checkpoint.meta.arch.clone(),
        rule: checkpoint.meta.rule.clone(),
        dataset: config.data.dataset.clone(),
        epoch: checkpoint.meta.epoch,
        test_images: result.images,
        test_loss: result.loss,
        test_top1: result.top1,
        test_top5: result.top5,
        mflops: cost.mflops(),
        dense_mflops: cost.dense_mflops(),
        cost,
    })
}

impl EvalReport {
    /// Renders the report as aligned text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("checkpoint  {}\n", self.checkpoint.display()));
        out.push_str(&format!(
            "model       {} trained with {} on {} for {} epoch{}\n",
            self.arch,
            self.rule,
            self.dataset,
            self.epoch,
            if self.epoch == 1 { "" } else { "s" }
        ));
        out.push_str(&format!("test images {}\n", self.test_images));
        out.push_str(&format!("test loss   {:.4}\n", self.test_loss));
        out.push_str(&format!("test top-1  {:.4}\n", self.test_top1));
        out.push_str(&format!("test top-5  {:.4}\n", self.test_top5));
        out.push_str(&cost_table(&self.cost, None));
        out
    }
}
