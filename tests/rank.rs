//! The rank schedule, truncation and the parameter and FLOP accounting.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssa::accounting::model_cost;
use ssa::config::{Config, RankConfig};
use ssa::layers::param::FactorTensors;
use ssa::layers::{Pass, SvdFactors, SvdLinear, WeightSource};
use ssa::linalg::{thin_svd, Matrix};
use ssa::models::Model;
use ssa::optim::Adam;
use ssa::rng::normal_vec;
use ssa::ssa::rank::{energy_rank, events, linear_rank, truncate, RankBounds, RankEvent};

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(normal_vec(rng, len), shape, &Device::Cpu).unwrap()
}

fn linear_from(w: &Tensor, rng: &mut ChaCha8Rng) -> SvdLinear {
    let (m, n) = w.dims2().unwrap();
    let svd = thin_svd(&Matrix::from_tensor(w).unwrap()).unwrap();
    let rank = svd.s.len();
    let u = svd.u.to_tensor(&Device::Cpu).unwrap();
    let v = svd.v.to_tensor(&Device::Cpu).unwrap();
    let tensors = FactorTensors {
        s: Tensor::from_vec(svd.s, rank, &Device::Cpu).unwrap(),
        u_b: random(rng, &[m, rank]),
        v_b: random(rng, &[n, rank]),
        u,
        v,
    };
    SvdLinear {
        factors: SvdFactors::new("fc", vec![m, n], tensors).unwrap(),
        bias: Var::from_tensor(&random(rng, &[m])).unwrap(),
        in_features: n,
        out_features: m,
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn frobenius(a: &Tensor) -> f32 {
    a.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar().unwrap()
}

#[test]
fn full_energy_truncation_keeps_output() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // A rank-3 weight of shape 6×8: its last three singular values are zero.
    let w = random(&mut rng, &[6, 3]).matmul(&random(&mut rng, &[3, 8])).unwrap();
    let mut layer = linear_from(&w, &mut rng);
    let x = random(&mut rng, &[5, 8]);
    let before = layer.forward(&x, &Pass::default()).unwrap();

    let s = layer.factors.s.as_tensor().to_vec1::<f32>().unwrap();
    let keep = energy_rank(&s, 1.0 - 1e-6, 1, s.len());
    assert_eq!(keep, 3);
    truncate(&mut layer.factors, keep, &mut Adam::from_config(&Default::default())).unwrap();
    assert_eq!(layer.factors.rank(), 3);
    let after = layer.forward(&x, &Pass::default()).unwrap();
    assert!(max_abs_diff(&before, &after) < 1e-4);
}

#[test]
fn truncation_gives_best_low_rank_approximation() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let w = random(&mut rng, &[7, 9]);
    let mut layer = linear_from(&w, &mut rng);
    // Reverse the components, so that the largest |s| are the last entries, not the first.
    let s = layer.factors.s.as_tensor().to_vec1::<f32>().unwrap();
    let reversed: Vec<f32> = s.iter().rev().copied().collect();
    let flip = Tensor::new(&[6u32, 5, 4, 3, 2, 1, 0], &Device::Cpu).unwrap();
    let f = &mut layer.factors;
    f.u = Var::from_tensor(&f.u.as_tensor().index_select(&flip, 1).unwrap()).unwrap();
    f.v = Var::from_tensor(&f.v.as_tensor().index_select(&flip, 1).unwrap()).unwrap();
    f.s = Var::from_tensor(&Tensor::new(reversed.as_slice(), &Device::Cpu).unwrap()).unwrap();

    truncate(f, 3, &mut Adam::from_config(&Default::default())).unwrap();
    let approximation = f.dense().unwrap();

    // Eckart–Young: the best rank-3 approximation keeps the three largest singular values.
    let svd = thin_svd(&Matrix::from_tensor(&w).unwrap()).unwrap();
    let largest: Vec<f32> = svd.s.iter().take(3).copied().collect();
    let best_error: f32 = svd.s[3..].iter().map(|x| x * x).sum::<f32>().sqrt();
    let error = frobenius(&(&w - &approximation).unwrap());
    assert!((error - best_error).abs() < 1e-4, "error {error}, best {best_error}");
    let mut got = f.s.as_tensor().to_vec1::<f32>().unwrap();
    got.sort_by(|a, b| b.total_cmp(a));
    for (a, b) in got.iter().zip(&largest) {
        assert!((a - b).abs() < 1e-4, "singular values after truncation {got:?}, expected {largest:?}");
    }
}

#[test]
fn truncation_slices_adam_moments() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut layer = linear_from(&random(&mut rng, &[5, 6]), &mut rng);
    let mut adam = Adam::from_config(&Default::default());
    for _ in 0..3 {
        for param in layer.params() {
            let grad = random(&mut rng, param.var.dims());
            adam.step(&param, &grad, 1e-3).unwrap();
        }
    }
    let s = layer.factors.s.as_tensor().to_vec1::<f32>().unwrap();
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].abs().total_cmp(&s[a].abs()));
    let mut largest: Vec<u32> = order[..2].iter().map(|&i| i as u32).collect();
    largest.sort_unstable();
    let index = Tensor::new(largest.as_slice(), &Device::Cpu).unwrap();
    let before = adam.state.clone();

    truncate(&mut layer.factors, 2, &mut adam).unwrap();

    for (name, dim) in [("fc.u", 1), ("fc.v", 1), ("fc.s", 0)] {
        let old = &before[name];
        let new = &adam.state[name];
        let expected_m = old.m.index_select(&index, dim).unwrap();
        let expected_v = old.v.index_select(&index, dim).unwrap();
        assert_eq!(new.m.dims(), expected_m.dims(), "{name} first moment shape");
        assert_eq!(max_abs_diff(&new.m, &expected_m), 0.0, "{name} first moment");
        assert_eq!(max_abs_diff(&new.v, &expected_v), 0.0, "{name} second moment");
        assert_eq!(new.step, old.step, "{name} step count");
    }
    // The bias keeps its moments untouched.
    assert_eq!(adam.state["fc.bias"].m.dims(), &[5]);
}

#[test]
fn schedule_gives_documented_ranks() {
    let hybrid = RankConfig { schedule: "hybrid".into(), ..RankConfig::default() };
    // 10×20: full 10, budget floor(200/30) = 6, floor ceil(0.3·10) = 3, linear target 6.
    let bounds = RankBounds::new(10, 20, 0.3);
    assert_eq!((bounds.full, bounds.budget, bounds.floor), (10, 6, 3));
    // 576×1536 (a 192→512 conv pair): budget floor(884736/2112) = 418, floor ceil(172.8) = 173.
    let conv = RankBounds::new(576, 1536, 0.3);
    assert_eq!((conv.full, conv.budget, conv.floor), (576, 418, 173));
    // 10×1024 classifier: budget floor(10240/1034) = 9, floor 3.
    let classifier = RankBounds::new(10, 1024, 0.3);
    assert_eq!(classifier.linear_target(), 9);

    use RankEvent::{Energy, Linear};
    let cases: Vec<(usize, Vec<(usize, RankEvent)>, Vec<usize>)> = vec![
        // 100 epochs: linear phase of 30 epochs, events at 10, 20, 30; energy every 10 after.
        (
            100,
            vec![
                (10, Linear { index: 1, count: 3 }),
                (20, Linear { index: 2, count: 3 }),
                (30, Linear { index: 3, count: 3 }),
                (40, Energy),
                (50, Energy),
                (60, Energy),
                (70, Energy),
                (80, Energy),
                (90, Energy),
                (100, Energy),
            ],
            vec![9, 7, 6],
        ),
        // 30 epochs: the linear phase (9 epochs) has no multiple of 10, so one event at 9.
        (30, vec![(9, Linear { index: 1, count: 1 }), (10, Energy), (20, Energy), (30, Energy)], vec![6]),
        // Shorter than prune_every: an event at every epoch end.
        (2, vec![(1, Linear { index: 1, count: 1 }), (2, Energy)], vec![6]),
        (
            5,
            vec![(1, Linear { index: 1, count: 2 }), (2, Linear { index: 2, count: 2 }), (3, Energy), (4, Energy), (5, Energy)],
            vec![8, 6],
        ),
    ];
    for (epochs, expected_events, expected_ranks) in cases {
        let got = events(&hybrid, epochs);
        assert_eq!(got, expected_events, "events for {epochs} epochs");
        let ranks: Vec<usize> = got
            .iter()
            .filter_map(|(_, e)| match e {
                Linear { index, count } => Some(linear_rank(&bounds, *index, *count)),
                Energy => None,
            })
            .collect();
        assert_eq!(ranks, expected_ranks, "linear ranks for {epochs} epochs");
    }
    let none = RankConfig::default();
    assert!(events(&none, 100).is_empty());
}

#[test]
fn energy_rank_respects_floor_and_current() {
    let s = [4.0f32, 2.0, 1.0, 0.5, 0.1];
    // Σ s² = 21.26; 16 + 4 = 20 is 94.1% of it, 21 is 98.8%.
    assert_eq!(energy_rank(&s, 0.95, 1, 5), 3);
    assert_eq!(energy_rank(&s, 0.90, 1, 5), 2);
    assert_eq!(energy_rank(&s, 0.90, 4, 5), 4);
    assert_eq!(energy_rank(&s, 0.999, 1, 3), 3);
}

#[test]
fn counts_match_hand_computed_values() {
    let config = Config::default();
    let model = Model::build(&config, &mut WeightSource::init(0, &Device::Cpu)).unwrap();
    let cost = model_cost(&model);
    let layer = |name: &str| cost.layers.iter().find(|l| l.name == name).unwrap().clone();

    // Linear 1024 → 10 at full rank 10: r(m + n + 1) + bias = 10·1035 + 10.
    let classifier = layer("classifier");
    assert_eq!(classifier.params, 10 * (10 + 1024 + 1) + 10);
    assert_eq!(classifier.macs, 10 * (10 + 1024));
    assert_eq!(classifier.dense_macs, 10 * 1024);

    // Conv pair 96 → 192, k = 3, on 16×16: rows C·k = 288, cols F·k = 576, r = 288.
    let conv2 = layer("conv2");
    assert_eq!(conv2.rank, 288);
    assert_eq!(conv2.params, 288 * (288 + 576 + 1) + 192);
    assert_eq!(conv2.dense_params, 192 * 96 * 9 + 192);
    // k·r·C·H'·W + k·r·F·H'·W' = 3·288·96·256 + 3·288·192·256.
    assert_eq!(conv2.macs, 3 * 288 * 96 * 256 + 3 * 288 * 192 * 256);
    assert_eq!(conv2.dense_macs, 9 * 96 * 192 * 256);

    // The whole SmallConv at full rank, BatchNorm included (2·(96 + 192 + 512) = 1600).
    let expected_params = (9 * (9 + 288 + 1) + 96)
        + (288 * (288 + 576 + 1) + 192)
        + (576 * (576 + 1536 + 1) + 512)
        + (1024 * (1024 + 8192 + 1) + 1024)
        + (10 * (10 + 1024 + 1) + 10)
        + 1600;
    assert_eq!(cost.params, expected_params);
    assert_eq!(cost.params, 10_920_882);
    let expected_macs = (3 * 9 * 3 * 1024 + 3 * 9 * 96 * 1024)
        + (3 * 288 * 96 * 256 + 3 * 288 * 192 * 256)
        + (3 * 576 * 192 * 64 + 3 * 576 * 512 * 64)
        + 1024 * (1024 + 8192)
        + 10 * (10 + 1024);
    assert_eq!(cost.macs, expected_macs);
    assert_eq!(cost.dense_macs, 9 * 3 * 96 * 1024 + 9 * 96 * 192 * 256 + 9 * 192 * 512 * 64 + 8192 * 1024 + 1024 * 10);
}

/// After truncation, re-estimating BatchNorm statistics on a batch makes inference mode match
/// training mode on that batch again (up to the unbiased-variance factor n/(n − 1)).
#[test]
fn batch_norm_recalibration_matches_pruned_layers() {
    use std::sync::Arc;
    use ssa::data::{load_split, BatchLoader, DatasetKind, Normalization, Split};

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10");
    let dataset = load_split(DatasetKind::Cifar10, &fixture, Split::Train, 64).unwrap();
    let loader = BatchLoader {
        dataset: Arc::new(dataset),
        batch_size: 64,
        normalization: Normalization::for_dataset(DatasetKind::Cifar10),
        shuffle: false,
        augment: false,
        seed: 0,
    };
    let indices: Vec<usize> = (0..64).collect();
    let host = loader.assemble(&indices, &mut ChaCha8Rng::seed_from_u64(0));
    let batch = host.to_device(&Device::Cpu).unwrap();

    let config = Config::from_toml_str("", &["model.width=0.25".to_string()]).unwrap();
    let mut model = Model::build(&config, &mut WeightSource::init(0, &Device::Cpu)).unwrap();
    let mut optimizer = Adam::from_config(&config.train);
    // Statistics from the full-rank model, then a cut to a third of every rank.
    for _ in 0..20 {
        model.forward(&batch.images, true).unwrap();
    }
    for factors in model.svd_layers_mut() {
        let keep = factors.rank().div_ceil(3);
        truncate(factors, keep, &mut optimizer).unwrap();
    }
    let gap = |model: &Model| {
        let train = model.forward(&batch.images, true).unwrap();
        let infer = model.forward(&batch.images, false).unwrap();
        let diff: f32 = (train - &infer).unwrap().abs().unwrap().mean_all().unwrap().to_scalar().unwrap();
        let scale: f32 = infer.abs().unwrap().mean_all().unwrap().to_scalar().unwrap();
        diff / scale
    };
    let stale = gap(&model);
    let count = ssa::train::recalibrate_batch_norm(&model, std::iter::repeat_n(host, 5), &Device::Cpu).unwrap();
    assert_eq!(count, 5);
    let fresh = gap(&model);
    assert!(fresh < 0.05, "after recalibration the modes differ by {fresh}");
    assert!(fresh < 0.5 * stale, "recalibration did not help: {stale} → {fresh}");
}
