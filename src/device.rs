//! Device selection: `cpu` always, `cuda` / `cuda:N` in builds with the `cuda` feature.

use candle_core::Device;

use crate::error::{Error, Result};

/// A parsed device name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceName {
    Cpu,
    Cuda(usize),
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device_name(name: &str) -> Result<DeviceName> {
    match name {
        "cpu" => Ok(DeviceName::Cpu),
        "cuda" => Ok(DeviceName::Cuda(0)),
        _ => name
            .strip_prefix("cuda:")
            .and_then(|index| index.parse().ok())
            .map(DeviceName::Cuda)
            .ok_or_else(|| {
                Error::Config(format!(
                    "key `train.device` = \"{name}\" is not supported: expected \"cpu\", \"cuda\" or \"cuda:N\""
                ))
            }),
    }
}

/// Opens the named device.
pub fn open_device(name: &str) -> Result<Device> {
    match parse_device_name(name)? {
        DeviceName::Cpu => Ok(Device::Cpu),
        DeviceName::Cuda(index) => open_cuda(index),
    }
}

// NOTE: the CUDA path has not been compiled or run yet: the development machines have neither
// a GPU nor the CUDA toolkit.
#[cfg(feature = "cuda")]
fn open_cuda(index: usize) -> Result<Device> {
    Device::new_cuda(index)
        .map_err(|e| Error::Device(format!("cannot open CUDA device {index}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(index: usize) -> Result<Device> {
    Err(Error::Device(format!(
        "cuda:{index} requested, but this binary was built without CUDA support: \
         rebuild with `cargo build --release --features cuda`, or use --device cpu"
    )))
}
