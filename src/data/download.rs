//! Fetching the official CIFAR binary archives: download, checksum, atomic extraction.
//!
//! The archive is streamed to a temporary file beside the target while its MD5 is computed,
//! then extracted into a temporary directory that is renamed into place only when complete. A
//! failed transfer, a checksum mismatch or a bad archive leaves nothing behind.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use super::cifar::DatasetKind;
use crate::error::{Error, Result};

/// Archive address and MD5 of each dataset, as published on the CIFAR page of the University
/// of Toronto.
/// Fashion-MNIST has none: Debian packages it.
pub fn official_source(kind: DatasetKind) -> Option<(&'static str, &'static str)> {
    match kind {
        DatasetKind::Cifar10 => Some((
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
        )),
        DatasetKind::Cifar100 => Some((
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            "03b5dce01913d631647c71ecec9e9cb8",
        )),
        DatasetKind::FashionMnist => None,
    }
}

/// Archive address and the MD5 the archive must have.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    /// Lower-case hexadecimal MD5 of the archive.
    pub md5: String,
}

impl Source {
    /// Returns the official source, or `url` with `md5` when `url` is not empty.
    pub fn new(kind: DatasetKind, url: &str, md5: &str) -> Result<Self> {
        let Some((official_url, official_md5)) = official_source(kind) else {
            return Err(Error::Config(format!(
                "{} is not downloaded by ssa: {}",
                kind.name(),
                kind.how_to_get()
            )));
        };
        if url.is_empty() {
            return Ok(Self { url: official_url.into(), md5: official_md5.into() });
        }
        let md5 = md5.trim().to_ascii_lowercase();
        if md5.len() != 32 || !md5.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Config(format!(
                "MD5 \"{md5}\" (--md5 or data.download_md5) is invalid: a custom archive address needs \
                 the archive's MD5 as 32 hexadecimal digits"
            )));
        }
        Ok(Self { url: url.into(), md5 })
    }
}

/// Downloads and extracts the dataset so that `target` contains its binary files; returns
/// `target`. An existing `target` is left as it is.
pub fn download(kind: DatasetKind, target: &Path, source: &Source, show_progress: bool) -> Result<PathBuf> {
    if target.exists() {
        return Ok(target.to_path_buf());
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let archive = parent.join(format!(".{name}.download"));
    let staging = parent.join(format!(".{name}.extracting"));
    let result = fetch(&source.url, &archive, show_progress)
        .and_then(|digest| check_md5(&archive, &digest, &source.md5))
        .and_then(|()| extract(kind, &archive, &staging, target));
    let _ = fs::remove_file(&archive);
    let _ = fs::remove_dir_all(&staging);
    result.map(|()| target.to_path_buf())
}

fn download_error(url: &str, message: impl std::fmt::Display) -> Error {
    Error::data(url, format!("download failed: {message}; nothing was written, run the command again"))
}

/// Streams `url` into `path`; returns the MD5 of the bytes received.
fn fetch(url: &str, path: &Path, show_progress: bool) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| download_error(url, e))?;
    let expected_len: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());

    let bar = if show_progress {
        let bar = ProgressBar::new(expected_len.unwrap_or(0));
        let style = ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} {eta}")
            .expect("progress template is valid")
            .progress_chars("=> ");
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    };

    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = BufWriter::new(file);
    let mut reader = response.body_mut().as_reader();
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buffer).map_err(|e| download_error(url, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n]).map_err(|e| Error::io(path, e))?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    if let Some(expected) = expected_len {
        if received != expected {
            return Err(download_error(url, format!("connection closed after {received} of {expected} bytes")));
        }
    }
    out.into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?
        .sync_all()
        .map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_md5(path: &Path, actual: &str, expected: &str) -> Result<()> {
    if actual == expected {
        return Ok(());
    }
    Err(Error::data(
        path,
        format!("checksum mismatch: MD5 {actual}, expected {expected}; the download is corrupt and was deleted, run the command again"),
    ))
}

/// Extracts the archive into `staging`, checks that it contains the dataset's files, then
/// renames the dataset directory to `target`.
fn extract(kind: DatasetKind, archive: &Path, staging: &Path, target: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(staging);
    fs::create_dir_all(staging).map_err(|e| Error::io(staging, e))?;
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(staging)
        .map_err(|e| Error::data(archive, format!("not a valid .tar.gz archive: {e}")))?;

    let extracted = staging.join(kind.official_dir_name());
    for split in [super::Split::Train, super::Split::Test] {
        for name in kind.file_names(split) {
            if !extracted.join(&name).is_file() {
                return Err(Error::data(
                    archive,
                    format!("the archive lacks {}/{name}: it is not the {} binary archive", kind.official_dir_name(), kind.title()),
                ));
            }
        }
    }
    fs::rename(&extracted, target).map_err(|e| Error::io(target, e))
}
