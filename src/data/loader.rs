//! Shuffled, augmented, normalised batches in NHWC layout, prepared on a background thread.
//!
//! Each epoch draws its permutation and augmentation from its own generator, seeded from the
//! experiment seed and the epoch number, so that an epoch's batches do not depend on what ran
//! before it.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;

use super::cifar::{Dataset, DatasetKind};
use crate::error::Result;
use crate::rng::{stream_rng, Stream};

/// Zero padding of the random crop, in pixels.
const CROP_PADDING: usize = 4;
/// Batches prepared ahead of the training step.
const PREFETCH: usize = 2;

/// Per-channel mean and standard deviation of pixel values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Returns the usual statistics of each dataset's training set.
    pub fn for_dataset(kind: DatasetKind) -> Self {
        match kind {
            DatasetKind::Cifar10 => Self {
                mean: vec![0.4914, 0.4822, 0.4465],
                std: vec![0.2470, 0.2435, 0.2616],
            },
            DatasetKind::Cifar100 => Self {
                mean: vec![0.5071, 0.4865, 0.4409],
                std: vec![0.2673, 0.2564, 0.2762],
            },
            DatasetKind::FashionMnist => Self {
                mean: vec![0.2860],
                std: vec![0.3530],
            },
        }
    }
}

/// One batch on the host: NHWC pixels and labels.
#[derive(Debug, Clone)]
pub struct HostBatch {
    pub pixels: Vec<f32>,
    pub labels: Vec<u32>,
    /// Image side length and channels.
    pub side: usize,
    pub channels: usize,
}

/// One batch on the training device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, `[N, side, side, channels]` f32.
    pub images: Tensor,
    /// Class indices, `[N]` u32.
    pub labels: Tensor,
}

impl HostBatch {
    /// Copies the batch to `device`.
    pub fn to_device(&self, device: &Device) -> Result<Batch> {
        let n = self.labels.len();
        let images = Tensor::from_slice(&self.pixels, (n, self.side, self.side, self.channels), device)?;
        let labels = Tensor::from_slice(&self.labels, n, device)?;
        Ok(Batch { images, labels })
    }
}

/// Batch settings of one pass over a dataset.
#[derive(Debug, Clone)]
pub struct BatchLoader {
    pub dataset: Arc<Dataset>,
    pub batch_size: usize,
    pub normalization: Normalization,
    pub shuffle: bool,
    pub augment: bool,
    pub seed: u64,
}

impl BatchLoader {
    /// Number of batches in one pass; the last batch may be smaller.
    pub fn num_batches(&self) -> usize {
        self.dataset.len().div_ceil(self.batch_size)
    }

    /// Starts a background thread that prepares the batches of `epoch` in order.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        let loader = self.clone();
        let (sender, receiver) = sync_channel(PREFETCH);
        let worker = std::thread::spawn(move || {
            let mut rng = stream_rng(loader.seed, Stream::Data, epoch as u64);
            let mut order: Vec<usize> = (0..loader.dataset.len()).collect();
            if loader.shuffle {
                order.shuffle(&mut rng);
            }
            for indices in order.chunks(loader.batch_size) {
                let batch = loader.assemble(indices, &mut rng);
                if sender.send(batch).is_err() {
                    return;
                }
            }
        });
        EpochBatches {
            receiver,
            worker: Some(worker),
        }
    }

    /// Builds the normalised, optionally augmented batch of the given images.
    pub fn assemble(&self, indices: &[usize], rng: &mut impl Rng) -> HostBatch {
        let (side, channels) = (self.dataset.side, self.dataset.channels);
        let plane = side * side;
        let mut pixels = vec![0f32; indices.len() * plane * channels];
        let mut labels = Vec::with_capacity(indices.len());
        let norm = &self.normalization;
        for (slot, &index) in indices.iter().enumerate() {
            labels.push(self.dataset.labels[index]);
            let image = self.dataset.image(index);
            let (dy, dx, flip) = if self.augment {
                let span = 2 * CROP_PADDING + 1;
                (rng.gen_range(0..span), rng.gen_range(0..span), rng.gen_bool(0.5))
            } else {
                (CROP_PADDING, CROP_PADDING, false)
            };
            let out = &mut pixels[slot * plane * channels..(slot + 1) * plane * channels];
            for y in 0..side {
                for x in 0..side {
                    let source_x = if flip { side - 1 - x } else { x };
                    // Crop offsets are relative to the zero-padded image.
                    let sy = (y + dy) as isize - CROP_PADDING as isize;
                    let sx = (source_x + dx) as isize - CROP_PADDING as isize;
                    let inside = (0..side as isize).contains(&sy) && (0..side as isize).contains(&sx);
                    for c in 0..channels {
                        let raw = if inside {
                            image[c * plane + sy as usize * side + sx as usize] as f32 / 255.0
                        } else {
                            0.0
                        };
                        out[(y * side + x) * channels + c] = (raw - norm.mean[c]) / norm.std[c];
                    }
                }
            }
        }
        HostBatch { pixels, labels, side, channels }
    }
}

/// The batches of one epoch, arriving from the preparing thread.
pub struct EpochBatches {
    receiver: Receiver<HostBatch>,
    worker: Option<JoinHandle<()>>,
}

impl Iterator for EpochBatches {
    type Item = HostBatch;

    fn next(&mut self) -> Option<HostBatch> {
        self.receiver.recv().ok()
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Closing the channel first lets a thread blocked on `send` return.
        let (_, closed) = sync_channel(0);
        drop(std::mem::replace(&mut self.receiver, closed));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
