//! Readers for the CIFAR-10 and CIFAR-100 binary formats, and the dataset kinds.
//!
//! A CIFAR-10 record is one label byte followed by 3,072 pixel bytes (1,024 red, 1,024 green,
//! 1,024 blue, each plane row-major 32×32). A CIFAR-100 record has two label bytes (coarse,
//! then fine) before the same pixels; the fine label is used.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Image side length of both CIFAR datasets.
pub const SIDE: usize = 32;
/// Colour channels of CIFAR.
pub const CHANNELS: usize = 3;
/// Pixel bytes of one CIFAR image.
pub const PIXELS: usize = SIDE * SIDE * CHANNELS;
/// Records in each official file of CIFAR-10.
const CIFAR10_RECORDS_PER_FILE: usize = 10_000;

/// Dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Cifar10,
    Cifar100,
    /// Fashion-MNIST: 28×28 grayscale, gzip-compressed IDX files.
    FashionMnist,
}

/// Config names of the datasets.
pub const DATASETS: [&str; 3] = ["cifar10", "cifar100", "fashion_mnist"];

/// Training or test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl DatasetKind {
    /// Parses a config name (see [`DATASETS`]).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "cifar10" => Ok(Self::Cifar10),
            "cifar100" => Ok(Self::Cifar100),
            "fashion_mnist" => Ok(Self::FashionMnist),
            other => Err(Error::Config(format!(
                "key `data.dataset` = \"{other}\" is not supported: expected one of {DATASETS:?}"
            ))),
        }
    }

    /// Returns the dataset's usual written name, for messages.
    pub fn title(self) -> &'static str {
        match self {
            Self::Cifar10 => "CIFAR-10",
            Self::Cifar100 => "CIFAR-100",
            Self::FashionMnist => "Fashion-MNIST",
        }
    }

    /// Config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cifar10 => DATASETS[0],
            Self::Cifar100 => DATASETS[1],
            Self::FashionMnist => DATASETS[2],
        }
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 | Self::FashionMnist => 10,
            Self::Cifar100 => 100,
        }
    }

    /// Image side length in pixels.
    pub fn side(self) -> usize {
        match self {
            Self::Cifar10 | Self::Cifar100 => SIDE,
            Self::FashionMnist => super::idx::SIDE,
        }
    }

    /// Channels per pixel.
    pub fn channels(self) -> usize {
        match self {
            Self::Cifar10 | Self::Cifar100 => CHANNELS,
            Self::FashionMnist => 1,
        }
    }

    /// Label bytes before the pixels of each CIFAR record.
    fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 | Self::FashionMnist => 1,
            Self::Cifar100 => 2,
        }
    }

    /// Bytes of one record.
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + PIXELS
    }

    /// File names of a split, in reading order.
    pub fn file_names(self, split: Split) -> Vec<String> {
        match (self, split) {
            (Self::Cifar10, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (Self::Cifar10, Split::Test) => vec!["test_batch.bin".into()],
            (Self::Cifar100, Split::Train) => vec!["train.bin".into()],
            (Self::Cifar100, Split::Test) => vec!["test.bin".into()],
            (Self::FashionMnist, Split::Train) => {
                vec!["train-images-idx3-ubyte.gz".into(), "train-labels-idx1-ubyte.gz".into()]
            }
            (Self::FashionMnist, Split::Test) => {
                vec!["t10k-images-idx3-ubyte.gz".into(), "t10k-labels-idx1-ubyte.gz".into()]
            }
        }
    }

    /// Returns the directory searched when `data.dir` is empty.
    pub fn default_dir(self) -> String {
        match self {
            Self::FashionMnist => super::idx::DEBIAN_DIR.into(),
            _ => format!("data/{}", self.official_dir_name()),
        }
    }

    /// Returns how to get the files, for error messages.
    pub fn how_to_get(self) -> String {
        match self {
            Self::FashionMnist => format!(
                "install Debian's package (`apt-get install dataset-fashion-mnist` puts the files in \
                 {}) or pass --data-dir",
                super::idx::DEBIAN_DIR
            ),
            _ => format!(
                "run `ssa data download {}` (or set data.download = true), extract the official \
                 binary archive, or pass --data-dir",
                self.name()
            ),
        }
    }

    /// Name of the directory that the official archive extracts to.
    pub fn official_dir_name(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar-10-batches-bin",
            Self::Cifar100 => "cifar-100-binary",
            Self::FashionMnist => "fashion-mnist",
        }
    }
}

/// Images and labels of one split, kept as raw bytes.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len × side² × channels` bytes, each image channel-planar (each plane row-major).
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub num_classes: usize,
    /// Image side length.
    pub side: usize,
    /// Channels per pixel.
    pub channels: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns true when the dataset contains no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn pixels(&self) -> usize {
        self.side * self.side * self.channels
    }

    /// Pixel bytes of image `index`, channel-planar.
    pub fn image(&self, index: usize) -> &[u8] {
        let pixels = self.pixels();
        &self.images[index * pixels..(index + 1) * pixels]
    }
}

/// Reads a split from `dir`, keeping the first `limit` images (0 = all).
///
/// Every file of the split must exist and hold a whole number of records; the error names the
/// file otherwise.
pub fn load_split(kind: DatasetKind, dir: &Path, split: Split, limit: usize) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::data(
            dir,
            format!(
                "directory not found: it should contain {}; {}",
                kind.file_names(split).join(", "),
                kind.how_to_get()
            ),
        ));
    }
    if kind == DatasetKind::FashionMnist {
        return super::idx::load_split(dir, split, limit);
    }

    let record = kind.record_bytes();
    let mut files = Vec::new();
    for name in kind.file_names(split) {
        let path = dir.join(&name);
        let size = fs::metadata(&path)
            .map_err(|_| {
                Error::data(
                    &path,
                    format!(
                        "missing: the {} directory must contain {}",
                        kind.official_dir_name(),
                        kind.file_names(split).join(", ")
                    ),
                )
            })?
            .len() as usize;
        check_size(kind, &path, size)?;
        files.push((path, size / record));
    }

    let total: usize = files.iter().map(|(_, n)| n).sum();
    let requested = if limit == 0 { total } else { limit.min(total) };
    let mut dataset = Dataset {
        images: Vec::with_capacity(requested * PIXELS),
        labels: Vec::with_capacity(requested),
        num_classes: kind.num_classes(),
        side: SIDE,
        channels: CHANNELS,
    };
    for (path, records) in files {
        if dataset.len() >= requested {
            break;
        }
        let take = records.min(requested - dataset.len());
        read_records(kind, &path, take, &mut dataset)?;
    }
    Ok(dataset)
}

fn check_size(kind: DatasetKind, path: &PathBuf, size: usize) -> Result<()> {
    let record = kind.record_bytes();
    if size == 0 || size % record != 0 {
        return Err(Error::data(
            path,
            format!(
                "truncated or not a {} binary file: {size} bytes is not a whole number of \
                 {record}-byte records; download and extract the official archive again",
                kind.title()
            ),
        ));
    }
    if kind == DatasetKind::Cifar10 && size / record != CIFAR10_RECORDS_PER_FILE {
        tracing::warn!(
            "{}: {} records, the official file has {}",
            path.display(),
            size / record,
            CIFAR10_RECORDS_PER_FILE
        );
    }
    Ok(())
}

fn read_records(kind: DatasetKind, path: &PathBuf, take: usize, out: &mut Dataset) -> Result<()> {
    let record = kind.record_bytes();
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    for (index, chunk) in bytes.chunks_exact(record).take(take).enumerate() {
        let label = chunk[kind.label_bytes() - 1] as u32;
        if label as usize >= out.num_classes {
            return Err(Error::data(
                path,
                format!(
                    "record {index} has label {label}, but {} has {} classes: the file is \
                     corrupt or belongs to another dataset",
                    kind.title(),
                    out.num_classes
                ),
            ));
        }
        out.labels.push(label);
        out.images.extend_from_slice(&chunk[kind.label_bytes()..]);
    }
    Ok(())
}
