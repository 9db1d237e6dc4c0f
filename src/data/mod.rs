//! Datasets in their official binary formats, and the batch loader.

pub mod cifar;
pub mod download;
pub mod idx;
pub mod loader;

pub use cifar::{load_split, Dataset, DatasetKind, Split, DATASETS};
pub use loader::{Batch, BatchLoader, Normalization};
