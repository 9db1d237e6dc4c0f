//! `ssa`: a trainer for SVD-Space Alignment (SSA), a local learning rule that trains deep nets
//! in SVD form from a broadcast output error, without backpropagation through the network.
//!
//! The binary is thin glue over this library: [`train::train`] runs an experiment from a
//! [`config::Config`], [`eval::evaluate_checkpoint`] scores a checkpoint.

pub mod accounting;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod diagnostics;
pub mod error;
pub mod eval;
pub mod layers;
pub mod linalg;
pub mod metrics;
pub mod models;
pub mod plot;
pub mod optim;
pub mod report;
pub mod rng;
pub mod rules;
pub mod ssa;
pub mod summary;
pub mod train;

pub use error::{Error, Result};
