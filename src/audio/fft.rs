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

/// The vector whose lane `l` is `f(l)`.
#[inline(always)]
fn lanes(f: impl FnMut(usize) -> f32) -> Lanes {
    std::array::from_fn(f)
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

    /// Where sample pair `q` (samples `2q` and `2q + 1` of the frames) goes in `re` and `im` for
    /// [`RealFft::power`]: `re[bitrev[q]]` and `im[bitrev[q]]`.
    pub(crate) fn bitrev(&self) -> &[u32] {
        &self.bitrev
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
            // (Every vector is copied out before any is written back: with loads and stores
            // interleaved lane by lane, the compiler could not prove the rows distinct and kept
            // the lanes scalar.)
            for (r, i) in re.chunks_exact_mut(4).zip(im.chunks_exact_mut(4)) {
                let (r0, r1, r2, r3) = (r[0], r[1], r[2], r[3]);
                let (i0, i1, i2, i3) = (i[0], i[1], i[2], i[3]);
                let (s0r, s0i) = (lanes(|l| r0[l] + r1[l]), lanes(|l| i0[l] + i1[l]));
                let (d0r, d0i) = (lanes(|l| r0[l] - r1[l]), lanes(|l| i0[l] - i1[l]));
                let (s1r, s1i) = (lanes(|l| r2[l] + r3[l]), lanes(|l| i2[l] + i3[l]));
                let (d1r, d1i) = (lanes(|l| r2[l] - r3[l]), lanes(|l| i2[l] - i3[l]));
                r[0] = lanes(|l| s0r[l] + s1r[l]);
                i[0] = lanes(|l| s0i[l] + s1i[l]);
                r[2] = lanes(|l| s0r[l] - s1r[l]);
                i[2] = lanes(|l| s0i[l] - s1i[l]);
                // -i (d1r + i d1i) = d1i - i d1r
                r[1] = lanes(|l| d0r[l] + d1i[l]);
                i[1] = lanes(|l| d0i[l] - d1r[l]);
                r[3] = lanes(|l| d0r[l] - d1i[l]);
                i[3] = lanes(|l| d0i[l] + d1r[l]);
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
                    let (ar, ai, br, bi) = (*ra, *ia, *rb, *ib);
                    let tr: Lanes = std::array::from_fn(|l| br[l] * wr - bi[l] * wi);
                    let ti: Lanes = std::array::from_fn(|l| br[l] * wi + bi[l] * wr);
                    *rb = std::array::from_fn(|l| ar[l] - tr[l]);
                    *ib = std::array::from_fn(|l| ai[l] - ti[l]);
                    *ra = std::array::from_fn(|l| ar[l] + tr[l]);
                    *ia = std::array::from_fn(|l| ai[l] + ti[l]);
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
