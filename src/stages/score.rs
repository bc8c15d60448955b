//! `score`: eval-mode forward of one or more checkpoints over a `features` table, writing `predictions`
//! (clip_id, class_index, mid, score) in the long form `evaluate` and `label` read.
//!
//! Each clip's fbank is padded (0.0 at the end) or cut (first frames) to the model's target frames and
//! normalised, as PSLA's dataloader does for evaluation, then run through the model in batches. With several
//! checkpoints the score is the mean of their probabilities (PSLA's ensemble of predictions). The class ids
//! (`mid`) come from the checkpoint's metadata; a file without them (PSLA's own) gives the class index as text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, Float64Array, Int32Array, RecordBatch, StringArray};
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
use crate::table::store::LocalParquetWriter;
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

/// The fbank's frame length and shift (Kaldi's 25 ms and 10 ms, as PSLA computes it at any rate).
const FRAME_LENGTH_S: f64 = 0.025;
const FRAME_SHIFT_S: f64 = 0.010;

/// The fbank frames of `seconds` of audio (snip_edges: whole frames only).
fn frames_in(seconds: f64) -> usize {
    (((seconds - FRAME_LENGTH_S) / FRAME_SHIFT_S + 1e-6).floor() as usize) + 1
}

/// The first frame of every window of a clip of `frames` frames: every `hop` frames while a whole
/// window fits, then one more window ending at the clip's end if the last did not reach it. A clip
/// shorter than one window is one window (padded like any short clip).
pub fn window_starts(frames: usize, window: usize, hop: usize) -> Vec<usize> {
    if frames <= window {
        return vec![0];
    }
    let last = frames - window;
    let mut starts: Vec<usize> = (0..=last).step_by(hop.max(1)).collect();
    if *starts.last().expect("at least 0") != last {
        starts.push(last);
    }
    starts
}

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// For files without metadata: checked against the file (the variant is told from its shapes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// For files without metadata: checked against the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// Score sliding windows of this many seconds (long recordings): per-window rows go to
    /// `window_predictions`, and `predictions` holds each clip's max (`score`) and mean over its windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<f64>,
    /// Seconds between window starts (default: the window, no overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<f64>,
    /// Keep only the K highest-scoring classes of each clip (and window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    /// Keep only scores at or above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
    /// Pipeline stage only: score only the clips of these splits (the `clips` table's `split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<String>>,
}

fn default_normalize() -> String {
    "checkpoint".into()
}
/// Clips per forward when not given: 16 on CUDA; 2 on the CPU, where a larger batch's activations (tens of
/// MB each) are fresh memory maps that the kernel faults in and zeroes again for every forward, which cost
/// 3x the throughput of batch 2 in bench/score.sh (B2: 6 against 16-19 clips/s on 2 cores).
pub fn default_batch_size(device: Device) -> usize {
    if device.is_cuda() { 16 } else { 2 }
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
            batch_size: None,
            device: default_device(),
            arch: None,
            heads: None,
            window: None,
            hop: None,
            top: None,
            min_score: None,
            splits: None,
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
        if self.batch_size == Some(0) {
            return Err(Error::invalid("batch_size must be at least 1"));
        }
        if let Some(t) = self.target_frames {
            if t < 1 {
                return Err(Error::invalid(format!("target_frames must be at least 1, not {t}")));
            }
        }
        NormalizeChoice::parse(&self.normalize)?;
        crate::model::device::parse_name(&self.device)?;
        if let Some(a) = &self.arch {
            a.parse::<Arch>().map_err(Error::invalid)?;
        }
        match (self.window, self.hop) {
            (Some(w), _) if !(w.is_finite() && w >= FRAME_LENGTH_S) => {
                return Err(Error::invalid(format!("window {w} s: a window must be at least one 25 ms frame")));
            }
            (_, Some(h)) if !(h.is_finite() && h >= FRAME_SHIFT_S) => {
                return Err(Error::invalid(format!("hop {h} s: the hop must be at least one 10 ms frame shift")));
            }
            (None, Some(_)) => return Err(Error::invalid("a hop needs a window (--window SECONDS)")),
            _ => {}
        }
        if self.top == Some(0) {
            return Err(Error::invalid("top must be at least 1"));
        }
        if let Some(m) = self.min_score {
            if !m.is_finite() {
                return Err(Error::invalid(format!("min_score {m} is not a number")));
            }
        }
        Ok(())
    }

    /// The windows, in fbank frames: (frames per window, frames between starts).
    fn window_frames(&self) -> Option<(usize, usize)> {
        self.window.map(|w| {
            let frames = frames_in(w);
            let hop = self.hop.map_or(frames, |h| ((h / FRAME_SHIFT_S).round() as usize).max(1));
            (frames, hop)
        })
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

impl Stage for ScoreParams {
    fn kind(&self) -> &'static str {
        "score"
    }

    fn io(&self) -> StageIo {
        let mut reads = super::names(&["features"]);
        if self.normalize_choice() == NormalizeChoice::Stats {
            reads.push("feature_stats".into());
        }
        if self.splits.is_some() {
            reads.push("clips".into());
        }
        let mut writes = super::names(&["predictions"]);
        if self.window.is_some() {
            writes.push("window_predictions".into());
        }
        StageIo {
            reads,
            writes,
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
        let keep: Option<std::collections::HashSet<String>> = match &self.splits {
            None => None,
            Some(splits) => {
                let clips = ctx.read("clips")?;
                let ids = super::evaluate::column_strings(&clips, "clip_id", "clips")?;
                let split = super::evaluate::column_strings(&clips, "split", "clips")?;
                Some(ids.into_iter().zip(split).filter(|(_, s)| splits.contains(s)).map(|(i, _)| i).collect())
            }
        };
        let started = std::time::Instant::now();
        let mut scorer = Scorer::load(self, stats)?;
        let features = ctx.table_name("features");
        let entry = ctx.root.table_entry(&features)?;
        let pb = ctx.progress_bar(entry.rows, "clips");
        let mut writer = ctx.writer("predictions", scorer.predictions_schema())?;
        let mut windows = match self.window {
            Some(_) => Some(ctx.writer("window_predictions", window_predictions_schema())?),
            None => None,
        };
        let mut sink = |out: Output, b: RecordBatch| match out {
            Output::Predictions => writer.write(&b),
            Output::Windows => windows.as_mut().expect("windows are on").write(&b),
        };
        for file in &entry.files {
            for batch in ctx.root.read_parquet_file(file)? {
                let batch = match &keep {
                    Some(keep) => only_clips(&batch, keep, &features)?,
                    None => batch,
                };
                scorer.feed(&batch, &features, &mut sink)?;
                pb.set_position(scorer.clips_seen());
            }
        }
        scorer.finish(&mut sink)?;
        pb.finish_and_clear();
        let rows_out = writer.rows();
        let mut tables = vec![writer.finish()?];
        if let Some(w) = windows {
            tables.push(w.finish()?);
        }
        Ok(StageOutput { tables, rows_in: scorer.clips_scored(), rows_out, rejects: 0, detail: scorer.summary(started.elapsed().as_secs_f64()) })
    }
}

/// The rows of a features batch whose clip_id is in `keep`.
fn only_clips(batch: &RecordBatch, keep: &std::collections::HashSet<String>, table: &str) -> Result<RecordBatch> {
    let ids = batch
        .column_by_name("clip_id")
        .ok_or_else(|| Error::table(table, "has no column `clip_id`: is it a features table?"))?;
    let ids = arrow::compute::cast(ids, &DataType::Utf8)?;
    let mask: arrow::array::BooleanArray = ids.as_string::<i32>().iter().map(|id| Some(id.is_some_and(|id| keep.contains(id)))).collect();
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
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

/// The `predictions` schema when clips are scored in windows: `score` is the max over the clip's
/// windows (what the clip is tagged with), `score_mean` the mean, `windows` how many there were.
pub fn windowed_predictions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("class_index", DataType::Int32, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("score_mean", DataType::Float32, false),
        Field::new("windows", DataType::Int32, false),
    ]))
}

/// The `window_predictions` schema: one row per (clip, window, class); `start_s` and `end_s` are
/// the audio the window's frames cover.
pub fn window_predictions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("start_s", DataType::Float64, false),
        Field::new("end_s", DataType::Float64, false),
        Field::new("class_index", DataType::Int32, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// Which output a batch of rows is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Clip-level rows (`predictions`).
    Predictions,
    /// Per-window rows (`window_predictions`), only with windows.
    Windows,
}

/// Where the scorer hands its rows.
pub type Sink<'a> = dyn FnMut(Output, RecordBatch) -> Result<()> + 'a;

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

/// A clip, or a window of one, waiting for its batch.
struct Unit {
    id: Arc<str>,
    /// The window's first frame in the clip (0 without windows).
    start: usize,
    frames: usize,
    values: Vec<f32>,
}

/// The running max and sum over the windows of the clip being scored.
struct ClipWindows {
    id: Arc<str>,
    max: Vec<f32>,
    sum: Vec<f64>,
    windows: usize,
}

/// Scores features batch by batch with one or more checkpoints.
pub struct Scorer {
    members: Vec<Member>,
    mids: Vec<String>,
    /// Whether `mids` came from a checkpoint (else they are the class indices as text).
    mids_known: bool,
    device: Device,
    batch_size: usize,
    /// (frames per window, frames between starts) when scoring windows.
    windows: Option<(usize, usize)>,
    top: Option<usize>,
    min_score: Option<f32>,
    pending: Vec<Unit>,
    current: Option<ClipWindows>,
    seen: u64,
    scored: u64,
    windows_scored: u64,
}

impl Scorer {
    /// Load every checkpoint of `params`. `stats`: the normalisation for `normalize = "stats"`.
    pub fn load(params: &ScoreParams, stats: Option<Normalization>) -> Result<Scorer> {
        params.validate()?;
        crate::malloc::keep_freed_memory();
        let device = crate::model::device::parse(&params.device)?;
        let choice = params.normalize_choice();
        let mut members = Vec::new();
        let mut classes: Option<(usize, PathBuf)> = None;
        let mut mids: Option<(Vec<String>, PathBuf)> = None;
        for c in &params.checkpoint {
            let path = crate::table::storage::materialize(c)?;
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
        Ok(Scorer {
            members,
            mids,
            mids_known,
            device,
            batch_size: params.batch_size.unwrap_or_else(|| default_batch_size(device)),
            windows: params.window_frames(),
            top: params.top,
            min_score: params.min_score,
            pending: Vec::new(),
            current: None,
            seen: 0,
            scored: 0,
            windows_scored: 0,
        })
    }

    /// The class ids, in class-index order.
    pub fn mids(&self) -> &[String] {
        &self.mids
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The schema of the clip-level rows this scorer writes.
    pub fn predictions_schema(&self) -> SchemaRef {
        if self.windows.is_some() { windowed_predictions_schema() } else { predictions_schema() }
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
    pub fn feed(&mut self, batch: &RecordBatch, table: &str, sink: &mut Sink) -> Result<()> {
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
            let values = values.as_primitive::<Float32Type>().values();
            let id: Arc<str> = id.into();
            match self.windows {
                None => self.queue(Unit { id, start: 0, frames, values: values.to_vec() }, sink)?,
                Some((window, hop)) => {
                    for start in window_starts(frames, window, hop) {
                        let end = (start + window).min(frames);
                        let values = values[start * MEL_BINS..end * MEL_BINS].to_vec();
                        self.queue(Unit { id: id.clone(), start, frames: end - start, values }, sink)?;
                    }
                }
            }
            self.seen += 1;
        }
        Ok(())
    }

    fn queue(&mut self, unit: Unit, sink: &mut Sink) -> Result<()> {
        self.pending.push(unit);
        if self.pending.len() >= self.batch_size {
            self.flush(sink)?;
        }
        Ok(())
    }

    /// Score what is queued.
    pub fn finish(&mut self, sink: &mut Sink) -> Result<()> {
        if !self.pending.is_empty() {
            self.flush(sink)?;
        }
        if let Some(done) = self.current.take() {
            self.emit_clip(done, sink)?;
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

    fn flush(&mut self, sink: &mut Sink) -> Result<()> {
        let units = std::mem::take(&mut self.pending);
        let inputs: Vec<(&[f32], usize)> = units.iter().map(|c| (c.values.as_slice(), c.frames)).collect();
        let probs = self.probabilities(&inputs).map_err(|e| {
            Error::invalid(format!("scoring clips {} .. {} with {}: {e}", units[0].id, units[units.len() - 1].id, self.members[0].path.display()))
        })?;
        let k = self.mids.len();
        if self.windows.is_none() {
            let mut rows = Rows::default();
            for (u, p) in units.iter().zip(probs.chunks(k)) {
                rows.add(self, &u.id, p, None);
            }
            self.scored += units.len() as u64;
            return sink(Output::Predictions, rows.batch(predictions_schema())?);
        }
        let mut rows = Rows::default();
        for (u, p) in units.iter().zip(probs.chunks(k)) {
            let start_s = u.start as f64 * FRAME_SHIFT_S;
            let end_s = start_s + u.frames.saturating_sub(1) as f64 * FRAME_SHIFT_S + FRAME_LENGTH_S;
            rows.add(self, &u.id, p, Some((start_s, end_s)));
            match &mut self.current {
                Some(c) if c.id == u.id => {
                    for (j, &x) in p.iter().enumerate() {
                        c.max[j] = c.max[j].max(x);
                        c.sum[j] += x as f64;
                    }
                    c.windows += 1;
                }
                _ => {
                    let next = ClipWindows { id: u.id.clone(), max: p.to_vec(), sum: p.iter().map(|&x| x as f64).collect(), windows: 1 };
                    if let Some(done) = self.current.replace(next) {
                        self.emit_clip(done, sink)?;
                    }
                }
            }
        }
        self.windows_scored += units.len() as u64;
        sink(Output::Windows, rows.batch(window_predictions_schema())?)
    }

    /// The clip-level rows of a clip scored in windows.
    fn emit_clip(&mut self, c: ClipWindows, sink: &mut Sink) -> Result<()> {
        let mut rows = Rows::default();
        let n = c.windows as f64;
        rows.add_clip(self, &c.id, &c.max, c.sum.iter().map(|s| (s / n) as f32).collect(), c.windows as i32);
        self.scored += 1;
        sink(Output::Predictions, rows.batch(windowed_predictions_schema())?)
    }

    /// The class indices of `probs` kept by `--top` and `--min-score`, in class order.
    fn kept(&self, probs: &[f32]) -> Vec<usize> {
        let mut keep: Vec<usize> = (0..probs.len()).filter(|&j| self.min_score.is_none_or(|m| probs[j] >= m)).collect();
        if let Some(top) = self.top {
            if keep.len() > top {
                keep.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
                keep.truncate(top);
                keep.sort_unstable();
            }
        }
        keep
    }

    /// "240 clips x 10 classes, 1 checkpoint (efficientnet-b0, 4 heads), cpu, 35.1 clips/s".
    pub fn summary(&self, seconds: f64) -> String {
        let cfg = self.members[0].model.config();
        let rate = if seconds > 0.0 { self.scored as f64 / seconds } else { 0.0 };
        format!(
            "{} clips{} x {} classes{}, {} checkpoint{} ({}, {} heads, {} frames), {}, {rate:.1} clips/s",
            group(self.scored),
            match self.windows {
                Some((w, h)) => format!(" in {} windows of {w} frames every {h}", group(self.windows_scored)),
                None => String::new(),
            },
            self.mids.len(),
            if self.mids_known { "" } else { " (no class ids in the checkpoint: mid = class index)" },
            self.members.len(),
            if self.members.len() == 1 { "" } else { "s averaged" },
            cfg.arch,
            cfg.heads,
            self.members[0].target_frames,
            crate::model::device::name(self.device),
        )
    }
}

/// Output rows being gathered, in column order.
#[derive(Default)]
struct Rows<'a> {
    clip_id: Vec<&'a str>,
    start_s: Vec<f64>,
    end_s: Vec<f64>,
    class_index: Vec<i32>,
    mid: Vec<String>,
    score: Vec<f32>,
    score_mean: Vec<f32>,
    windows: Vec<i32>,
}

impl<'a> Rows<'a> {
    /// The kept classes of one clip or window.
    fn add(&mut self, scorer: &Scorer, id: &'a str, probs: &[f32], span: Option<(f64, f64)>) {
        for j in scorer.kept(probs) {
            self.clip_id.push(id);
            if let Some((s, e)) = span {
                self.start_s.push(s);
                self.end_s.push(e);
            }
            self.class_index.push(j as i32);
            self.mid.push(scorer.mids[j].clone());
            self.score.push(probs[j]);
        }
    }

    /// The kept classes of a clip scored in windows (kept by its max).
    fn add_clip(&mut self, scorer: &Scorer, id: &'a str, max: &[f32], mean: Vec<f32>, windows: i32) {
        for j in scorer.kept(max) {
            self.clip_id.push(id);
            self.class_index.push(j as i32);
            self.mid.push(scorer.mids[j].clone());
            self.score.push(max[j]);
            self.score_mean.push(mean[j]);
            self.windows.push(windows);
        }
    }

    /// The columns `schema` names, in its order.
    fn batch(mut self, schema: SchemaRef) -> Result<RecordBatch> {
        let mut cols: Vec<arrow::array::ArrayRef> = Vec::new();
        for f in schema.fields() {
            cols.push(match f.name().as_str() {
                "clip_id" => Arc::new(StringArray::from(std::mem::take(&mut self.clip_id))),
                "start_s" => Arc::new(Float64Array::from(std::mem::take(&mut self.start_s))),
                "end_s" => Arc::new(Float64Array::from(std::mem::take(&mut self.end_s))),
                "class_index" => Arc::new(Int32Array::from(std::mem::take(&mut self.class_index))),
                "mid" => Arc::new(StringArray::from(std::mem::take(&mut self.mid))),
                "score" => Arc::new(Float32Array::from(std::mem::take(&mut self.score))),
                "score_mean" => Arc::new(Float32Array::from(std::mem::take(&mut self.score_mean))),
                "windows" => Arc::new(Int32Array::from(std::mem::take(&mut self.windows))),
                other => unreachable!("no column {other}"),
            });
        }
        Ok(RecordBatch::try_new(schema, cols)?)
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

/// What `psla score` reads: a features table, or audio featurised first (as `psla features` does).
#[derive(Debug, Clone)]
pub enum ScoreInput {
    /// A features Parquet file (`psla features --out`).
    Features(PathBuf),
    /// Audio files, folders or file:// URLs.
    Audio {
        inputs: Vec<String>,
        /// Keep the features here (a rerun reuses the clips already in it); None: a temporary file
        /// beside the output, removed at the end.
        features_out: Option<PathBuf>,
        /// Clips that could not be decoded or featurised, with the reason.
        rejects_out: PathBuf,
        threads: Option<usize>,
    },
}

/// What `psla score` does: features (or audio, featurised first) in, predictions out, streamed.
/// `stats`: a `feature_stats` Parquet file for `normalize = "stats"`; `windows_out`: where the
/// per-window rows go when `params.window` is set.
pub fn run_to_files(
    params: &ScoreParams,
    input: &ScoreInput,
    stats: Option<&Path>,
    out: &Path,
    windows_out: Option<&Path>,
    progress: bool,
) -> Result<String> {
    use crate::table::store::read_parquet_path;
    let started = std::time::Instant::now();
    params.validate()?;
    let stats = match (params.normalize_choice(), stats) {
        (NormalizeChoice::Stats, Some(p)) => Some(psla_stats(&read_parquet_path(p)?, &p.display().to_string())?),
        (NormalizeChoice::Stats, None) => return Err(Error::invalid("--normalize stats needs --stats FILE (a feature_stats table)")),
        _ => None,
    };
    if params.window.is_some() && windows_out.is_none() {
        return Err(Error::invalid("scoring windows needs a file for the per-window rows (--windows-out)"));
    }
    // Load the checkpoints first: a wrong one fails before any audio is decoded.
    let mut scorer = Scorer::load(params, stats)?;
    let mut lines = Vec::new();
    let (features, temporary) = match input {
        ScoreInput::Features(p) => (p.clone(), false),
        ScoreInput::Audio { inputs, features_out, rejects_out, threads } => {
            let path = features_out.clone().unwrap_or_else(|| PathBuf::from(format!("{}.features.parquet", out.display())));
            let fp = super::features::FeaturesParams { inputs: inputs.clone(), threads: *threads, ..Default::default() };
            fp.check()?;
            lines.push(super::features::run_to_files(&fp, &path, rejects_out, None, progress)?);
            (path, features_out.is_none())
        }
    };
    let result = score_file(&mut scorer, &features, out, windows_out, progress);
    if temporary {
        let _ = std::fs::remove_file(&features);
    }
    let (written, windows_written) = result?;
    let seconds = started.elapsed().as_secs_f64();
    let windows = match (windows_out, windows_written) {
        (Some(w), Some(n)) => format!(", {} window rows -> {}", group(n), w.display()),
        _ => String::new(),
    };
    lines.push(format!("score: {} in {seconds:.2} s -> {} ({} rows){windows}", scorer.summary(seconds), out.display(), group(written)));
    Ok(lines.join("\n"))
}

/// Scores one features file into `out` (and `windows_out`): (rows, window rows).
fn score_file(scorer: &mut Scorer, features: &Path, out: &Path, windows_out: Option<&Path>, progress: bool) -> Result<(u64, Option<u64>)> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let table = features.display().to_string();
    let file = std::fs::File::open(features).map_err(|e| Error::file(features, None, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::file(features, None, format!("not a readable Parquet file: {e}")))?
        .with_batch_size(64);
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let reader = builder.build()?;
    let pb = crate::progress::bar(progress, rows, "score clips");

    let mut main = LocalParquetWriter::create(out, scorer.predictions_schema())?;
    let mut windows = match (scorer.windows, windows_out) {
        (Some(_), Some(w)) => Some(LocalParquetWriter::create(w, window_predictions_schema())?),
        _ => None,
    };
    let result = (|| -> Result<()> {
        let mut sink = |o: Output, b: RecordBatch| -> Result<()> {
            match o {
                Output::Predictions => main.write(&b),
                Output::Windows => windows.as_mut().expect("windows are on").write(&b),
            }
        };
        for batch in reader {
            scorer.feed(&batch?, &table, &mut sink)?;
            pb.set_position(scorer.clips_seen());
        }
        scorer.finish(&mut sink)
    })();
    pb.finish_and_clear();
    if let Err(e) = result {
        main.abandon();
        if let Some(w) = windows {
            w.abandon();
        }
        return Err(e);
    }
    let windows_written = match windows {
        Some(w) => Some(w.commit()?),
        None => None,
    };
    Ok((main.commit()?, windows_written))
}
