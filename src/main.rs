//! Command-line entry point: parses arguments and calls one library function per subcommand.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ssa::config::Config;
use ssa::eval::{evaluate_checkpoint, EvalOptions};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Train deep nets with SVD-Space Alignment (SSA) and the baselines it is compared with.
#[derive(Parser)]
#[command(name = "ssa", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config; writes a run directory with the resolved config,
    /// metrics.csv, checkpoints and a log.
    Train {
        /// Experiment config (TOML), for example configs/cifar10_vgg13.toml. With --resume it
        /// defaults to the config stored in the checkpoint.
        #[arg(long, value_name = "FILE", required_unless_present = "resume")]
        config: Option<PathBuf>,
        /// Continue an interrupted or finished run: its directory, or a checkpoint inside its
        /// checkpoints/ folder. Only train.epochs, train.device, train.eval_every,
        /// train.checkpoint_every, train.on_nan, the data.dir and data.download keys,
        /// experiment.out_dir and the diagnostics keys may change.
        #[arg(long, value_name = "RUN_DIR|CKPT")]
        resume: Option<PathBuf>,
        /// Override a config key by its dotted path with a TOML value, for example
        /// --set train.epochs=2 --set data.train_limit=512. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Dataset directory with the official binary files (sets data.dir, and data.download =
        /// false unless --set data.download=... is given, so that a mistyped path does not
        /// start a download).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Directory that receives the run directory (sets experiment.out_dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Device: cpu, cuda or cuda:N (sets train.device; CUDA needs a build with
        /// --features cuda).
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
    },
    /// Print one table comparing runs: rule, model, dataset, epochs, best and final test
    /// top-1, parameters, inference MFLOPs and seconds per epoch.
    Report {
        /// Run directories written by `ssa train`.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Table format.
        #[arg(long, value_parser = ["markdown", "csv"], default_value = "markdown")]
        format: String,
    },
    /// Draw test accuracy against epoch for runs, and the per-layer gradient angles when
    /// their layers.csv has them (diagnostics.every > 0).
    Plot {
        /// Run directories written by `ssa train`.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Output image: a .png or .svg file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Time one training step per rule, model and rank on real CIFAR-10 test images, and
    /// measure the device's matrix-product rate for comparison.
    Bench {
        /// Rules to time (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "ssa,svd_bp,bp,dfa")]
        rules: Vec<String>,
        /// Models to time (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "smallconv,vgg13,resnet32")]
        models: Vec<String>,
        /// Rank fractions of the SVD layers (comma-separated; 1 = full rank).
        #[arg(long, value_delimiter = ',', default_value = "1,0.3")]
        ranks: Vec<f64>,
        /// Images per step.
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        /// Timed steps per case, after one warm-up step.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Multiplier on every hidden width.
        #[arg(long, default_value_t = 1.0)]
        width: f64,
        /// CIFAR-10 binary directory.
        #[arg(long, value_name = "DIR", default_value = "data/cifar-10-batches-bin")]
        data_dir: PathBuf,
        /// Device: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Side of the square matrix product timed for reference (0 = skip).
        #[arg(long, default_value_t = 2048)]
        matmul: usize,
        /// Also write the table to this markdown file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Run the cases in this process and print one JSON row per case (used by `ssa bench`
        /// itself, which runs each case in a fresh process so that its peak memory is its own).
        #[arg(long, hide = true)]
        rows_json: bool,
    },
    /// Manage datasets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Print the model's per-layer table (type, shape, rank, parameters, inference MFLOPs and
    /// the dense equivalents) without training.
    Summary {
        /// Experiment config (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Override a config key by its dotted path with a TOML value. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Evaluate a checkpoint on the test set; the model is rebuilt from the checkpoint alone.
    Eval {
        /// Checkpoint written by `ssa train` (<run>/checkpoints/last.safetensors or
        /// best.safetensors), or a run directory for its last checkpoint.
        #[arg(long, value_name = "FILE|RUN_DIR")]
        ckpt: PathBuf,
        /// Dataset directory (default: data.dir stored in the checkpoint).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Evaluate only the first N test images (default: data.test_limit stored in the
        /// checkpoint, 0 meaning all).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Images per forward pass (default: train.batch_size stored in the checkpoint).
        #[arg(long, value_name = "N")]
        batch_size: Option<usize>,
        /// Device: cpu, cuda or cuda:N.
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Re-estimate BatchNorm statistics over N training batches before evaluating (the
        /// checkpoint file is not changed); for checkpoints pruned without recalibration.
        #[arg(long, value_name = "N", default_value_t = 0)]
        recalibrate_bn: usize,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download the official binary archive, verify its MD5 and extract it atomically into
    /// DIR/cifar-10-batches-bin or DIR/cifar-100-binary.
    Download {
        /// Dataset: cifar10 or cifar100.
        #[arg(value_parser = ["cifar10", "cifar100"])]
        dataset: String,
        /// Parent directory of the extracted dataset directory.
        #[arg(long, value_name = "DIR", default_value = "data")]
        dir: PathBuf,
        /// Archive address (default: the official one); needs --md5.
        #[arg(long, value_name = "URL", requires = "md5")]
        url: Option<String>,
        /// MD5 of the archive at --url, as 32 hexadecimal digits.
        #[arg(long, value_name = "HEX")]
        md5: Option<String>,
    },
}

fn run_download(dataset: &str, dir: &std::path::Path, url: Option<String>, md5: Option<String>) -> anyhow::Result<()> {
    use ssa::data::download::{download, Source};
    use std::io::IsTerminal;
    let kind = ssa::data::DatasetKind::from_name(dataset)?;
    let source = Source::new(kind, url.as_deref().unwrap_or(""), md5.as_deref().unwrap_or(""))?;
    let target = dir.join(kind.official_dir_name());
    if target.exists() {
        println!("{} already exists; delete it to download again", target.display());
        return Ok(());
    }
    tracing::info!("downloading {}", source.url);
    let created_dir = !dir.exists();
    if let Err(error) = download(kind, &target, &source, std::io::stderr().is_terminal()) {
        // Leave no empty --dir behind; remove_dir only removes an empty directory.
        if created_dir {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(error.into());
    }
    println!("{dataset} extracted into {}", target.display());
    Ok(())
}

/// Sends log lines to stderr and, once a run directory exists, to its log file.
fn init_logging(log_file: Arc<Mutex<Option<File>>>) {
    let file_writer = move || LogFile(log_file.clone());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr.and(file_writer))
        .init();
}

struct LogFile(Arc<Mutex<Option<File>>>);

impl std::io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().expect("log file lock is never poisoned").as_mut() {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock().expect("log file lock is never poisoned").as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// Options of `ssa train`.
struct TrainArgs {
    config: Option<PathBuf>,
    resume: Option<PathBuf>,
    overrides: Vec<String>,
    data_dir: Option<PathBuf>,
    out: Option<PathBuf>,
    device: Option<String>,
}

/// Removes a run directory that a failed start left without any checkpoint.
fn remove_if_empty(run_dir: &std::path::Path) {
    let has_checkpoint = std::fs::read_dir(run_dir.join("checkpoints")).is_ok_and(|mut entries| entries.next().is_some());
    if !has_checkpoint && std::fs::remove_dir_all(run_dir).is_ok() {
        tracing::info!("removed {}: the run failed before writing a checkpoint", run_dir.display());
    }
}

fn run_train(args: TrainArgs, log_file: &Mutex<Option<File>>) -> anyhow::Result<()> {
    let TrainArgs { config, resume, mut overrides, data_dir, out, device } = args;
    let quote = |value: &str| toml::Value::String(value.to_string()).to_string();
    if let Some(dir) = data_dir {
        if !overrides.iter().any(|o| o.trim_start().starts_with("data.download=") || o.trim_start().starts_with("data.download ")) {
            overrides.insert(0, "data.download=false".into());
        }
        overrides.push(format!("data.dir={}", quote(&dir.to_string_lossy())));
    }
    if let Some(dir) = out {
        overrides.push(format!("experiment.out_dir={}", quote(&dir.to_string_lossy())));
    }
    if let Some(device) = device {
        overrides.push(format!("train.device={}", quote(&device)));
    }
    ssa::train::install_signal_handler()?;

    let (config, run_dir, checkpoint) = match &resume {
        Some(target) => {
            let (run_dir, checkpoint) = ssa::train::resume_paths(target)?;
            let config = match &config {
                Some(path) => Config::load(path, &overrides)?,
                None => {
                    let stored = ssa::checkpoint::load(&checkpoint, &candle_core::Device::Cpu)?.meta.config;
                    Config::from_toml_str(&stored.to_toml_string(), &overrides)?
                }
            };
            (config, run_dir, Some(checkpoint))
        }
        None => {
            let path = config.as_deref().context("--config is required unless --resume is given")?;
            let config = Config::load(path, &overrides)?;
            let run_dir = ssa::train::create_run_dir(&config)?;
            (config, run_dir, None)
        }
    };
    let log_path = run_dir.join("train.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    *log_file.lock().expect("log file lock is never poisoned") = Some(file);
    tracing::info!("run directory {}", run_dir.display());

    let summary = match checkpoint {
        Some(checkpoint) => ssa::train::resume(&config, &run_dir, &checkpoint)?,
        None => match ssa::train::train(&config, &run_dir) {
            Ok(summary) => summary,
            Err(error) => {
                remove_if_empty(&run_dir);
                return Err(error.into());
            }
        },
    };
    let last = summary.epochs.last().and_then(|e| e.test);
    if let Some(test) = last {
        tracing::info!(
            "finished: test top-1 {:.4}, top-5 {:.4}; evaluate again with: ssa eval --ckpt {}",
            test.top1,
            test.top5,
            run_dir.join("checkpoints/last.safetensors").display()
        );
    }
    Ok(())
}

/// Runs each bench case in a child process (`ssa bench --rows-json` on that case alone), so that
/// every case starts from a fresh allocator and its peak resident memory is its own.
fn run_bench(options: &ssa::bench::BenchOptions, device: &str, matmul: usize, out: Option<PathBuf>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("failed to locate the ssa executable, which runs the bench cases")?;
    let mut rows = Vec::new();
    for case in ssa::bench::cases(options)? {
        let fraction = case.rank_fraction.unwrap_or(1.0);
        let output = std::process::Command::new(&exe)
            .args(["bench", "--rows-json", "--matmul", "0", "--device", device])
            .args(["--rules", &case.rule, "--models", &case.model, "--ranks", &fraction.to_string()])
            .args(["--batch-size", &options.batch_size.to_string(), "--steps", &options.steps.to_string()])
            .args(["--width", &options.width.to_string()])
            .arg("--data-dir")
            .arg(&options.data_dir)
            .output()
            .with_context(|| format!("cannot start {} for the bench case {} {}", exe.display(), case.rule, case.model))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            anyhow::bail!(
                "bench case {} on {} failed ({}): {}",
                case.rule,
                case.model,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let line = stdout.lines().last().unwrap_or_default();
        let row: ssa::bench::BenchRow = serde_json::from_str(line)
            .with_context(|| format!("bench case {} on {} printed no result row: {stdout:?}", case.rule, case.model))?;
        tracing::info!("{} {} {}: {:.0} ms/step, {:.1} images/s", row.rule, row.model, row.rank_label(), row.ms_per_step, row.images_per_sec);
        rows.push(row);
    }
    let mut text = ssa::bench::render(&rows);
    if matmul > 0 {
        let rate = ssa::bench::matmul_gflops(matmul, &options.device)?;
        text += &format!("\n{matmul}³ f32 matrix product: {rate:.1} GFLOP/s\n");
    }
    print!("{text}");
    if let Some(path) = out {
        ssa::checkpoint::write_atomically(&path, text.as_bytes())?;
    }
    Ok(())
}

/// Runs the bench cases in this process and prints each row as JSON (the child side of
/// [`run_bench`]).
fn bench_rows_json(options: &ssa::bench::BenchOptions) -> anyhow::Result<()> {
    ssa::bench::run(options, |row| {
        println!("{}", serde_json::to_string(row).expect("a bench row serialises"));
    })?;
    Ok(())
}

fn read_runs(dirs: &[PathBuf]) -> anyhow::Result<Vec<ssa::report::RunSummary>> {
    Ok(dirs.iter().map(|dir| ssa::report::read_run(dir)).collect::<ssa::Result<Vec<_>>>()?)
}

/// Keeps freed memory in the process for reuse. glibc serves blocks above its mmap threshold
/// (at most 32 MiB) with fresh pages and unmaps them on free, so every step's activations were
/// page faults on zeroed pages. A short VGG-13 bench made 2.9 million of them, about a fifth of
/// its time, and 0.9 million once everything came from a heap that is never trimmed.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings, and runs before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let log_file = Arc::new(Mutex::new(None));
    init_logging(log_file.clone());

    let result = match cli.command {
        Command::Train { config, resume, overrides, data_dir, out, device } => {
            let args = TrainArgs { config, resume, overrides, data_dir, out, device };
            run_train(args, &log_file)
        }
        Command::Data { command: DataCommand::Download { dataset, dir, url, md5 } } => {
            run_download(&dataset, &dir, url, md5)
        }
        Command::Report { runs, format } => read_runs(&runs).map(|runs| {
            let format = if format == "csv" { ssa::report::Format::Csv } else { ssa::report::Format::Markdown };
            print!("{}", ssa::report::render(&runs, format));
        }),
        Command::Plot { runs, out } => read_runs(&runs).and_then(|runs| {
            ssa::plot::write_plot(&runs, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }),
        Command::Bench { rules, models, ranks, batch_size, steps, width, data_dir, device, matmul, out, rows_json } => {
            let device_name = device.clone();
            ssa::device::open_device(&device)
                .map_err(anyhow::Error::from)
                .and_then(|device| {
                    if let Some(bad) = ranks.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
                        anyhow::bail!("--ranks {bad} is out of range: expected fractions in (0, 1]");
                    }
                    let options = ssa::bench::BenchOptions { rules, models, rank_fractions: ranks, batch_size, steps: steps.max(1), data_dir, device, width };
                    if rows_json {
                        return bench_rows_json(&options);
                    }
                    run_bench(&options, &device_name, matmul, out)
                })
        }
        Command::Summary { config, overrides } => Config::load(&config, &overrides)
            .and_then(|config| {
                let cost = ssa::summary::summarize(&config)?;
                let hybrid = config.rank.schedule == "hybrid";
                print!("{}", ssa::summary::cost_table(&cost, hybrid.then_some(config.rank.min_fraction)));
                Ok(())
            })
            .map_err(anyhow::Error::from),
        Command::Eval { ckpt, data_dir, limit, batch_size, device, json, recalibrate_bn } => {
            let options = EvalOptions { data_dir, limit, batch_size, device, recalibrate_batches: recalibrate_bn };
            evaluate_checkpoint(&ckpt, &options).map_err(anyhow::Error::from).map(|report| {
                if json {
                    println!("{}", serde_json::to_string(&report).expect("report serialises"));
                } else {
                    print!("{}", report.to_text());
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            let interrupted = matches!(error.downcast_ref::<ssa::Error>(), Some(ssa::Error::Interrupted { .. }));
            // 130 is the shell's status for a process ended by SIGINT.
            ExitCode::from(if interrupted { 130 } else { 1 })
        }
    }
}
