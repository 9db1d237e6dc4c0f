//! The library's error type: every variant names the file, key or tensor involved.

use std::path::PathBuf;

/// Errors returned by the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config key, type or value is invalid.
    #[error("invalid config: {0}")]
    Config(String),

    /// A data file is missing, truncated or contains invalid records.
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },

    /// A checkpoint cannot be read or does not describe a model this build can rebuild.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },

    /// The requested device is unavailable in this build or on this machine.
    #[error("device: {0}")]
    Device(String),

    /// Training produced a non-finite value.
    #[error("training diverged: {0}")]
    Diverged(String),

    /// Training stopped on SIGINT or SIGTERM after writing a checkpoint.
    #[error("interrupted: checkpoint written; resume with `ssa train --resume {}`", run_dir.display())]
    Interrupted { run_dir: PathBuf },

    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A tensor operation failed (shape mismatch, unsupported op on this device).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds a data error for `path`.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Builds a checkpoint error for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result type of the library.
pub type Result<T> = std::result::Result<T, Error>;
