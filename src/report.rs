//! `ssa report`: one table that puts finished (or running) runs side by side, read from their
//! run directories (`config.toml`, `metrics.csv`, `layers.csv`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};

/// A CSV file with a header row, as text fields by column name.
pub struct Table {
    pub path: PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads `path`; every row must have as many fields as the header.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| Error::data(path, "is empty: expected a header row"))?;
        let columns: Vec<String> = header.split(',').map(str::to_string).collect();
        let mut rows = Vec::new();
        for (index, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
            let fields: Vec<String> = line.split(',').map(str::to_string).collect();
            if fields.len() != columns.len() {
                return Err(Error::data(
                    path,
                    format!("row {} has {} fields, the header has {}", index + 1, fields.len(), columns.len()),
                ));
            }
            rows.push(fields);
        }
        Ok(Self { path: path.to_path_buf(), columns, rows })
    }

    /// Index of column `name`.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| Error::data(&self.path, format!("has no column `{name}`: it was written by another version")))
    }

    /// Values of column `name` parsed as numbers; empty fields give `None`.
    pub fn numbers(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let index = self.column(name)?;
        Ok(self.rows.iter().map(|row| row[index].parse::<f64>().ok()).collect())
    }
}

/// The figures of one run that the report shows.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub rule: String,
    pub arch: String,
    pub dataset: String,
    /// Completed epochs and the configured total.
    pub epochs: usize,
    pub planned_epochs: usize,
    pub best_top1: Option<f64>,
    pub final_top1: Option<f64>,
    pub params: Option<f64>,
    pub mflops: Option<f64>,
    pub dense_mflops: Option<f64>,
    pub seconds_per_epoch: Option<f64>,
    /// Test top-1 by epoch, for plots.
    pub curve: Vec<(usize, f64)>,
    /// Gradient angle by layer: (step, degrees) pairs in file order.
    pub angles: Vec<(String, Vec<(usize, f64)>)>,
}

/// Reads the run directory `dir`.
pub fn read_run(dir: &Path) -> Result<RunSummary> {
    let config_path = dir.join("config.toml");
    if !config_path.is_file() {
        return Err(Error::data(dir, "is not a run directory: config.toml is missing (pass directories that `ssa train` created)"));
    }
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config = Config::from_toml_str(&text, &[]).map_err(|e| Error::data(&config_path, e.to_string()))?;
    let metrics = Table::read(&dir.join("metrics.csv"))?;
    let epochs = metrics.numbers("epoch")?;
    let top1 = metrics.numbers("test_top1")?;
    let seconds = metrics.numbers("seconds")?;
    let last = |values: &[Option<f64>]| values.iter().rev().find_map(|v| *v);

    let curve: Vec<(usize, f64)> = epochs
        .iter()
        .zip(&top1)
        .filter_map(|(e, t)| Some((e.map(|e| e as usize)?, (*t)?)))
        .collect();
    let timed: Vec<f64> = seconds.iter().flatten().copied().collect();
    Ok(RunSummary {
        dir: dir.to_path_buf(),
        rule: config.method.rule.clone(),
        arch: config.model.arch.clone(),
        dataset: config.data.dataset.clone(),
        epochs: metrics.rows.len(),
        planned_epochs: config.train.epochs,
        best_top1: top1.iter().flatten().copied().reduce(f64::max),
        final_top1: last(&top1),
        params: last(&metrics.numbers("params")?),
        mflops: last(&metrics.numbers("mflops")?),
        dense_mflops: last(&metrics.numbers("dense_mflops")?),
        seconds_per_epoch: (!timed.is_empty()).then(|| timed.iter().sum::<f64>() / timed.len() as f64),
        curve,
        angles: read_angles(&dir.join("layers.csv"))?,
    })
}

/// Reads the gradient-angle rows of `layers.csv`, if the file exists and has them.
fn read_angles(path: &Path) -> Result<Vec<(String, Vec<(usize, f64)>)>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let table = Table::read(path)?;
    let Ok(angle) = table.column("grad_angle_deg") else {
        return Ok(Vec::new());
    };
    let (step, layer) = (table.column("step")?, table.column("layer")?);
    let mut order = Vec::new();
    let mut by_layer: HashMap<String, Vec<(usize, f64)>> = HashMap::new();
    for row in &table.rows {
        let (Ok(s), Ok(a)) = (row[step].parse::<usize>(), row[angle].parse::<f64>()) else {
            continue;
        };
        if !by_layer.contains_key(&row[layer]) {
            order.push(row[layer].clone());
        }
        by_layer.entry(row[layer].clone()).or_default().push((s, a));
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let points = by_layer.remove(&name).unwrap_or_default();
            (name, points)
        })
        .collect())
}

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Csv,
}

const HEADERS: [&str; 11] = [
    "run",
    "rule",
    "model",
    "dataset",
    "epochs",
    "best top-1 %",
    "final top-1 %",
    "params",
    "MFLOPs/image",
    "dense MFLOPs",
    "s/epoch",
];

/// Renders one row per run.
pub fn render(runs: &[RunSummary], format: Format) -> String {
    let percent = |v: Option<f64>| v.map(|v| format!("{:.2}", 100.0 * v)).unwrap_or_else(|| "-".into());
    let number = |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let name = run.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let epochs = if run.epochs == run.planned_epochs {
                run.epochs.to_string()
            } else {
                format!("{}/{}", run.epochs, run.planned_epochs)
            };
            vec![
                name,
                run.rule.clone(),
                run.arch.clone(),
                run.dataset.clone(),
                epochs,
                percent(run.best_top1),
                percent(run.final_top1),
                number(run.params, 0),
                number(run.mflops, 3),
                number(run.dense_mflops, 3),
                number(run.seconds_per_epoch, 1),
            ]
        })
        .collect();
    match format {
        Format::Csv => {
            let mut out = HEADERS.join(",") + "\n";
            for row in rows {
                out += &(row.join(",") + "\n");
            }
            out
        }
        Format::Markdown => {
            let mut out = format!("| {} |\n", HEADERS.join(" | "));
            out += &format!("|{}\n", " --- |".repeat(HEADERS.len()));
            for row in rows {
                out += &format!("| {} |\n", row.join(" | "));
            }
            out
        }
    }
}
