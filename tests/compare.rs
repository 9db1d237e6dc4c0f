//! Two short real runs (BP and SSA on LeNet) compared by `ssa report` and `ssa plot`, and a
//! dense checkpoint evaluated by `ssa eval`.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ssa() -> Command {
    Command::cargo_bin("ssa").unwrap()
}

/// Trains LeNet with `rule` for two epochs on the CIFAR-10 fixture; returns the run directory.
fn short_run(rule: &str, out: &Path) -> PathBuf {
    let out = out.join(rule);
    // The config retracts the SVD factors, a key that the dense rules reject.
    let retract = if rule == "ssa" { "method.retract_every=10" } else { "method.retract_every=0" };
    // A data directory relative to the working directory, as users type it.
    ssa()
        .current_dir(manifest())
        .args(["train", "--config"])
        .arg(manifest().join("configs/cifar10_lenet.toml"))
        .args(["--data-dir", "tests/fixtures/cifar10"])
        .arg("--out")
        .arg(&out)
        .args(["--set", &format!("method.rule=\"{rule}\"")])
        .args(["--set", retract])
        .args(["--set", "train.epochs=2", "--set", "data.test_limit=200", "--set", "diagnostics.every=4"])
        .args(["--set", "diagnostics.probe_size=32", "--set", "train.batch_size=100"])
        .assert()
        .success();
    let dirs: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1);
    dirs[0].clone()
}

#[test]
fn report_and_plot_compare_two_real_runs() {
    let out = tempfile::tempdir().unwrap();
    let bp = short_run("bp", out.path());
    let ssa_run = short_run("ssa", out.path());

    // layers.csv: per-epoch rows and gradient-angle rows every 4 steps (10 steps in all).
    let layers = std::fs::read_to_string(ssa_run.join("layers.csv")).unwrap();
    let header: Vec<&str> = layers.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header,
        ["epoch", "step", "layer", "rank", "full_rank", "params", "dense_params", "mflops", "orth_error", "subspace_angle_deg", "grad_angle_deg"]
    );
    let angle_steps: Vec<&str> = layers
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with(','))
        .filter(|l| l.contains(",conv1,"))
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(angle_steps, ["0", "4", "8"], "{layers}");

    let output = ssa().arg("report").arg(&bp).arg(&ssa_run).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].contains("best top-1 %"), "{table}");
    assert!(lines[0].contains("MFLOPs/image"), "{table}");
    assert!(lines[2].contains("| bp | lenet | cifar10 | 2 |"), "{table}");
    assert!(lines[3].contains("| ssa | lenet | cifar10 | 2 |"), "{table}");

    let csv = ssa().arg("report").arg(&bp).args(["--format", "csv"]).output().unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with("run,rule,model,dataset,epochs,"), "{csv}");
    assert_eq!(csv.lines().count(), 2);

    for name in ["plot.svg", "plot.png"] {
        let path = out.path().join(name);
        ssa().arg("plot").arg(&bp).arg(&ssa_run).arg("--out").arg(&path).assert().success();
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".png") {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        } else {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains("<svg"), "{}", &text[..200]);
            assert!(text.contains("Test top-1 accuracy"), "{}", &text[..200]);
            assert!(text.contains("ssa lenet: conv1"), "the angle panel names the layers");
        }
    }
    let error = ssa().arg("plot").arg(&bp).args(["--out", "plot.gif"]).output().unwrap();
    assert!(String::from_utf8_lossy(&error.stderr).contains(".png or .svg"));
    let error = ssa().arg("report").arg(out.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&error.stderr).contains("config.toml is missing"));

    // The dense checkpoint evaluates to the accuracy logged at the end of training.
    let metrics = std::fs::read_to_string(bp.join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let last: Vec<&str> = metrics.lines().last().unwrap().split(',').collect();
    let logged: f64 = last[header.iter().position(|c| *c == "test_top1").unwrap()].parse().unwrap();
    // Run from another directory without --data-dir: the checkpoint's absolute data path is used.
    let output = ssa()
        .current_dir(out.path())
        .args(["eval", "--json", "--ckpt"])
        .arg(bp.join("checkpoints/last.safetensors"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!((report["test_top1"].as_f64().unwrap() - logged).abs() < 1e-6);
    assert_eq!(report["rule"], "bp");

    // The run directory stands for its last checkpoint.
    let output = ssa().args(["eval", "--json", "--ckpt"]).arg(&bp).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let from_dir: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(from_dir["test_top1"], report["test_top1"]);
}
