//! SSA training on real CIFAR-10 images from the fixture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssa::config::Config;
use ssa::data::{load_split, BatchLoader, DatasetKind, Normalization, Split};
use ssa::layers::WeightSource;
use ssa::models::Model;
use ssa::optim::{Adam, StepLr};
use ssa::rules;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

fn config(overrides: &[&str]) -> Config {
    let mut all = vec![format!("data.dir=\"{}\"", fixture().display())];
    all.extend(overrides.iter().map(|s| s.to_string()));
    Config::from_toml_str("", &all).unwrap()
}

/// SSA on full-size SmallConv, repeatedly on one fixed batch of 64 real images: the
/// classifier's cross-entropy must fall well below its starting value.
#[test]
fn ssa_lowers_smallconv_loss_on_fixed_batch() {
    let config = config(&["model.arch=\"smallconv\""]);
    let device = candle_core::Device::Cpu;
    let dataset = load_split(DatasetKind::Cifar10, &fixture(), Split::Train, 64).unwrap();
    let loader = BatchLoader {
        dataset: Arc::new(dataset),
        batch_size: 64,
        normalization: Normalization::for_dataset(DatasetKind::Cifar10),
        shuffle: false,
        augment: false,
        seed: 0,
    };
    let indices: Vec<usize> = (0..64).collect();
    let batch = loader
        .assemble(&indices, &mut ChaCha8Rng::seed_from_u64(0))
        .to_device(&device)
        .unwrap();

    let model = Model::build(&config, &mut WeightSource::init(0, &device)).unwrap();
    let mut rule = rules::build(&config, &model).unwrap();
    let mut optimizer = Adam::from_config(&config.train);
    let lr = StepLr::from_config(&config.train, 1.0);

    let mut losses = Vec::new();
    for _ in 0..30 {
        let stats = rule.step(&model, &batch, &mut optimizer, lr).unwrap();
        losses.push(stats.loss_sum.to_scalar::<f32>().unwrap() / 64.0);
    }
    let first = losses[0];
    let last = *losses.last().unwrap();
    assert!(first > 1.8, "initial loss {first} is not near ln 10");
    assert!(last < 0.5 * first, "loss went from {first} to {last}: {losses:?}");
}

/// The same seed and config give the same metrics, apart from the timing and memory columns.
#[test]
fn same_seed_gives_identical_metrics() {
    let out = tempfile::tempdir().unwrap();
    let config = config(&[
        "model.width=0.25",
        "train.epochs=2",
        "train.batch_size=50",
        "data.train_limit=200",
        "data.test_limit=100",
        &format!("experiment.out_dir=\"{}\"", out.path().display()),
    ]);
    let mut tables = Vec::new();
    for _ in 0..2 {
        let dir = ssa::train::create_run_dir(&config).unwrap();
        ssa::train::train(&config, &dir).unwrap();
        let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let timing = ["seconds", "images_per_sec", "peak_rss_mib"];
        let rows: Vec<Vec<String>> = text
            .lines()
            .map(|line| {
                line.split(',')
                    .zip(&header)
                    .filter(|(_, name)| !timing.contains(name))
                    .map(|(field, _)| field.to_string())
                    .collect()
            })
            .collect();
        tables.push(rows);
    }
    assert_eq!(tables[0].len(), 3, "header and two epochs");
    assert_eq!(tables[0], tables[1]);
}
