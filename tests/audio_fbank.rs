//! Properties of the filterbank and of `psla_fbank` that hold whatever torchaudio's rounding.

use std::f64::consts::PI;

use psla::audio::decode::{Decoded, decode_file};
use psla::audio::fbank::{Fbank, FbankConfig};
use psla::audio::psla_fbank;

fn fbank(rate: u32) -> Fbank {
    Fbank::new(rate, &FbankConfig::default())
}

fn tone(rate: u32, freq: f64, seconds: f64, amplitude: f64) -> Vec<f32> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

fn mono(rate: u32, samples: Vec<f32>) -> Decoded {
    Decoded {
        sample_rate: rate,
        channels: 1,
        samples: vec![samples],
        declared_frames: None,
    }
}

/// The mel bin whose centre is nearest to `freq` in mel, from Kaldi's definition in float64.
fn nearest_mel_bin(rate: u32, freq: f64) -> usize {
    let mel = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
    let (low, high) = (mel(20.0), mel(f64::from(rate) / 2.0));
    let delta = (high - low) / 129.0;
    (0..128)
        .min_by(|&a, &b| {
            let d = |m: usize| (low + (m + 1) as f64 * delta - mel(freq)).abs();
            d(a).total_cmp(&d(b))
        })
        .unwrap()
}

#[test]
fn frame_count_is_kaldis_snip_edges_count() {
    let f = fbank(16000);
    assert_eq!(
        (f.window_size(), f.window_shift(), f.num_mel_bins()),
        (400, 160, 128)
    );
    for n in [
        0, 1, 399, 400, 401, 559, 560, 561, 16000, 64493, 160_000, 160_159, 160_160,
    ] {
        let expected = if n < 400 { 0 } else { 1 + (n - 400) / 160 };
        assert_eq!(f.num_frames(n), expected, "{n} samples");
        assert_eq!(
            f.compute(&vec![0.1; n]).len(),
            expected * 128,
            "{n} samples"
        );
    }
    // torchaudio's int(rate * ms * 0.001), truncated.
    for (rate, window, shift) in [
        (8000, 200, 80),
        (22050, 551, 220),
        (44100, 1102, 441),
        (48000, 1200, 480),
    ] {
        let f = fbank(rate);
        assert_eq!(
            (f.window_size(), f.window_shift()),
            (window, shift),
            "{rate} Hz"
        );
    }
}

#[test]
fn silence_gives_the_log_floor() {
    let floor = f32::EPSILON.ln();
    let out = fbank(16000).compute(&[0.0; 16000]);
    assert_eq!(out.len(), 98 * 128);
    assert!(
        out.iter().all(|&v| v == floor),
        "every value is ln(f32::EPSILON) = {floor}"
    );
    // A constant is silence too: each frame's mean is removed.
    assert!(
        fbank(16000)
            .compute(&[0.25; 4000])
            .iter()
            .all(|&v| v == floor)
    );
    // The reference "silence" has +-1 LSB of dither: near the floor, not on it.
    let (out, frames) = psla_fbank(
        &decode_file(&crate::common::shared().join("reference/audio/silence_16k.wav")).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(frames, 98);
    assert!(out.iter().all(|&v| (floor..-12.0).contains(&v)));
}

#[test]
fn a_pure_tone_peaks_in_its_mel_bin() {
    // Tones on FFT bin centres (rate / 512 or / 2048 Hz apart), at several rates.
    for (rate, freq) in [
        (16000, 250.0),
        (16000, 1000.0),
        (16000, 3000.0),
        (16000, 6000.0),
        (8000, 500.0),
        (44100, 4306.640625),
    ] {
        let f = fbank(rate);
        let out = f.compute(&tone(rate, freq, 0.5, 0.5));
        let frames = out.len() / 128;
        let row = &out[frames / 2 * 128..][..128];
        let peak = (0..128).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(peak, nearest_mel_bin(rate, freq), "{freq} Hz at {rate} Hz");
        assert!(
            row[peak] > row.iter().sum::<f32>() / 128.0 + 5.0,
            "{freq} Hz at {rate} Hz: a clear peak"
        );
    }
}

#[test]
fn doubling_the_amplitude_adds_ln_4() {
    // The power spectrum, not the magnitude: scaling by 2 is exact in float32 up to the log.
    let wave = tone(16000, 440.0, 1.0, 0.3);
    let louder: Vec<f32> = wave.iter().map(|x| x * 2.0).collect();
    let f = fbank(16000);
    for (a, b) in f.compute(&wave).iter().zip(f.compute(&louder)) {
        if *a > -12.0 {
            assert!((b - a - 4f32.ln()).abs() < 1e-5, "{a} -> {b}");
        }
    }
}

#[test]
fn a_clip_shorter_than_one_frame_is_refused() {
    let message = psla_fbank(&mono(16000, vec![0.1; 399]), None)
        .unwrap_err()
        .to_string();
    assert!(message.contains("too short"), "{message}");
    // 0.02 s at 44.1 kHz is long enough natively (1102 needed, 882 present: no) ...
    assert!(psla_fbank(&mono(44100, vec![0.1; 882]), None).is_err());
    // ... and a clip long enough natively may be too short once resampled (and the reverse).
    assert!(psla_fbank(&mono(44100, vec![0.1; 1102]), Some(16000)).is_ok());
    assert!(psla_fbank(&mono(8000, vec![0.1; 199]), Some(16000)).is_err());
    assert!(psla_fbank(&mono(8000, vec![0.1; 200]), Some(16000)).is_ok());
}

#[test]
fn the_target_rate_of_a_clip_already_at_it_changes_nothing() {
    let d = mono(16000, tone(16000, 700.0, 0.3, 0.4));
    assert_eq!(
        psla_fbank(&d, None).unwrap(),
        psla_fbank(&d, Some(16000)).unwrap()
    );
}

#[test]
fn only_channel_0_is_used_but_the_mean_is_over_all_channels() {
    let left = tone(16000, 700.0, 0.3, 0.4);
    let right: Vec<f32> = left.iter().map(|x| x * 0.5 + 0.1).collect();
    let stereo = Decoded {
        sample_rate: 16000,
        channels: 2,
        samples: vec![left.clone(), right],
        declared_frames: None,
    };
    let (ours, frames) = psla_fbank(&stereo, None).unwrap();
    let mean = (left.iter().map(|&x| f64::from(x)).sum::<f64>()
        + stereo.samples[1].iter().map(|&x| f64::from(x)).sum::<f64>())
        / (2 * left.len()) as f64;
    let centred: Vec<f32> = left.iter().map(|&x| x - mean as f32).collect();
    assert_eq!(frames, fbank(16000).num_frames(left.len()));
    assert_eq!(ours, fbank(16000).compute(&centred));
}

#[test]
fn filterbanks_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Fbank>();
    let f = fbank(16000);
    let wave = tone(16000, 440.0, 1.0, 0.3);
    let expected = f.compute(&wave);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert_eq!(f.compute(&wave), expected));
        }
    });
}
