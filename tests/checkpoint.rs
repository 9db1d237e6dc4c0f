//! Checkpoints that do not fit: no metadata, another architecture, another class count; and an
//! output directory that cannot be written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::Device;
use predicates::str::contains;
use safetensors::SafeTensors;
use ssa::config::Config;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

/// Trains a tiny SmallConv for one epoch and returns its last checkpoint.
fn tiny_checkpoint(out: &Path) -> PathBuf {
    let overrides: Vec<String> = vec![
        format!("data.dir=\"{}\"", fixture().display()),
        format!("experiment.out_dir=\"{}\"", out.display()),
        "model.width=0.125".into(),
        "data.train_limit=64".into(),
        "data.test_limit=32".into(),
        "train.batch_size=32".into(),
    ];
    let config = Config::from_toml_str("", &overrides).unwrap();
    let run = ssa::train::create_run_dir(&config).unwrap();
    ssa::train::train(&config, &run).unwrap();
    run.join("checkpoints/last.safetensors")
}

/// Rewrites the checkpoint at `source` into `target` with `edit` applied to its metadata.
fn rewrite_metadata(source: &Path, target: &Path, edit: impl Fn(&mut HashMap<String, String>)) {
    let bytes = std::fs::read(source).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap_or_default();
    edit(&mut metadata);
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let data = safetensors::serialize(tensors.tensors(), Some(metadata)).unwrap();
    std::fs::write(target, data).unwrap();
}

fn edit_stored_config(metadata: &mut HashMap<String, String>, edit: impl Fn(&mut serde_json::Value)) {
    let mut meta: serde_json::Value = serde_json::from_str(&metadata["ssa"]).unwrap();
    edit(&mut meta);
    metadata.insert("ssa".into(), meta.to_string());
}

fn rebuild_error(path: &Path) -> String {
    let loaded = ssa::checkpoint::load(path, &Device::Cpu);
    match loaded.and_then(|c| c.build_model(&Device::Cpu).map(|_| ())) {
        Ok(()) => panic!("{} should be rejected", path.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn checkpoint_without_metadata_is_rejected() {
    let out = tempfile::tempdir().unwrap();
    let real = tiny_checkpoint(out.path());
    let bare = out.path().join("bare.safetensors");
    rewrite_metadata(&real, &bare, |metadata| metadata.clear());
    let message = rebuild_error(&bare);
    assert!(message.contains("bare.safetensors"), "{message}");
    assert!(message.contains("metadata key `format`"), "{message}");
}

#[test]
fn checkpoint_of_other_architecture_is_rejected() {
    let out = tempfile::tempdir().unwrap();
    let real = tiny_checkpoint(out.path());
    let other = out.path().join("other_arch.safetensors");
    rewrite_metadata(&real, &other, |metadata| {
        edit_stored_config(metadata, |meta| meta["config"]["model"]["arch"] = "vgg13".into());
    });
    let message = rebuild_error(&other);
    assert!(message.contains("other_arch.safetensors"), "{message}");
    assert!(message.contains("another architecture"), "{message}");
}

#[test]
fn checkpoint_of_other_class_count_is_rejected() {
    let out = tempfile::tempdir().unwrap();
    let real = tiny_checkpoint(out.path());
    let other = out.path().join("other_classes.safetensors");
    rewrite_metadata(&real, &other, |metadata| {
        edit_stored_config(metadata, |meta| {
            meta["num_classes"] = 100.into();
            meta["config"]["data"]["dataset"] = "cifar100".into();
        });
    });
    let message = rebuild_error(&other);
    assert!(message.contains("classifier"), "{message}");
    assert!(message.contains("class count"), "{message}");
}

#[test]
fn unwritable_output_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the output directory should be.
    let blocker = dir.path().join("not_a_directory");
    std::fs::write(&blocker, b"").unwrap();
    Command::cargo_bin("ssa")
        .unwrap()
        .args(["train", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml"))
        .arg("--data-dir")
        .arg(fixture())
        .arg("--out")
        .arg(&blocker)
        .assert()
        .failure()
        .stderr(contains("not_a_directory"))
        .stderr(contains("writable directory"));
}
