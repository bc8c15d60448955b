//! Properties of the resampler (its agreement with torchaudio is in golden.rs).

use std::f64::consts::PI;

use psla::audio::resample::{Resampler, resample};

fn sine(rate: u32, freq: f64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

#[test]
fn output_length_is_the_ceiling_of_new_over_orig() {
    for (orig, new) in [
        (44100, 16000),
        (22050, 16000),
        (8000, 16000),
        (48000, 16000),
        (16000, 44100),
        (11025, 16000),
    ] {
        for n in [0, 1, 2, 440, 441, 1000, 88_879] {
            let expected = (new as usize * n).div_ceil(orig as usize);
            assert_eq!(
                resample(&vec![0.1; n], orig, new).len(),
                expected,
                "{orig} -> {new}, {n} samples"
            );
            assert_eq!(Resampler::new(orig, new).output_len(n), expected);
        }
    }
}

#[test]
fn equal_rates_copy() {
    let x = sine(16000, 440.0, 1000);
    assert_eq!(resample(&x, 16000, 16000), x);
    assert_eq!(Resampler::new(16000, 16000).process(&x), x);
}

#[test]
fn a_tone_in_the_passband_survives() {
    // Away from the edges (where the input is zero-padded), the output is the same sine sampled
    // at the new rate.
    for (orig, new) in [
        (44100, 16000),
        (22050, 16000),
        (8000, 16000),
        (16000, 44100),
    ] {
        let x = sine(orig, 440.0, orig as usize);
        let y = resample(&x, orig, new);
        let expected = sine(new, 440.0, y.len());
        let edge = new as usize / 50;
        let worst = y[edge..y.len() - edge]
            .iter()
            .zip(&expected[edge..])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 2e-3, "{orig} -> {new}: {worst}");
    }
}

#[test]
fn tones_above_the_new_nyquist_are_filtered_out() {
    let x = sine(44100, 12000.0, 44100);
    let y = resample(&x, 44100, 16000);
    let rms = (y[1000..15000].iter().map(|v| f64::from(v * v)).sum::<f64>() / 14000.0).sqrt();
    assert!(rms < 1e-3, "12 kHz leaks into 16 kHz audio: rms {rms}");
}

#[test]
fn the_function_and_the_reusable_resampler_agree() {
    let x = sine(22050, 1234.0, 5000);
    let r = Resampler::new(22050, 16000);
    assert_eq!(resample(&x, 22050, 16000), r.process(&x));
    assert_eq!(r.process(&x), r.process(&x));
}
