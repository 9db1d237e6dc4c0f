//! `ssa bench`: time one training step per rule, model and rank on real CIFAR-10 batches.
//!
//! For each case it reports milliseconds per step, images per second, achieved GFLOP/s, the
//! share of the step spent in the forward pass, the backward pass and the optimiser update, and
//! the peak resident memory of the case. Achieved GFLOP/s counts a training step as three times
//! the inference FLOPs at the current ranks (forward, and two products per weight backward), as
//! is usual, plus the products of the SVD layers' orthogonality and projection terms. A local
//! rule that skips an input gradient does less work than that.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;

use crate::accounting::{model_cost, peak_rss_mib};
use crate::config::Config;
use crate::data::{load_split, Batch, BatchLoader, DatasetKind, Normalization, Split};
use crate::error::{Error, Result};
use crate::layers::WeightSource;
use crate::models::Model;
use crate::optim::{Adam, StepLr};
use crate::rules;
use crate::ssa::rank::{truncate, RankBounds};

/// Cases and settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rules: Vec<String>,
    pub models: Vec<String>,
    /// Rank fractions of the SVD layers (1.0 = full rank); dense rules run once.
    pub rank_fractions: Vec<f64>,
    pub batch_size: usize,
    /// Timed steps per case, after one untimed warm-up step.
    pub steps: usize,
    pub data_dir: PathBuf,
    pub device: Device,
    /// Multiplier on every hidden width.
    pub width: f64,
}

/// Figures of one case.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchRow {
    pub rule: String,
    pub model: String,
    /// Rank fraction of the SVD layers, `None` for dense rules.
    pub rank_fraction: Option<f64>,
    pub ms_per_step: f64,
    pub images_per_sec: f64,
    pub gflops: f64,
    pub forward_share: f64,
    pub backward_share: f64,
    pub update_share: f64,
    pub peak_rss_mib: Option<f64>,
}

impl BenchRow {
    /// Returns the rank column: `full`, a percentage of full rank, or `dense`.
    pub fn rank_label(&self) -> String {
        match self.rank_fraction {
            Some(f) if f >= 1.0 => "full".to_string(),
            Some(f) => format!("{:.0}%", 100.0 * f),
            None => "dense".to_string(),
        }
    }
}

/// Resets the peak resident memory that `/proc/self/status` reports (Linux), so that each case
/// measures its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Returns the first `batch_size` test images of CIFAR-10 in `dir` as one batch.
fn real_batch(options: &BenchOptions) -> Result<Batch> {
    let dataset = load_split(DatasetKind::Cifar10, &options.data_dir, Split::Test, options.batch_size)?;
    if dataset.len() < options.batch_size {
        return Err(Error::data(
            &options.data_dir,
            format!("has {} test images, fewer than the batch size {}", dataset.len(), options.batch_size),
        ));
    }
    let loader = BatchLoader {
        dataset: Arc::new(dataset),
        batch_size: options.batch_size,
        normalization: Normalization::for_dataset(DatasetKind::Cifar10),
        shuffle: false,
        augment: false,
        seed: 0,
    };
    let indices: Vec<usize> = (0..options.batch_size).collect();
    loader
        .assemble(&indices, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
        .to_device(&options.device)
}

/// Waits for the device to finish queued work (a host read of one number).
fn sync(tensor: &Tensor) -> Result<()> {
    tensor.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    Ok(())
}

/// Measures one case.
fn measure(options: &BenchOptions, batch: &Batch, rule_name: &str, arch: &str, fraction: Option<f64>) -> Result<BenchRow> {
    let overrides = [
        format!("method.rule={}", toml::Value::String(rule_name.into())),
        format!("model.arch={}", toml::Value::String(arch.into())),
        format!("model.width={}", options.width),
        format!("train.batch_size={}", options.batch_size),
    ];
    let config = Config::from_toml_str("", &overrides)?;
    reset_peak_rss();
    let mut model = Model::build(&config, &mut WeightSource::init(0, &options.device))?;
    let mut optimizer = Adam::from_config(&config.train);
    if let Some(fraction) = fraction.filter(|f| *f < 1.0) {
        for factors in model.svd_layers_mut() {
            let bounds = RankBounds::new(factors.rows(), factors.cols(), 0.0);
            let keep = ((fraction * bounds.full as f64).ceil() as usize).clamp(1, bounds.full);
            truncate(factors, keep, &mut optimizer)?;
        }
    }
    let mut rule = rules::build(&config, &model)?;
    let lr = StepLr::from_config(&config.train, 1.0);

    // Warm-up: allocations, thread pools, the probe of every layer's geometry.
    rule.step(&model, batch, &mut optimizer, lr)?;
    sync(&model.params()[0].var)?;

    let (mut forward, mut compute, mut update) = (0.0, 0.0, 0.0);
    for _ in 0..options.steps {
        let started = Instant::now();
        let logits = model.forward(&batch.images, true)?.detach();
        sync(&logits)?;
        forward += started.elapsed().as_secs_f64();

        let started = Instant::now();
        let step = rule.compute(&model, batch)?;
        sync(&step.stats.loss_sum)?;
        compute += started.elapsed().as_secs_f64();

        let started = Instant::now();
        step.apply(&mut optimizer, lr)?;
        rule.finish_step(&model)?;
        sync(&model.params()[0].var)?;
        update += started.elapsed().as_secs_f64();
    }
    // The compute phase runs its own forward pass, so the step is compute + update and the
    // backward pass is what compute spends beyond a forward pass.
    let steps = options.steps as f64;
    let step_seconds = (compute + update) / steps;
    let forward_seconds = (forward / steps).min(compute / steps);
    let backward_seconds = compute / steps - forward_seconds;
    let cost = model_cost(&model);
    let train_flops = 3.0 * 2.0 * cost.macs as f64 * options.batch_size as f64 + factor_flops(&model, &config);
    Ok(BenchRow {
        rule: rule_name.to_string(),
        model: arch.to_string(),
        rank_fraction: fraction,
        ms_per_step: 1e3 * step_seconds,
        images_per_sec: options.batch_size as f64 / step_seconds,
        gflops: train_flops / step_seconds / 1e9,
        forward_share: forward_seconds / step_seconds,
        backward_share: backward_seconds / step_seconds,
        update_share: update / steps / step_seconds,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Returns the FLOPs per step of the factor terms of the SVD layers, which do not depend on the
/// batch: for each of U and V (`n × r`), the Gram matrix `XᵀX` and the product `X (XᵀX − I)` of
/// the orthogonality gradient, plus `XᵀG` and `X sym(XᵀG)` of the Stiefel projection when it is
/// on. Each costs `2 n r²`.
fn factor_flops(model: &Model, config: &Config) -> f64 {
    let products = if config.method.stiefel_projection { 4.0 } else { 2.0 };
    model
        .svd_layers()
        .into_iter()
        .map(|f| {
            let r2 = (f.rank() * f.rank()) as f64;
            products * 2.0 * (f.rows() + f.cols()) as f64 * r2
        })
        .sum()
}

/// Measures the matrix-product rate of the device on `size`³ f32 products, in GFLOP/s.
pub fn matmul_gflops(size: usize, device: &Device) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (size, size), device)?;
    let b = Tensor::randn(0f32, 1.0, (size, size), device)?;
    sync(&a.matmul(&b)?)?;
    let repeats = 3;
    let started = Instant::now();
    for _ in 0..repeats {
        sync(&a.matmul(&b)?)?;
    }
    let seconds = started.elapsed().as_secs_f64() / repeats as f64;
    Ok(2.0 * (size as f64).powi(3) / seconds / 1e9)
}

/// One benchmark case: a rule on a model, at a rank fraction for SVD layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub rule: String,
    pub model: String,
    /// `None` for dense rules.
    pub rank_fraction: Option<f64>,
}

/// Lists the cases of `options` in the order of the table: by model, then rule, then rank.
pub fn cases(options: &BenchOptions) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for model in &options.models {
        for rule in &options.rules {
            let svd = rules::layer_kind(rule)? == crate::layers::LayerKind::Svd;
            let fractions: Vec<Option<f64>> = if svd {
                options.rank_fractions.iter().map(|f| Some(*f)).collect()
            } else {
                vec![None]
            };
            for rank_fraction in fractions {
                cases.push(Case { rule: rule.clone(), model: model.clone(), rank_fraction });
            }
        }
    }
    Ok(cases)
}

/// Runs every case of `options` in this process, calling `progress` after each. The peak
/// memory of a case includes what earlier cases left with the allocator, so `ssa bench` runs
/// each case in a process of its own.
pub fn run(options: &BenchOptions, mut progress: impl FnMut(&BenchRow)) -> Result<Vec<BenchRow>> {
    let batch = real_batch(options)?;
    let mut rows = Vec::new();
    for case in cases(options)? {
        let row = measure(options, &batch, &case.rule, &case.model, case.rank_fraction)?;
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// Renders the rows as a markdown table.
pub fn render(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| rule | model | rank | ms/step | images/s | GFLOP/s | forward | backward | update | peak RSS MiB |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        out += &format!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.0}% | {:.0}% | {} |\n",
            row.rule,
            row.model,
            row.rank_label(),
            row.ms_per_step,
            row.images_per_sec,
            row.gflops,
            100.0 * row.forward_share,
            100.0 * row.backward_share,
            100.0 * row.update_share,
            row.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
        );
    }
    out
}
