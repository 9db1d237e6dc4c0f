//! The training loop: config → seed → data → model → rule and optimiser → for each epoch
//! { train, evaluate, log, checkpoint }.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{self, layer_infos, CheckpointMeta};
use crate::config::Config;
use crate::data::{load_split, BatchLoader, DatasetKind, Normalization, Split};
use crate::device::open_device;
use crate::error::{Error, Result};
use crate::layers::WeightSource;
use crate::metrics::{evaluate, EpochMetrics, EvalResult, MetricsWriter};
use crate::models::Model;
use crate::optim::{lr_multiplier, Adam, StepLr};
use crate::rules::{self, StepStats};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub epochs: Vec<EpochMetrics>,
    pub best_test_top1: Option<f64>,
}

/// Creates `<out_dir>/<name>-<timestamp>` (with a numeric suffix if it exists) and writes the
/// resolved config into it.
pub fn create_run_dir(config: &Config) -> Result<PathBuf> {
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
    let base = Path::new(&config.experiment.out_dir).join(format!("{}-{stamp}", config.experiment.name));
    let mut dir = base.clone();
    let mut suffix = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{suffix}", base.display()));
        suffix += 1;
    }
    std::fs::create_dir_all(dir.join("checkpoints")).map_err(|e| {
        Error::io(
            &dir,
            std::io::Error::new(
                e.kind(),
                format!("cannot create the run directory ({e}); set experiment.out_dir or --out to a writable directory"),
            ),
        )
    })?;
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config.to_toml_string()).map_err(|e| Error::io(&config_path, e))?;
    Ok(dir)
}

/// Running sums of one epoch's step statistics, on the device.
struct EpochTotals {
    stats: Option<StepStats>,
    images: usize,
    steps: usize,
}

impl EpochTotals {
    fn add(&mut self, step: StepStats, images: usize) -> Result<()> {
        self.stats = Some(match self.stats.take() {
            None => step,
            Some(total) => StepStats {
                loss_sum: (total.loss_sum + step.loss_sum)?,
                correct: (total.correct + step.correct)?,
                terms: [
                    (&total.terms[0] + &step.terms[0])?,
                    (&total.terms[1] + &step.terms[1])?,
                    (&total.terms[2] + &step.terms[2])?,
                    (&total.terms[3] + &step.terms[3])?,
                ],
            },
        });
        self.images += images;
        self.steps += 1;
        Ok(())
    }

    fn scalar(t: &Tensor) -> Result<f64> {
        Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64)
    }

    /// Mean loss and top-1 per image, and mean local-loss terms per step.
    fn means(&self) -> Result<(f64, f64, [f64; 4])> {
        let Some(stats) = &self.stats else {
            return Ok((f64::NAN, 0.0, [f64::NAN; 4]));
        };
        let images = self.images.max(1) as f64;
        let steps = self.steps.max(1) as f64;
        let mut terms = [0.0; 4];
        for (slot, term) in terms.iter_mut().zip(&stats.terms) {
            *slot = Self::scalar(term)? / steps;
        }
        Ok((Self::scalar(&stats.loss_sum)? / images, Self::scalar(&stats.correct)? / images, terms))
    }
}

fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
        .expect("progress template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    Some(bar)
}

/// Trains the model described by `config`, writing metrics, checkpoints and logs to `run_dir`.
pub fn train(config: &Config, run_dir: &Path) -> Result<TrainSummary> {
    let device = open_device(&config.train.device)?;
    let seed = config.experiment.seed;

    // Data.
    let kind = DatasetKind::from_name(&config.data.dataset)?;
    let data_dir = PathBuf::from(config.data_dir());
    let train_set = Arc::new(load_split(kind, &data_dir, Split::Train, config.data.train_limit)?);
    let test_set = Arc::new(load_split(kind, &data_dir, Split::Test, config.data.test_limit)?);
    let normalization = Normalization::for_dataset(kind);
    let train_loader = BatchLoader {
        dataset: train_set.clone(),
        batch_size: config.train.batch_size,
        normalization,
        shuffle: true,
        augment: config.data.augment,
        seed,
    };
    let test_loader = BatchLoader {
        dataset: test_set.clone(),
        shuffle: false,
        augment: false,
        ..train_loader.clone()
    };
    tracing::info!(
        "data: {} training and {} test images from {}",
        train_set.len(),
        test_set.len(),
        data_dir.display()
    );

    // Model, rule and optimiser.
    let started = Instant::now();
    let model = Model::build(&config.model, kind.num_classes(), &mut WeightSource::init(seed, &device))?;
    let mut rule = rules::build(config, &model)?;
    let mut optimizer = Adam::from_config(&config.train);
    tracing::info!(
        "model: {} with {} SVD layers, {} parameters, built in {:.1}s; rule {}",
        model.arch,
        model.svd_layers().len(),
        model.num_params(),
        started.elapsed().as_secs_f64(),
        rule.name()
    );

    let mut metrics = MetricsWriter::create(&run_dir.join("metrics.csv"))?;
    let mut summary = TrainSummary {
        run_dir: run_dir.to_path_buf(),
        epochs: Vec::new(),
        best_test_top1: None,
    };
    let steps_per_epoch = train_loader.num_batches();

    for epoch in 0..config.train.epochs {
        let last_epoch = epoch + 1 == config.train.epochs;

        // Train.
        let started = Instant::now();
        let mut totals = EpochTotals { stats: None, images: 0, steps: 0 };
        let bar = progress_bar(steps_per_epoch, epoch, config.train.epochs);
        let mut lr = config.train.lr;
        for (step, host) in train_loader.epoch(epoch).enumerate() {
            let batch = host.to_device(&device)?;
            let multiplier = lr_multiplier(&config.train, epoch, step, steps_per_epoch);
            let step_lr = StepLr::from_config(&config.train, multiplier);
            lr = step_lr.lr;
            let stats = rule.step(&model, &batch, &mut optimizer, step_lr)?;
            totals.add(stats, host.labels.len())?;
            if let Some(bar) = &bar {
                bar.inc(1);
                if step % 10 == 0 {
                    let (loss, top1, _) = totals.means()?;
                    let rate = totals.images as f64 / started.elapsed().as_secs_f64();
                    bar.set_message(format!("loss {loss:.4} top-1 {top1:.3} {rate:.0} img/s"));
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let seconds = started.elapsed().as_secs_f64();
        let (train_loss, train_top1, loss_terms) = totals.means()?;
        if !train_loss.is_finite() {
            return Err(Error::Diverged(format!(
                "epoch {}: mean training loss is {train_loss}; lower train.lr or train.lr_factors",
                epoch + 1
            )));
        }

        // Evaluate.
        let test: Option<EvalResult> = if last_epoch || (epoch + 1) % config.train.eval_every == 0 {
            Some(evaluate(&model, &test_loader, &device)?)
        } else {
            None
        };

        // Log.
        let row = EpochMetrics {
            epoch: epoch + 1,
            train_loss,
            train_top1,
            test,
            lr,
            seconds,
            images_per_sec: totals.images as f64 / seconds,
            params: model.num_params(),
            loss_terms,
        };
        metrics.append(&row)?;
        let ranks: Vec<String> = model.svd_layers().iter().map(|f| f.rank().to_string()).collect();
        tracing::info!(
            "epoch {:>3}  loss {:.4}  top-1 {:.4}  test {}  {:>7.1} img/s  {:>6.1}s  ranks {}",
            row.epoch,
            row.train_loss,
            row.train_top1,
            test.map(|t| format!("{:.4}", t.top1)).unwrap_or_else(|| "  -   ".into()),
            row.images_per_sec,
            row.seconds,
            ranks.join("/")
        );

        // Checkpoint.
        let improved = match (test, summary.best_test_top1) {
            (Some(t), Some(best)) => t.top1 > best,
            (Some(_), None) => true,
            _ => false,
        };
        let meta = CheckpointMeta {
            config: config.clone(),
            epoch: epoch + 1,
            rule: rule.name().to_string(),
            arch: model.arch.clone(),
            num_classes: model.num_classes,
            layers: layer_infos(&model),
            test_top1: test.map(|t| t.top1),
            optimizer_steps: optimizer.state.iter().map(|(k, s)| (k.clone(), s.step)).collect(),
        };
        let checkpoints = run_dir.join("checkpoints");
        if last_epoch || (epoch + 1) % config.train.checkpoint_every == 0 {
            checkpoint::save(&checkpoints.join("last.safetensors"), &meta, &model, rule.named_tensors(), &optimizer)?;
        }
        if improved {
            checkpoint::save(&checkpoints.join("best.safetensors"), &meta, &model, rule.named_tensors(), &optimizer)?;
            summary.best_test_top1 = test.map(|t| t.top1);
        }
        summary.epochs.push(row);
    }
    Ok(summary)
}
