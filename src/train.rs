//! The training loop: config → seed → data → model → rule and optimiser → for each epoch
//! { train, prune ranks, evaluate, log, checkpoint }, with resume and clean interruption.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use crate::accounting::{model_cost, peak_rss_mib};
use crate::checkpoint::{self, layer_infos, CheckpointMeta, EpochProgress};
use crate::config::Config;
use crate::data::download::{download, Source};
use crate::data::{load_split, BatchLoader, DatasetKind, Normalization, Split};
use crate::device::open_device;
use crate::error::{Error, Result};
use crate::layers::WeightSource;
use crate::metrics::{evaluate, EpochMetrics, EvalResult, LayerWriter, MetricsWriter};
use crate::models::Model;
use crate::optim::{lr_multiplier, Adam, StepLr};
use crate::diagnostics;
use crate::rules::{self, LearningRule, StepStats};
use crate::ssa::rank::{self, RankBounds, RankEvent};

/// Set by SIGINT or SIGTERM; the loop checkpoints and stops after the current step.
static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT and SIGTERM handler: the first signal stops training after the current
/// step with a checkpoint, a second one exits at once with status 130.
pub fn install_signal_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing the current step, then writing a checkpoint (interrupt again to exit at once)");
    })
    .map_err(|e| Error::Device(format!("cannot install the signal handler: {e}")))
}

/// Summary of a finished run.
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
    write_config(&dir, config)?;
    Ok(dir)
}

fn write_config(dir: &Path, config: &Config) -> Result<()> {
    let path = dir.join("config.toml");
    checkpoint::write_atomically(&path, config.to_toml_string().as_bytes())
}

/// Locates the run directory and last checkpoint of `target`: a run directory or a checkpoint
/// file inside `<run>/checkpoints/`.
pub fn resume_paths(target: &Path) -> Result<(PathBuf, PathBuf)> {
    if !target.exists() {
        return Err(Error::checkpoint(target, "not found: pass a run directory or a checkpoint inside its checkpoints/ folder"));
    }
    if target.is_dir() {
        let checkpoint = target.join("checkpoints").join("last.safetensors");
        if !checkpoint.is_file() {
            return Err(Error::checkpoint(
                &checkpoint,
                "not found: the run wrote no checkpoint yet, so there is nothing to resume; start it again",
            ));
        }
        return Ok((target.to_path_buf(), checkpoint));
    }
    let run_dir = target
        .parent()
        .and_then(Path::parent)
        .filter(|dir| dir.join("config.toml").is_file())
        .ok_or_else(|| {
            Error::checkpoint(target, "is not inside a run directory (<run>/checkpoints/FILE); pass the run directory instead")
        })?;
    Ok((run_dir.to_path_buf(), target.to_path_buf()))
}

/// Running sums of one epoch's step statistics, on the device.
struct EpochTotals {
    stats: Option<StepStats>,
    images: usize,
    steps: usize,
    /// Seconds spent in this epoch before a resume.
    earlier_seconds: f64,
}

impl EpochTotals {
    fn new() -> Self {
        Self { stats: None, images: 0, steps: 0, earlier_seconds: 0.0 }
    }

    fn from_progress(progress: &EpochProgress, device: &Device) -> Result<Self> {
        let scalar = |v: f32| Tensor::new(v, device);
        let stats = StepStats {
            loss_sum: scalar(progress.loss_sum)?,
            correct: scalar(progress.correct)?,
            terms: [
                scalar(progress.terms[0])?,
                scalar(progress.terms[1])?,
                scalar(progress.terms[2])?,
                scalar(progress.terms[3])?,
            ],
        };
        Ok(Self {
            stats: (progress.steps > 0).then_some(stats),
            images: progress.images,
            steps: progress.steps,
            earlier_seconds: progress.seconds,
        })
    }

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

    fn scalar(t: &Tensor) -> Result<f32> {
        Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)
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
            *slot = Self::scalar(term)? as f64 / steps;
        }
        let loss = Self::scalar(&stats.loss_sum)? as f64 / images;
        Ok((loss, Self::scalar(&stats.correct)? as f64 / images, terms))
    }

    fn progress(&self, epoch: usize, seconds: f64) -> Result<EpochProgress> {
        let mut progress = EpochProgress {
            epoch,
            steps: self.steps,
            images: self.images,
            seconds: self.earlier_seconds + seconds,
            loss_sum: 0.0,
            correct: 0.0,
            terms: [0.0; 4],
        };
        if let Some(stats) = &self.stats {
            progress.loss_sum = Self::scalar(&stats.loss_sum)?;
            progress.correct = Self::scalar(&stats.correct)?;
            for (slot, term) in progress.terms.iter_mut().zip(&stats.terms) {
                *slot = Self::scalar(term)?;
            }
        }
        Ok(progress)
    }
}

fn progress_bar(steps: usize, done: usize, epoch: usize, epochs: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
        .expect("progress template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar.set_position(done as u64);
    Some(bar)
}

/// Applies the rank event of an epoch end to every SVD layer of `model`.
pub fn apply_rank_event(model: &mut Model, event: RankEvent, config: &Config, optimizer: &mut Adam) -> Result<()> {
    for factors in model.svd_layers_mut() {
        let bounds = RankBounds::new(factors.rows(), factors.cols(), config.rank.min_fraction);
        let current = factors.rank();
        let target = match event {
            RankEvent::Linear { index, count } => rank::linear_rank(&bounds, index, count).min(current),
            RankEvent::Energy => {
                let s = factors.s.as_tensor().to_vec1::<f32>()?;
                rank::energy_rank(&s, config.rank.energy, bounds.floor, current)
            }
        };
        rank::truncate(factors, target, optimizer)?;
    }
    Ok(())
}

/// Everything the epoch loop works on.
struct Session {
    config: Config,
    run_dir: PathBuf,
    device: Device,
    train_loader: BatchLoader,
    test_loader: BatchLoader,
    model: Model,
    rule: Box<dyn LearningRule>,
    optimizer: Adam,
    metrics: MetricsWriter,
    layer_metrics: LayerWriter,
    best_test_top1: Option<f64>,
    /// First epoch to run (from 0) and the progress already made through it.
    start_epoch: usize,
    progress: Option<EpochProgress>,
    /// Fixed batch of the gradient diagnostics, assembled on first use.
    probe: Option<crate::data::Batch>,
}

fn loaders(config: &Config) -> Result<(BatchLoader, BatchLoader)> {
    let kind = DatasetKind::from_name(&config.data.dataset)?;
    let data_dir = PathBuf::from(config.data_dir());
    if config.data.download && !data_dir.exists() {
        let source = Source::new(kind, &config.data.download_url, &config.data.download_md5)?;
        tracing::info!("{} not found: downloading {}", data_dir.display(), source.url);
        download(kind, &data_dir, &source, std::io::stderr().is_terminal())?;
        tracing::info!("extracted {} into {}", config.data.dataset, data_dir.display());
    }
    let train_set = Arc::new(load_split(kind, &data_dir, Split::Train, config.data.train_limit)?);
    let test_set = Arc::new(load_split(kind, &data_dir, Split::Test, config.data.test_limit)?);
    tracing::info!(
        "data: {} training and {} test images from {}",
        train_set.len(),
        test_set.len(),
        data_dir.display()
    );
    let train_loader = BatchLoader {
        dataset: train_set,
        batch_size: config.train.batch_size,
        normalization: Normalization::for_dataset(kind),
        shuffle: true,
        augment: config.data.augment,
        seed: config.experiment.seed,
    };
    let test_loader = BatchLoader {
        dataset: test_set,
        shuffle: false,
        augment: false,
        ..train_loader.clone()
    };
    Ok((train_loader, test_loader))
}

/// Re-estimates every BatchNorm's running statistics from `batches` in training mode, without
/// changing any weight. After pruning, the statistics of the full-rank layers no longer match
/// their outputs.
pub fn recalibrate_batch_norm(model: &Model, batches: impl Iterator<Item = crate::data::loader::HostBatch>, device: &Device) -> Result<usize> {
    let norms: Vec<_> = model.units.iter().flat_map(|u| u.batch_norms()).collect();
    if norms.is_empty() {
        return Ok(0);
    }
    for bn in &norms {
        bn.running_mean.set(&bn.running_mean.zeros_like()?)?;
        bn.running_var.set(&bn.running_var.zeros_like()?)?;
    }
    let mut count = 0;
    for host in batches {
        let batch = host.to_device(device)?;
        model.forward(&batch.images, true)?;
        count += 1;
    }
    // The running averages started from zero: divide by the weight their updates add up to.
    let weight = 1.0 - (1.0 - crate::layers::batch_norm::MOMENTUM).powi(count as i32);
    for bn in &norms {
        if count == 0 {
            bn.running_var.set(&bn.running_var.ones_like()?)?;
            continue;
        }
        bn.running_mean.set(&(bn.running_mean.as_tensor() / weight)?)?;
        bn.running_var.set(&(bn.running_var.as_tensor() / weight)?)?;
    }
    tracing::info!("re-estimated BatchNorm statistics over {count} training batches");
    Ok(count)
}

/// Trains the model described by `config`, writing metrics, checkpoints and logs to `run_dir`.
pub fn train(config: &Config, run_dir: &Path) -> Result<TrainSummary> {
    let device = open_device(&config.train.device)?;
    let (train_loader, test_loader) = loaders(config)?;

    let started = Instant::now();
    let model = Model::build(config, &mut WeightSource::init(config.experiment.seed, &device))?;
    let rule = rules::build(config, &model)?;
    tracing::info!(
        "model: {} with {} {} layers, {} parameters, built in {:.1}s; rule {}",
        model.arch,
        model.layers().len(),
        if model.layer_kind == crate::layers::LayerKind::Svd { "SVD" } else { "dense" },
        model.num_params(),
        started.elapsed().as_secs_f64(),
        rule.name()
    );

    let session = Session {
        config: config.clone(),
        run_dir: run_dir.to_path_buf(),
        device,
        train_loader,
        test_loader,
        model,
        rule,
        optimizer: Adam::from_config(&config.train),
        metrics: MetricsWriter::create(&run_dir.join("metrics.csv"))?,
        layer_metrics: LayerWriter::create(&run_dir.join("layers.csv"))?,
        best_test_top1: None,
        start_epoch: 0,
        progress: None,
        probe: None,
    };
    session.run()
}

/// Continues the run whose last checkpoint is at `checkpoint_path`, with `config` (which may
/// differ from the stored one only in [`crate::config::RESUMABLE_KEYS`]).
pub fn resume(config: &Config, run_dir: &Path, checkpoint_path: &Path) -> Result<TrainSummary> {
    let device = open_device(&config.train.device)?;
    let saved = checkpoint::load(checkpoint_path, &device)?;
    let differing = saved.meta.config.incompatible_keys(config);
    if !differing.is_empty() {
        return Err(Error::Config(format!(
            "cannot resume {} with a different training setup; differing keys: {}. \
             Only {} may change; start a new run for anything else",
            run_dir.display(),
            differing.join(", "),
            crate::config::RESUMABLE_KEYS.join(", ")
        )));
    }
    let (train_loader, test_loader) = loaders(config)?;
    let model = saved.build_model(&device)?;
    let mut rule = rules::build(config, &model)?;
    rule.load_state(&saved.tensors, saved.meta.rule_steps)
        .map_err(|message| Error::checkpoint(checkpoint_path, message))?;
    let mut optimizer = Adam::from_config(&config.train);
    optimizer
        .load_state(&saved.tensors, &saved.meta.optimizer_steps)
        .map_err(|message| Error::checkpoint(checkpoint_path, message))?;

    let completed = saved.meta.epoch;
    if checkpoint_path.file_name().is_some_and(|name| name != "last.safetensors") {
        tracing::warn!(
            "resuming from {}: metrics rows after epoch {completed} are dropped and last.safetensors is overwritten",
            checkpoint_path.display()
        );
    }
    if saved.meta.progress.is_none() && completed >= config.train.epochs {
        tracing::warn!(
            "nothing to train: {completed} of {} epochs are done; pass --set train.epochs=N with N > {completed} to extend the run",
            config.train.epochs
        );
    }
    let (start_epoch, progress) = match &saved.meta.progress {
        Some(progress) => (progress.epoch, Some(progress.clone())),
        None => (completed, None),
    };
    tracing::info!(
        "resuming {} from {} (epoch {} done{})",
        run_dir.display(),
        checkpoint_path.display(),
        completed,
        progress.as_ref().map(|p| format!(", {} steps into epoch {}", p.steps, p.epoch + 1)).unwrap_or_default()
    );
    write_config(run_dir, config)?;

    let session = Session {
        config: config.clone(),
        run_dir: run_dir.to_path_buf(),
        device,
        train_loader,
        test_loader,
        model,
        rule,
        optimizer,
        metrics: MetricsWriter::resume(&run_dir.join("metrics.csv"), completed)?,
        layer_metrics: LayerWriter::resume(&run_dir.join("layers.csv"), saved.meta.rule_steps)?,
        best_test_top1: saved.meta.best_test_top1,
        start_epoch,
        progress,
        probe: None,
    };
    session.run()
}

impl Session {
    fn run(mut self) -> Result<TrainSummary> {
        let config = self.config.clone();
        let rank_events = rank::events(&config.rank, config.train.epochs);
        let steps_per_epoch = self.train_loader.num_batches();
        let mut summary = TrainSummary {
            run_dir: self.run_dir.clone(),
            epochs: Vec::new(),
            best_test_top1: self.best_test_top1,
        };

        for epoch in self.start_epoch..config.train.epochs {
            let last_epoch = epoch + 1 == config.train.epochs;

            // Train.
            let mut totals = match self.progress.take() {
                Some(progress) if progress.epoch == epoch => EpochTotals::from_progress(&progress, &self.device)?,
                _ => EpochTotals::new(),
            };
            let first_step = totals.steps;
            let started = Instant::now();
            let bar = progress_bar(steps_per_epoch, first_step, epoch, config.train.epochs);
            let mut lr = config.train.lr;
            if self.rule.steps() == 0 {
                self.diagnose(epoch)?;
            }
            for (step, host) in self.train_loader.epoch(epoch).enumerate().skip(first_step) {
                let batch = host.to_device(&self.device)?;
                let step_lr = StepLr::from_config(&config.train, lr_multiplier(&config.train, epoch, step, steps_per_epoch));
                lr = step_lr.lr;
                if let Some(stats) = self.guarded_step(&batch, step_lr, epoch)? {
                    totals.add(stats, host.labels.len())?;
                    self.diagnose(epoch)?;
                }
                if let Some(bar) = &bar {
                    bar.inc(1);
                    if step % 10 == 0 {
                        let (loss, top1, _) = totals.means()?;
                        let rate = (totals.images as f64) / (totals.earlier_seconds + started.elapsed().as_secs_f64());
                        bar.set_message(format!("loss {loss:.4} top-1 {top1:.3} {rate:.0} img/s"));
                    }
                }
                if STOP.load(Ordering::SeqCst) {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    let progress = totals.progress(epoch, started.elapsed().as_secs_f64())?;
                    self.save(&self.checkpoint_meta(epoch, None, Some(progress)), "last")?;
                    return Err(Error::Interrupted { run_dir: self.run_dir.clone() });
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let seconds = totals.earlier_seconds + started.elapsed().as_secs_f64();
            let (train_loss, train_top1, loss_terms) = totals.means()?;
            if !train_loss.is_finite() {
                return Err(Error::Diverged(format!(
                    "epoch {}: mean training loss is {train_loss}; lower train.lr or train.lr_factors",
                    epoch + 1
                )));
            }

            // Prune ranks, before evaluation so that the test figures and the checkpoint agree.
            if let Some((_, event)) = rank_events.iter().find(|(e, _)| *e == epoch + 1) {
                apply_rank_event(&mut self.model, *event, &config, &mut self.optimizer)?;
                let batches = config.rank.recalibrate_batches;
                if batches > 0 {
                    // A pseudo-epoch index keeps these batches apart from the training epochs.
                    let stream = self.train_loader.epoch(1_000_000 + epoch);
                    recalibrate_batch_norm(&self.model, stream.take(batches), &self.device)?;
                }
            }

            // Evaluate.
            let test: Option<EvalResult> = if last_epoch || (epoch + 1) % config.train.eval_every == 0 {
                Some(evaluate(&self.model, &self.test_loader, &self.device)?)
            } else {
                None
            };

            // Log.
            let cost = model_cost(&self.model);
            let row = EpochMetrics {
                epoch: epoch + 1,
                train_loss,
                train_top1,
                test,
                lr,
                seconds,
                images_per_sec: totals.images as f64 / seconds,
                params: cost.params,
                mflops: cost.mflops(),
                dense_mflops: cost.dense_mflops(),
                peak_rss_mib: peak_rss_mib(),
                loss_terms,
            };
            self.metrics.append(&row)?;
            self.layer_metrics.append(epoch + 1, self.rule.steps(), &self.model, None)?;
            let ranks: Vec<String> = self.model.svd_layers().iter().map(|f| f.rank().to_string()).collect();
            let ranks = if ranks.is_empty() { "dense".to_string() } else { ranks.join("/") };
            tracing::info!(
                "epoch {:>3}  loss {:.4}  top-1 {:.4}  test {}  {:>7.1} img/s  {:>6.1}s  {:>8.1} MFLOPs  ranks {}",
                row.epoch,
                row.train_loss,
                row.train_top1,
                test.map(|t| format!("{:.4}", t.top1)).unwrap_or_else(|| "  -   ".into()),
                row.images_per_sec,
                row.seconds,
                row.mflops,
                ranks
            );

            // Checkpoint.
            let improved = match (test, self.best_test_top1) {
                (Some(t), Some(best)) => t.top1 > best,
                (Some(_), None) => true,
                _ => false,
            };
            if improved {
                self.best_test_top1 = test.map(|t| t.top1);
            }
            let meta = self.checkpoint_meta(epoch + 1, test.map(|t| t.top1), None);
            if last_epoch || (epoch + 1) % config.train.checkpoint_every == 0 {
                self.save(&meta, "last")?;
            }
            if improved {
                self.save(&meta, "best")?;
            }
            summary.epochs.push(row);
        }
        summary.best_test_top1 = self.best_test_top1;
        Ok(summary)
    }

    /// Runs one step; with `train.on_nan = "skip_batch"`, a non-finite loss or gradient drops
    /// the batch (no update was applied) and restores the BatchNorm statistics.
    fn guarded_step(&mut self, batch: &crate::data::Batch, lr: StepLr, epoch: usize) -> Result<Option<StepStats>> {
        let skip = self.config.train.on_nan == "skip_batch";
        let saved_statistics = if skip { Some(diagnostics::SavedStatistics::take(&self.model)?) } else { None };
        match self.rule.step(&self.model, batch, &mut self.optimizer, lr) {
            Ok(stats) => Ok(Some(stats)),
            Err(Error::Diverged(message)) if skip => {
                tracing::warn!("epoch {}: skipped a batch: {message}", epoch + 1);
                if let Some(saved) = saved_statistics {
                    saved.restore()?;
                }
                Ok(None)
            }
            Err(Error::Diverged(message)) => Err(Error::Diverged(format!(
                "epoch {}, {message}; the last checkpoint is kept. Lower train.lr or train.lr_factors, \
                 or set train.on_nan = \"skip_batch\"",
                epoch + 1
            ))),
            Err(other) => Err(other),
        }
    }

    /// Measures the gradient angles on the probe batch when a diagnostics step is due.
    fn diagnose(&mut self, epoch: usize) -> Result<()> {
        let every = self.config.diagnostics.every;
        let steps = self.rule.steps();
        if every == 0 || steps % every != 0 {
            return Ok(());
        }
        let probe = match &self.probe {
            Some(probe) => probe.clone(),
            None => {
                let count = self.config.diagnostics.probe_size.min(self.train_loader.dataset.len());
                let indices: Vec<usize> = (0..count).collect();
                let loader = BatchLoader {
                    augment: false,
                    ..self.train_loader.clone()
                };
                let host = loader.assemble(&indices, &mut crate::rng::stream_rng(0, crate::rng::Stream::Data, 0));
                let batch = host.to_device(&self.device)?;
                self.probe = Some(batch.clone());
                batch
            }
        };
        let angles = diagnostics::gradient_angles(&self.model, self.rule.as_mut(), &probe)?;
        self.layer_metrics.append(epoch + 1, steps, &self.model, Some(&angles))
    }

    fn checkpoint_meta(&self, epoch: usize, test_top1: Option<f64>, progress: Option<EpochProgress>) -> CheckpointMeta {
        CheckpointMeta {
            config: self.config.clone(),
            epoch,
            rule: self.rule.name().to_string(),
            arch: self.model.arch.clone(),
            num_classes: self.model.num_classes,
            layers: layer_infos(&self.model),
            test_top1,
            optimizer_steps: self.optimizer.state.iter().map(|(k, s)| (k.clone(), s.step)).collect(),
            rule_steps: self.rule.steps(),
            best_test_top1: self.best_test_top1,
            progress,
            data_dir: std::fs::canonicalize(self.config.data_dir()).ok(),
        }
    }

    /// Writes `checkpoints/<name>.safetensors` (`last` or `best`).
    fn save(&self, meta: &CheckpointMeta, name: &str) -> Result<()> {
        let path = self.run_dir.join("checkpoints").join(format!("{name}.safetensors"));
        checkpoint::save(&path, meta, &self.model, self.rule.named_tensors(), &self.optimizer)
    }
}
