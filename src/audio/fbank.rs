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
//!
//! Speed: frames are computed [`LANES`] at a time, each step a vector operation over the frames of
//! the group (see [`super::fft`]): the frames are laid side by side once, then the mean removal,
//! pre-emphasis, window, FFT, mel weights and log all run on vectors holding one value of each
//! frame. The kernel is compiled twice, for the baseline instruction set and for AVX2 (chosen at run time, see [`Kernel`]); both do the same IEEE operations in the same
//! order, so they give bit-identical results, which the tests check.

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

use super::fft::{LANES, Lanes, RealFft};

/// One triangular mel filter, stored sparsely: its non-zero weights start at FFT bin `first`.
#[derive(Debug, Clone)]
struct MelFilter {
    first: usize,
    weights: Vec<f32>,
}

/// A filterbank for one sample rate. Cheap to share (`Send + Sync`); [`Fbank::compute`] allocates
/// its scratch buffers (about 30 kB) once per call, never per frame.
#[derive(Clone)]
pub struct Fbank {
    sample_rate: u32,
    window_size: usize,
    window_shift: usize,
    preemphasis: f32,
    /// Symmetric Hann window of `window_size` points.
    window: Vec<f32>,
    filters: Vec<MelFilter>,
    fft: RealFft,
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
            fft: RealFft::new(fft_size),
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
        let mut out = Vec::new();
        self.compute_offset_into(wave, offset, &mut out);
        out
    }

    /// [`Fbank::compute_offset`] into `out` (cleared first), so that a caller featurising many
    /// clips can reuse one buffer: a fresh 0.5 MB buffer per clip costs more in page faults than
    /// the filterbank itself.
    pub fn compute_offset_into(&self, wave: &[f32], offset: f32, out: &mut Vec<f32>) {
        self.compute_with(Kernel::best(), wave, offset, out);
    }

    /// [`Fbank::compute_offset_into`] with a given kernel ([`Kernel::best`] is the fastest the
    /// CPU has); the tests check that every kernel gives the same bits.
    pub fn compute_with(&self, kernel: Kernel, wave: &[f32], offset: f32, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.num_frames(wave.len()) * self.filters.len(), 0.0);
        match kernel {
            Kernel::Portable => self.fill(wave, offset, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(
                    std::arch::is_x86_feature_detected!("avx2"),
                    "fbank: Kernel::Avx2 on a CPU without AVX2"
                );
                // SAFETY: the CPU has AVX2 (just checked; the check is a cached load).
                unsafe { self.fill_avx2(wave, offset, out) }
            }
        }
    }

    /// [`Fbank::fill`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fill_avx2(&self, wave: &[f32], offset: f32, out: &mut [f32]) {
        self.fill(wave, offset, out);
    }

    /// Writes the filterbank of `wave - offset` into `out` (`num_frames * num_mel_bins` values).
    /// Everything it calls is `#[inline(always)]`, so that it all compiles with the caller's
    /// instruction set.
    #[inline(always)]
    fn fill(&self, wave: &[f32], offset: f32, out: &mut [f32]) {
        let bins = self.filters.len();
        let half = self.fft.len() / 2;
        let size = self.window_size;
        // The frames of a group, interleaved (see fft.rs); after the FFT, `re[k]` holds bin k of
        // the power spectrum of every frame of the group (the Nyquist bin, which no mel filter
        // uses, is left out), so that each mel weight multiplies all frames in one operation.
        let mut re: Vec<Lanes> = vec![[0.0; LANES]; half];
        let mut im: Vec<Lanes> = vec![[0.0; LANES]; half];
        let mut scratch: Vec<Lanes> = vec![[0.0; LANES]; size];
        for (group_index, rows) in out.chunks_mut(LANES * bins).enumerate() {
            let group = rows.len() / bins;
            // The lanes of a last, partial group repeat its last frame (computed, never stored).
            let frames: [&[f32]; LANES] = std::array::from_fn(|lane| {
                let start = (group_index * LANES + lane.min(group - 1)) * self.window_shift;
                &wave[start..start + size]
            });
            self.load_frames(&frames, offset, &mut scratch, &mut re, &mut im);
            self.fft.power(&mut re, &mut im);
            for (m, filter) in self.filters.iter().enumerate() {
                let mut energy = [0.0f32; LANES];
                let band = &re[filter.first..filter.first + filter.weights.len()];
                for (power, &w) in band.iter().zip(&filter.weights) {
                    for (e, &p) in energy.iter_mut().zip(power) {
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
    }

    /// Loads [`LANES`] frames (each `window_size` samples of the clip) into `re` and `im` for the
    /// FFT, prepared as torchaudio does, in vector operations over the frames: each sample less
    /// `offset`, less the frame's mean, pre-emphasised (`x[j] - p * x[j-1]`, with `x[-1] = x[0]`,
    /// torchaudio's padding), times the window, zero-padded to the FFT length. `scratch` holds
    /// `window_size` vectors.
    #[inline(always)]
    fn load_frames(&self, frames: &[&[f32]; LANES], offset: f32, scratch: &mut [Lanes], re: &mut [Lanes], im: &mut [Lanes]) {
        let size = self.window_size;
        // Frames side by side: scratch[j][l] = sample j of frame l, less the offset.
        for (l, frame) in frames.iter().enumerate() {
            for (x, &v) in scratch.iter_mut().zip(frame.iter()) {
                x[l] = v - offset;
            }
        }
        // torchaudio takes each frame's mean in float32; a float64 sum rounded once is as close as it gets.
        let mut sums = [0.0f64; LANES];
        for x in scratch.iter() {
            for (s, &v) in sums.iter_mut().zip(x) {
                *s += f64::from(v);
            }
        }
        let mean: Lanes = std::array::from_fn(|l| (sums[l] / size as f64) as f32);
        for x in scratch.iter_mut() {
            for (v, m) in x.iter_mut().zip(&mean) {
                *v -= m;
            }
        }
        let p = self.preemphasis;
        let sample = |j: usize| -> Lanes {
            if j >= size {
                return [0.0; LANES];
            }
            let (x, previous) = (scratch[j], scratch[j.saturating_sub(1)]);
            let w = self.window[j];
            std::array::from_fn(|l| (x[l] - p * previous[l]) * w)
        };
        for (q, &at) in self.fft.bitrev().iter().enumerate() {
            re[at as usize] = sample(2 * q);
            im[at as usize] = sample(2 * q + 1);
        }
    }
}

/// Which compilation of the filterbank kernel runs. All give bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The baseline instruction set (SSE2 on x86-64), any CPU.
    Portable,
    /// AVX2, on x86-64 CPUs that have it.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// AVX2 where the CPU has it, unless `PSLA_SIMD=portable` is set (for comparisons).
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let forced_portable = std::env::var("PSLA_SIMD").is_ok_and(|v| v == "portable");
            #[cfg(target_arch = "x86_64")]
            if !forced_portable && std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
            let _ = forced_portable;
            Kernel::Portable
        })
    }
}

/// The sum of `xs` in float64, in eight independent lanes so that it vectorises (with AVX2 where
/// the CPU has it; the result is the same either way).
pub(crate) fn sum_f64(xs: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn sum_avx2(xs: &[f32]) -> f64 {
        sum_f64_inline(xs)
    }
    match Kernel::best() {
        Kernel::Portable => sum_f64_inline(xs),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::Avx2` is only chosen where the CPU has AVX2.
        Kernel::Avx2 => unsafe { sum_avx2(xs) },
    }
}

#[inline(always)]
fn sum_f64_inline(xs: &[f32]) -> f64 {
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
#[inline(always)]
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

