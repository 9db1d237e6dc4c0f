//! Command-line entry point: parses arguments and calls one library function per subcommand.

use std::fs::File;
use std::path::{Path, PathBuf};
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
        /// Experiment config (TOML), for example configs/cifar10_vgg13.toml.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Override a config key by its dotted path with a TOML value, for example
        /// --set train.epochs=2 --set data.train_limit=512. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Dataset directory with the official binary files (sets data.dir).
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
    /// Evaluate a checkpoint on the test set; the model is rebuilt from the checkpoint alone.
    Eval {
        /// Checkpoint written by `ssa train` (<run>/checkpoints/last.safetensors or best.safetensors).
        #[arg(long, value_name = "FILE")]
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
    },
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

fn run_train(
    config_path: &Path,
    mut overrides: Vec<String>,
    data_dir: Option<PathBuf>,
    out: Option<PathBuf>,
    device: Option<String>,
    log_file: &Mutex<Option<File>>,
) -> anyhow::Result<()> {
    let quote = |value: &str| toml::Value::String(value.to_string()).to_string();
    if let Some(dir) = data_dir {
        overrides.push(format!("data.dir={}", quote(&dir.to_string_lossy())));
    }
    if let Some(dir) = out {
        overrides.push(format!("experiment.out_dir={}", quote(&dir.to_string_lossy())));
    }
    if let Some(device) = device {
        overrides.push(format!("train.device={}", quote(&device)));
    }
    let config = Config::load(config_path, &overrides)?;
    let run_dir = ssa::train::create_run_dir(&config)?;
    let log_path = run_dir.join("train.log");
    let file = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    *log_file.lock().expect("log file lock is never poisoned") = Some(file);
    tracing::info!("run directory {}", run_dir.display());

    let summary = ssa::train::train(&config, &run_dir)?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_file = Arc::new(Mutex::new(None));
    init_logging(log_file.clone());

    let result = match cli.command {
        Command::Train { config, overrides, data_dir, out, device } => {
            run_train(&config, overrides, data_dir, out, device, &log_file)
        }
        Command::Eval { ckpt, data_dir, limit, batch_size, device, json } => {
            let options = EvalOptions { data_dir, limit, batch_size, device };
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
            ExitCode::FAILURE
        }
    }
}
