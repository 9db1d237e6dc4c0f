//! The `ssa` binary from the command line, on the real CIFAR-10 fixture.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::str::contains;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

fn smoke_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml")
}

fn ssa() -> Command {
    Command::cargo_bin("ssa").unwrap()
}

/// Returns the only run directory under `out`.
fn run_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "expected one run directory, found {dirs:?}");
    dirs[0].clone()
}

#[test]
fn train_then_eval_reports_same_accuracy() {
    let out = tempfile::tempdir().unwrap();
    ssa()
        .args(["train", "--config"])
        .arg(smoke_config())
        .arg("--data-dir")
        .arg(fixture())
        .arg("--out")
        .arg(out.path())
        .args(["--set", "train.epochs=1", "--set", "data.train_limit=256", "--set", "data.test_limit=200"])
        .assert()
        .success();

    let run = run_dir(out.path());
    for file in ["config.toml", "metrics.csv", "train.log", "checkpoints/last.safetensors", "checkpoints/best.safetensors"] {
        assert!(run.join(file).is_file(), "{file} is missing from {}", run.display());
    }
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("epochs = 1"), "{resolved}");
    assert!(resolved.contains("train_limit = 256"), "{resolved}");

    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    for column in ["epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr", "seconds", "images_per_sec", "params", "loss_dfa", "loss_align", "loss_orth", "loss_hoyer"] {
        assert!(header.contains(&column), "metrics.csv lacks column {column}");
    }
    assert_eq!(lines.len(), 2, "header and one epoch");
    let row: Vec<&str> = lines[1].split(',').collect();
    let column = |name: &str| row[header.iter().position(|c| *c == name).unwrap()].to_string();
    let train_top1: f64 = column("test_top1").parse().unwrap();

    let output = ssa()
        .args(["eval", "--json", "--ckpt"])
        .arg(run.join("checkpoints/last.safetensors"))
        .arg("--data-dir")
        .arg(fixture())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let eval_top1 = report["test_top1"].as_f64().unwrap();
    assert!((eval_top1 - train_top1).abs() < 1e-6, "train reported {train_top1}, eval {eval_top1}");
    assert_eq!(report["test_images"], 200);
    assert_eq!(report["params"].to_string(), column("params"));
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5, "SmallConv has five SVD layers");
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[0]["shape"], serde_json::json!([48, 3, 3, 3]));
    assert_eq!(layers[0]["rank"], 9);
    for key in ["test_loss", "test_top5"] {
        assert!(report[key].is_number(), "{key} is missing");
    }

    ssa()
        .args(["eval", "--ckpt"])
        .arg(run.join("checkpoints/best.safetensors"))
        .arg("--data-dir")
        .arg(fixture())
        .assert()
        .success()
        .stdout(contains("test top-1"))
        .stdout(contains("conv1"));
}

/// A checkpoint written after pruning rebuilds at the reduced ranks and scores what training
/// reported for its last epoch.
#[test]
fn pruned_checkpoint_evaluates_at_reduced_rank() {
    let out = tempfile::tempdir().unwrap();
    ssa()
        .args(["train", "--config"])
        .arg(smoke_config())
        .arg("--data-dir")
        .arg(fixture())
        .arg("--out")
        .arg(out.path())
        .args(["--set", "rank.schedule=\"hybrid\"", "--set", "data.train_limit=256", "--set", "data.test_limit=200"])
        .assert()
        .success();
    let run = run_dir(out.path());
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let last: Vec<&str> = lines.last().unwrap().split(',').collect();
    let column = |name: &str| last[header.iter().position(|c| *c == name).unwrap()].to_string();
    let first: Vec<&str> = lines[1].split(',').collect();
    let first_params: usize = first[header.iter().position(|c| *c == "params").unwrap()].parse().unwrap();

    let output = ssa()
        .args(["eval", "--json", "--ckpt"])
        .arg(run.join("checkpoints/last.safetensors"))
        .arg("--data-dir")
        .arg(fixture())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let params = report["params"].as_u64().unwrap() as usize;
    assert!(params < first_params, "params {params} not below the full-rank {first_params}");
    assert_eq!(params.to_string(), column("params"));
    let top1: f64 = column("test_top1").parse().unwrap();
    assert!((report["test_top1"].as_f64().unwrap() - top1).abs() < 1e-6);
    for layer in report["layers"].as_array().unwrap() {
        assert!(layer["rank"].as_u64() < layer["full_rank"].as_u64(), "layer {} kept full rank", layer["name"]);
    }
    let layers_csv = std::fs::read_to_string(run.join("layers.csv")).unwrap();
    assert_eq!(layers_csv.lines().count(), 1 + 2 * 5, "header and five layers for two epochs");
}

#[test]
fn summary_prints_layer_table() {
    ssa()
        .args(["summary", "--config"])
        .arg(smoke_config())
        .assert()
        .success()
        .stdout(contains("conv1"))
        .stdout(contains("classifier"))
        .stdout(contains("MFLOPs"));
}

#[test]
fn misspelled_config_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[train]\nepoch = 2\n").unwrap();
    ssa()
        .args(["train", "--config"])
        .arg(&config)
        .assert()
        .failure()
        .stderr(contains("unknown key `train.epoch`"))
        .stderr(contains("did you mean `train.epochs`"));
}

#[test]
fn bad_override_value_is_rejected() {
    ssa()
        .args(["train", "--config"])
        .arg(smoke_config())
        .args(["--set", "train.batch_size=0"])
        .assert()
        .failure()
        .stderr(contains("train.batch_size"))
        .stderr(contains("≥ 1"));
}

#[test]
fn truncated_data_file_is_named() {
    let data = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, data.path().join(path.file_name().unwrap())).unwrap();
    }
    let victim = data.path().join("data_batch_4.bin");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..5000]).unwrap();
    let out = tempfile::tempdir().unwrap();
    ssa()
        .args(["train", "--config"])
        .arg(smoke_config())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--out")
        .arg(out.path())
        .assert()
        .failure()
        .stderr(contains("data_batch_4.bin"))
        .stderr(contains("truncated"));
}

#[test]
fn eval_rejects_file_that_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.safetensors");
    std::fs::write(&path, b"definitely not a safetensors header").unwrap();
    ssa()
        .args(["eval", "--ckpt"])
        .arg(&path)
        .assert()
        .failure()
        .stderr(contains("random.safetensors"))
        .stderr(contains("not a safetensors file"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_feature_says_how_to_rebuild() {
    ssa()
        .args(["train", "--config"])
        .arg(smoke_config())
        .arg("--data-dir")
        .arg(fixture())
        .args(["--device", "cuda", "--out"])
        .arg(tempfile::tempdir().unwrap().path())
        .assert()
        .failure()
        .stderr(contains("--features cuda"));
}

#[test]
fn help_explains_options() {
    ssa()
        .args(["train", "--help"])
        .assert()
        .success()
        .stdout(contains("--set"))
        .stdout(contains("--data-dir"));
    ssa()
        .args(["eval", "--help"])
        .assert()
        .success()
        .stdout(contains("--json"))
        .stdout(contains("Images per forward pass"));
}

#[test]
fn bench_times_rules_and_ranks() {
    let out = tempfile::tempdir().unwrap();
    let table = out.path().join("bench.md");
    let output = ssa()
        .args(["bench", "--models", "lenet", "--rules", "bp,ssa", "--ranks", "1,0.3", "--steps", "1"])
        .args(["--batch-size", "16", "--matmul", "128", "--data-dir"])
        .arg(fixture())
        .arg("--out")
        .arg(&table)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&table).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| bp") || l.starts_with("| ssa")).collect();
    assert_eq!(rows.len(), 3, "bp dense, ssa at full and 30% rank:\n{text}");
    assert!(rows[0].starts_with("| bp | lenet | dense |"), "{text}");
    assert!(rows[1].starts_with("| ssa | lenet | full |"), "{text}");
    assert!(rows[2].starts_with("| ssa | lenet | 30% |"), "{text}");
    assert!(text.contains("128³ f32 matrix product"), "{text}");
}
