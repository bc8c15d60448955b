//! Decoding: the reference clips, the broken ones, and WAV layouts built in memory.

use std::path::{Path, PathBuf};

use psla::audio::decode::{decode_bytes, decode_file};


fn path(file: &str) -> PathBuf {
    crate::common::shared().join("reference/audio").join(file)
}

/// A WAV file to build: a `fmt ` chunk with `format` (and, for WAVE_FORMAT_EXTENSIBLE,
/// `sub_format`), the chunks in `extra` before the data, and a data chunk declaring `declared`
/// bytes (its real size where `None`) holding `data`.
struct Wav<'a> {
    format: u16,
    sub_format: Option<u16>,
    channels: u16,
    rate: u32,
    bits: u16,
    extra: &'a [(&'a [u8; 4], &'a [u8])],
    data: &'a [u8],
    declared: Option<u32>,
}

impl Default for Wav<'_> {
    fn default() -> Self {
        Wav {
            format: 1,
            sub_format: None,
            channels: 1,
            rate: 16000,
            bits: 16,
            extra: &[],
            data: &[],
            declared: None,
        }
    }
}

impl Wav<'_> {
    fn bytes(&self) -> Vec<u8> {
        let block = self.channels * self.bits / 8;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&self.format.to_le_bytes());
        fmt.extend_from_slice(&self.channels.to_le_bytes());
        fmt.extend_from_slice(&self.rate.to_le_bytes());
        fmt.extend_from_slice(&(self.rate * u32::from(block)).to_le_bytes());
        fmt.extend_from_slice(&block.to_le_bytes());
        fmt.extend_from_slice(&self.bits.to_le_bytes());
        match self.sub_format {
            // cbSize, required for codecs other than PCM.
            None if self.format != 1 => fmt.extend_from_slice(&0u16.to_le_bytes()),
            None => {}
            Some(sub) => {
                fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
                fmt.extend_from_slice(&self.bits.to_le_bytes()); // valid bits
                fmt.extend_from_slice(&0u32.to_le_bytes()); // channel mask
                fmt.extend_from_slice(&sub.to_le_bytes());
                fmt.extend_from_slice(&[
                    0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
                ]);
            }
        }
        let mut body = b"WAVE".to_vec();
        let mut chunk = |id: &[u8; 4], bytes: &[u8], size: u32| {
            body.extend_from_slice(id);
            body.extend_from_slice(&size.to_le_bytes());
            body.extend_from_slice(bytes);
            if bytes.len() % 2 == 1 {
                body.push(0);
            }
        };
        chunk(b"fmt ", &fmt, fmt.len() as u32);
        for (id, bytes) in self.extra {
            chunk(id, bytes, bytes.len() as u32);
        }
        chunk(
            b"data",
            self.data,
            self.declared.unwrap_or(self.data.len() as u32),
        );
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&body);
        file
    }
}

/// Mono PCM at 16 kHz.
fn pcm(format: u16, bits: u16, data: &[u8]) -> Vec<u8> {
    Wav {
        format,
        bits,
        data,
        ..Wav::default()
    }
    .bytes()
}

#[test]
fn every_reference_clip_decodes_complete() {
    for (file, rate, channels, frames) in [
        ("chirp_16k.wav", 16000, 1, 48000),
        ("music_10s_24bit.wav", 16000, 1, 160_000),
        ("pinknoise_16k.flac", 16000, 1, 32000),
        ("short_20ms_16k.wav", 16000, 1, 320),
        ("silence_16k.wav", 16000, 1, 16000),
        ("speech_16k.mp3", 16000, 1, 64492),
        ("speech_16k.wav", 16000, 1, 64493),
        ("speech_22k_float.wav", 22050, 1, 88879),
        ("speech_8k.wav", 8000, 1, 32246),
        ("tones_44k1_stereo.wav", 44100, 2, 110_250),
    ] {
        let d = decode_file(&path(file)).unwrap();
        assert_eq!(
            (d.sample_rate, d.channels, d.num_frames()),
            (rate, channels, frames),
            "{file}"
        );
        assert_eq!(d.samples.len(), channels, "{file}");
        assert!(d.samples.iter().all(|c| c.len() == frames), "{file}");
        assert_eq!(d.declared_frames, Some(frames as u64), "{file}");
        assert!(!d.is_truncated(), "{file}");
        assert!(
            d.samples.iter().flatten().all(|x| (-1.0..=1.0).contains(x)),
            "{file}"
        );
    }
}

#[test]
fn truncated_wav_decodes_what_is_there_and_says_so() {
    let d = decode_file(&path("truncated_16k.wav")).unwrap();
    assert!(d.is_truncated());
    assert_eq!(
        d.declared_frames,
        Some(64493),
        "the data chunk's size in the header"
    );
    assert_eq!(
        d.num_frames(),
        1478,
        "the whole samples present: (3000 - 44) / 2"
    );
    let full = decode_file(&path("speech_16k.wav")).unwrap();
    assert_eq!(
        d.samples[0],
        full.samples[0][..1478],
        "it is speech_16k.wav cut short"
    );
}

#[test]
fn not_audio_is_refused_naming_the_file() {
    let message = decode_file(&path("not_audio.wav")).unwrap_err().to_string();
    assert!(
        message.contains("not_audio.wav") && message.contains("not an audio file"),
        "{message}"
    );
}

#[test]
fn empty_file_is_refused_naming_the_file() {
    let file = std::env::temp_dir().join(format!("psla-audio-empty-{}.wav", std::process::id()));
    std::fs::write(&file, b"").unwrap();
    let message = decode_file(&file).unwrap_err().to_string();
    std::fs::remove_file(&file).unwrap();
    assert!(
        message.contains(&*file.to_string_lossy()) && message.contains("empty file"),
        "{message}"
    );
    let message = decode_bytes(Vec::new(), Some("wav"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("<in-memory audio>") && message.contains("empty file"),
        "{message}"
    );
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let message = decode_file(Path::new("/nonexistent/clip.wav"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("/nonexistent/clip.wav"), "{message}");
}

#[test]
fn corrupt_wav_headers_are_reported() {
    let good = pcm(1, 16, &[0, 0, 1, 0]);
    for (what, bytes) in [
        ("cut inside the fmt chunk", good[..30].to_vec()),
        ("no data chunk", good[..36].to_vec()),
        (
            "zero channels",
            Wav {
                channels: 0,
                data: &[0, 0],
                ..Wav::default()
            }
            .bytes(),
        ),
        ("no samples", pcm(1, 16, &[])),
    ] {
        let message = decode_bytes(bytes, Some("wav")).unwrap_err().to_string();
        assert!(message.contains("corrupt"), "{what}: {message}");
    }
}

#[test]
fn integer_pcm_is_divided_by_two_to_the_bits_minus_one() {
    let d = decode_bytes(pcm(1, 8, &[0, 64, 128, 255]), None).unwrap();
    assert_eq!(d.samples[0], [-1.0, -0.5, 0.0, 127.0 / 128.0]);

    let values: [i16; 5] = [i16::MIN, -1, 0, 1, i16::MAX];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let d = decode_bytes(pcm(1, 16, &bytes), None).unwrap();
    assert_eq!(d.samples[0], values.map(|v| f32::from(v) / 32768.0));

    let values: [i32; 4] = [-(1 << 23), -1, 1, (1 << 23) - 1];
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| v.to_le_bytes()[..3].to_vec())
        .collect();
    let d = decode_bytes(pcm(1, 24, &bytes), None).unwrap();
    assert_eq!(d.samples[0], values.map(|v| v as f32 / 8_388_608.0));

    let values: [i32; 3] = [i32::MIN, -65536, i32::MAX];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let d = decode_bytes(pcm(1, 32, &bytes), None).unwrap();
    assert_eq!(
        d.samples[0],
        values.map(|v| (f64::from(v) / 2_147_483_648.0) as f32)
    );
}

#[test]
fn float_pcm_is_kept_as_is() {
    let values = [-1.5f32, -0.25, 0.0, 1e-30, 0.75];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        decode_bytes(pcm(3, 32, &bytes), None).unwrap().samples[0],
        values
    );
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| f64::from(*v).to_le_bytes())
        .collect();
    assert_eq!(
        decode_bytes(pcm(3, 64, &bytes), None).unwrap().samples[0],
        values
    );
}

#[test]
fn channels_are_deinterleaved_and_other_chunks_skipped() {
    // Stereo 16-bit, an odd-sized LIST chunk (padded) before the data, WAVE_FORMAT_EXTENSIBLE.
    let frames: [[i16; 2]; 3] = [[100, -100], [200, -200], [300, -300]];
    let bytes: Vec<u8> = frames
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let file = Wav {
        format: 0xFFFE,
        sub_format: Some(1),
        channels: 2,
        rate: 44100,
        extra: &[(b"LIST", b"odd"), (b"JUNK", &[0; 4])],
        data: &bytes,
        ..Wav::default()
    }
    .bytes();
    let d = decode_bytes(file, Some("wav")).unwrap();
    assert_eq!((d.sample_rate, d.channels, d.num_frames()), (44100, 2, 3));
    assert_eq!(d.samples[0], [100.0, 200.0, 300.0].map(|v| v / 32768.0));
    assert_eq!(d.samples[1], [-100.0, -200.0, -300.0].map(|v| v / 32768.0));
}

#[test]
fn wav_cut_inside_a_frame_keeps_the_whole_frames() {
    let bytes: Vec<u8> = [1i16, 2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut file = Wav {
        channels: 2,
        data: &bytes,
        declared: Some(400),
        ..Wav::default()
    }
    .bytes();
    file.truncate(file.len() - 1);
    let d = decode_bytes(file, None).unwrap();
    assert_eq!(
        (d.num_frames(), d.declared_frames, d.is_truncated()),
        (1, Some(100), true)
    );
}

#[test]
fn streamed_wav_without_final_sizes_reads_to_the_end() {
    let bytes: Vec<u8> = [1i16, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    for declared in [0, u32::MAX] {
        let d = decode_bytes(
            Wav {
                data: &bytes,
                declared: Some(declared),
                ..Wav::default()
            }
            .bytes(),
            None,
        )
        .unwrap();
        assert_eq!(
            (d.num_frames(), d.declared_frames, d.is_truncated()),
            (3, None, false)
        );
    }
}

#[test]
fn other_wav_codecs_go_through_symphonia() {
    // G.711 mu-law: 0xFF is silence, 0x80 and 0x00 the extremes (+-32124 in 16-bit).
    let d = decode_bytes(
        Wav {
            format: 7,
            rate: 8000,
            bits: 8,
            data: &[0xFF, 0x80, 0x00],
            ..Wav::default()
        }
        .bytes(),
        None,
    )
    .unwrap();
    assert_eq!(d.samples[0], [0.0, 32124.0 / 32768.0, -32124.0 / 32768.0]);
    assert_eq!(d.sample_rate, 8000);
}

#[test]
fn bytes_and_files_decode_alike() {
    for file in [
        "pinknoise_16k.flac",
        "speech_16k.mp3",
        "speech_22k_float.wav",
    ] {
        let from_file = decode_file(&path(file)).unwrap();
        // No extension hint: the container is recognised from the content.
        let from_bytes = decode_bytes(std::fs::read(path(file)).unwrap(), None).unwrap();
        assert_eq!(from_file, from_bytes, "{file}");
    }
}
