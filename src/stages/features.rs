//! `features`: decode every clip, resample it (16 kHz by default) and store PSLA's 128-bin Kaldi
//! log-mel filterbank once, as a tensor column, with dataset statistics and a rejects table.
//!
//! Tables (docs/tables.md): `features` (one row per clip, the fbank as `List<FixedSizeList<Float32,
//! 128>>`), `feature_stats` (count, mean, std per mel bin and overall, plus PSLA's normalisation
//! figures) and `features_rejects` (clip_id, audio_uri, reason).
//!
//! - Input: the `clips` table's `audio_uri` in a pipeline, or `inputs` (folders, files, file:// URLs)
//!   for `psla features`. A clip id from a folder is the path relative to it, extension included.
//! - Bad audio never stops the stage: an unreadable, empty, non-audio, corrupt, too short, truncated
//!   or non-finite clip becomes a row of `features_rejects` with a reason, and the stage goes on.
//! - Bounded memory: clips are processed in chunks and streamed into 64 MB Parquet files.
//! - Resumable: the features table is written with a journal ([`RunRoot::table_writer_resumable`]),
//!   so a killed run redoes only the clips of the file that was open.
//! - Sharding: `shard = "K/N"` keeps the clips whose stable hash (sha256 of the clip id) falls in
//!   shard K of N (K from 1 to N), for a batch scheduler's array jobs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray,
    RecordBatch, RecordBatchReader, StringArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::audio::decode::decode_bytes;
use crate::audio::psla_fbank;
use crate::error::{Error, Result};
use crate::pipeline::spec::Resolver;
use crate::progress::group;
use crate::table::store::write_parquet_path;
use crate::table::storage;
use crate::table::{RunRoot, StagedTable, TableData};

pub const KIND: StageKind = StageKind {
    name: "features",
    about: "decode, resample and PSLA's 128-bin Kaldi fbank of every clip -> features, feature_stats, features_rejects",
    build: |value, resolver| {
        let mut p: FeaturesParams = params_from(value)?;
        p.resolve_paths(resolver);
        p.check().map_err(|e| e.to_string())?;
        Ok(Box::new(p))
    },
};

/// Mel bins per frame (PSLA's `num_mel_bins`).
pub const MEL_BINS: usize = 128;

/// File extensions taken as audio when a folder is listed (case-insensitive).
pub const AUDIO_EXTENSIONS: &[&str] = &["wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "aif", "aiff", "caf", "mka", "webm"];

/// How the fbank values are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// float32, exactly as computed.
    #[default]
    F32,
    /// float16: half the size; values rounded to about 3 significant digits.
    F16,
}

/// Parameters of `features` (the `[stage.<id>]` keys and `psla features` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesParams {
    /// Folders, files or file:// URLs. Empty: read the `clips` table's `audio_uri`.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The rate every clip is resampled to before the fbank (ignored with `native_rate`).
    #[serde(default = "default_rate")]
    pub sample_rate: u32,
    /// Keep each file's own rate (no resampling).
    #[serde(default)]
    pub native_rate: bool,
    #[serde(default)]
    pub dtype: Dtype,
    /// Keep the part of a truncated file that is there (PSLA's loader does) instead of rejecting it.
    #[serde(default)]
    pub keep_truncated: bool,
    /// `K/N`: process only shard K (1..=N) of N.
    #[serde(default)]
    pub shard: Option<String>,
    /// Worker threads (default: all cores). Does not change the result, so not part of the fingerprint.
    #[serde(default)]
    pub threads: Option<usize>,
}

fn default_rate() -> u32 {
    16000
}

impl Default for FeaturesParams {
    fn default() -> Self {
        FeaturesParams {
            inputs: Vec::new(),
            sample_rate: default_rate(),
            native_rate: false,
            dtype: Dtype::F32,
            keep_truncated: false,
            shard: None,
            threads: None,
        }
    }
}

impl FeaturesParams {
    fn resolve_paths(&mut self, r: &Resolver) {
        for s in &mut self.inputs {
            *s = r.path(s);
        }
    }

    /// Check the parameters that can be checked before any audio is read.
    pub fn check(&self) -> Result<()> {
        if !self.native_rate && self.sample_rate < 1000 {
            return Err(Error::invalid(format!("sample_rate {} Hz is below 1000 Hz", self.sample_rate)));
        }
        if let Some(s) = &self.shard {
            parse_shard(s)?;
        }
        if self.threads == Some(0) {
            return Err(Error::invalid("threads must be at least 1"));
        }
        Ok(())
    }

    fn target_rate(&self) -> Option<u32> {
        (!self.native_rate).then_some(self.sample_rate)
    }
}

/// `"K/N"` -> (K, N) with 1 <= K <= N.
pub fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let bad = || Error::invalid(format!("shard `{s}`: expected K/N with 1 <= K <= N, e.g. 1/4"));
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (u64, u64) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// The shard (1..=n) a clip id belongs to: sha256 of the id, first 8 bytes big-endian, modulo n.
pub fn shard_of(clip_id: &str, n: u64) -> u64 {
    let h = Sha256::digest(clip_id.as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % n + 1
}

impl Stage for FeaturesParams {
    fn kind(&self) -> &'static str {
        "features"
    }

    fn io(&self) -> StageIo {
        StageIo {
            reads: if self.inputs.is_empty() { super::names(&["clips"]) } else { vec![] },
            writes: super::names(&["features", "feature_stats", "features_rejects"]),
            input_files: vec![],
            input_dirs: self.inputs.iter().map(|i| ("inputs", i.clone())).collect(),
            output_dirs: vec![],
        }
    }

    fn params_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("params serialize");
        v.as_object_mut().expect("an object").remove("threads");
        v
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        let skip = HashSet::new();
        let run = extract(self, ctx, &skip)?;
        Ok(run.output)
    }
}

/// One clip to process.
#[derive(Debug, Clone)]
pub struct Job {
    pub clip_id: String,
    /// `file:///...` URL (or another URL scheme, where enabled).
    pub audio_uri: String,
}

/// A clip that did not make it, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub clip_id: String,
    pub audio_uri: String,
    pub reason: String,
}

/// The jobs for `inputs`: each folder listed recursively (audio extensions only, hidden files
/// skipped, sorted), each file as itself. A missing input is an error; `ignored` counts files in
/// folders that were not taken as audio.
pub fn list_inputs(inputs: &[String]) -> Result<(Vec<Job>, usize)> {
    let mut jobs = Vec::new();
    let mut ignored = 0;
    for input in inputs {
        let path = local_input(input)?;
        let meta = std::fs::metadata(&path).map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::NotFound { "no such file or folder".to_string() } else { e.to_string() };
            Error::file(&path, None, format!("input: {what}"))
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(&path, &mut files, &mut ignored)?;
            files.sort();
            for f in files {
                let rel = f.strip_prefix(&path).expect("under the folder");
                let clip_id = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                jobs.push(Job { clip_id, audio_uri: file_url(&f)? });
            }
        } else {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            jobs.push(Job { clip_id: name, audio_uri: file_url(&path)? });
        }
    }
    Ok((jobs, ignored))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, ignored: &mut usize) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::file(dir, None, e))? {
        let entry = entry.map_err(|e| Error::file(dir, None, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out, ignored)?;
        } else if is_audio_name(&path) {
            out.push(path);
        } else {
            *ignored += 1;
        }
    }
    Ok(())
}

fn is_audio_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.iter().any(|a| a.eq_ignore_ascii_case(e)))
}

/// A local path from a path or file:// URL; other schemes are refused with a clear message.
fn local_input(input: &str) -> Result<PathBuf> {
    if input.starts_with("file://") {
        return url::Url::parse(input)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| Error::invalid(format!("`{input}` is not a valid file:// URL")));
    }
    if let Some((scheme, _)) = input.split_once("://") {
        return Err(Error::invalid(format!(
            "`{input}`: `psla features` lists local folders and files only; for {scheme}:// audio, ingest it \
             (`audio` or `audio_manifest`) and run the pipeline's features stage, which reads object-store URLs"
        )));
    }
    Ok(PathBuf::from(input))
}

fn file_url(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).map_err(|e| Error::file(path, None, e))?;
    url::Url::from_file_path(&abs)
        .map(|u| u.to_string())
        .map_err(|_| Error::file(path, None, "cannot be turned into a file:// URL"))
}

/// The features of one clip.
struct ClipFeatures {
    sample_rate: u32,
    channels: usize,
    num_samples: usize,
    frames: usize,
    fbank: Vec<f32>,
    /// Its sums for `feature_stats`, computed by the worker.
    sums: ClipSums,
}

/// Read, decode and featurise one clip; `Err` is the reject reason.
fn featurise(job: &Job, params: &FeaturesParams) -> std::result::Result<ClipFeatures, String> {
    let (bytes, name) = if storage::is_remote(&job.audio_uri) {
        // An object-store URL (s3://, gs://, az://): one GET of the whole object.
        let bytes = storage::read(&job.audio_uri).map_err(|e| format!("cannot read: {e}"))?.to_vec();
        (bytes, job.audio_uri.rsplit('/').next().unwrap_or_default().to_string())
    } else {
        let path = local_input(&job.audio_uri).map_err(|e| e.to_string())?;
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "cannot read: no such file".to_string(),
            _ => format!("cannot read: {e}"),
        })?;
        (bytes, path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    };
    let ext = Path::new(&name).extension().and_then(|e| e.to_str());
    let decoded = decode_bytes(bytes, ext).map_err(message)?;
    if decoded.is_truncated() && !params.keep_truncated {
        return Err(format!(
            "truncated file: the header declares {} samples per channel, the file holds {} (an interrupted \
             copy or download?); --keep-truncated keeps the part that is there",
            decoded.declared_frames.unwrap_or(0),
            decoded.num_frames()
        ));
    }
    for (c, channel) in decoded.samples.iter().enumerate() {
        if let Some(i) = first_non_finite(channel) {
            return Err(format!("sample {i} of channel {c} is {} : the audio has NaN or infinite samples", channel[i]));
        }
    }
    let (fbank, frames) = psla_fbank(&decoded, params.target_rate()).map_err(message)?;
    Ok(ClipFeatures {
        sample_rate: decoded.sample_rate,
        channels: decoded.channels,
        num_samples: decoded.num_frames(),
        frames,
        sums: ClipSums::of(&fbank),
        fbank,
    })
}

/// The index of the first NaN or infinite value: a branch-free pass over all values first (it
/// vectorises; a search stopping at the first hit does not), then the search where there is one.
fn first_non_finite(xs: &[f32]) -> Option<usize> {
    let all_finite = xs.chunks(4096).all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()));
    if all_finite { None } else { xs.iter().position(|v| !v.is_finite()) }
}

/// An error's message without the `<in-memory audio>: ` location (the reject row names the clip).
fn message(e: Error) -> String {
    match e {
        Error::File { message, .. } => message,
        other => other.to_string(),
    }
}

/// The schema of the `features` table.
pub fn features_schema(dtype: Dtype) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("audio_uri", DataType::Utf8, false),
        Field::new("sample_rate", DataType::Int32, false),
        Field::new("channels", DataType::Int32, false),
        Field::new("num_samples", DataType::Int64, false),
        Field::new("frames", DataType::Int32, false),
        Field::new("fbank", fbank_type(dtype), false),
    ]))
}

fn value_type(dtype: Dtype) -> DataType {
    match dtype {
        Dtype::F32 => DataType::Float32,
        Dtype::F16 => DataType::Float16,
    }
}

fn fbank_type(dtype: Dtype) -> DataType {
    let row = DataType::FixedSizeList(Arc::new(Field::new("item", value_type(dtype), false)), MEL_BINS as i32);
    DataType::List(Arc::new(Field::new("item", row, false)))
}

pub fn rejects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("audio_uri", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]))
}

pub fn stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("mel_bin", DataType::Int32, true),
        Field::new("count", DataType::Int64, false),
        Field::new("mean", DataType::Float64, true),
        Field::new("std", DataType::Float64, true),
        Field::new("psla_mean", DataType::Float64, true),
        Field::new("psla_std", DataType::Float64, true),
        Field::new("sum", DataType::Float64, false),
        Field::new("sum_sq", DataType::Float64, false),
        Field::new("clips", DataType::Int64, false),
    ]))
}

/// Running statistics of fbank values: per mel bin and overall, plus PSLA's normalisation figures
/// (the mean over clips of each clip's mean and of each clip's unbiased std, as its get_norm_stats).
#[derive(Debug, Clone)]
pub struct FbankStats {
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    frames: u64,
    clips: u64,
    clip_mean_sum: f64,
    clip_std_sum: f64,
}

impl Default for FbankStats {
    fn default() -> Self {
        FbankStats { sum: vec![0.0; MEL_BINS], sum_sq: vec![0.0; MEL_BINS], frames: 0, clips: 0, clip_mean_sum: 0.0, clip_std_sum: 0.0 }
    }
}

/// One clip's sums for [`FbankStats`]: per mel bin, the sum and the sum of squares of its values.
#[derive(Debug, Clone)]
pub struct ClipSums {
    frames: u64,
    sum: [f64; MEL_BINS],
    sum_sq: [f64; MEL_BINS],
}

impl ClipSums {
    /// The sums of one clip's fbank (frames x 128, row-major). Bins are summed independently, a
    /// loop that vectorises.
    pub fn of(fbank: &[f32]) -> Self {
        let mut sums = ClipSums { frames: (fbank.len() / MEL_BINS) as u64, sum: [0.0; MEL_BINS], sum_sq: [0.0; MEL_BINS] };
        for row in fbank.chunks_exact(MEL_BINS) {
            for ((s, s2), &v) in sums.sum.iter_mut().zip(sums.sum_sq.iter_mut()).zip(row) {
                let v = f64::from(v);
                *s += v;
                *s2 += v * v;
            }
        }
        sums
    }
}

impl FbankStats {
    /// Add one clip's fbank (frames x 128, row-major).
    pub fn add_clip(&mut self, fbank: &[f32]) {
        self.add_sums(&ClipSums::of(fbank));
    }

    /// Add one clip from its [`ClipSums`].
    pub fn add_sums(&mut self, clip: &ClipSums) {
        let s: f64 = clip.sum.iter().sum();
        let s2: f64 = clip.sum_sq.iter().sum();
        for b in 0..MEL_BINS {
            self.sum[b] += clip.sum[b];
            self.sum_sq[b] += clip.sum_sq[b];
        }
        let n = (clip.frames * MEL_BINS as u64) as f64;
        if n > 0.0 {
            let mean = s / n;
            self.clip_mean_sum += mean;
            if n > 1.0 {
                self.clip_std_sum += ((s2 - n * mean * mean).max(0.0) / (n - 1.0)).sqrt();
            }
            self.clips += 1;
            self.frames += clip.frames;
        }
    }

    /// Add all the clips of `other`.
    pub fn merge(&mut self, other: &FbankStats) {
        for b in 0..MEL_BINS {
            self.sum[b] += other.sum[b];
            self.sum_sq[b] += other.sum_sq[b];
        }
        self.frames += other.frames;
        self.clips += other.clips;
        self.clip_mean_sum += other.clip_mean_sum;
        self.clip_std_sum += other.clip_std_sum;
    }

    /// Add every clip of a `features` batch (float32 or float16 values).
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let fbank = batch
            .column_by_name("fbank")
            .ok_or_else(|| Error::invalid("a features batch without an fbank column"))?
            .as_list::<i32>();
        for i in 0..fbank.len() {
            let rows = fbank.value(i);
            let values = rows.as_fixed_size_list().values();
            let values = arrow::compute::cast(values, &DataType::Float32)?;
            self.add_clip(values.as_primitive::<Float32Type>().values());
        }
        Ok(())
    }

    pub fn clips(&self) -> u64 {
        self.clips
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// (mean, std) over all values; None before any clip.
    pub fn overall(&self) -> Option<(f64, f64)> {
        let n = (self.frames * MEL_BINS as u64) as f64;
        (n > 0.0).then(|| {
            let s: f64 = self.sum.iter().sum();
            let s2: f64 = self.sum_sq.iter().sum();
            let mean = s / n;
            (mean, (s2 / n - mean * mean).max(0.0).sqrt())
        })
    }

    /// PSLA's (norm_mean, norm_std); None before any clip.
    pub fn psla(&self) -> Option<(f64, f64)> {
        (self.clips > 0).then(|| (self.clip_mean_sum / self.clips as f64, self.clip_std_sum / self.clips as f64))
    }

    /// The `feature_stats` table: one row per mel bin, then the overall row (mel_bin null).
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let n = self.frames as f64;
        let mut bins: Vec<Option<i32>> = (0..MEL_BINS as i32).map(Some).collect();
        bins.push(None);
        let mut count: Vec<i64> = vec![self.frames as i64; MEL_BINS];
        count.push((self.frames * MEL_BINS as u64) as i64);
        let mut mean: Vec<Option<f64>> = Vec::new();
        let mut std: Vec<Option<f64>> = Vec::new();
        for b in 0..MEL_BINS {
            if n > 0.0 {
                let m = self.sum[b] / n;
                mean.push(Some(m));
                std.push(Some((self.sum_sq[b] / n - m * m).max(0.0).sqrt()));
            } else {
                mean.push(None);
                std.push(None);
            }
        }
        let overall = self.overall();
        mean.push(overall.map(|o| o.0));
        std.push(overall.map(|o| o.1));
        let psla = self.psla();
        let mut pm: Vec<Option<f64>> = vec![None; MEL_BINS];
        let mut ps: Vec<Option<f64>> = vec![None; MEL_BINS];
        pm.push(psla.map(|p| p.0));
        ps.push(psla.map(|p| p.1));
        let mut sum = self.sum.clone();
        sum.push(self.sum.iter().sum());
        let mut sum_sq = self.sum_sq.clone();
        sum_sq.push(self.sum_sq.iter().sum());
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(bins)),
            Arc::new(Int64Array::from(count)),
            Arc::new(Float64Array::from(mean)),
            Arc::new(Float64Array::from(std)),
            Arc::new(Float64Array::from(pm)),
            Arc::new(Float64Array::from(ps)),
            Arc::new(Float64Array::from(sum)),
            Arc::new(Float64Array::from(sum_sq)),
            Arc::new(Int64Array::from(vec![self.clips as i64; MEL_BINS + 1])),
        ];
        Ok(RecordBatch::try_new(stats_schema(), columns)?)
    }

    /// The statistics a `feature_stats` table holds (the inverse of [`FbankStats::to_batch`]), so
    /// that the statistics of shards add up ([`FbankStats::merge`]). The per-bin sums come back
    /// exactly; PSLA's per-clip sums as mean x clips (to the last bit or so).
    pub fn from_table(table: &TableData) -> Result<Self> {
        let bad = |what: &str| Error::table("feature_stats", format!("{what}; was it written by psla features?"));
        let mut stats = FbankStats::default();
        let mut seen = 0usize;
        for b in &table.batches {
            let col = |name: &str| b.column_by_name(name).ok_or_else(|| bad(&format!("has no `{name}` column")));
            let bins = col("mel_bin")?.as_primitive::<arrow::datatypes::Int32Type>().clone();
            let count = col("count")?.as_primitive::<arrow::datatypes::Int64Type>().clone();
            let sum = col("sum")?.as_primitive::<arrow::datatypes::Float64Type>().clone();
            let sum_sq = col("sum_sq")?.as_primitive::<arrow::datatypes::Float64Type>().clone();
            let clips = col("clips")?.as_primitive::<arrow::datatypes::Int64Type>().clone();
            let pm = col("psla_mean")?.as_primitive::<arrow::datatypes::Float64Type>().clone();
            let ps = col("psla_std")?.as_primitive::<arrow::datatypes::Float64Type>().clone();
            for i in 0..b.num_rows() {
                stats.clips = clips.value(i) as u64;
                if bins.is_null(i) {
                    if stats.clips > 0 {
                        stats.clip_mean_sum = pm.value(i) * stats.clips as f64;
                        stats.clip_std_sum = ps.value(i) * stats.clips as f64;
                    }
                    continue;
                }
                let bin = usize::try_from(bins.value(i)).ok().filter(|&b| b < MEL_BINS).ok_or_else(|| bad("has a mel_bin outside 0-127"))?;
                stats.sum[bin] = sum.value(i);
                stats.sum_sq[bin] = sum_sq.value(i);
                stats.frames = count.value(i) as u64;
                seen += 1;
            }
        }
        if seen != MEL_BINS {
            return Err(bad(&format!("has {seen} mel-bin rows, not {MEL_BINS}")));
        }
        Ok(stats)
    }
}

/// Build a `features` batch from processed clips.
fn features_batch(rows: &[(&Job, ClipFeatures)], dtype: Dtype) -> Result<RecordBatch> {
    let schema = features_schema(dtype);
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let total: usize = rows.iter().map(|(_, f)| f.fbank.len()).sum();
    let mut values = Vec::with_capacity(total);
    for (_, f) in rows {
        values.extend_from_slice(&f.fbank);
        let last = *offsets.last().expect("non-empty");
        offsets.push(last + i32::try_from(f.frames).map_err(|_| Error::invalid("a clip with over 2^31 frames"))?);
    }
    let mut values: ArrayRef = Arc::new(Float32Array::from(values));
    if dtype == Dtype::F16 {
        values = arrow::compute::cast(&values, &DataType::Float16)?;
    }
    let row_field = Arc::new(Field::new("item", value_type(dtype), false));
    let frames = FixedSizeListArray::try_new(row_field, MEL_BINS as i32, values, None)?;
    let DataType::List(list_field) = fbank_type(dtype) else { unreachable!("fbank is a list") };
    let fbank = ListArray::try_new(list_field, OffsetBuffer::new(offsets.into()), Arc::new(frames), None)?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(j, _)| j.clip_id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(j, _)| j.audio_uri.as_str()))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(_, f)| f.sample_rate as i32))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(_, f)| f.channels as i32))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, f)| f.num_samples as i64))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(_, f)| f.frames as i32))),
        Arc::new(fbank),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

pub fn rejects_batch(rejects: &[Reject]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rejects.iter().map(|r| r.clip_id.as_str()))),
        Arc::new(StringArray::from_iter_values(rejects.iter().map(|r| r.audio_uri.as_str()))),
        Arc::new(StringArray::from_iter_values(rejects.iter().map(|r| r.reason.as_str()))),
    ];
    Ok(RecordBatch::try_new(rejects_schema(), columns)?)
}

/// The clips of the `clips` table: (jobs, rejects for clips without audio).
fn jobs_from_clips(ctx: &StageContext) -> Result<(Vec<Job>, Vec<Reject>)> {
    let clips = ctx.read("clips")?;
    let (mut jobs, mut rejects) = (Vec::new(), Vec::new());
    for b in &clips.batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .cloned()
                .ok_or_else(|| Error::table(ctx.table_name("clips"), format!("no Utf8 column `{name}`")))
        };
        let (ids, uris) = (col("clip_id")?, col("audio_uri")?);
        for i in 0..b.num_rows() {
            let clip_id = ids.value(i).to_string();
            if uris.is_null(i) {
                rejects.push(Reject { clip_id, audio_uri: String::new(), reason: "no audio file was found for this clip at ingest".into() });
            } else {
                jobs.push(Job { clip_id, audio_uri: uris.value(i).to_string() });
            }
        }
    }
    Ok((jobs, rejects))
}

/// What [`extract`] produced: the stage output (tables staged, not committed) and the statistics.
pub struct Extraction {
    pub output: StageOutput,
    pub stats: FbankStats,
    /// The staged `features` table (also in `output.tables`).
    pub features: StagedTable,
    pub rejects: StagedTable,
    /// Seconds spent reading, decoding and featurising the clips of this run, summed over the
    /// worker threads (wall time of each clip in its worker): the compute alone, without listing,
    /// statistics merging or Parquet writing.
    pub featurise_seconds: f64,
}

/// Clips processed per chunk and thread: a chunk is featurised in parallel, then written.
const CLIPS_PER_THREAD_CHUNK: usize = 16;

/// Run the features stage: list the jobs, skip those already written (`skip`, and files resumed from
/// an interrupted run), featurise the rest in parallel chunks, stream them into the `features`
/// table, and stage `feature_stats` and `features_rejects`.
pub fn extract(params: &FeaturesParams, ctx: &StageContext, skip: &HashSet<String>) -> Result<Extraction> {
    params.check()?;
    crate::malloc::keep_freed_memory();
    let started = Instant::now();
    let (mut jobs, mut rejects, ignored) = if params.inputs.is_empty() {
        let (j, r) = jobs_from_clips(ctx)?;
        (j, r, 0)
    } else {
        let (j, ignored) = list_inputs(&params.inputs)?;
        (j, Vec::new(), ignored)
    };
    let listed = jobs.len() + rejects.len();

    // Duplicate ids (the same relative path under two input folders): the first one wins.
    let mut first: HashMap<String, String> = HashMap::new();
    jobs.retain(|j| match first.get(&j.clip_id) {
        Some(uri) => {
            rejects.push(Reject {
                clip_id: j.clip_id.clone(),
                audio_uri: j.audio_uri.clone(),
                reason: format!("duplicate clip_id: {uri} has the same id and was kept"),
            });
            false
        }
        None => {
            first.insert(j.clip_id.clone(), j.audio_uri.clone());
            true
        }
    });
    if let Some(s) = &params.shard {
        let (k, n) = parse_shard(s)?;
        jobs.retain(|j| shard_of(&j.clip_id, n) == k);
        rejects.retain(|r| shard_of(&r.clip_id, n) == k);
    }

    let dtype = params.dtype;
    let (mut writer, resumed_files) =
        ctx.root.table_writer_resumable(&ctx.table_name("features"), features_schema(dtype), ctx.id)?;
    let mut stats = FbankStats::default();
    let mut done: HashSet<String> = skip.clone();
    for file in &resumed_files {
        for b in ctx.root.read_parquet_file(file)? {
            stats.add_batch(&b)?;
            for id in b.column(0).as_string::<i32>().iter().flatten() {
                done.insert(id.to_string());
            }
        }
    }
    let resumed = stats.clips();
    let before = jobs.len();
    jobs.retain(|j| !done.contains(&j.clip_id));
    let skipped = before - jobs.len();

    let threads = params.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pb = ctx.progress_bar(jobs.len() as u64, "clips");
    let mut written = 0u64;
    let mut audio_seconds = 0.0f64;
    let mut featurise_seconds = 0.0f64;
    // The Parquet writing (encoding, compression, hashing) runs on its own thread, one chunk
    // behind the featurising, so the two overlap instead of taking turns.
    let writer = std::thread::scope(|scope| -> Result<_> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(1);
        let write = scope.spawn(move || -> Result<_> {
            for batch in rx {
                writer.write(&batch)?;
            }
            Ok(writer)
        });
        for chunk in jobs.chunks(CLIPS_PER_THREAD_CHUNK * threads) {
            let results = crate::parallel::map_in_order(chunk, threads, |job| {
                let clip_started = Instant::now();
                let r = featurise(job, params);
                pb.inc(1);
                (r, clip_started.elapsed().as_secs_f64())
            });
            let mut good = Vec::with_capacity(chunk.len());
            for (job, (result, clip_seconds)) in chunk.iter().zip(results) {
                featurise_seconds += clip_seconds;
                match result {
                    Ok(f) => {
                        stats.add_sums(&f.sums);
                        audio_seconds += f.num_samples as f64 / f64::from(f.sample_rate);
                        good.push((job, f));
                    }
                    Err(reason) => rejects.push(Reject { clip_id: job.clip_id.clone(), audio_uri: job.audio_uri.clone(), reason }),
                }
            }
            if !good.is_empty() {
                let batch = features_batch(&good, dtype)?;
                written += good.len() as u64;
                if tx.send(batch).is_err() {
                    break; // the writer failed: its error is returned below
                }
            }
        }
        drop(tx);
        write.join().expect("the features writer panicked")
    })?;
    pb.finish_and_clear();

    let features = writer.finish()?;
    let rejects_table = ctx.stage_table("features_rejects", rejects_schema(), &[rejects_batch(&rejects)?])?;
    let stats_table = ctx.stage_table("feature_stats", stats_schema(), &[stats.to_batch()?])?;
    let seconds = started.elapsed().as_secs_f64();
    let mut detail = format!(
        "{} clips ({} of audio), {} frames, {} rejected; {:.0} clips/s on {threads} threads",
        group(stats.clips()),
        duration(audio_seconds),
        group(stats.frames()),
        group(rejects.len() as u64),
        written as f64 / seconds.max(1e-9),
    );
    if resumed > 0 || skipped > resumed as usize {
        detail.push_str(&format!("; {} already written, skipped", group(skipped as u64)));
    }
    if ignored > 0 {
        detail.push_str(&format!("; {ignored} files without an audio extension ignored"));
    }
    let output = StageOutput {
        tables: vec![features.clone(), rejects_table.clone(), stats_table],
        rows_in: listed as u64,
        rows_out: features.entry.rows,
        rejects: rejects.len() as u64,
        detail,
    };
    Ok(Extraction { output, stats, features, rejects: rejects_table, featurise_seconds })
}

/// The stage's tables from its committed shards (see [`crate::pipeline::shard`]): each entry of
/// `shards` maps the logical tables to one shard's tables. `features` and `features_rejects` get
/// copies of the shards' files, in shard order (no clip is decoded or recomputed); `feature_stats`
/// is the sum of the shards' sums.
pub fn merge_shards(ctx: &StageContext, shards: &[std::collections::BTreeMap<String, String>]) -> Result<StageOutput> {
    let started = Instant::now();
    let manifest = ctx.root.manifest()?;
    let entries = |logical: &str| -> Result<Vec<crate::table::TableEntry>> {
        shards
            .iter()
            .map(|m| {
                let name = m.get(logical).map(String::as_str).unwrap_or(logical);
                manifest.tables.get(name).cloned().ok_or_else(|| Error::table(name, "a shard table is missing from the run root"))
            })
            .collect()
    };
    let features = entries("features")?;
    let files: usize = features.iter().map(|e| e.files.len()).sum();
    let features = ctx.root.stage_concatenation(&ctx.table_name("features"), &features, ctx.id)?;
    let rejects = ctx.root.stage_concatenation(&ctx.table_name("features_rejects"), &entries("features_rejects")?, ctx.id)?;
    let mut stats = FbankStats::default();
    for (m, entry) in shards.iter().zip(entries("feature_stats")?) {
        let name = m.get("feature_stats").map(String::as_str).unwrap_or("feature_stats");
        stats.merge(&FbankStats::from_table(&ctx.root.read_entry(name, &entry)?).map_err(|e| Error::table(name, e.to_string()))?);
    }
    let stats_table = ctx.stage_table("feature_stats", stats_schema(), &[stats.to_batch()?])?;
    let detail = format!(
        "merged {} shards: {} clips, {} frames, {} rejected; {files} files copied in {:.1} s, nothing recomputed",
        shards.len(),
        group(features.entry.rows),
        group(stats.frames()),
        group(rejects.entry.rows),
        started.elapsed().as_secs_f64(),
    );
    Ok(StageOutput {
        rows_in: features.entry.rows + rejects.entry.rows,
        rows_out: features.entry.rows,
        rejects: rejects.entry.rows,
        tables: vec![features, rejects, stats_table],
        detail,
    })
}

/// 42.0 -> "42.0 s", 5400.0 -> "1.50 h".
fn duration(seconds: f64) -> String {
    if seconds < 3600.0 { format!("{seconds:.1} s") } else { format!("{:.2} h", seconds / 3600.0) }
}

/// Used by `psla features`: run [`extract`] in a staging run root beside `out`, then write the
/// features, rejects and (optionally) stats as single Parquet files. Clips already in an existing
/// `out` are kept and not recomputed; a killed run resumes from the staging root.
pub fn run_to_files(
    params: &FeaturesParams,
    out: &Path,
    rejects_out: &Path,
    stats_out: Option<&Path>,
    progress: bool,
) -> Result<String> {
    let started = Instant::now();
    let staging_dir = PathBuf::from(format!("{}.partial", out.display()));
    let root = RunRoot::open(&staging_dir.to_string_lossy())?;
    let schema = features_schema(params.dtype);
    let mut skip = HashSet::new();
    if out.exists() {
        let reader = parquet_reader(out, true)?;
        if reader.schema().field(0).name() != "clip_id" || parquet_reader(out, false)?.schema().fields() != schema.fields() {
            return Err(Error::file(out, None, "exists with another schema (or --dtype); remove it or choose another --out"));
        }
        for b in reader {
            let b = b.map_err(|e| Error::file(out, None, e))?;
            skip.extend(b.column(0).as_string::<i32>().iter().flatten().map(str::to_string));
        }
    }
    let tables = Default::default();
    let ctx = StageContext { root: &root, id: "features", tables: &tables, progress, engine: &crate::cluster::Engine::Local };
    let run = extract(params, &ctx, &skip)?;

    // Everything into one file: the clips kept from `out`, then the new ones, their row groups
    // copied as they are. Stats over both.
    let kept = skip.len() as u64;
    let mut stats = FbankStats::default();
    if kept > 0 {
        for b in parquet_reader(out, false)? {
            stats.add_batch(&b.map_err(|e| Error::file(out, None, e))?)?;
        }
    }
    stats.merge(&run.stats);
    let rows_written = concat_features(out, &schema, (kept > 0).then_some(out), &root, &run.features.entry.files)?;
    let rejects: Vec<RecordBatch> =
        run.rejects.entry.files.iter().map(|f| root.read_parquet_file(f)).collect::<Result<Vec<_>>>()?.concat();
    write_parquet_path(rejects_out, &TableData { schema: rejects_schema(), batches: rejects })?;
    if let Some(path) = stats_out {
        write_parquet_path(path, &TableData { schema: stats_schema(), batches: vec![stats.to_batch()?] })?;
    }
    drop(root);
    std::fs::remove_dir_all(&staging_dir).map_err(|e| Error::file(&staging_dir, None, e))?;
    let (pmean, pstd) = stats.psla().unwrap_or((f64::NAN, f64::NAN));
    let seconds = started.elapsed().as_secs_f64();
    let new = run.features.entry.rows;
    Ok(format!(
        "features: {} clips ({} new, {} kept), {} frames, {} rejects in {seconds:.2} s ({:.0} clips/s) -> {} \
         (rejects: {}); PSLA norm mean {pmean:.4} std {pstd:.4}; read + decode + fbank {:.3} ms per clip per thread",
        group(rows_written),
        group(new),
        group(kept),
        group(stats.frames()),
        group(run.output.rejects),
        new as f64 / seconds.max(1e-9),
        out.display(),
        rejects_out.display(),
        1000.0 * run.featurise_seconds / new.max(1) as f64,
    ))
}

/// Writes the row groups of `kept` (a local Parquet file, optional) and of `staged` (files of
/// `root`), in that order, into one Parquet file at `path`, through `<path>.tmp` and a rename.
/// The column chunks are copied byte for byte, as `parquet-concat` does: nothing is decoded or
/// compressed a second time, and nothing is held in memory but the footers. All inputs must have the
/// features table's Parquet schema; the Arrow schema is stored in the file's metadata, as
/// `ArrowWriter` does (readers need it to see `FixedSizeList` rows). Returns the rows written.
fn concat_features(
    path: &Path,
    schema: &SchemaRef,
    kept: Option<&Path>,
    root: &RunRoot,
    staged: &[String],
) -> Result<u64> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let file = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, None, e))?;
    let parquet_schema = parquet::arrow::ArrowSchemaConverter::new().convert(schema)?;
    let mut props = crate::table::store::writer_properties(schema);
    parquet::arrow::add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let mut writer =
        parquet::file::writer::SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), Arc::new(props))?;
    let mut rows = 0;
    if let Some(kept) = kept {
        let input = std::fs::File::open(kept).map_err(|e| Error::file(kept, None, e))?;
        rows += append_row_groups(&mut writer, &input, &parquet_schema, kept)?;
    }
    for rel in staged {
        // A local staging file is read where it lies (no 64 MB buffer); others are fetched.
        if let Ok(local) = root.url_of(rel).to_file_path() {
            let input = std::fs::File::open(&local).map_err(|e| Error::file(&local, None, e))?;
            rows += append_row_groups(&mut writer, &input, &parquet_schema, &local)?;
        } else {
            let input = root.read_bytes(rel)?;
            rows += append_row_groups(&mut writer, &input, &parquet_schema, Path::new(rel))?;
        }
    }
    writer.close()?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, None, e))?;
    Ok(rows)
}

/// Appends every row group of the Parquet file `input` to `writer`, column chunks copied as they
/// are (with their statistics and page indexes). Returns the rows appended.
fn append_row_groups<R: parquet::file::reader::ChunkReader>(
    writer: &mut parquet::file::writer::SerializedFileWriter<std::fs::File>,
    input: &R,
    schema: &parquet::schema::types::SchemaDescriptor,
    origin: &Path,
) -> Result<u64> {
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    let meta = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(input)
        .map_err(|e| Error::file(origin, None, format!("not a readable Parquet file: {e}")))?;
    if meta.file_metadata().schema() != schema.root_schema() {
        return Err(Error::file(origin, None, "has another Parquet schema than the features table"));
    }
    let (column_indexes, offset_indexes) = (meta.column_index(), meta.offset_index());
    let mut rows = 0;
    for (g, group) in meta.row_groups().iter().enumerate() {
        let mut out = writer.next_row_group()?;
        for (c, column) in group.columns().iter().enumerate() {
            out.append_column(
                input,
                parquet::column::writer::ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: group.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: column_indexes.and_then(|i| i.get(g)).and_then(|r| r.get(c)).cloned(),
                    offset_index: offset_indexes.and_then(|i| i.get(g)).and_then(|r| r.get(c)).cloned(),
                },
            )?;
        }
        out.close()?;
        rows += group.num_rows() as u64;
    }
    Ok(rows)
}

/// A streaming reader of a Parquet file: all columns, or only the first (`clip_id`).
fn parquet_reader(path: &Path, first_column_only: bool) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, None, e))?;
    let mut builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::file(path, None, format!("not a readable Parquet file: {e}")))?;
    if first_column_only {
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [0]);
        builder = builder.with_projection(mask);
    }
    Ok(builder.build()?)
}
