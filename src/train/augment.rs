//! Training-time augmentation as PSLA's data loader does it: SpecAugment (one frequency and one time
//! mask) and mixup (lambda ~ Beta(10, 10), labels mixed by the same lambda).
//!
//! Masks follow torchaudio's `mask_along_axis`: width `value = u * mask_param` (u uniform in [0, 1)),
//! start `min = u' * (size - value)`, masked cells `[floor(min), floor(min) + floor(value))`, set to
//! 0.0. So the width is an integer in `[0, mask_param)` and the mask always lies inside the axis.
//!
//! Mixup from stored features ([`mix_mel`]): PSLA mixes waveforms, `w = l * w1 + (1 - l) * w2`, then
//! takes the fbank. Without the audio we mix in the mel power domain: each stored value is
//! `ln(max(P, eps))` (the fbank's floor, float32 epsilon), so `P = exp(x)`, and the power of a sum of
//! two independent signals weighted by `l` and `1 - l` is, on average, `l^2 P1 + (1 - l)^2 P2` (the
//! cross term averages out). The mixed value is `ln(max(l^2 P1 + (1 - l)^2 P2, eps))`. Clip 2 is
//! padded with silence (power 0) or cut to clip 1's frames, as PSLA pads or cuts the waveform.
//! docs/training.md measures how far this is from the waveform mix.

use rand::Rng;

/// The fbank's floor: torchaudio's `torch.finfo(torch.float).eps`.
pub const FBANK_EPS: f32 = f32::EPSILON;

/// A mask `[start, end)` along an axis of `size` cells, as torchaudio draws it.
pub fn mask_range<R: Rng>(rng: &mut R, size: usize, mask_param: usize) -> (usize, usize) {
    if mask_param == 0 || size == 0 {
        return (0, 0);
    }
    let value = rng.random::<f64>() * mask_param as f64;
    let min_value = rng.random::<f64>() * (size as f64 - value).max(0.0);
    let start = min_value as usize;
    let end = (start + value as usize).min(size);
    (start, end)
}

/// The masks applied to one clip, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masks {
    /// Mel bins `[start, end)`.
    pub freq: (usize, usize),
    /// Frames `[start, end)`.
    pub time: (usize, usize),
}

/// SpecAugment on one clip (`frames` x 128, row-major, before normalisation): one frequency mask of
/// width in `[0, freqm)`, then one time mask of width in `[0, timem)`; masked cells become 0.0.
pub fn spec_augment<R: Rng>(rng: &mut R, x: &mut [f32], bins: usize, freqm: usize, timem: usize) -> Masks {
    let frames = x.len() / bins;
    let freq = mask_range(rng, bins, freqm);
    let time = mask_range(rng, frames, timem);
    for row in x.chunks_exact_mut(bins) {
        row[freq.0..freq.1].fill(0.0);
    }
    x[time.0 * bins..time.1 * bins].fill(0.0);
    Masks { freq, time }
}

/// A draw from Gamma(shape, 1) (Marsaglia and Tsang 2000; shape < 1 through the boost `U^(1/shape)`).
pub fn gamma<R: Rng>(rng: &mut R, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random();
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (x, v) = loop {
            let x = standard_normal(rng);
            let v = 1.0 + c * x;
            if v > 0.0 {
                break (x, v * v * v);
            }
        };
        let u: f64 = rng.random();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A standard normal draw (Box-Muller).
fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A draw from Beta(a, b), in (0, 1) for the shapes mixup uses.
pub fn beta<R: Rng>(rng: &mut R, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    x / (x + y)
}

/// Mixed labels `lambda * y1 + (1 - lambda) * y2` (a class both carry gets 1.0), as PSLA adds them.
pub fn mix_labels(y1: &[f32], y2: &[f32], lambda: f64) -> Vec<f32> {
    y1.iter().zip(y2).map(|(&a, &b)| (lambda * a as f64 + (1.0 - lambda) * b as f64) as f32).collect()
}

/// Mix two clips' stored log-mel fbanks in the mel power domain (see the module docs). The result has
/// `x1`'s frames; `x2` is cut to them or padded with silence.
pub fn mix_mel(x1: &[f32], x2: &[f32], lambda: f64) -> Vec<f32> {
    let (w1, w2) = ((lambda * lambda) as f32, ((1.0 - lambda) * (1.0 - lambda)) as f32);
    x1.iter()
        .enumerate()
        .map(|(i, &a)| {
            let p2 = x2.get(i).map_or(0.0, |&b| b.exp());
            (w1 * a.exp() + w2 * p2).max(FBANK_EPS).ln()
        })
        .collect()
}

/// PSLA's waveform mix of two centred clips: clip 2 padded with zeros or cut to clip 1's length, then
/// `lambda * w1 + (1 - lambda) * w2`. (PSLA centres the mix again before the fbank;
/// [`super::data::waveform_fbank`] does that.)
pub fn mix_waveforms(w1: &[f32], w2: &[f32], lambda: f64) -> Vec<f32> {
    let (l1, l2) = (lambda as f32, (1.0 - lambda) as f32);
    w1.iter().enumerate().map(|(i, &a)| l1 * a + l2 * w2.get(i).copied().unwrap_or(0.0)).collect()
}
