//! The filterbank's kernels (portable, AVX2 where the CPU has it) give bit-identical results.

use psla::audio::fbank::{Fbank, FbankConfig, Kernel};

/// Tones and xorshift noise: every FFT bin gets energy, some cells sit near the log floor.
fn signal(n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_u32;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state as f32 / u32::MAX as f32 - 0.5) * 1e-3;
            let t = i as f32 / 16000.0;
            0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin() + 0.1 * (2.0 * std::f32::consts::PI * 3100.0 * t).sin() + noise
        })
        .collect()
}

#[test]
fn every_fbank_kernel_gives_the_same_bits() {
    // 16000 + 123 samples: the last group of 8 frames is partial at every rate here.
    let wave = signal(16_123);
    for rate in [8000, 16000, 22050, 44100] {
        let f = Fbank::new(rate, &FbankConfig::default());
        let (mut portable, mut best) = (Vec::new(), Vec::new());
        f.compute_with(Kernel::Portable, &wave, 0.01, &mut portable);
        f.compute_with(Kernel::best(), &wave, 0.01, &mut best);
        assert_eq!(portable.len(), f.num_frames(wave.len()) * 128, "{rate} Hz");
        let differ = portable.iter().zip(&best).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{rate} Hz: {:?} and Portable differ in {differ} cells", Kernel::best());
        // Reusing the output buffer changes nothing.
        let mut again = vec![1.0; 7];
        f.compute_with(Kernel::best(), &wave, 0.01, &mut again);
        assert!(again == best, "{rate} Hz");
    }
}
