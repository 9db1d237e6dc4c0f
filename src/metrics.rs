//! Per-epoch metrics and evaluation.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::loss::cross_entropy;

use crate::data::BatchLoader;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::rules::{count_correct, LOSS_TERMS};

/// Columns of `metrics.csv` before the local-loss terms.
const COLUMNS: [&str; 10] = [
    "epoch",
    "train_loss",
    "train_top1",
    "test_loss",
    "test_top1",
    "test_top5",
    "lr",
    "seconds",
    "images_per_sec",
    "params",
];

/// Test-set figures of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
}

/// One row of `metrics.csv`; accuracies are fractions in [0, 1].
#[derive(Debug, Clone)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_top1: f64,
    pub test: Option<EvalResult>,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
    pub params: usize,
    /// Mean per step of each local-loss term summed over layers.
    pub loss_terms: [f64; 4],
}

/// Appends rows to `metrics.csv`, flushing after each one.
pub struct MetricsWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl MetricsWriter {
    /// Creates `path` with the header row.
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut writer = Self {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        };
        let header: Vec<&str> = COLUMNS.iter().chain(LOSS_TERMS.iter()).copied().collect();
        writer.write_line(&header.join(","))?;
        Ok(writer)
    }

    /// Appends one epoch.
    pub fn append(&mut self, row: &EpochMetrics) -> Result<()> {
        let optional = |value: Option<f64>| value.map(|v| format!("{v:.6}")).unwrap_or_default();
        let mut fields = vec![
            row.epoch.to_string(),
            format!("{:.6}", row.train_loss),
            format!("{:.6}", row.train_top1),
            optional(row.test.map(|t| t.loss)),
            optional(row.test.map(|t| t.top1)),
            optional(row.test.map(|t| t.top5)),
            format!("{:e}", row.lr),
            format!("{:.3}", row.seconds),
            format!("{:.2}", row.images_per_sec),
            row.params.to_string(),
        ];
        fields.extend(row.loss_terms.iter().map(|v| format!("{v:.6e}")));
        self.write_line(&fields.join(","))
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Counts the rows whose label is among the five largest logits, as an f32 scalar tensor.
fn count_top5(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let true_logit = logits.gather(&labels.unsqueeze(1)?, 1)?;
    let larger = logits.broadcast_gt(&true_logit)?.to_dtype(DType::F32)?.sum(1)?;
    Ok(larger.lt(5f64)?.to_dtype(DType::F32)?.sum_all()?)
}

/// Evaluates `model` (BatchNorm in inference mode) on every batch of `loader`.
pub fn evaluate(model: &Model, loader: &BatchLoader, device: &Device) -> Result<EvalResult> {
    let zero = Tensor::zeros((), DType::F32, device)?;
    let (mut loss, mut top1, mut top5) = (zero.clone(), zero.clone(), zero);
    let mut images = 0;
    for host in loader.epoch(0) {
        let batch = host.to_device(device)?;
        let n = host.labels.len();
        let logits = model.forward(&batch.images, false)?.detach();
        loss = (loss + (cross_entropy(&logits, &batch.labels)? * n as f64)?)?;
        top1 = (top1 + count_correct(&logits, &batch.labels)?)?;
        top5 = (top5 + count_top5(&logits, &batch.labels)?)?;
        images += n;
    }
    let denominator = images.max(1) as f64;
    Ok(EvalResult {
        loss: loss.to_scalar::<f32>()? as f64 / denominator,
        top1: top1.to_scalar::<f32>()? as f64 / denominator,
        top5: top5.to_scalar::<f32>()? as f64 / denominator,
        images,
    })
}
