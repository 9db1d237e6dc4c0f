//! The experiment config: one serde struct per TOML section, `--set` overrides and validation.
//!
//! Every field has a default, so a config file only lists what it changes. Unknown keys are
//! rejected with the nearest valid key, and values are range-checked with the allowed range in
//! the message.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{Error, Result};

/// The whole experiment, as read from a TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub experiment: ExperimentConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub method: MethodConfig,
    pub rank: RankConfig,
    pub train: TrainConfig,
    pub diagnostics: DiagnosticsConfig,
}

/// `[experiment]`: naming, seeding and where runs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Run name; the run directory is `<out_dir>/<name>-<timestamp>`.
    pub name: String,
    /// Seed of every random draw: initialisation, feedback matrices, shuffling, augmentation.
    pub seed: u64,
    /// Directory that receives run directories.
    pub out_dir: String,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            name: "run".into(),
            seed: 0,
            out_dir: "runs".into(),
        }
    }
}

/// `[data]`: dataset, location, augmentation and subset sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `cifar10` or `cifar100`.
    pub dataset: String,
    /// Directory with the dataset's binary files; empty means `data/<official directory name>`.
    pub dir: String,
    /// Random crop with 4 pixels of zero padding and horizontal flip on training images.
    pub augment: bool,
    /// Use only the first N training images (0 = all).
    pub train_limit: usize,
    /// Use only the first N test images (0 = all).
    pub test_limit: usize,
    /// Download and extract the official archive when the dataset directory is missing.
    pub download: bool,
    /// Archive address; empty means the official one.
    pub download_url: String,
    /// MD5 of the archive at `download_url` (required with a custom address).
    pub download_md5: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "cifar10".into(),
            dir: String::new(),
            augment: true,
            train_limit: 0,
            test_limit: 0,
            download: false,
            download_url: String::new(),
            download_md5: String::new(),
        }
    }
}

/// `[model]`: architecture and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `smallconv`, `vgg13`, `resnet20`, `resnet32`, `resnet56`, `lenet` or `mlp`.
    pub arch: String,
    /// BatchNorm after every convolution.
    pub batch_norm: bool,
    /// Multiplier on every hidden width (channels and fc units); 1.0 is the published size.
    pub width: f64,
    /// Convolution kernel size (odd).
    pub kernel_size: usize,
    /// ResNet shortcut when the shape changes: `a` (zero-padded identity, no parameters) or
    /// `b` (1×1 convolution with BatchNorm).
    pub shortcut: String,
    /// Units of each hidden layer of the MLP (times `width`).
    pub hidden: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: "smallconv".into(),
            batch_norm: true,
            width: 1.0,
            kernel_size: 3,
            shortcut: "a".into(),
            hidden: 1024,
        }
    }
}

/// `[method]`: the learning rule and the weights of its local loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodConfig {
    /// Learning rule: `ssa` (SVD-Space Alignment), `svd_bp`, `bp`, `dfa`, `fa`, `usf`,
    /// `brsf` or `drtp`.
    pub rule: String,
    /// Weight of the broadcast-error (DFA) surrogate loss of each hidden unit.
    pub alpha: f64,
    /// Weight of the alignment loss between U, V and the feedback factors U_B, V_B.
    pub beta: f64,
    /// Weight of the orthogonality loss (‖UᵀU − I‖² + ‖VᵀV − I‖²) / r².
    pub gamma: f64,
    /// Weight of the Hoyer sparsity loss ‖s‖₁ / ‖s‖₂.
    pub hoyer: f64,
    /// Alignment form: `factor` (‖U − U_B‖²) or `subspace` (‖UUᵀ − U_B U_Bᵀ‖²).
    pub alignment: String,
    /// Multiplier on the broadcast feedback matrices D_l (columns have unit norm before it).
    pub feedback_scale: f64,
    /// Project the U and V gradients onto the tangent space of the Stiefel manifold.
    pub stiefel_projection: bool,
    /// Re-orthonormalise U and V by QR every N optimiser steps (0 = never).
    pub retract_every: usize,
}

// NOTE: beta and gamma are starting values, not the result of a sweep; docs/tuning.md lists
// what was measured.
impl Default for MethodConfig {
    fn default() -> Self {
        Self {
            rule: "ssa".into(),
            alpha: 1.0,
            beta: 1e-3,
            gamma: 1e-2,
            hoyer: 0.0,
            alignment: "factor".into(),
            feedback_scale: 1.0,
            stiefel_projection: true,
            retract_every: 0,
        }
    }
}

/// `[rank]`: the rank schedule of the SVD layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankConfig {
    /// `none` (full rank throughout) or `hybrid` (linear phase, then energy phase).
    pub schedule: String,
    /// Epochs between pruning events; shorter runs prune at every epoch end.
    pub prune_every: usize,
    /// Share of the epochs spent in the linear phase.
    pub phase1_fraction: f64,
    /// No layer goes below `ceil(min_fraction · full rank)`.
    pub min_fraction: f64,
    /// Share of `Σ s²` that the energy phase keeps.
    pub energy: f64,
    /// Training batches over which BatchNorm statistics are re-estimated after each pruning
    /// event (0 = keep the statistics of the unpruned layers).
    pub recalibrate_batches: usize,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self {
            schedule: "none".into(),
            prune_every: 10,
            phase1_fraction: 0.3,
            min_fraction: 0.3,
            energy: 0.95,
            recalibrate_batches: 50,
        }
    }
}

/// `[train]`: optimisation, schedule, device and cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Number of passes over the training set.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Optimiser; only `adam` is implemented.
    pub optimizer: String,
    /// Learning rate of s, biases, BatchNorm and dense weights.
    pub lr: f64,
    /// Learning rate of the SVD factors U and V (divided by √r when `lr_factors_rank_scaling`).
    pub lr_factors: f64,
    /// Divide the factors' learning rate by the square root of the layer's rank r, so that the
    /// change of W = U diag(s) Vᵀ per step does not grow with r.
    pub lr_factors_rank_scaling: bool,
    /// `constant`, `cosine` (to zero over the run, per step) or `step`.
    pub lr_schedule: String,
    /// For `step`: epochs between decays.
    pub lr_step_epochs: usize,
    /// For `step`: factor applied at each decay.
    pub lr_gamma: f64,
    /// Decoupled weight decay on s and dense weights (not on U, V, biases or BatchNorm).
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Evaluate on the test set every N epochs (the last epoch is always evaluated).
    pub eval_every: usize,
    /// Write `checkpoints/last.safetensors` every N epochs (the last epoch is always written).
    pub checkpoint_every: usize,
    /// On a non-finite loss or gradient: `stop` (error naming the step, layer and term) or
    /// `skip_batch` (drop the batch's updates, restore BatchNorm statistics, log a warning).
    pub on_nan: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 128,
            optimizer: "adam".into(),
            lr: 1e-3,
            lr_factors: 3e-3,
            lr_factors_rank_scaling: true,
            lr_schedule: "constant".into(),
            lr_step_epochs: 30,
            lr_gamma: 0.1,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            device: "cpu".into(),
            eval_every: 1,
            checkpoint_every: 1,
            on_nan: "stop".into(),
        }
    }
}

/// `[diagnostics]`: gradient-alignment angles measured during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsConfig {
    /// Measure every N optimiser steps (0 = never): per layer, the angle between the rule's
    /// update and the true BP gradient, written to `layers.csv`.
    pub every: usize,
    /// Images in the fixed probe batch (the first of the training set, not augmented).
    pub probe_size: usize,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        Self { every: 0, probe_size: 128 }
    }
}

/// Names accepted by the string-valued keys.
pub const DATASETS: &[&str] = &crate::data::DATASETS;
pub const ARCHS: &[&str] = &["smallconv", "vgg13", "resnet20", "resnet32", "resnet56", "lenet", "mlp"];
pub const RULES: &[&str] = &crate::rules::RULES;
pub const ALIGNMENTS: &[&str] = &["factor", "subspace"];
pub const SHORTCUTS: &[&str] = &["a", "b"];
pub const OPTIMIZERS: &[&str] = &["adam"];
pub const LR_SCHEDULES: &[&str] = &["constant", "cosine", "step"];
pub const RANK_SCHEDULES: &[&str] = &["none", "hybrid"];
pub const ON_NAN: &[&str] = &["stop", "skip_batch"];
/// Keys that may change when a run is resumed; any other difference is rejected.
pub const RESUMABLE_KEYS: &[&str] = &[
    "experiment.out_dir",
    "data.dir",
    "data.download",
    "data.download_url",
    "data.download_md5",
    "train.epochs",
    "train.device",
    "train.eval_every",
    "train.checkpoint_every",
    "train.on_nan",
    "diagnostics.every",
    "diagnostics.probe_size",
];

impl Config {
    /// Reads a TOML file, applies `KEY=VALUE` overrides and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let from_file = Self::from_toml_str(&text, &[])
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), strip_prefix(&e))))?;
        if overrides.is_empty() {
            return Ok(from_file);
        }
        Self::from_toml_str(&text, overrides).map_err(|e| {
            let message = strip_prefix(&e);
            // Name only the overrides that the message is about, when it names any: the
            // command adds some of its own (from --data-dir and --out) that the user never typed.
            let named: Vec<&str> = overrides
                .iter()
                .filter(|item| item.split_once('=').is_some_and(|(key, _)| message.contains(key.trim())))
                .map(String::as_str)
                .collect();
            let listed = if named.is_empty() { overrides.join(" ") } else { named.join(" ") };
            Error::Config(format!("--set {listed}: {message}"))
        })
    }

    /// Parses TOML text, applies `KEY=VALUE` overrides and validates the result.
    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string().trim().to_string()))?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        check_known_keys(&table)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                Error::Config(format!("key `{}`: {}", e.path(), e.inner().message()))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Serialises the config with every key spelled out, as written into the run directory.
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises to TOML")
    }

    /// Returns the dataset directory: `data.dir`, or when empty `data/<official directory
    /// name>` (CIFAR) or Debian's directory (Fashion-MNIST).
    pub fn data_dir(&self) -> String {
        if !self.data.dir.is_empty() {
            return self.data.dir.clone();
        }
        crate::data::DatasetKind::from_name(&self.data.dataset)
            .map(|kind| kind.default_dir())
            .unwrap_or_else(|_| "data/cifar-10-batches-bin".into())
    }

    /// Checks every value against its allowed range or set of names.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        one_of("data.dataset", &d.dataset, DATASETS)?;

        let m = &self.model;
        one_of("model.arch", &m.arch, ARCHS)?;
        one_of("model.shortcut", &m.shortcut, SHORTCUTS)?;
        positive("model.width", m.width)?;
        if m.kernel_size == 0 || m.kernel_size % 2 == 0 {
            return Err(out_of_range("model.kernel_size", m.kernel_size, "an odd integer ≥ 1"));
        }

        let me = &self.method;
        one_of("method.rule", &me.rule, RULES)?;
        one_of("method.alignment", &me.alignment, ALIGNMENTS)?;
        for (key, value) in [
            ("method.alpha", me.alpha),
            ("method.beta", me.beta),
            ("method.gamma", me.gamma),
            ("method.hoyer", me.hoyer),
        ] {
            non_negative(key, value)?;
        }
        positive("method.feedback_scale", me.feedback_scale)?;
        at_least_one("model.hidden", m.hidden)?;

        let r = &self.rank;
        one_of("rank.schedule", &r.schedule, RANK_SCHEDULES)?;
        let restricted = [
            ("method.alpha", me.alpha != 1.0, me.alpha.to_string(), "1", &["ssa"][..]),
            ("method.retract_every", me.retract_every != 0, me.retract_every.to_string(), "0", &["ssa", "svd_bp"][..]),
        ];
        for (key, set, value, neutral, rules) in restricted {
            if set && !rules.contains(&me.rule.as_str()) {
                let names = rules.join(" or ");
                return Err(Error::Config(format!(
                    "key `{key}` = {value} applies only to rule {names}, but method.rule = \"{}\": \
                     set it to {neutral} (`--set {key}={neutral}`) or use rule {names}",
                    me.rule
                )));
            }
        }
        if r.schedule != "none" && crate::rules::layer_kind(&me.rule)? == crate::layers::LayerKind::Dense {
            return Err(Error::Config(format!(
                "key `rank.schedule` = \"{}\" needs SVD layers, but rule \"{}\" trains dense \
                 layers: set rank.schedule = \"none\" or use rule ssa or svd_bp",
                r.schedule, me.rule
            )));
        }
        at_least_one("rank.prune_every", r.prune_every)?;
        for (key, value) in [
            ("rank.phase1_fraction", r.phase1_fraction),
            ("rank.min_fraction", r.min_fraction),
            ("rank.energy", r.energy),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(out_of_range(key, value, "a number in (0, 1]"));
            }
        }

        let t = &self.train;
        one_of("train.optimizer", &t.optimizer, OPTIMIZERS)?;
        one_of("train.lr_schedule", &t.lr_schedule, LR_SCHEDULES)?;
        one_of("train.on_nan", &t.on_nan, ON_NAN)?;
        at_least_one("train.epochs", t.epochs)?;
        at_least_one("train.batch_size", t.batch_size)?;
        at_least_one("train.eval_every", t.eval_every)?;
        at_least_one("train.checkpoint_every", t.checkpoint_every)?;
        at_least_one("train.lr_step_epochs", t.lr_step_epochs)?;
        positive("train.lr", t.lr)?;
        positive("train.lr_factors", t.lr_factors)?;
        positive("train.lr_gamma", t.lr_gamma)?;
        non_negative("train.weight_decay", t.weight_decay)?;
        positive("train.adam_eps", t.adam_eps)?;
        for (key, value) in [
            ("train.adam_beta1", t.adam_beta1),
            ("train.adam_beta2", t.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(out_of_range(key, value, "a number in [0, 1)"));
            }
        }
        crate::device::parse_device_name(&t.device)?;
        at_least_one("diagnostics.probe_size", self.diagnostics.probe_size)?;
        Ok(())
    }

    /// Lists the dotted keys whose values differ between `self` and `other`, except those in
    /// [`RESUMABLE_KEYS`].
    pub fn incompatible_keys(&self, other: &Config) -> Vec<String> {
        let flat = |config: &Config| -> Vec<(String, String)> {
            let value = toml::Value::try_from(config).expect("config serialises");
            let mut out = Vec::new();
            for (section, table) in value.as_table().expect("config is a table") {
                for (key, v) in table.as_table().expect("sections are tables") {
                    out.push((format!("{section}.{key}"), v.to_string()));
                }
            }
            out
        };
        flat(self)
            .into_iter()
            .zip(flat(other))
            .filter(|((key, a), (_, b))| a != b && !RESUMABLE_KEYS.contains(&key.as_str()))
            .map(|((key, a), (_, b))| format!("{key} ({a} → {b})"))
            .collect()
    }
}

fn strip_prefix(error: &Error) -> String {
    match error {
        Error::Config(message) => message.clone(),
        other => other.to_string(),
    }
}

fn out_of_range(key: &str, value: impl std::fmt::Display, allowed: &str) -> Error {
    Error::Config(format!("key `{key}` = {value} is out of range: expected {allowed}"))
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "key `{key}` = \"{value}\" is not supported: expected one of {}",
        quoted_list(allowed)
    )))
}

fn positive(key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        return Ok(());
    }
    Err(out_of_range(key, value, "a finite number > 0"))
}

fn non_negative(key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        return Ok(());
    }
    Err(out_of_range(key, value, "a finite number ≥ 0"))
}

fn at_least_one(key: &str, value: usize) -> Result<()> {
    if value >= 1 {
        return Ok(());
    }
    Err(out_of_range(key, value, "an integer ≥ 1"))
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies one `section.key=VALUE` override; VALUE is a TOML value, or a bare string.
fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let Some((path, raw)) = item.split_once('=') else {
        return Err(Error::Config(format!(
            "override `{item}` has no `=`: write it as KEY=VALUE, for example train.epochs=2"
        )));
    };
    let path = path.trim();
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut parsed) => parsed.remove("v").expect("the parsed table has key v"),
        Err(_) => toml::Value::String(raw.to_string()),
    };

    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(Error::Config(format!(
            "override key `{path}` is invalid: expected a dotted path such as train.epochs"
        )));
    }
    let (last, parents) = keys.split_last().expect("split always yields one key");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            Error::Config(format!("override `{path}`: `{key}` is a value, not a section"))
        })?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

/// Rejects keys that the schema lacks, suggesting the nearest valid key.
fn check_known_keys(table: &toml::Table) -> Result<()> {
    let schema = toml::Value::try_from(Config::default()).expect("default config serialises");
    let schema = schema.as_table().expect("config serialises to a table");
    for (section, value) in table {
        let Some(known_section) = schema.get(section).and_then(|v| v.as_table()) else {
            let names: Vec<&str> = schema.keys().map(String::as_str).collect();
            return Err(unknown_key(section, &names, ""));
        };
        let Some(entries) = value.as_table() else {
            return Err(Error::Config(format!(
                "key `{section}` must be a section ([{section}]), not a value"
            )));
        };
        for key in entries.keys() {
            if !known_section.contains_key(key) {
                let names: Vec<&str> = known_section.keys().map(String::as_str).collect();
                return Err(unknown_key(key, &names, section));
            }
        }
    }
    Ok(())
}

fn unknown_key(key: &str, known: &[&str], section: &str) -> Error {
    let full = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    };
    let nearest = known
        .iter()
        .min_by_key(|candidate| edit_distance(key, candidate))
        .filter(|candidate| edit_distance(key, candidate) <= key.len().max(3) / 2);
    let hint = match nearest {
        Some(name) if section.is_empty() => format!(" (did you mean `{name}`?)"),
        Some(name) => format!(" (did you mean `{section}.{name}`?)"),
        None => String::new(),
    };
    let place = if section.is_empty() {
        "sections".to_string()
    } else {
        format!("keys in [{section}]")
    };
    Error::Config(format!(
        "unknown key `{full}`{hint}; valid {place}: {}",
        known.join(", ")
    ))
}

/// Levenshtein distance between two short ASCII keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<Config>) -> String {
        result.expect_err("config should be rejected").to_string()
    }

    #[test]
    fn empty_config_uses_defaults() {
        let config = Config::from_toml_str("", &[]).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn override_sets_nested_value() {
        let overrides = vec!["train.epochs=3".to_string(), "model.arch=vgg13".to_string()];
        let config = Config::from_toml_str("", &overrides).unwrap();
        assert_eq!(config.train.epochs, 3);
        assert_eq!(config.model.arch, "vgg13");
    }

    #[test]
    fn misspelled_key_suggests_nearest() {
        let text = message(Config::from_toml_str("[train]\nepoch = 3\n", &[]));
        assert!(text.contains("unknown key `train.epoch`"), "{text}");
        assert!(text.contains("did you mean `train.epochs`"), "{text}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let text = message(Config::from_toml_str("[trian]\nepochs = 3\n", &[]));
        assert!(text.contains("did you mean `train`"), "{text}");
    }

    #[test]
    fn wrong_type_names_key() {
        let text = message(Config::from_toml_str("[train]\nepochs = \"three\"\n", &[]));
        assert!(text.contains("train.epochs"), "{text}");
    }

    #[test]
    fn out_of_range_names_allowed_values() {
        let text = message(Config::from_toml_str("[train]\nlr = -0.1\n", &[]));
        assert!(text.contains("train.lr"), "{text}");
        assert!(text.contains("> 0"), "{text}");
        let text = message(Config::from_toml_str("[train]\nbatch_size = 0\n", &[]));
        assert!(text.contains("train.batch_size"), "{text}");
        let text = message(Config::from_toml_str("[model]\narch = \"vgg16\"\n", &[]));
        assert!(text.contains("\"vgg13\""), "{text}");
        let text = message(Config::from_toml_str("[rank]\nmin_fraction = 1.5\n", &[]));
        assert!(text.contains("rank.min_fraction"), "{text}");
        assert!(text.contains("(0, 1]"), "{text}");
        let text = message(Config::from_toml_str("[rank]\nenergy = 0\n", &[]));
        assert!(text.contains("rank.energy"), "{text}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let config = Config::from_toml_str("[method]\nbeta = 0.5\n", &[]).unwrap();
        let again = Config::from_toml_str(&config.to_toml_string(), &[]).unwrap();
        assert_eq!(config, again);
    }

    #[test]
    fn override_error_names_only_the_faulty_override() {
        let path = std::env::temp_dir().join(format!("ssa-config-test-{}.toml", std::process::id()));
        std::fs::write(&path, "[train]\nepochs = 2\n").unwrap();
        let overrides = ["data.dir=\"elsewhere\"".to_string(), "method.rule=\"ssaa\"".to_string()];
        let text = message(Config::load(&path, &overrides));
        std::fs::remove_file(&path).unwrap();
        assert!(text.contains("--set method.rule=\"ssaa\""), "{text}");
        assert!(!text.contains("data.dir"), "{text}");
    }
}
