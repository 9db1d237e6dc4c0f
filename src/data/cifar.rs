//! Readers for the CIFAR-10 and CIFAR-100 binary formats.
//!
//! A CIFAR-10 record is one label byte followed by 3,072 pixel bytes (1,024 red, 1,024 green,
//! 1,024 blue, each plane row-major 32×32). A CIFAR-100 record has two label bytes (coarse,
//! then fine) before the same pixels; the fine label is used.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Image side length of both CIFAR datasets.
pub const SIDE: usize = 32;
/// Colour channels.
pub const CHANNELS: usize = 3;
/// Pixel bytes of one image.
pub const PIXELS: usize = SIDE * SIDE * CHANNELS;
/// Records in each official file of CIFAR-10.
const CIFAR10_RECORDS_PER_FILE: usize = 10_000;

/// Dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Cifar10,
    Cifar100,
}

/// Training or test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl DatasetKind {
    /// Parses a config name (`cifar10`, `cifar100`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "cifar10" => Ok(Self::Cifar10),
            "cifar100" => Ok(Self::Cifar100),
            other => Err(Error::Config(format!(
                "key `data.dataset` = \"{other}\" is not supported: expected \"cifar10\" or \"cifar100\""
            ))),
        }
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100 => 100,
        }
    }

    /// Label bytes before the pixels of each record.
    fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
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
        }
    }

    /// Name of the directory that the official archive extracts to.
    pub fn official_dir_name(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar-10-batches-bin",
            Self::Cifar100 => "cifar-100-binary",
        }
    }
}

/// Images and labels of one split, kept as raw bytes.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len × 3072` bytes, each image in the file's channel-planar layout.
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub num_classes: usize,
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

    /// Pixel bytes of image `index`, channel-planar.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * PIXELS..(index + 1) * PIXELS]
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
                "directory not found: run `ssa data download {}` (or set data.download = true), \
                 extract the official binary archive so that it contains {}, or pass --data-dir",
                match kind {
                    DatasetKind::Cifar10 => "cifar10",
                    DatasetKind::Cifar100 => "cifar100",
                },
                kind.file_names(split).join(", ")
            ),
        ));
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
                "truncated or not a {kind:?} binary file: {size} bytes is not a whole number of \
                 {record}-byte records; download and extract the official archive again"
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
                    "record {index} has label {label}, but {kind:?} has {} classes: the file is \
                     corrupt or belongs to another dataset",
                    out.num_classes
                ),
            ));
        }
        out.labels.push(label);
        out.images.extend_from_slice(&chunk[kind.label_bytes()..]);
    }
    Ok(())
}
