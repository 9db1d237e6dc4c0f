//! Checkpoints: safetensors files with the weights, the rule's fixed feedback, the optimiser
//! moments, and metadata (the resolved config, epoch, layer shapes and ranks) that is enough to
//! rebuild the model without the config file.
//!
//! Files are written to a temporary name in the same directory, synced, then renamed, so a
//! crash never leaves a truncated checkpoint under the final name.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layers::WeightSource;
use crate::models::Model;
use crate::optim::Adam;

/// Value of the `format` metadata key; a file without it was not written by this program.
pub const FORMAT: &str = "ssa-checkpoint-v1";

/// One SVD layer as recorded in the metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: String,
    /// Dense weight shape: `[out, in]` or `[F, C, k, k]`.
    pub shape: Vec<usize>,
    pub rank: usize,
    /// Rank of the layer before any truncation.
    pub full_rank: usize,
}

/// The metadata stored with the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub config: Config,
    /// Epochs completed when the checkpoint was written.
    pub epoch: usize,
    pub rule: String,
    pub arch: String,
    pub num_classes: usize,
    pub layers: Vec<LayerInfo>,
    /// Test top-1 measured at `epoch`, when it was evaluated.
    pub test_top1: Option<f64>,
    /// Adam's update count for each parameter.
    pub optimizer_steps: HashMap<String, usize>,
    /// Steps the learning rule has taken.
    #[serde(default)]
    pub rule_steps: usize,
    /// Best test top-1 of the run so far.
    #[serde(default)]
    pub best_test_top1: Option<f64>,
    /// Progress through an unfinished epoch, for a checkpoint written on interruption.
    #[serde(default)]
    pub progress: Option<EpochProgress>,
    /// Absolute path of the dataset directory that training read, so that `ssa eval` finds the
    /// data from any working directory.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

/// Running sums of an epoch that was interrupted, so that resuming reproduces its metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// The epoch in progress, counted from 0.
    pub epoch: usize,
    /// Steps of that epoch already taken.
    pub steps: usize,
    pub images: usize,
    pub seconds: f64,
    pub loss_sum: f32,
    pub correct: f32,
    pub terms: [f32; 4],
}

/// A checkpoint read back from disk.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
}

/// Per-layer records of `model`.
pub fn layer_infos(model: &Model) -> Vec<LayerInfo> {
    model
        .layers()
        .iter()
        .map(|layer| LayerInfo {
            name: layer.name().to_string(),
            shape: layer.weight_shape().to_vec(),
            rank: layer.rank(),
            full_rank: layer.full_rank(),
        })
        .collect()
}

/// Writes `path` atomically with the model, the rule's tensors and the optimiser state.
pub fn save(
    path: &Path,
    meta: &CheckpointMeta,
    model: &Model,
    rule_tensors: Vec<(String, Tensor)>,
    optimizer: &Adam,
) -> Result<()> {
    let mut tensors = model.named_tensors();
    tensors.extend(rule_tensors);
    let mut names: Vec<&String> = optimizer.state.keys().collect();
    names.sort();
    for name in names {
        let state = &optimizer.state[name];
        tensors.push((format!("optim.{name}.m"), state.m.clone()));
        tensors.push((format!("optim.{name}.v"), state.v.clone()));
    }

    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    let json = serde_json::to_string(meta).expect("checkpoint metadata serialises to JSON");
    metadata.insert("ssa".to_string(), json);

    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise tensors: {e}")))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(parent) = path.parent() {
            // Syncing the directory makes the rename itself durable.
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::io(path, e)
    })
}

/// Reads a checkpoint written by [`save`], with its tensors on `device`.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let not_ours = |detail: String| {
        Error::checkpoint(
            path,
            format!("{detail}; pass a file written by `ssa train` (<run>/checkpoints/last.safetensors)"),
        )
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| not_ours(format!("not a safetensors file ({e})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(not_ours(format!(
            "metadata key `format` is missing or not \"{FORMAT}\""
        )));
    }
    let json = metadata
        .get("ssa")
        .ok_or_else(|| not_ours("metadata key `ssa` is missing".into()))?;
    let meta: CheckpointMeta = serde_json::from_str(json)
        .map_err(|e| not_ours(format!("metadata key `ssa` is invalid ({e})")))?;
    meta.config
        .validate()
        .map_err(|e| Error::checkpoint(path, format!("stored config is invalid: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| not_ours(format!("tensors cannot be read ({e})")))?;
    Ok(Checkpoint {
        path: path.to_path_buf(),
        meta,
        tensors,
    })
}

impl Checkpoint {
    /// Rebuilds the model from the stored config and tensors.
    pub fn build_model(&self, device: &Device) -> Result<Model> {
        let mut source = WeightSource::Load {
            tensors: self.tensors.clone(),
            path: self.path.clone(),
            device: device.clone(),
        };
        let model = Model::build(&self.meta.config, &mut source)?;
        if model.num_classes != self.meta.num_classes {
            return Err(Error::checkpoint(&self.path, "the class count in the metadata does not match its dataset: the file is corrupt"));
        }
        let stored = &self.meta.layers;
        let built = layer_infos(&model);
        if stored.len() != built.len() || stored.iter().zip(&built).any(|(a, b)| a.shape != b.shape) {
            return Err(Error::checkpoint(
                &self.path,
                "layer shapes in the metadata do not match the rebuilt model: the file is corrupt",
            ));
        }
        Ok(model)
    }
}
