//! Per-epoch metrics and evaluation.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::loss::cross_entropy;

use crate::accounting::model_cost;
use crate::data::BatchLoader;
use crate::layers::{LayerRef, SvdFactors};
use crate::linalg::{largest_principal_angle_deg, Matrix};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::rules::{count_correct, LOSS_TERMS};

/// Columns of `metrics.csv` before the local-loss terms.
const COLUMNS: [&str; 13] = [
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
    "mflops",
    "dense_mflops",
    "peak_rss_mib",
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
    /// Inference MFLOPs per image at the current ranks, and of the dense model.
    pub mflops: f64,
    pub dense_mflops: f64,
    /// Peak resident memory of the process so far, in MiB.
    pub peak_rss_mib: Option<f64>,
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

    /// Reopens `path` for a resumed run, dropping rows of epochs after `completed` (written
    /// after the last checkpoint, so they will be written again).
    pub fn resume(path: &Path, completed: usize) -> Result<Self> {
        keep_rows_through(path, 0, completed)?;
        Self::open_append(path)
    }

    fn open_append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new().append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        })
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
            format!("{:.3}", row.mflops),
            format!("{:.3}", row.dense_mflops),
            optional(row.peak_rss_mib),
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

/// Columns of `layers.csv`: one row per weight layer at the end of every epoch, and one per
/// layer at every diagnostics measurement (those rows fill `grad_angle_deg`).
pub const LAYER_COLUMNS: [&str; 11] = [
    "epoch",
    "step",
    "layer",
    "rank",
    "full_rank",
    "params",
    "dense_params",
    "mflops",
    "orth_error",
    "subspace_angle_deg",
    "grad_angle_deg",
];

/// Column of `layers.csv` that a resumed run filters on: the optimiser step.
const LAYER_STEP_COLUMN: usize = 1;

/// Appends per-layer rows to `layers.csv`, flushing after each batch of rows.
pub struct LayerWriter {
    inner: MetricsWriter,
}

impl LayerWriter {
    /// Creates `path` with the header row.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut inner = MetricsWriter {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        };
        inner.write_line(&LAYER_COLUMNS.join(","))?;
        Ok(Self { inner })
    }

    /// Reopens `path` for a resumed run, dropping rows written after step `steps`.
    pub fn resume(path: &Path, steps: usize) -> Result<Self> {
        keep_rows_through(path, LAYER_STEP_COLUMN, steps)?;
        Ok(Self { inner: MetricsWriter::open_append(path)? })
    }

    /// Appends one row per weight layer of `model`, with the gradient angles when given (in
    /// network order, as [`crate::diagnostics::gradient_angles`] returns them).
    pub fn append(&mut self, epoch: usize, step: usize, model: &Model, angles: Option<&[(String, f64)]>) -> Result<()> {
        let cost = model_cost(model);
        for (index, (layer, info)) in cost.layers.iter().zip(model.layers()).enumerate() {
            let (orth, subspace) = match info {
                LayerRef::Svd(factors) => {
                    let u = Matrix::from_tensor(factors.u.as_tensor())?;
                    let u_b = Matrix::from_tensor(&factors.u_b)?;
                    (
                        format!("{:.6}", orthogonality_error(factors)?),
                        format!("{:.3}", largest_principal_angle_deg(&u, &u_b)?),
                    )
                }
                LayerRef::Dense { .. } => (String::new(), String::new()),
            };
            let angle = angles.and_then(|a| a.get(index)).map(|(_, a)| format!("{a:.3}")).unwrap_or_default();
            let line = format!(
                "{epoch},{step},{},{},{},{},{},{:.4},{orth},{subspace},{angle}",
                layer.name,
                layer.rank,
                layer.full_rank,
                layer.params,
                layer.dense_params,
                2.0 * layer.macs as f64 / 1e6,
            );
            writeln!(self.inner.file, "{line}").map_err(|e| Error::io(&self.inner.path, e))?;
        }
        self.inner.file.flush().map_err(|e| Error::io(&self.inner.path, e))
    }
}

/// Rewrites the CSV file at `path`, keeping the header and the rows whose field `column` is
/// at most `max`.
fn keep_rows_through(path: &Path, column: usize, max: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = String::new();
    for (index, line) in text.lines().enumerate() {
        let value = line.split(',').nth(column).and_then(|field| field.parse::<usize>().ok());
        if index == 0 || value.is_some_and(|v| v <= max) {
            rows.push_str(line);
            rows.push('\n');
        }
    }
    crate::checkpoint::write_atomically(path, rows.as_bytes())
}

/// Orthogonality error `sqrt(‖UᵀU − I‖² + ‖VᵀV − I‖²)` of one layer.
pub fn orthogonality_error(factors: &SvdFactors) -> Result<f64> {
    let rank = factors.rank();
    let identity = Tensor::eye(rank, DType::F32, factors.u.device())?;
    let mut total = 0.0;
    for x in [factors.u.as_tensor(), factors.v.as_tensor()] {
        let gram = x.t()?.matmul(x)?;
        total += (gram - &identity)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
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
