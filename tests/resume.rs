//! Resuming runs, interruption by SIGINT, and non-finite losses, through the `ssa` binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::str::contains;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

fn smoke_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml")
}

/// Small, fast settings shared by every run of this file.
const SETTINGS: [&str; 8] = [
    "--set",
    "model.width=0.25",
    "--set",
    "data.train_limit=512",
    "--set",
    "data.test_limit=100",
    "--set",
    "train.epochs=3",
];

fn train_command(out: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), "--config".into()];
    args.push(smoke_config().display().to_string());
    args.extend(["--data-dir".to_string(), fixture().display().to_string()]);
    args.extend(["--out".to_string(), out.display().to_string()]);
    args.extend(SETTINGS.iter().map(|s| s.to_string()));
    args
}

fn run_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "expected one run directory, found {dirs:?}");
    dirs[0].clone()
}

/// metrics.csv without the columns that measure time or memory.
fn metrics_without_timing(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let timing = ["seconds", "images_per_sec", "peak_rss_mib"];
    text.lines()
        .map(|line| {
            line.split(',')
                .zip(&header)
                .filter(|(_, name)| !timing.contains(name))
                .map(|(field, _)| field)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn uninterrupted_metrics() -> Vec<String> {
    let out = tempfile::tempdir().unwrap();
    Command::cargo_bin("ssa").unwrap().args(train_command(out.path())).assert().success();
    metrics_without_timing(&run_dir(out.path()))
}

#[test]
fn resume_after_interrupt_matches_uninterrupted_run() {
    let expected = uninterrupted_metrics();
    assert_eq!(expected.len(), 4, "header and three epochs");

    // Interrupt with SIGINT once the first epoch is logged.
    let out = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ssa"))
        .args(train_command(out.path()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let metrics_path = loop {
        let found = std::fs::read_dir(out.path())
            .ok()
            .and_then(|mut dirs| dirs.next())
            .map(|d| d.unwrap().path().join("metrics.csv"));
        if let Some(path) = found.filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.lines().count() >= 2)) {
            break path;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the first epoch never finished");
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("ssa train --resume"), "{stderr}");
    let run = metrics_path.parent().unwrap().to_path_buf();
    assert!(run.join("checkpoints/last.safetensors").is_file());

    Command::cargo_bin("ssa")
        .unwrap()
        .args(["train", "--data-dir"])
        .arg(fixture())
        .arg("--resume")
        .arg(&run)
        .assert()
        .success();
    assert_eq!(metrics_without_timing(&run), expected);
}

#[test]
fn finished_run_continues_with_more_epochs() {
    let expected = uninterrupted_metrics();
    let out = tempfile::tempdir().unwrap();
    let mut first = train_command(out.path());
    first.extend(["--set".to_string(), "train.epochs=1".to_string()]);
    Command::cargo_bin("ssa").unwrap().args(first).assert().success();
    let run = run_dir(out.path());

    Command::cargo_bin("ssa")
        .unwrap()
        .args(["train", "--data-dir"])
        .arg(fixture())
        .arg("--resume")
        .arg(run.join("checkpoints/last.safetensors"))
        .args(["--set", "train.epochs=3"])
        .assert()
        .success();
    assert_eq!(metrics_without_timing(&run), expected);
}

#[test]
fn resume_rejects_changed_model() {
    let out = tempfile::tempdir().unwrap();
    let mut first = train_command(out.path());
    first.extend(["--set".to_string(), "train.epochs=1".to_string()]);
    Command::cargo_bin("ssa").unwrap().args(first).assert().success();
    Command::cargo_bin("ssa")
        .unwrap()
        .args(["train", "--data-dir"])
        .arg(fixture())
        .arg("--resume")
        .arg(run_dir(out.path()))
        .args(["--set", "model.width=0.5", "--set", "method.beta=0"])
        .assert()
        .failure()
        .stderr(contains("model.width"))
        .stderr(contains("method.beta"));
}

#[test]
fn non_finite_loss_stops_with_step_and_layer() {
    let out = tempfile::tempdir().unwrap();
    let mut args = train_command(out.path());
    args.extend(["--set".to_string(), "train.lr=1e30".to_string()]);
    Command::cargo_bin("ssa")
        .unwrap()
        .args(args)
        .assert()
        .failure()
        .stderr(contains("training diverged"))
        .stderr(contains("step 2"))
        .stderr(contains("layer"));
    // The run wrote no checkpoint, so its directory is removed rather than left half-made.
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "the failed run left {left:?}");
}

#[test]
fn skip_batch_policy_keeps_training() {
    let out = tempfile::tempdir().unwrap();
    let mut args = train_command(out.path());
    args.extend(["--set", "train.lr=1e30", "--set", "train.on_nan=\"skip_batch\"", "--set", "train.epochs=1"].map(String::from));
    Command::cargo_bin("ssa")
        .unwrap()
        .args(args)
        .assert()
        .success()
        .stderr(contains("skipped a batch"));
}
