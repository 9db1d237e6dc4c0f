//! The CIFAR readers on a fixture of real CIFAR-10 records, and on damaged copies of it.

use std::path::{Path, PathBuf};

use ssa::data::cifar::PIXELS;
use ssa::data::{load_split, DatasetKind, Split};
use ssa::Error;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

/// Copies the fixture into a temporary directory that a test may damage.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn cifar10_reader_loads_fixture() {
    let train = load_split(DatasetKind::Cifar10, &fixture(), Split::Train, 0).unwrap();
    assert_eq!(train.len(), 500);
    assert_eq!(train.num_classes, 10);
    let test = load_split(DatasetKind::Cifar10, &fixture(), Split::Test, 0).unwrap();
    assert_eq!(test.len(), 200);

    // Record 0 of the official training set is a frog (label 6), record 1 a truck (label 9).
    assert_eq!(train.labels[0], 6);
    assert_eq!(train.labels[1], 9);
    // Record 0 of the official test set is a cat (label 3).
    assert_eq!(test.labels[0], 3);

    let raw = std::fs::read(fixture().join("data_batch_2.bin")).unwrap();
    assert_eq!(train.labels[100], raw[0] as u32);
    assert_eq!(train.image(100), &raw[1..1 + PIXELS]);
}

#[test]
fn limit_takes_first_images() {
    let all = load_split(DatasetKind::Cifar10, &fixture(), Split::Train, 0).unwrap();
    let some = load_split(DatasetKind::Cifar10, &fixture(), Split::Train, 150).unwrap();
    assert_eq!(some.len(), 150);
    assert_eq!(some.labels[..], all.labels[..150]);
    assert_eq!(some.images[..], all.images[..150 * PIXELS]);
}

#[test]
fn truncated_file_is_named() {
    let dir = fixture_copy();
    let path = dir.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let error = load_split(DatasetKind::Cifar10, dir.path(), Split::Train, 0).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Data { .. }), "{message}");
    assert!(message.contains("data_batch_3.bin"), "{message}");
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn missing_file_is_named() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("test_batch.bin")).unwrap();
    let message = load_split(DatasetKind::Cifar10, dir.path(), Split::Test, 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("test_batch.bin"), "{message}");
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn missing_directory_says_how_to_fix() {
    let message = load_split(DatasetKind::Cifar10, Path::new("/nonexistent/cifar"), Split::Train, 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("/nonexistent/cifar"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
}

#[test]
fn label_out_of_range_is_rejected() {
    let dir = fixture_copy();
    let path = dir.path().join("data_batch_1.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3073 * 7] = 12;
    std::fs::write(&path, bytes).unwrap();
    let message = load_split(DatasetKind::Cifar10, dir.path(), Split::Train, 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("record 7 has label 12"), "{message}");
}

/// CIFAR-100 records carry a coarse and a fine label byte; the reader keeps the fine one.
#[test]
fn cifar100_reader_uses_fine_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for index in 0..4u8 {
        bytes.push(index % 20); // coarse
        bytes.push(90 + index); // fine
        bytes.extend(std::iter::repeat_n(index, PIXELS));
    }
    std::fs::write(dir.path().join("train.bin"), &bytes).unwrap();
    std::fs::write(dir.path().join("test.bin"), &bytes[..2 * (PIXELS + 2)]).unwrap();

    let train = load_split(DatasetKind::Cifar100, dir.path(), Split::Train, 0).unwrap();
    assert_eq!(train.num_classes, 100);
    assert_eq!(train.labels, vec![90, 91, 92, 93]);
    assert!(train.image(3).iter().all(|&p| p == 3));
    let test = load_split(DatasetKind::Cifar100, dir.path(), Split::Test, 0).unwrap();
    assert_eq!(test.len(), 2);

    std::fs::write(dir.path().join("test.bin"), &bytes[..PIXELS]).unwrap();
    let message = load_split(DatasetKind::Cifar100, dir.path(), Split::Test, 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("test.bin"), "{message}");
    assert!(message.contains("3074-byte records"), "{message}");
}

fn fashion_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-mnist")
}

/// The Fashion-MNIST fixture contains the first 300 training and 100 test images of Debian's
/// files. The reader returns them as 28×28 single-channel images with labels below 10.
#[test]
fn reads_fashion_mnist_idx_files() {
    let train = load_split(DatasetKind::FashionMnist, &fashion_fixture(), Split::Train, 0).unwrap();
    let test = load_split(DatasetKind::FashionMnist, &fashion_fixture(), Split::Test, 0).unwrap();
    assert_eq!((train.len(), test.len()), (300, 100));
    assert_eq!((train.side, train.channels, train.pixels()), (28, 1, 784));
    // The first training labels of Fashion-MNIST: ankle boot, T-shirt, T-shirt, dress.
    assert_eq!(train.labels[..4], [9, 0, 0, 3]);
    assert!(train.labels.iter().all(|&l| l < 10));
    let some = load_split(DatasetKind::FashionMnist, &fashion_fixture(), Split::Train, 20).unwrap();
    assert_eq!(some.images[..], train.images[..20 * 784]);
}

#[test]
fn damaged_fashion_mnist_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(fashion_fixture().join(name), dir.path().join(name)).unwrap();
    }
    // A gzip file cut in half.
    let images = dir.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    let message = load_split(DatasetKind::FashionMnist, dir.path(), Split::Train, 0).unwrap_err().to_string();
    assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
    assert!(message.contains("gzip"), "{message}");

    // Labels of the test split where the training labels should be.
    std::fs::write(&images, &bytes).unwrap();
    std::fs::copy(fashion_fixture().join("t10k-labels-idx1-ubyte.gz"), dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    let message = load_split(DatasetKind::FashionMnist, dir.path(), Split::Train, 0).unwrap_err().to_string();
    assert!(message.contains("100 labels"), "{message}");
    assert!(message.contains("300 images"), "{message}");

    // The error for a missing directory gives the install command.
    let message = load_split(DatasetKind::FashionMnist, &dir.path().join("none"), Split::Test, 0).unwrap_err().to_string();
    assert!(message.contains("apt-get install dataset-fashion-mnist"), "{message}");
}
