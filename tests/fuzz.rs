//! Random bytes and truncated real files fed to the config parser, the CIFAR reader and the
//! checkpoint loader: each must return an error (never panic, never a wrong result).

use std::path::{Path, PathBuf};

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ssa::config::Config;
use ssa::data::{load_split, DatasetKind, Split};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

fn random_bytes(rng: &mut ChaCha8Rng, max_len: usize) -> Vec<u8> {
    let len = rng.gen_range(0..max_len);
    (0..len).map(|_| rng.gen()).collect()
}

#[test]
fn config_parser_rejects_random_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..2000 {
        let bytes = random_bytes(&mut rng, 200);
        let text = String::from_utf8_lossy(&bytes);
        // Random text is almost never a valid config; whatever it is, parsing must not panic.
        if let Ok(config) = Config::from_toml_str(&text, &[]) {
            assert!(config.validate().is_ok());
        }
    }
    let real = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cifar10_vgg13.toml")).unwrap();
    for cut in 1..real.len() {
        if !real.is_char_boundary(cut) {
            continue;
        }
        // A cut config is either invalid TOML or a valid prefix; both must be handled.
        let _ = Config::from_toml_str(&real[..cut], &[]);
    }
}

#[test]
fn cifar_reader_rejects_damaged_files() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let real = std::fs::read(fixture().join("test_batch.bin")).unwrap();
    for trial in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        let bytes = if trial % 2 == 0 {
            random_bytes(&mut rng, 20_000)
        } else {
            real[..rng.gen_range(0..real.len())].to_vec()
        };
        std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
        match load_split(DatasetKind::Cifar10, dir.path(), Split::Test, 0) {
            // Only whole records with valid labels may load.
            Ok(data) => {
                assert_eq!(bytes.len() % 3073, 0);
                assert!(data.labels.iter().all(|&l| l < 10));
            }
            Err(error) => assert!(error.to_string().contains("test_batch.bin"), "{error}"),
        }
    }
}

#[test]
fn checkpoint_loader_rejects_damaged_files() {
    // A real checkpoint from a tiny run.
    let out = tempfile::tempdir().unwrap();
    let overrides: Vec<String> = [
        format!("data.dir=\"{}\"", fixture().display()),
        format!("experiment.out_dir=\"{}\"", out.path().display()),
        "model.width=0.125".into(),
        "data.train_limit=64".into(),
        "data.test_limit=32".into(),
        "train.batch_size=32".into(),
    ]
    .into();
    let config = Config::from_toml_str("", &overrides).unwrap();
    let run = ssa::train::create_run_dir(&config).unwrap();
    ssa::train::train(&config, &run).unwrap();
    let path = run.join("checkpoints/last.safetensors");
    let real = std::fs::read(&path).unwrap();
    assert!(ssa::checkpoint::load(&path, &Device::Cpu).is_ok());

    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let damaged = out.path().join("damaged.safetensors");
    for trial in 0..300 {
        let bytes = match trial % 3 {
            0 => random_bytes(&mut rng, 4096),
            1 => real[..rng.gen_range(0..real.len())].to_vec(),
            _ => {
                // Flip bytes inside the JSON header.
                let mut copy = real.clone();
                let header = 8 + u64::from_le_bytes(real[..8].try_into().unwrap()) as usize;
                for _ in 0..4 {
                    let at = rng.gen_range(8..header);
                    copy[at] = rng.gen();
                }
                copy
            }
        };
        std::fs::write(&damaged, &bytes).unwrap();
        let result = ssa::checkpoint::load(&damaged, &Device::Cpu).and_then(|c| c.build_model(&Device::Cpu).map(|_| ()));
        if trial % 3 != 2 {
            let error = result.expect_err("a random or truncated checkpoint must be rejected");
            assert!(error.to_string().contains("damaged.safetensors"), "{error}");
        }
    }
}
