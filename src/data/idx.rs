//! Reader for Fashion-MNIST's gzip-compressed IDX files.
//!
//! An IDX file starts with a magic number (two zero bytes, a type byte, 0x08 for unsigned
//! bytes, and the number of dimensions), then one big-endian u32 per dimension, then the data.
//! Images are `[count, 28, 28]`, labels `[count]`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use super::cifar::{Dataset, DatasetKind, Split};
use crate::error::{Error, Result};

/// Image side length.
pub const SIDE: usize = 28;
/// Directory where Debian's `dataset-fashion-mnist` package installs the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Classes of Fashion-MNIST.
const CLASSES: usize = 10;

/// Reads a split of Fashion-MNIST from `dir`, keeping the first `limit` images (0 = all).
pub fn load_split(dir: &Path, split: Split, limit: usize) -> Result<Dataset> {
    let names = DatasetKind::FashionMnist.file_names(split);
    let (images_path, labels_path) = (dir.join(&names[0]), dir.join(&names[1]));
    let images = read_idx(&images_path, &[SIDE, SIDE])?;
    let labels = read_idx(&labels_path, &[])?;
    if images.count != labels.count {
        return Err(Error::data(
            &labels_path,
            format!(
                "contains {} labels, but {} contains {} images: the two files belong to different \
                 splits or versions",
                labels.count,
                images_path.display(),
                images.count
            ),
        ));
    }
    let count = if limit == 0 { images.count } else { limit.min(images.count) };
    let pixels = SIDE * SIDE;
    let mut dataset = Dataset {
        images: images.data[..count * pixels].to_vec(),
        labels: Vec::with_capacity(count),
        num_classes: CLASSES,
        side: SIDE,
        channels: 1,
    };
    for (index, &label) in labels.data[..count].iter().enumerate() {
        if label as usize >= CLASSES {
            return Err(Error::data(
                &labels_path,
                format!("label {index} is {label}, but Fashion-MNIST has {CLASSES} classes: the file is corrupt"),
            ));
        }
        dataset.labels.push(label as u32);
    }
    Ok(dataset)
}

/// Contents of one IDX file of unsigned bytes.
struct Idx {
    count: usize,
    data: Vec<u8>,
}

/// Reads a gzip-compressed IDX file whose items have shape `item_dims`.
fn read_idx(path: &Path, item_dims: &[usize]) -> Result<Idx> {
    let file = File::open(path).map_err(|_| {
        Error::data(
            path,
            format!("missing: {}", DatasetKind::FashionMnist.how_to_get()),
        )
    })?;
    let mut bytes = Vec::new();
    GzDecoder::new(file).read_to_end(&mut bytes).map_err(|e| {
        Error::data(path, format!("is not a complete gzip file ({e}): reinstall or download it again"))
    })?;

    let dims = item_dims.len() + 1;
    let header = 4 + 4 * dims;
    if bytes.len() < header || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != dims {
        return Err(Error::data(
            path,
            format!("is not an IDX file of unsigned bytes with {dims} dimensions"),
        ));
    }

    let dim = |i: usize| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize;
    let count = dim(0);
    let found: Vec<usize> = (1..dims).map(dim).collect();
    if found != item_dims {
        return Err(Error::data(path, format!("has items of shape {found:?}, expected {item_dims:?}")));
    }

    let expected = header + count * item_dims.iter().product::<usize>();
    if bytes.len() != expected {
        return Err(Error::data(
            path,
            format!(
                "is truncated or padded: {} bytes after decompression, the header announces {expected}",
                bytes.len()
            ),
        ));
    }
    bytes.drain(..header);
    Ok(Idx { count, data: bytes })
}
