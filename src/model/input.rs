//! Model input shared by training and scoring: a clip's fbank to a fixed number of frames, normalised.

/// Mel bins per frame (PSLA's 128-bin fbank).
pub const MEL_BINS: usize = 128;

/// Pad with 0.0 at the end or keep the first `target_frames` frames, as PSLA's dataloader does.
/// `fbank` is `frames` x 128, row-major; the result is `target_frames` x 128.
pub fn pad_or_cut(fbank: &[f32], frames: usize, target_frames: usize) -> Vec<f32> {
    assert_eq!(fbank.len(), frames * MEL_BINS, "pad_or_cut: {} values are not {frames} frames of {MEL_BINS} bins", fbank.len());
    let keep = frames.min(target_frames) * MEL_BINS;
    let mut out = Vec::with_capacity(target_frames * MEL_BINS);
    out.extend_from_slice(&fbank[..keep]);
    out.resize(target_frames * MEL_BINS, 0.0);
    out
}

/// Input normalisation `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: f64,
    pub std: f64,
}

/// PSLA's AudioSet constants (`src/run.py` defaults of `--dataset_mean`, `--dataset_std`).
pub const PSLA_AUDIOSET: Normalization = Normalization { mean: -4.6476, std: 4.5699 };

impl Normalization {
    /// No normalisation (mean 0, std 1).
    pub const IDENTITY: Normalization = Normalization { mean: 0.0, std: 1.0 };

    /// Normalise in place.
    pub fn apply(&self, values: &mut [f32]) {
        // PSLA computes (fbank - mean) / std in float32 with the constants as Python floats; torch
        // rounds the scalars to the tensor's float32 precision there, and so do we.
        let (mean, std) = (self.mean as f32, self.std as f32);
        for v in values {
            *v = (*v - mean) / std;
        }
    }

    /// Normalise a tensor (`(x - mean) / std`).
    pub fn apply_tensor(&self, x: &tch::Tensor) -> tch::Tensor {
        (x - self.mean) / self.std
    }
}
