//! psla: a dataflow pipeline that turns raw audio collections into audio-tagging models with the PSLA
//! recipe (Gong, Chung, Glass, TASLP 2021).
//!
//! - [`table`]: run roots, Parquet tables with atomic commits, the manifest.
//! - [`pipeline`]: TOML pipeline specs, planning, the runner.
//! - [`stages`]: one module per pipeline stage.
//! - [`sql`]: DataFusion over a run root's tables, in this process or on a Ballista cluster ([`cluster`]).
//! - [`audio`]: decoding, torchaudio's resampler and the Kaldi fbank PSLA computes.
//! - [`model`]: PSLA's EfficientNet + attention model in tch, its safetensors checkpoints.
//! - [`metrics`]: AP, AUC and d-prime as scikit-learn and PSLA compute them.
//! - [`malloc`]: glibc malloc tuning (freed memory kept for reuse), applied by the CLI.
//! - [`parallel`]: an in-order parallel map on scoped threads.
//! - [`train`]: the PSLA training recipe's parts (schedule, augmentation, data, Adam); the stage is
//!   [`stages::train`].

pub mod audio;
pub mod cluster;
pub mod error;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod parallel;
pub mod pipeline;
pub mod progress;
pub mod sql;
pub mod stages;
pub mod table;
pub mod train;

pub use error::{Error, Result};
