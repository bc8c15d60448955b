//! Kaldi-compatible log-mel filterbank, numerically matching `torchaudio.compliance.kaldi.fbank`
//! as PSLA calls it: `htk_compat=True, use_energy=False, window_type='hanning', dither=0.0`,
//! everything else at torchaudio's defaults (snip_edges, remove_dc_offset, power spectrum,
//! log floored at `f32::EPSILON`, no VTLN).
//!
//! Per frame of `frame_length_ms` every `frame_shift_ms`, as torchaudio computes it in float32:
//! subtract the frame's mean, pre-emphasise (`x[j] - p * x[j-1]`, with `x[-1] = x[0]`), multiply by
//! a symmetric Hann window, zero-pad to the next power of two, take the power spectrum, weight it
//! with triangular mel filters and take the log. Every step is done in `f32` in torchaudio's order
//! (means are summed in `f64` and rounded once), and the mel filters are built with torchaudio's
//! `f32` arithmetic, so that the only differences left are the rounding of the FFT, of the sums and
//! of the log (within 1 ulp). The FFT's rounding is the largest: where a cell is 20 nats below its
//! frame's peak, float32 FFT noise (torchaudio's as much as ours) moves it by up to ~2e-3.
//!
//! [`Fbank`] holds everything that depends only on the sample rate (window, sparse mel filters,
//! FFT plan); build it once per rate and share it between threads.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Filterbank settings; [`Default`] gives PSLA's.
#[derive(Debug, Clone, PartialEq)]
pub struct FbankConfig {
    /// Number of triangular mel filters (PSLA: 128).
    pub num_mel_bins: usize,
    /// Hop between frames, in milliseconds (10).
    pub frame_shift_ms: f64,
    /// Frame length, in milliseconds (25).
    pub frame_length_ms: f64,
    /// Lower edge of the first mel filter, in Hz (20).
    pub low_freq: f64,
    /// Upper edge of the last mel filter, in Hz; `<= 0` is an offset from Nyquist (0 = Nyquist).
    pub high_freq: f64,
    /// Pre-emphasis coefficient (0.97).
    pub preemphasis: f64,
}

impl Default for FbankConfig {
    fn default() -> Self {
        Self {
            num_mel_bins: 128,
            frame_shift_ms: 10.0,
            frame_length_ms: 25.0,
            low_freq: 20.0,
            high_freq: 0.0,
            preemphasis: 0.97,
        }
    }
}

/// Frames whose mel energies are computed together (two SSE or one AVX vector of `f32`).
const LANES: usize = 8;

/// One triangular mel filter, stored sparsely: its non-zero weights start at FFT bin `first`.
#[derive(Debug, Clone)]
struct MelFilter {
    first: usize,
    weights: Vec<f32>,
}

/// A filterbank for one sample rate. Cheap to share (`Send + Sync`); [`Fbank::compute`] allocates
/// its scratch buffers once per call, never per frame.
#[derive(Clone)]
pub struct Fbank {
    sample_rate: u32,
    window_size: usize,
    window_shift: usize,
    preemphasis: f32,
    /// Symmetric Hann window of `window_size` points.
    window: Vec<f32>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank")
            .field("sample_rate", &self.sample_rate)
            .field("window_size", &self.window_size)
            .field("window_shift", &self.window_shift)
            .field("fft_size", &self.fft.len())
            .field("num_mel_bins", &self.filters.len())
            .finish()
    }
}

impl Fbank {
    /// Precomputes the window, mel filters and FFT plan for `sample_rate`.
    ///
    /// # Panics
    /// Where torchaudio refuses the settings: a frame shorter than 2 samples, a zero shift, fewer
    /// than 4 mel bins, or cut-offs outside `0 <= low_freq < high_freq <= Nyquist`.
    pub fn new(sample_rate: u32, cfg: &FbankConfig) -> Self {
        let rate = f64::from(sample_rate);
        // torchaudio: int(sample_frequency * frame_length * 0.001), truncating.
        let window_size = (rate * cfg.frame_length_ms * 0.001) as usize;
        let window_shift = (rate * cfg.frame_shift_ms * 0.001) as usize;
        assert!(
            window_size >= 2,
            "fbank: frame of {window_size} samples at {sample_rate} Hz"
        );
        assert!(
            window_shift > 0,
            "fbank: frame shift of 0 samples at {sample_rate} Hz"
        );
        assert!(
            (0.0..=1.0).contains(&cfg.preemphasis),
            "fbank: pre-emphasis outside [0, 1]"
        );
        let fft_size = window_size.next_power_of_two();
        Self {
            sample_rate,
            window_size,
            window_shift,
            preemphasis: cfg.preemphasis as f32,
            window: hann_window(window_size),
            filters: mel_filters(cfg, fft_size, rate),
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(fft_size),
        }
    }

    /// The sample rate this filterbank was built for.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of mel bins per frame.
    pub fn num_mel_bins(&self) -> usize {
        self.filters.len()
    }

    /// Frame length in samples (400 at 16 kHz).
    pub fn window_size(&self) -> usize {
        self.window_size
    }

    /// Frame shift in samples (160 at 16 kHz).
    pub fn window_shift(&self) -> usize {
        self.window_shift
    }

    /// Frames for a clip of `num_samples`: `1 + (num_samples - window) / shift`, or 0 for a clip
    /// shorter than one window (torchaudio refuses those).
    pub fn num_frames(&self, num_samples: usize) -> usize {
        if num_samples < self.window_size {
            0
        } else {
            1 + (num_samples - self.window_size) / self.window_shift
        }
    }

    /// The log-mel filterbank of `wave` (one channel, at this filterbank's rate), as
    /// `num_frames(wave.len())` rows of `num_mel_bins()` values, row-major. Empty for a clip
    /// shorter than one window.
    pub fn compute(&self, wave: &[f32]) -> Vec<f32> {
        self.compute_offset(wave, 0.0)
    }

    /// [`Fbank::compute`] of `wave - offset`, without a copy of the clip: each sample is rounded
    /// to `x - offset` in `f32` first, as torchaudio's `waveform - waveform.mean()` does.
    pub fn compute_offset(&self, wave: &[f32], offset: f32) -> Vec<f32> {
        let bins = self.filters.len();
        let frames = self.num_frames(wave.len());
        let mut out = vec![0.0f32; frames * bins];
        let mut centred = vec![0.0f32; self.window_size];
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        // Power spectra of a group of LANES frames, interleaved: bin k of lane l at k * LANES + l,
        // so that each mel weight multiplies all frames of the group in one vector operation.
        // The Nyquist bin, which no mel filter uses, is left out.
        let mut power = vec![0.0f32; self.fft.len() / 2 * LANES];
        for group_start in (0..frames).step_by(LANES) {
            let group = (frames - group_start).min(LANES);
            for lane in 0..group {
                let start = (group_start + lane) * self.window_shift;
                let raw = &wave[start..start + self.window_size];
                self.prepare_frame(raw, offset, &mut centred, &mut frame);
                self.fft
                    .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                    .expect("fbank: FFT buffers have the planned sizes");
                for (bin, c) in power.chunks_exact_mut(LANES).zip(&spectrum) {
                    bin[lane] = c.re * c.re + c.im * c.im;
                }
            }
            let rows = &mut out[group_start * bins..(group_start + group) * bins];
            for (m, filter) in self.filters.iter().enumerate() {
                let mut energy = [0.0f32; LANES];
                let band =
                    &power[filter.first * LANES..(filter.first + filter.weights.len()) * LANES];
                for (bin, &w) in band.chunks_exact(LANES).zip(&filter.weights) {
                    for (e, &p) in energy.iter_mut().zip(bin) {
                        *e += p * w;
                    }
                }
                for e in &mut energy {
                    *e = ln(e.max(f32::EPSILON));
                }
                for (row, &value) in rows.chunks_exact_mut(bins).zip(&energy) {
                    row[m] = value;
                }
            }
        }
        out
    }

    /// Fills `frame` (FFT length) with the samples of `raw` (window length) less `offset`, then
    /// less their mean, pre-emphasised, windowed and zero-padded; `centred` is scratch of window
    /// length. The FFT uses its input as scratch, so the padding is rewritten every time.
    fn prepare_frame(&self, raw: &[f32], offset: f32, centred: &mut [f32], frame: &mut [f32]) {
        for (c, &x) in centred.iter_mut().zip(raw) {
            *c = x - offset;
        }
        // torchaudio takes the mean in float32; a float64 sum rounded once is as close as it gets.
        let mean = (sum_f64(centred) / centred.len() as f64) as f32;
        for c in centred.iter_mut() {
            *c -= mean;
        }
        // x[j] - p * x[j-1], with x[-1] = x[0] (torchaudio pads with the first sample).
        let p = self.preemphasis;
        frame[0] = (centred[0] - p * centred[0]) * self.window[0];
        let emphasised = centred[1..].iter().zip(&centred[..centred.len() - 1]);
        for ((out, (&x, &previous)), &w) in
            frame[1..].iter_mut().zip(emphasised).zip(&self.window[1..])
        {
            *out = (x - p * previous) * w;
        }
        frame[self.window_size..].fill(0.0);
    }
}

/// The sum of `xs` in float64, in eight independent lanes so that it vectorises.
pub(crate) fn sum_f64(xs: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Natural logarithm of a positive, finite, normal `x`, branch-free so that loops over it
/// vectorise (`f32::ln` calls libm once per value, which was a third of the filterbank's time).
/// Cephes' `logf`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, a degree-9 polynomial in
/// `m - 1`, and `ln 2` split in two for an exact `e ln 2`; within 2 ulp of the exact value (see the
/// tests), as torch's own vectorised `log` is within 1.
fn ln(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    // m in [0.5, 1), x = m * 2^e.
    let mut e = (bits >> 23) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let below = m < SQRT_HALF;
    e -= i32::from(below);
    let m = if below { m + m } else { m } - 1.0;
    let z = m * m;
    let poly = ((((((((7.037_683_6e-2 * m - 1.151_461e-1) * m + 1.167_699_87e-1) * m
        - 1.242_014_1e-1)
        * m
        + 1.424_932_3e-1)
        * m
        - 1.666_805_7e-1)
        * m
        + 2.000_071_4e-1)
        * m
        - 2.499_999_4e-1)
        * m
        + 3.333_333e-1)
        * m
        * z;
    let e = e as f32;
    let y = poly - 2.121_944_4e-4 * e - 0.5 * z;
    m + y + 0.693_359_4 * e
}

/// `torch.hann_window(n, periodic=False)` in float32: `0.5 - 0.5 * cos(2 pi i / (n - 1))`, with
/// torch's order of float32 operations.
fn hann_window(n: usize) -> Vec<f32> {
    let step = (2.0 * std::f64::consts::PI / (n - 1) as f64) as f32;
    (0..n)
        .map(|i| (i as f32 * step).cos() * -0.5 + 0.5)
        .collect()
}

/// The mel scale of Kaldi and HTK: `1127 ln(1 + f / 700)`.
fn mel_scale(freq: f64) -> f64 {
    1127.0 * (1.0 + freq / 700.0).ln()
}

/// torchaudio's `get_mel_banks` (no VTLN), stored sparsely. The filter edges are float32 in
/// torchaudio (`left = low + bin * delta` on a float32 tensor), as are the FFT bins' mel values and
/// the slopes; this repeats that arithmetic so that the weights come out the same.
fn mel_filters(cfg: &FbankConfig, fft_size: usize, rate: f64) -> Vec<MelFilter> {
    let nyquist = 0.5 * rate;
    let high_freq = if cfg.high_freq <= 0.0 {
        cfg.high_freq + nyquist
    } else {
        cfg.high_freq
    };
    let low_freq = cfg.low_freq;
    assert!(
        cfg.num_mel_bins > 3,
        "fbank: need at least 4 mel bins, got {}",
        cfg.num_mel_bins
    );
    assert!(
        (0.0..nyquist).contains(&low_freq)
            && high_freq > 0.0
            && high_freq <= nyquist
            && low_freq < high_freq,
        "fbank: bad cut-offs: low {low_freq} Hz, high {high_freq} Hz, Nyquist {nyquist} Hz",
    );
    let mel_low = mel_scale(low_freq);
    let mel_delta = ((mel_scale(high_freq) - mel_low) / (cfg.num_mel_bins + 1) as f64) as f32;
    let mel_low = mel_low as f32;
    let bin_width = (rate / fft_size as f64) as f32;
    // The mel value of each FFT bin but the Nyquist one, in float32 as torchaudio has it.
    let fft_mel: Vec<f32> = (0..fft_size / 2)
        .map(|k| 1127.0f32 * (1.0f32 + (bin_width * k as f32) / 700.0f32).ln())
        .collect();
    (0..cfg.num_mel_bins)
        .map(|m| {
            let left = mel_low + m as f32 * mel_delta;
            let center = mel_low + (m + 1) as f32 * mel_delta;
            let right = mel_low + (m + 2) as f32 * mel_delta;
            let weights: Vec<f32> = fft_mel
                .iter()
                .map(|&mel| {
                    let up = (mel - left) / (center - left);
                    let down = (right - mel) / (right - center);
                    up.min(down).max(0.0)
                })
                .collect();
            let first = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
            let end = weights
                .iter()
                .rposition(|&w| w > 0.0)
                .map_or(first, |last| last + 1);
            MelFilter {
                first,
                weights: weights[first..end].to_vec(),
            }
        })
        .collect()
}
