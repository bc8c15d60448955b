//! `score`: eval-mode forward of one or more checkpoints over a `features` table, writing `predictions`
//! (clip_id, class_index, mid, score) in the long form `evaluate` and `label` read.
//!
//! Each clip's fbank is padded (0.0 at the end) or cut (first frames) to the model's target frames and
//! normalised, as PSLA's dataloader does for evaluation, then run through the model in batches. With several
//! checkpoints the score is the mean of their probabilities (PSLA's ensemble of predictions). The class ids
//! (`mid`) come from the checkpoint's metadata; a file without them (PSLA's own) gives the class index as text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::model::checkpoint::{self, CheckpointMeta};
use crate::model::input::{MEL_BINS, Normalization, PSLA_AUDIOSET, pad_or_cut};
use crate::model::{Arch, ModelConfig, PslaModel};
use crate::pipeline::spec::Resolver;
use crate::progress::group;
use crate::table::TableData;

pub const KIND: StageKind = StageKind {
    name: "score",
    about: "eval-mode forward of checkpoints over features -> predictions (clip_id, class_index, mid, score)",
    build: |value, resolver| {
        let mut p: ScoreParams = params_from(value)?;
        p.resolve_paths(resolver);
        p.validate().map_err(|e| e.to_string())?;
        Ok(Box::new(p))
    },
};

/// Frames per clip for a checkpoint without metadata (PSLA's AudioSet `target_length`).
pub const PSLA_TARGET_FRAMES: i64 = 1056;

/// Parameters of `score` (the `[stage.<id>]` keys and `psla score` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreParams {
    /// Checkpoint files (safetensors); several: the mean of their probabilities.
    #[serde(deserialize_with = "one_or_many")]
    pub checkpoint: Vec<String>,
    /// `checkpoint` (what each checkpoint was trained with; PSLA's constants for a file without
    /// metadata), `none`, `psla` (-4.6476, 4.5699), `stats` (PSLA's norm stats of the `feature_stats`
    /// table) or `MEAN,STD`.
    #[serde(default = "default_normalize")]
    pub normalize: String,
    /// Frames per clip (default: the checkpoint's, 1056 without metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_frames: Option<i64>,
    /// Clips per forward.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// For files without metadata: checked against the file (the variant is told from its shapes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// For files without metadata: checked against the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
}

fn default_normalize() -> String {
    "checkpoint".into()
}
fn default_batch_size() -> usize {
    16
}
fn default_device() -> String {
    "auto".into()
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl ScoreParams {
    /// Defaults for the given checkpoints.
    pub fn new(checkpoint: Vec<String>) -> ScoreParams {
        ScoreParams {
            checkpoint,
            normalize: default_normalize(),
            target_frames: None,
            batch_size: default_batch_size(),
            device: default_device(),
            arch: None,
            heads: None,
        }
    }

    fn resolve_paths(&mut self, r: &Resolver) {
        for c in &mut self.checkpoint {
            *c = r.path(c);
        }
    }

    /// Check what can be checked without reading anything.
    pub fn validate(&self) -> Result<()> {
        if self.checkpoint.is_empty() {
            return Err(Error::invalid("score needs at least one checkpoint"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size must be at least 1"));
        }
        if let Some(t) = self.target_frames {
            if t < 1 {
                return Err(Error::invalid(format!("target_frames must be at least 1, not {t}")));
            }
        }
        NormalizeChoice::parse(&self.normalize)?;
        parse_device_name(&self.device)?;
        if let Some(a) = &self.arch {
            a.parse::<Arch>().map_err(Error::invalid)?;
        }
        Ok(())
    }

    fn normalize_choice(&self) -> NormalizeChoice {
        NormalizeChoice::parse(&self.normalize).expect("validated")
    }
}

/// How inputs are normalised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormalizeChoice {
    Checkpoint,
    None,
    Psla,
    Stats,
    Fixed(Normalization),
}

impl NormalizeChoice {
    pub fn parse(s: &str) -> Result<NormalizeChoice> {
        Ok(match s.trim() {
            "checkpoint" => NormalizeChoice::Checkpoint,
            "none" => NormalizeChoice::None,
            "psla" => NormalizeChoice::Psla,
            "stats" => NormalizeChoice::Stats,
            other => {
                let bad = || Error::invalid(format!("normalize `{other}`: use checkpoint, none, psla, stats or MEAN,STD (e.g. -4.6476,4.5699)"));
                let (m, s) = other.split_once(',').ok_or_else(bad)?;
                let mean: f64 = m.trim().parse().map_err(|_| bad())?;
                let std: f64 = s.trim().parse().map_err(|_| bad())?;
                if !(std > 0.0) || !mean.is_finite() || !std.is_finite() {
                    return Err(Error::invalid(format!("normalize `{other}`: the std must be a positive number")));
                }
                NormalizeChoice::Fixed(Normalization { mean, std })
            }
        })
    }
}

/// `auto`, `cpu`, `cuda`, `cuda:N` -> a device; auto is CUDA device 0 when libtorch sees one.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = parse_device_name(s)?;
    if let Device::Cuda(i) = device {
        if !tch::Cuda::is_available() {
            return Err(Error::invalid(format!("device `{s}`: no CUDA device is available (use --device cpu or auto)")));
        }
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            return Err(Error::invalid(format!("device `{s}`: only {n} CUDA device(s), numbered from 0")));
        }
    }
    Ok(device)
}

fn parse_device_name(s: &str) -> Result<Device> {
    match s.trim() {
        "auto" => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Device::Cuda)
            .ok_or_else(|| Error::invalid(format!("device `{other}`: use auto, cpu, cuda or cuda:N"))),
    }
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

impl Stage for ScoreParams {
    fn kind(&self) -> &'static str {
        "score"
    }

    fn io(&self) -> StageIo {
        let mut reads = super::names(&["features"]);
        if self.normalize_choice() == NormalizeChoice::Stats {
            reads.push("feature_stats".into());
        }
        StageIo {
            reads,
            writes: super::names(&["predictions"]),
            input_files: self.checkpoint.iter().map(|c| ("checkpoint", c.clone())).collect(),
            ..Default::default()
        }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        let stats = match self.normalize_choice() {
            NormalizeChoice::Stats => Some(psla_stats(&ctx.read("feature_stats")?, "feature_stats")?),
            _ => None,
        };
        let started = std::time::Instant::now();
        let mut scorer = Scorer::load(self, stats)?;
        let features = ctx.table_name("features");
        let entry = ctx.root.table_entry(&features)?;
        let pb = ctx.progress_bar(entry.rows, "clips");
        let mut writer = ctx.writer("predictions", predictions_schema())?;
        let mut sink = |b: RecordBatch| writer.write(&b);
        for file in &entry.files {
            for batch in ctx.root.read_parquet_file(file)? {
                scorer.feed(&batch, &features, &mut sink)?;
                pb.set_position(scorer.clips_seen());
            }
        }
        scorer.finish(&mut sink)?;
        pb.finish_and_clear();
        let rows_out = writer.rows();
        let tables = vec![writer.finish()?];
        Ok(StageOutput { tables, rows_in: scorer.clips_scored(), rows_out, rejects: 0, detail: scorer.summary(started.elapsed().as_secs_f64()) })
    }
}

/// The `predictions` schema.
pub fn predictions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("class_index", DataType::Int32, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// PSLA's normalisation statistics from a `feature_stats` table: the overall row's psla_mean, psla_std.
pub fn psla_stats(stats: &TableData, table: &str) -> Result<Normalization> {
    for b in &stats.batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .ok_or_else(|| Error::table(table, format!("has no column `{name}`: is it a feature_stats table?")))
        };
        let bins = col("mel_bin")?;
        let mean = arrow::compute::cast(col("psla_mean")?, &DataType::Float64)?;
        let std = arrow::compute::cast(col("psla_std")?, &DataType::Float64)?;
        let (mean, std) = (mean.as_primitive::<arrow::datatypes::Float64Type>(), std.as_primitive::<arrow::datatypes::Float64Type>());
        for i in 0..b.num_rows() {
            if bins.is_null(i) && mean.is_valid(i) && std.is_valid(i) {
                let n = Normalization { mean: mean.value(i), std: std.value(i) };
                if !(n.std > 0.0) {
                    return Err(Error::table(table, format!("psla_std is {}: cannot normalise with it", n.std)));
                }
                return Ok(n);
            }
        }
    }
    Err(Error::table(table, "has no overall row (mel_bin null) with psla_mean and psla_std: were any features computed?"))
}

/// One checkpoint, loaded on the device.
struct Member {
    path: PathBuf,
    _vs: VarStore,
    model: PslaModel,
    norm: Normalization,
    target_frames: usize,
}

/// A clip waiting for its batch.
struct Clip {
    id: String,
    frames: usize,
    values: Vec<f32>,
}

/// Scores features batch by batch with one or more checkpoints.
pub struct Scorer {
    members: Vec<Member>,
    mids: Vec<String>,
    /// Whether `mids` came from a checkpoint (else they are the class indices as text).
    mids_known: bool,
    device: Device,
    batch_size: usize,
    pending: Vec<Clip>,
    seen: u64,
    scored: u64,
}

impl Scorer {
    /// Load every checkpoint of `params`. `stats`: the normalisation for `normalize = "stats"`.
    pub fn load(params: &ScoreParams, stats: Option<Normalization>) -> Result<Scorer> {
        params.validate()?;
        let device = parse_device(&params.device)?;
        let choice = params.normalize_choice();
        let mut members = Vec::new();
        let mut classes: Option<(usize, PathBuf)> = None;
        let mut mids: Option<(Vec<String>, PathBuf)> = None;
        for c in &params.checkpoint {
            let path = super::local_path(c);
            let (cfg, meta) = model_config(&path, params)?;
            let mut vs = VarStore::new(device);
            let model = PslaModel::new(&vs.root(), &cfg);
            match &meta {
                Some(_) => {
                    checkpoint::load(&mut vs, &path)?;
                }
                None => checkpoint::load_psla_state_dict(&mut vs, &path)?,
            }
            if let Some((n, first)) = &classes {
                if *n != cfg.classes {
                    return Err(Error::file(&path, None, format!("{} classes, but {} has {n}: ensembles need one vocabulary", cfg.classes, first.display())));
                }
            } else {
                classes = Some((cfg.classes, path.clone()));
            }
            if let Some(m) = meta.as_ref().filter(|m| !m.classes.is_empty()) {
                match &mids {
                    Some((known, first)) if known != &m.classes => {
                        return Err(Error::file(&path, None, format!("its class list differs from that of {}: ensembles need one vocabulary", first.display())));
                    }
                    Some(_) => {}
                    None => mids = Some((m.classes.clone(), path.clone())),
                }
            }
            let norm = match choice {
                NormalizeChoice::Checkpoint => meta.as_ref().map_or(PSLA_AUDIOSET, |m| Normalization { mean: m.norm_mean, std: m.norm_std }),
                NormalizeChoice::None => Normalization::IDENTITY,
                NormalizeChoice::Psla => PSLA_AUDIOSET,
                NormalizeChoice::Stats => stats.ok_or_else(|| Error::invalid("normalize = stats needs the feature statistics (--stats FILE)"))?,
                NormalizeChoice::Fixed(n) => n,
            };
            let target_frames = params.target_frames.or(meta.as_ref().map(|m| m.target_frames)).unwrap_or(PSLA_TARGET_FRAMES);
            if target_frames < 1 {
                return Err(Error::file(&path, None, format!("target_frames {target_frames} in the metadata: pass --target-frames")));
            }
            members.push(Member { path, _vs: vs, model, norm, target_frames: target_frames as usize });
        }
        let n = classes.map(|c| c.0).unwrap_or(0);
        let (mids, mids_known) = match mids {
            Some((m, _)) => (m, true),
            None => ((0..n).map(|i| i.to_string()).collect(), false),
        };
        Ok(Scorer { members, mids, mids_known, device, batch_size: params.batch_size, pending: Vec::new(), seen: 0, scored: 0 })
    }

    /// The class ids, in class-index order.
    pub fn mids(&self) -> &[String] {
        &self.mids
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Clips read so far.
    pub fn clips_seen(&self) -> u64 {
        self.seen
    }

    /// Clips scored so far.
    pub fn clips_scored(&self) -> u64 {
        self.scored
    }

    /// Queue the clips of a `features` batch; full batches are scored and their predictions handed to `sink`.
    pub fn feed(&mut self, batch: &RecordBatch, table: &str, sink: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let ids = batch
            .column_by_name("clip_id")
            .ok_or_else(|| Error::table(table, "has no column `clip_id`: is it a features table?"))?;
        let ids = arrow::compute::cast(ids, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let fbank = batch
            .column_by_name("fbank")
            .ok_or_else(|| Error::table(table, "has no column `fbank`: is it a features table?"))?;
        let fbank = fbank
            .as_list_opt::<i32>()
            .ok_or_else(|| Error::table(table, format!("column `fbank` is {}, not List<FixedSizeList<Float32, 128>>", fbank.data_type())))?;
        for i in 0..batch.num_rows() {
            let id = ids.value(i).to_string();
            if fbank.is_null(i) {
                return Err(Error::table(table, format!("clip `{id}` has a null fbank")));
            }
            let rows = fbank.value(i);
            let rows = rows.as_fixed_size_list_opt().filter(|r| r.value_length() as usize == MEL_BINS).ok_or_else(|| {
                Error::table(table, format!("clip `{id}`: fbank rows are {}, not FixedSizeList<Float32, 128>", rows.data_type()))
            })?;
            let frames = rows.len();
            let values = arrow::compute::cast(rows.values(), &DataType::Float32)?;
            if values.len() != frames * MEL_BINS {
                return Err(Error::table(table, format!("clip `{id}`: {} fbank values for {frames} frames", values.len())));
            }
            let values = values.as_primitive::<Float32Type>().values().to_vec();
            self.pending.push(Clip { id, frames, values });
            self.seen += 1;
            if self.pending.len() >= self.batch_size {
                self.flush(sink)?;
            }
        }
        Ok(())
    }

    /// Score what is queued.
    pub fn finish(&mut self, sink: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        if !self.pending.is_empty() {
            self.flush(sink)?;
        }
        Ok(())
    }

    /// Mean probabilities of the members for `clips`: [clips, classes] row-major.
    pub fn probabilities(&self, clips: &[(&[f32], usize)]) -> Result<Vec<f32>> {
        let n = clips.len();
        let mut sum: Option<Tensor> = None;
        for m in &self.members {
            let mut input = Vec::with_capacity(n * m.target_frames * MEL_BINS);
            for (values, frames) in clips {
                let mut x = pad_or_cut(values, *frames, m.target_frames);
                m.norm.apply(&mut x);
                input.extend_from_slice(&x);
            }
            let x = Tensor::from_slice(&input).view([n as i64, m.target_frames as i64, MEL_BINS as i64]).to_device(self.device);
            let y = tch::no_grad(|| m.model.forward_t(&x, false));
            sum = Some(match sum {
                None => y,
                Some(s) => s + y,
            });
        }
        let mut mean = sum.expect("at least one checkpoint");
        if self.members.len() > 1 {
            mean = mean / self.members.len() as f64;
        }
        let mean = mean.to_device(Device::Cpu).contiguous().view([-1]);
        Vec::<f32>::try_from(&mean).map_err(|e| Error::invalid(format!("reading the model output: {e}")))
    }

    fn flush(&mut self, sink: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let clips = std::mem::take(&mut self.pending);
        let inputs: Vec<(&[f32], usize)> = clips.iter().map(|c| (c.values.as_slice(), c.frames)).collect();
        let probs = self.probabilities(&inputs).map_err(|e| {
            Error::invalid(format!("scoring clips {} .. {} with {}: {e}", clips[0].id, clips[clips.len() - 1].id, self.members[0].path.display()))
        })?;
        let k = self.mids.len();
        let mut clip_id = Vec::with_capacity(clips.len() * k);
        let mut class_index = Vec::with_capacity(clips.len() * k);
        let mut mid = Vec::with_capacity(clips.len() * k);
        for c in &clips {
            for (j, m) in self.mids.iter().enumerate() {
                clip_id.push(c.id.as_str());
                class_index.push(j as i32);
                mid.push(m.as_str());
            }
        }
        let batch = RecordBatch::try_new(
            predictions_schema(),
            vec![
                Arc::new(StringArray::from(clip_id)),
                Arc::new(Int32Array::from(class_index)),
                Arc::new(StringArray::from(mid)),
                Arc::new(Float32Array::from(probs)),
            ],
        )?;
        self.scored += clips.len() as u64;
        sink(batch)
    }

    /// "240 clips x 10 classes, 1 checkpoint (efficientnet-b0, 4 heads), cpu, 35.1 clips/s".
    pub fn summary(&self, seconds: f64) -> String {
        let cfg = self.members[0].model.config();
        let rate = if seconds > 0.0 { self.scored as f64 / seconds } else { 0.0 };
        format!(
            "{} clips x {} classes{}, {} checkpoint{} ({}, {} heads, {} frames), {}, {rate:.1} clips/s",
            group(self.scored),
            self.mids.len(),
            if self.mids_known { "" } else { " (no class ids in the checkpoint: mid = class index)" },
            self.members.len(),
            if self.members.len() == 1 { "" } else { "s averaged" },
            cfg.arch,
            cfg.heads,
            self.members[0].target_frames,
            device_name(self.device),
        )
    }
}

/// The model a checkpoint needs: from its metadata, or from its shapes (PSLA's own files), checked against
/// `--arch` / `--heads` when given.
fn model_config(path: &Path, params: &ScoreParams) -> Result<(ModelConfig, Option<CheckpointMeta>)> {
    let has_meta = checkpoint::read_metadata_map(path)?.is_some_and(|m| m.contains_key("format"));
    let meta = if has_meta { Some(checkpoint::read_meta(path)?) } else { None };
    let inferred = checkpoint::infer_config(path)?;
    let cfg = match &meta {
        Some(m) => ModelConfig { arch: m.arch, heads: m.heads, classes: inferred.classes },
        None => inferred,
    };
    let source = if meta.is_some() { "its metadata says" } else { "its tensors are for" };
    if let Some(a) = &params.arch {
        let a: Arch = a.parse().map_err(Error::invalid)?;
        if a != cfg.arch {
            return Err(Error::file(path, None, format!("--arch {a} given, but {source} {}", cfg.arch)));
        }
    }
    if let Some(h) = params.heads {
        if h != cfg.heads {
            return Err(Error::file(path, None, format!("--heads {h} given, but {source} {} heads", cfg.heads)));
        }
    }
    Ok((cfg, meta))
}

/// What `psla score` does: a features Parquet file in, a predictions Parquet file out (streamed both ways).
/// `stats`: a `feature_stats` Parquet file for `normalize = "stats"`.
pub fn run_to_files(params: &ScoreParams, features: &Path, stats: Option<&Path>, out: &Path, progress: bool) -> Result<String> {
    use crate::table::store::read_parquet_path;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let started = std::time::Instant::now();
    let stats = match (params.normalize_choice(), stats) {
        (NormalizeChoice::Stats, Some(p)) => Some(psla_stats(&read_parquet_path(p)?, &p.display().to_string())?),
        (NormalizeChoice::Stats, None) => return Err(Error::invalid("--normalize stats needs --stats FILE (a feature_stats table)")),
        _ => None,
    };
    let mut scorer = Scorer::load(params, stats)?;
    let table = features.display().to_string();
    let file = std::fs::File::open(features).map_err(|e| Error::file(features, None, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::file(features, None, format!("not a readable Parquet file: {e}")))?
        .with_batch_size(64);
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let reader = builder.build()?;
    let pb = crate::progress::bar(progress, rows, "score clips");

    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let f = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, None, e))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::try_new(3).expect("valid level")))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(f, predictions_schema(), Some(props))?;
    let mut written = 0u64;
    let result = (|| -> Result<()> {
        let mut sink = |b: RecordBatch| -> Result<()> {
            written += b.num_rows() as u64;
            writer.write(&b).map_err(Error::from)
        };
        for batch in reader {
            scorer.feed(&batch?, &table, &mut sink)?;
            pb.set_position(scorer.clips_seen());
        }
        scorer.finish(&mut sink)
    })();
    pb.finish_and_clear();
    if let Err(e) = result {
        drop(writer);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    writer.close()?;
    std::fs::rename(&tmp, out).map_err(|e| Error::file(out, None, e))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!("score: {} in {seconds:.2} s -> {} ({} rows)", scorer.summary(seconds), out.display(), group(written)))
}
