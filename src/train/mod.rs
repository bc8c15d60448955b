//! The PSLA training recipe's parts, used by the `train` stage ([`crate::stages::train`]):
//!
//! - [`config`]: recipes (`configs/*.toml`) as a typed struct.
//! - [`schedule`]: the learning rate of every step (warm-up, step decay), PSLA's staircase as an option.
//! - [`augment`]: SpecAugment masks, Beta draws, mixup of labels, of stored mel features and of waveforms.
//! - [`data`]: the features and label vectors of the clips, seeded epoch orders, batches built on a
//!   worker thread.
//! - [`adam`]: torch.optim.Adam over tch tensors, with a state that saves and loads for exact resumes.

pub mod adam;
pub mod augment;
pub mod config;
pub mod data;
pub mod schedule;
