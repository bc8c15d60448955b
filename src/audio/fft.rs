//! The power spectrum of [`LANES`] real frames at once: a real FFT of power-of-two length, written
//! for "vertical" SIMD.
//!
//! Every value is a [`Lanes`] vector whose lane `l` belongs to frame `l`, so each butterfly works on
//! eight frames with plain element-wise arithmetic, which the compiler turns into one AVX (or two
//! SSE) instruction per operation. There are no shuffles, and the output comes out interleaved
//! the way the mel filters want it: bin `k` of all eight frames in one vector.
//!
//! The algorithm is the textbook one. A real frame `x` of length `N` is read as `N/2` complex
//! values `z[n] = x[2n] + i x[2n+1]`; their DFT `Z` (iterative radix-2 Cooley-Tukey, decimation in
//! time: inputs in bit-reversed order, the first two stages fused into one multiply-free radix-4
//! pass) is split into the DFT of `x` by `X[k] = E[k] + W^k O[k]` with `W = exp(-2 pi i / N)`,
//! `E[k] = (Z[k] + conj Z[N/2-k]) / 2` and `O[k] = (Z[k] - conj Z[N/2-k]) / 2i`. The twiddles are
//! computed in float64 and rounded once. This is float32 throughout, like torchaudio's FFT, and
//! as accurate (its rounding grows with log N).
//!
//! There is no `unsafe` and no intrinsic here: the functions are `#[inline(always)]` so that they
//! compile with the instruction set of their caller (see `Fbank`'s AVX2 kernel), and each lane
//! is computed by the same IEEE operations in the same order whatever the instruction set, so the
//! results are bit-identical on every machine.

/// Frames transformed together: one AVX vector of `f32`, two SSE vectors.
pub(crate) const LANES: usize = 8;

/// One value of each of [`LANES`] frames.
pub(crate) type Lanes = [f32; LANES];

/// A real FFT of one power-of-two length, planned once and shared between threads.
#[derive(Debug, Clone)]
pub(crate) struct RealFft {
    len: usize,
    /// Where complex input `n` goes for the decimation-in-time transform: `n` with its bits reversed.
    bitrev: Vec<u32>,
    /// The twiddles of the radix-2 stage of half-size `h` (h = 4, 8, ...) at `[h - 1, 2h - 1)`:
    /// `exp(-2 pi i j / 2h)` for `j < h`. (Entries for h = 1 and 2 are there but unused.)
    twiddles: Vec<(f32, f32)>,
    /// `W^k = exp(-2 pi i k / N)` for `k <= N/4`, the real-split twiddles. Those of `N/2 - k` are
    /// the same with the real part negated, `W^(N/2-k) = -conj W^k`, which is exact.
    split: Vec<(f32, f32)>,
}

/// `exp(-2 pi i num / den)` in float64 rounded to float32, with the zeros at quarter turns exact.
fn unit(num: usize, den: usize) -> (f32, f32) {
    let angle = -2.0 * std::f64::consts::PI * num as f64 / den as f64;
    let snap = |v: f64| if v.abs() < 1e-12 { 0.0 } else { v as f32 };
    (snap(angle.cos()), snap(angle.sin()))
}

impl RealFft {
    /// Plans the transform of `len` real values.
    ///
    /// # Panics
    /// If `len` is not a power of two of at least 2.
    pub(crate) fn new(len: usize) -> Self {
        assert!(
            len >= 2 && len.is_power_of_two(),
            "fft: length {len} is not a power of two >= 2"
        );
        let m = len / 2;
        let bits = m.trailing_zeros();
        let bitrev = (0..m as u32)
            .map(|n| n.reverse_bits().checked_shr(32 - bits).unwrap_or(0))
            .collect();
        let mut twiddles = Vec::with_capacity(m);
        let mut half = 1;
        while half < m {
            twiddles.extend((0..half).map(|j| unit(j, 2 * half)));
            half *= 2;
        }
        let split = (0..=len / 4).map(|k| unit(k, len)).collect();
        Self {
            len,
            bitrev,
            twiddles,
            split,
        }
    }

    /// The number of real values per frame.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores the real frame `frame` (`len()` values) in lane `lane` of `re` and `im` (`len() / 2`
    /// vectors each), in the order [`RealFft::power`] expects.
    #[inline(always)]
    pub(crate) fn load_lane(&self, frame: &[f32], lane: usize, re: &mut [Lanes], im: &mut [Lanes]) {
        for (pair, &at) in frame.chunks_exact(2).zip(&self.bitrev) {
            re[at as usize][lane] = pair[0];
            im[at as usize][lane] = pair[1];
        }
    }

    /// The power spectra `|X[k]|^2`, `k < len() / 2` (the Nyquist bin is left out), of the frames
    /// loaded in `re` and `im`: written into `re[k]`; `im` is scratch.
    #[inline(always)]
    pub(crate) fn power(&self, re: &mut [Lanes], im: &mut [Lanes]) {
        self.transform(re, im);
        self.split_power(re, im);
    }

    /// The complex DFT of the `len() / 2` loaded values, in place, in natural order.
    #[inline(always)]
    fn transform(&self, re: &mut [Lanes], im: &mut [Lanes]) {
        let m = re.len();
        let mut half = 1;
        if m >= 4 {
            // The first two radix-2 stages together: twiddles 1 and -i, no multiplication.
            for (r, i) in re.chunks_exact_mut(4).zip(im.chunks_exact_mut(4)) {
                for l in 0..LANES {
                    let (s0r, s0i) = (r[0][l] + r[1][l], i[0][l] + i[1][l]);
                    let (d0r, d0i) = (r[0][l] - r[1][l], i[0][l] - i[1][l]);
                    let (s1r, s1i) = (r[2][l] + r[3][l], i[2][l] + i[3][l]);
                    let (d1r, d1i) = (r[2][l] - r[3][l], i[2][l] - i[3][l]);
                    r[0][l] = s0r + s1r;
                    i[0][l] = s0i + s1i;
                    r[2][l] = s0r - s1r;
                    i[2][l] = s0i - s1i;
                    // -i (d1r + i d1i) = d1i - i d1r
                    r[1][l] = d0r + d1i;
                    i[1][l] = d0i - d1r;
                    r[3][l] = d0r - d1i;
                    i[3][l] = d0i + d1r;
                }
            }
            half = 4;
        }
        while half < m {
            let twiddles = &self.twiddles[half - 1..2 * half - 1];
            for (r, i) in re
                .chunks_exact_mut(2 * half)
                .zip(im.chunks_exact_mut(2 * half))
            {
                let (ra, rb) = r.split_at_mut(half);
                let (ia, ib) = i.split_at_mut(half);
                let pairs = ra.iter_mut().zip(ia).zip(rb.iter_mut().zip(ib));
                for (((ra, ia), (rb, ib)), &(wr, wi)) in pairs.zip(twiddles) {
                    for l in 0..LANES {
                        let tr = rb[l] * wr - ib[l] * wi;
                        let ti = rb[l] * wi + ib[l] * wr;
                        rb[l] = ra[l] - tr;
                        ib[l] = ia[l] - ti;
                        ra[l] += tr;
                        ia[l] += ti;
                    }
                }
            }
            half *= 2;
        }
    }

    /// From the half-length DFT `Z` in `re`, `im` to the power spectrum of the real frames, in
    /// `re`. Bins `k` and `m - k` use the same two values of `Z` and are computed together.
    #[inline(always)]
    fn split_power(&self, re: &mut [Lanes], im: &[Lanes]) {
        let m = re.len();
        // X[0] = Re Z[0] + Im Z[0].
        for l in 0..LANES {
            let x = re[0][l] + im[0][l];
            re[0][l] = x * x;
        }
        for k in 1..=m / 2 {
            let j = m - k;
            let (ar, ai, br, bi) = (re[k], im[k], re[j], im[j]);
            // W^j = -conj W^k (j = N/2 - k).
            let (wr, wi) = self.split[k];
            let (mut pk, mut pj) = ([0.0f32; LANES], [0.0f32; LANES]);
            for l in 0..LANES {
                // X[k] = E + W^k O, E = (a + conj b) / 2, O = (a - conj b) / 2i.
                let er = (ar[l] + br[l]) * 0.5;
                let ei = (ai[l] - bi[l]) * 0.5;
                let or = (ai[l] + bi[l]) * 0.5;
                let oi = (br[l] - ar[l]) * 0.5;
                let xr = er + (wr * or - wi * oi);
                let xi = ei + (wr * oi + wi * or);
                pk[l] = xr * xr + xi * xi;
                // X[j]: a and b swap, so E -> conj E and O -> conj O; W^j = (-wr, wi).
                let yr = er + (-wr * or + wi * oi);
                let yi = -ei + (wr * oi + wi * or);
                pj[l] = yr * yr + yi * yi;
            }
            re[k] = pk;
            re[j] = pj;
        }
    }
}
