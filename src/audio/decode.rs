//! Decoding audio files to float PCM: WAV (integer or float PCM) directly, everything else (FLAC,
//! MP3, Ogg Vorbis, other WAV codecs) with symphonia.
//!
//! Samples come out as `f32` the way `torchaudio.load` returns them: integer PCM divided by
//! `2^(bits-1)` (unsigned PCM re-centred first), float PCM as stored. Every channel is kept.
//!
//! A file whose stream ends before the length its header declares (a WAV cut short, say) still
//! decodes, as torchaudio's loaders do; [`Decoded::is_truncated`] tells the caller, with both
//! lengths in [`Decoded::declared_frames`] and [`Decoded::num_frames`].
//!
//! PCM WAV, the bulk of audio datasets, is parsed here rather than by symphonia because it is
//! then a copy with a conversion (3x faster for a 10 s clip: symphonia reads sample by sample),
//! and because the data chunk's declared size and the bytes present are then both in hand.

use std::io::{Cursor, ErrorKind};
use std::path::Path;

use symphonia::core::audio::{AudioBuffer, AudioBufferRef};
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;

use super::fbank::Kernel;
use crate::error::{Error, Result, WithPath};

/// The name errors give to audio decoded by [`decode_bytes`], which has no file.
const IN_MEMORY: &str = "<in-memory audio>";

/// Upper bound on the samples per channel reserved up front from a header's declared length, so
/// that a bogus header cannot make us allocate gigabytes before decoding a single packet.
const MAX_RESERVE_FRAMES: u64 = 1 << 26;

/// A decoded clip: all channels, as float, nominally in [-1, 1] (float PCM may exceed it).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Samples per second.
    pub sample_rate: u32,
    /// Number of channels; equals `samples.len()`.
    pub channels: usize,
    /// One vector per channel, all of the same length.
    pub samples: Vec<Vec<f32>>,
    /// The number of frames (samples per channel) the container header declares, where it
    /// declares one: for WAV the data chunk size over the block size, for FLAC the STREAMINFO
    /// total, for MP3 the Xing/Info frame count less encoder delay and padding.
    pub declared_frames: Option<u64>,
}

impl Decoded {
    /// The number of frames (samples per channel) actually decoded.
    pub fn num_frames(&self) -> usize {
        self.samples.first().map_or(0, Vec::len)
    }

    /// Whether the stream ended before the length its header declares: the file was cut short.
    pub fn is_truncated(&self) -> bool {
        self.declared_frames
            .is_some_and(|declared| declared > self.num_frames() as u64)
    }
}

/// Decodes an audio file. The container is recognised from its content; the extension is only a
/// hint. Errors name the file: "empty file", "not an audio file", "corrupt audio data: ...".
pub fn decode_file(path: &Path) -> Result<Decoded> {
    let bytes = std::fs::read(path).with_path(path)?;
    let ext = path.extension().and_then(|e| e.to_str());
    decode(bytes, ext, path)
}

/// Decodes audio held in memory; `ext_hint` is a file extension such as `"wav"` (optional, as the
/// container is recognised from its content). Errors name the source as `<in-memory audio>`.
pub fn decode_bytes(bytes: Vec<u8>, ext_hint: Option<&str>) -> Result<Decoded> {
    decode(bytes, ext_hint, Path::new(IN_MEMORY))
}

fn decode(bytes: Vec<u8>, ext_hint: Option<&str>, origin: &Path) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::file(origin, None, "empty file (0 bytes): not audio"));
    }
    if let Some(decoded) = decode_pcm_wav(&bytes, origin)? {
        return Ok(decoded);
    }
    decode_with_symphonia(bytes, ext_hint, origin)
}

/// A WAV `fmt ` chunk, reduced to what PCM decoding needs.
struct WavFormat {
    /// 1: integer PCM, 3: IEEE float (the sub-format for WAVE_FORMAT_EXTENSIBLE).
    format: u16,
    channels: usize,
    sample_rate: u32,
    block_align: usize,
    /// Container bits per sample (8, 16, 24, 32 or 64); scaling uses these, as ffmpeg does.
    bits: usize,
}

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Decodes a RIFF/WAVE file holding integer or float PCM. `Ok(None)` for anything else (another
/// container, or a WAV codec such as ADPCM or A-law), which symphonia then handles.
///
/// The samples are those of the data chunk that are present in the file: a data chunk declaring
/// more bytes than the file holds is a truncated file, decoded as far as it goes. A declared size
/// of 0 or 0xFFFFFFFF is the mark of a WAV streamed without a final header: the data then runs to
/// the end of the file and the length is unknown.
fn decode_pcm_wav(bytes: &[u8], origin: &Path) -> Result<Option<Decoded>> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Ok(None);
    }
    let corrupt = |what: &str| Error::file(origin, None, format!("corrupt WAV file: {what}"));
    let mut format = None;
    let mut pos = 12;
    let (data, declared_bytes) = loop {
        let header = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| corrupt("no data chunk"))?;
        let size = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let body = pos + 8;
        match &header[0..4] {
            b"fmt " => {
                let chunk = bytes
                    .get(body..body + size as usize)
                    .ok_or_else(|| corrupt("fmt chunk cut short"))?;
                match parse_wav_format(chunk) {
                    Some(f) => format = Some(f),
                    None => return Ok(None),
                }
            }
            b"data" => {
                let streamed = size == 0 || size == u32::MAX;
                let end = if streamed {
                    bytes.len()
                } else {
                    bytes.len().min(body + size as usize)
                };
                break (
                    &bytes[body.min(end)..end],
                    (!streamed).then_some(u64::from(size)),
                );
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        pos = body + size as usize + (size as usize & 1);
    };
    let Some(f) = format else {
        return Err(corrupt("data chunk before the fmt chunk"));
    };
    if f.channels == 0 || f.sample_rate == 0 {
        return Err(corrupt(&format!(
            "{} channels at {} Hz",
            f.channels, f.sample_rate
        )));
    }
    let frames = data.len() / f.block_align;
    if frames == 0 {
        return Err(corrupt("no samples in the data chunk"));
    }
    let samples = convert_pcm(&f, data);
    let declared_frames = declared_bytes.map(|b| b / f.block_align as u64);
    Ok(Some(Decoded {
        sample_rate: f.sample_rate,
        channels: f.channels,
        samples,
        declared_frames,
    }))
}

/// The samples of `data` (whole frames of PCM in format `f`), one vector per channel; with AVX2
/// where the CPU has it (the conversions are exact or one rounding, so the result is the same).
fn convert_pcm(f: &WavFormat, data: &[u8]) -> Vec<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn convert_avx2(f: &WavFormat, data: &[u8]) -> Vec<Vec<f32>> {
        convert_pcm_inline(f, data)
    }
    match Kernel::best() {
        Kernel::Portable => convert_pcm_inline(f, data),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::Avx2` is only chosen where the CPU has AVX2.
        Kernel::Avx2 => unsafe { convert_avx2(f, data) },
    }
}

#[inline(always)]
fn convert_pcm_inline(f: &WavFormat, data: &[u8]) -> Vec<Vec<f32>> {
    let block = f.block_align;
    (0..f.channels)
        .map(|c| match (f.format, f.bits) {
            (WAVE_FORMAT_PCM, 8) => channel(data, block, c, |[b]| (f32::from(b) - 128.0) * S8),
            (WAVE_FORMAT_PCM, 16) => channel(data, block, c, |b| f32::from(i16::from_le_bytes(b)) * S16),
            (WAVE_FORMAT_PCM, 24) => channel(data, block, c, |[b0, b1, b2]| {
                (i32::from_le_bytes([0, b0, b1, b2]) >> 8) as f32 * S24
            }),
            (WAVE_FORMAT_PCM, _) => channel(data, block, c, |b| i32::from_le_bytes(b) as f32 * S32),
            (_, 32) => channel(data, block, c, f32::from_le_bytes),
            (_, _) => channel(data, block, c, |b| f64::from_le_bytes(b) as f32),
        })
        .collect()
}

/// Channel `c` of interleaved frames of `block` bytes, each sample `N` little-endian bytes. Mono
/// (`block == N`) is a loop over fixed-size chunks, which the compiler vectorises.
#[inline(always)]
fn channel<const N: usize>(
    data: &[u8],
    block: usize,
    c: usize,
    convert: impl Fn([u8; N]) -> f32,
) -> Vec<f32> {
    let sample = |b: &[u8]| convert(b.try_into().expect("N bytes"));
    if block == N {
        return data.chunks_exact(N).map(sample).collect();
    }
    data.chunks_exact(block)
        .map(|frame| sample(&frame[c * N..(c + 1) * N]))
        .collect()
}

/// The PCM layout of a `fmt ` chunk, or `None` for a codec left to symphonia.
fn parse_wav_format(chunk: &[u8]) -> Option<WavFormat> {
    let u16_at = |i: usize| {
        chunk
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let tag = u16_at(0)?;
    // WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of the sub-format GUID.
    let format = if tag == WAVE_FORMAT_EXTENSIBLE {
        u16_at(24)?
    } else {
        tag
    };
    let channels = usize::from(u16_at(2)?);
    let sample_rate = u32::from_le_bytes(chunk.get(4..8)?.try_into().ok()?);
    let block_align = usize::from(u16_at(12)?);
    let bits = usize::from(u16_at(14)?);
    let supported = match format {
        WAVE_FORMAT_PCM => matches!(bits, 8 | 16 | 24 | 32),
        WAVE_FORMAT_IEEE_FLOAT => matches!(bits, 32 | 64),
        _ => false,
    };
    (supported && block_align == channels * bits / 8).then_some(WavFormat {
        format,
        channels,
        sample_rate,
        block_align,
        bits,
    })
}

/// Decodes any container and codec symphonia knows.
fn decode_with_symphonia(bytes: Vec<u8>, ext_hint: Option<&str>, origin: &Path) -> Result<Decoded> {
    let size = bytes.len();
    let stream = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let mut hint = Hint::new();
    if let Some(ext) = ext_hint {
        hint.with_extension(ext);
    }
    // Gapless mode trims the encoder delay and padding of MP3 (from the LAME/Xing header), as
    // ffmpeg does; it changes nothing for PCM and FLAC.
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &format_opts, &MetadataOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => Error::file(
                origin,
                None,
                format!("not an audio file ({size} bytes in no known format: wav, flac, mp3, ogg)"),
            ),
            other => corrupt(origin, &other),
        })?;
    let mut format = probed.format;

    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| Error::file(origin, None, "no audio track in the file"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let sample_rate = params
        .sample_rate
        .filter(|&r| r > 0)
        .ok_or_else(|| Error::file(origin, None, "corrupt header: no sample rate"))?;
    let declared_frames = params.n_frames;
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| Error::file(origin, None, format!("unsupported audio codec: {e}")))?;

    let mut samples: Vec<Vec<f32>> = vec![Vec::new(); params.channels.map_or(0, |c| c.count())];
    let reserve = declared_frames.unwrap_or(0).min(MAX_RESERVE_FRAMES) as usize;
    samples.iter_mut().for_each(|ch| ch.reserve_exact(reserve));

    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            // The end of the stream, or of what is left of a truncated file.
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(corrupt(origin, &e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let buffer = decoder.decode(&packet).map_err(|e| corrupt(origin, &e))?;
        append(&mut samples, buffer, origin)?;
    }

    if samples.is_empty() || samples[0].is_empty() {
        return Err(Error::file(
            origin,
            None,
            "corrupt audio data: no samples could be decoded",
        ));
    }
    Ok(Decoded {
        sample_rate,
        channels: samples.len(),
        samples,
        declared_frames,
    })
}

fn corrupt(origin: &Path, e: &SymphoniaError) -> Error {
    Error::file(origin, None, format!("corrupt audio data: {e}"))
}

// Scales from integer PCM of 8, 16, 24 and 32 bits to [-1, 1): 1 / 2^(bits-1). Each conversion
// is then one rounding of the exact quotient, as in torchaudio: multiplying by a power of two is
// exact, so only the integer-to-float conversion rounds (and only for 32-bit samples).
const S8: f32 = 1.0 / (1u32 << 7) as f32;
const S16: f32 = 1.0 / (1u32 << 15) as f32;
const S24: f32 = 1.0 / (1u32 << 23) as f32;
const S32: f32 = 1.0 / (1u32 << 31) as f32;

/// Appends one decoded buffer to the per-channel sample vectors, converted to `f32`.
fn append(out: &mut Vec<Vec<f32>>, buffer: AudioBufferRef<'_>, origin: &Path) -> Result<()> {
    let channels = buffer.spec().channels.count();
    if out.is_empty() {
        out.resize(channels, Vec::new());
    } else if out.len() != channels {
        return Err(Error::file(
            origin,
            None,
            format!(
                "corrupt audio data: channel count changes from {} to {channels}",
                out.len()
            ),
        ));
    }
    match buffer {
        AudioBufferRef::U8(b) => extend(out, &b, |s| (f32::from(s) - 128.0) * S8),
        AudioBufferRef::U16(b) => extend(out, &b, |s| (f32::from(s) - 32768.0) * S16),
        AudioBufferRef::U24(b) => extend(out, &b, |s| (s.inner() as f32 - 8_388_608.0) * S24),
        AudioBufferRef::U32(b) => {
            extend(out, &b, |s| (f64::from(s) - 2_147_483_648.0) as f32 * S32)
        }
        AudioBufferRef::S8(b) => extend(out, &b, |s| f32::from(s) * S8),
        AudioBufferRef::S16(b) => extend(out, &b, |s| f32::from(s) * S16),
        AudioBufferRef::S24(b) => extend(out, &b, |s| s.inner() as f32 * S24),
        AudioBufferRef::S32(b) => extend(out, &b, |s| s as f32 * S32),
        AudioBufferRef::F32(b) => extend(out, &b, |s| s),
        AudioBufferRef::F64(b) => extend(out, &b, |s| s as f32),
    }
    Ok(())
}

fn extend<S: Sample>(out: &mut [Vec<f32>], buffer: &AudioBuffer<S>, convert: impl Fn(S) -> f32) {
    for (dst, plane) in out.iter_mut().zip(buffer.planes().planes()) {
        dst.extend(plane.iter().map(|&s| convert(s)));
    }
}
