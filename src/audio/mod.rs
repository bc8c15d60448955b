//! The audio front end: decoding, resampling and PSLA's Kaldi-compatible log-mel filterbank.
//!
//! - [`decode`]: files or bytes to float PCM (WAV directly, the rest with symphonia), with
//!   truncation detection.
//! - [`resample`]: torchaudio's band-limited sinc resampler.
//! - [`fbank`]: torchaudio's `compliance.kaldi.fbank` as PSLA configures it.
//!
//! [`psla_fbank`] chains them the way PSLA's data loader does.

pub mod decode;
pub mod fbank;
mod fft;
pub mod resample;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use decode::Decoded;
use fbank::{Fbank, FbankConfig};
use resample::Resampler;

/// PSLA's features for a decoded clip: `(fbank, frames)`, the fbank being `frames` rows of 128
/// log-mel values, row-major.
///
/// In order: resample every channel to `target_rate` (if given and different), subtract the mean
/// of the whole waveform (all channels, all samples), keep channel 0, and take the filterbank at
/// that rate. Resampling before removing the mean is the order that reproduces the reference
/// output; the other order differs in the edge frames, where the resampler zero-pads and so turns
/// a removed constant into a transient.
///
/// Filterbanks and resampling filters are built once per rate and cached for the process.
///
/// Errors on a clip with no channels, a sample rate below 1 kHz, or fewer samples than one 25 ms
/// frame (torchaudio refuses those).
pub fn psla_fbank(decoded: &Decoded, target_rate: Option<u32>) -> Result<(Vec<f32>, usize)> {
    if decoded.samples.is_empty() {
        return Err(Error::invalid("audio clip has no channels"));
    }
    let rate = target_rate.unwrap_or(decoded.sample_rate);
    for r in [decoded.sample_rate, rate] {
        if r < MIN_SAMPLE_RATE {
            return Err(Error::invalid(format!(
                "sample rate {r} Hz: audio below {MIN_SAMPLE_RATE} Hz is not supported"
            )));
        }
    }
    let resampled: Vec<Vec<f32>>;
    let channels = if rate == decoded.sample_rate {
        &decoded.samples
    } else {
        let resampler = cached(&RESAMPLERS, (decoded.sample_rate, rate), || {
            Resampler::new(decoded.sample_rate, rate)
        });
        resampled = decoded
            .samples
            .iter()
            .map(|c| resampler.process(c))
            .collect();
        &resampled
    };
    let fbank = cached(&FBANKS, rate, || Fbank::new(rate, &FbankConfig::default()));
    let wave = &channels[0];
    let frames = fbank.num_frames(wave.len());
    if frames == 0 {
        return Err(Error::invalid(format!(
            "audio clip too short for a filterbank: {} samples at {rate} Hz, one {} ms frame needs {}",
            wave.len(),
            FbankConfig::default().frame_length_ms,
            fbank.window_size(),
        )));
    }
    Ok((fbank.compute_offset(wave, waveform_mean(channels)), frames))
}

/// The lowest sample rate accepted. The filterbank itself works down to 100 Hz (a 10 ms shift of
/// one sample), but no real recording is below 1 kHz: such a rate is a broken header.
const MIN_SAMPLE_RATE: u32 = 1000;

/// The mean over all channels and samples, as `waveform.mean()` on a float32 tensor (summed in
/// float64 and rounded once).
fn waveform_mean(channels: &[Vec<f32>]) -> f32 {
    let count: usize = channels.iter().map(Vec::len).sum();
    let sum: f64 = channels.iter().map(|c| fbank::sum_f64(c)).sum();
    (sum / count.max(1) as f64) as f32
}

type Cache<K, V> = OnceLock<Mutex<HashMap<K, Arc<V>>>>;

static FBANKS: Cache<u32, Fbank> = OnceLock::new();
static RESAMPLERS: Cache<(u32, u32), Resampler> = OnceLock::new();

/// The cached value for `key`, built by `build` on first use.
fn cached<K: std::hash::Hash + Eq, V>(
    cache: &Cache<K, V>,
    key: K,
    build: impl FnOnce() -> V,
) -> Arc<V> {
    let mut map = cache
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Arc::clone(map.entry(key).or_insert_with(|| Arc::new(build())))
}
