//! Training data: the clips' stored features, their label vectors, and the batches of an epoch,
//! assembled on a worker thread ahead of the training step.
//!
//! Every random choice of an epoch's batches (the order, which clips are mixed and with what lambda, the
//! SpecAugment masks) comes from RNGs seeded by (seed, epoch, position in the epoch), so an epoch's
//! batches are the same whether the run went straight through or resumed, and whatever the threads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::augment::{beta, mix_labels, mix_mel, mix_waveforms, spec_augment};
use super::config::{MixupDomain, TrainConfig};
use crate::error::{Error, Result};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector};

use crate::table::RunRoot;

/// Mel bins of every stored fbank.
pub const MEL_BINS: usize = 128;

/// The `features` table, indexed by clip id, read one clip at a time from its Parquet files.
///
/// Only the ids and audio locations are held in memory: a clip's fbank is read when a batch needs
/// it, through the files' page indexes (the row group and the one or two pages that hold the row
/// are decoded, nothing else), so training memory does not grow with the table (AudioSet's 2M
/// clips are ~1 TB of float32 features). Local run roots read the files in place, and the OS page
/// cache keeps what fits; the files of an object-store root are fetched into memory whole (no
/// ranged reads yet).
pub struct FeatureStore {
    files: Vec<FeatureFile>,
    uris: Vec<Vec<String>>,
    index: HashMap<String, (u32, u32)>,
    table: String,
}

struct FeatureFile {
    source: FileSource,
    meta: ArrowReaderMetadata,
    /// The fbank column's index among the root fields.
    fbank_column: usize,
    /// The first row of each row group, and one past the last row.
    group_starts: Vec<usize>,
    name: String,
}

enum FileSource {
    Local(std::path::PathBuf),
    Memory(bytes::Bytes),
}

impl FeatureStore {
    /// Index the committed table `table` (a `features` table) of `root`.
    pub fn open(root: &RunRoot, table: &str) -> Result<Self> {
        let entry = root.table_entry(table)?;
        let (mut files, mut uris, mut index) = (Vec::new(), Vec::new(), HashMap::new());
        for rel in &entry.files {
            let source = match root.url_of(rel).to_file_path() {
                Ok(path) if root.local_dir().is_some() => FileSource::Local(path),
                _ => FileSource::Memory(root.read_bytes(rel)?),
            };
            let options = ArrowReaderOptions::new().with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
            let meta = match &source {
                FileSource::Local(path) => {
                    let file = std::fs::File::open(path).map_err(|e| Error::file(path, None, e))?;
                    ArrowReaderMetadata::load(&file, options)
                }
                FileSource::Memory(bytes) => ArrowReaderMetadata::load(bytes, options),
            }
            .map_err(|e| Error::table(table, format!("{rel}: not a readable Parquet file: {e}")))?;
            let schema = meta.schema().clone();
            let position = |name: &str| {
                schema.index_of(name).map_err(|_| Error::table(table, format!("has no column `{name}`")))
            };
            let (id_column, fbank_column) = (position("clip_id")?, position("fbank")?);
            let fbank_ok = match schema.field(fbank_column).data_type() {
                DataType::List(item) => match item.data_type() {
                    DataType::FixedSizeList(v, n) => {
                        if *n as usize != MEL_BINS {
                            return Err(Error::table(table, format!("fbank rows have {n} values; training needs {MEL_BINS} mel bins")));
                        }
                        matches!(v.data_type(), DataType::Float32 | DataType::Float16)
                    }
                    _ => false,
                },
                _ => false,
            };
            if !fbank_ok {
                return Err(Error::table(table, "column `fbank` is not a List<FixedSizeList<Float32, 128>>: was it written by the features stage?"));
            }
            let uri_column = schema.index_of("audio_uri").ok();
            let mut group_starts = vec![0usize];
            for g in meta.metadata().row_groups() {
                group_starts.push(group_starts.last().unwrap() + g.num_rows() as usize);
            }
            // The ids and locations: two small columns, read whole.
            let roots: Vec<usize> = std::iter::once(id_column).chain(uri_column).collect();
            let batches = read_rows(&source, &meta, &Request { columns: &roots, row: None })
            .map_err(|e| Error::table(table, format!("{rel}: {e}")))?;
            let f = files.len() as u32;
            let mut row = 0u32;
            let mut file_uris = Vec::new();
            for batch in batches {
                // (a projection keeps the file's column order: look the columns up by name)
                let ids = arrow::compute::cast(batch.column_by_name("clip_id").expect("projected"), &DataType::Utf8)?;
                match batch.column_by_name("audio_uri") {
                    Some(c) => file_uris.extend(
                        arrow::compute::cast(c, &DataType::Utf8)?.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string()),
                    ),
                    None => file_uris.extend(std::iter::repeat_n(String::new(), batch.num_rows())),
                }
                for id in ids.as_string::<i32>().iter() {
                    let id = id.unwrap_or_default().to_string();
                    if index.insert(id.clone(), (f, row)).is_some() {
                        return Err(Error::table(table, format!("clip `{id}` has more than one row")));
                    }
                    row += 1;
                }
            }
            uris.push(file_uris);
            files.push(FeatureFile { source, meta, fbank_column, group_starts, name: rel.clone() });
        }
        Ok(FeatureStore { files, uris, index, table: table.to_string() })
    }

    pub fn contains(&self, clip: &str) -> bool {
        self.index.contains_key(clip)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The clip's fbank, frames x 128 row-major (float16 storage is widened).
    pub fn fbank(&self, clip: &str) -> Result<Vec<f32>> {
        let &(f, row) = self.index.get(clip).ok_or_else(|| Error::invalid(format!("clip `{clip}` has no features")))?;
        let file = &self.files[f as usize];
        let row = row as usize;
        let group = file.group_starts.partition_point(|&start| start <= row) - 1;
        let offset = row - file.group_starts[group];
        let request = Request { columns: &[file.fbank_column], row: Some((group, offset)) };
        let batches = read_rows(&file.source, &file.meta, &request)
        .map_err(|e| Error::table(&self.table, format!("{}: reading clip `{clip}`: {e}", file.name)))?;
        let batch = batches.first().filter(|b| b.num_rows() == 1).ok_or_else(|| {
            Error::table(&self.table, format!("{}: clip `{clip}` is not at row {row}", file.name))
        })?;
        let rows = batch.column(0).as_list::<i32>().value(0);
        let values = arrow::compute::cast(rows.as_fixed_size_list().values(), &DataType::Float32)?;
        Ok(values.as_primitive::<Float32Type>().values().to_vec())
    }

    pub fn audio_uri(&self, clip: &str) -> Option<&str> {
        self.index.get(clip).map(|&(f, r)| self.uris[f as usize][r as usize].as_str()).filter(|s| !s.is_empty())
    }
}

/// What [`read_rows`] reads of a file: these root columns, all rows or the one at (row group, offset).
struct Request<'a> {
    columns: &'a [usize],
    row: Option<(usize, usize)>,
}

/// The record batches of one Parquet file of a [`FeatureStore`] that `request` asks for.
fn read_rows(source: &FileSource, meta: &ArrowReaderMetadata, request: &Request) -> std::result::Result<Vec<RecordBatch>, String> {
    fn read<R: parquet::file::reader::ChunkReader + 'static>(
        reader: R,
        meta: &ArrowReaderMetadata,
        request: &Request,
    ) -> std::result::Result<Vec<RecordBatch>, String> {
        let mut b = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, meta.clone());
        let mask = ProjectionMask::roots(b.parquet_schema(), request.columns.iter().copied());
        b = b.with_projection(mask);
        if let Some((group, offset)) = request.row {
            let selection = RowSelection::from(vec![RowSelector::skip(offset), RowSelector::select(1)]);
            b = b.with_row_groups(vec![group]).with_row_selection(selection).with_batch_size(1);
        }
        let reader = b.build().map_err(|e| e.to_string())?;
        reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| e.to_string())
    }
    match source {
        FileSource::Local(path) => read(std::fs::File::open(path).map_err(|e| e.to_string())?, meta, request),
        FileSource::Memory(bytes) => read(bytes.clone(), meta, request),
    }
}

/// The clips of one side (train or eval) with their label vectors over the vocabulary.
#[derive(Debug, Clone, Default)]
pub struct LabeledClips {
    pub clips: Vec<String>,
    /// clips x classes, row-major, 0.0 / 1.0.
    pub targets: Vec<f32>,
    pub classes: usize,
}

impl LabeledClips {
    pub fn target(&self, i: usize) -> &[f32] {
        &self.targets[i * self.classes..(i + 1) * self.classes]
    }

    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
}

/// What was left out while building [`LabeledClips`], for the summary line.
#[derive(Debug, Clone, Default)]
pub struct LabelReport {
    /// Labeled clips of the split without features (not used).
    pub without_features: u64,
    pub example_without_features: Option<String>,
    /// Label rows whose mid is not in the vocabulary (ignored).
    pub unknown_labels: u64,
    pub example_unknown: Option<(String, String)>,
}

/// Label vectors for `clips` (in the given order) from label rows (clip_id, mid); a clip of `clips`
/// without features is dropped and counted, a label outside `vocab` is ignored and counted.
pub fn label_clips(
    clips: &[String],
    label_clip: &[String],
    label_mid: &[String],
    vocab: &[String],
    features: &FeatureStore,
) -> (LabeledClips, LabelReport) {
    let class_index: HashMap<&str, usize> = vocab.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut report = LabelReport::default();
    let mut out = LabeledClips { classes: vocab.len(), ..Default::default() };
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    for c in clips {
        if row_of.contains_key(c.as_str()) {
            continue;
        }
        if !features.contains(c) {
            report.without_features += 1;
            report.example_without_features.get_or_insert_with(|| c.clone());
            continue;
        }
        row_of.insert(c.as_str(), out.clips.len());
        out.clips.push(c.clone());
    }
    out.targets = vec![0.0; out.clips.len() * vocab.len()];
    for (c, m) in label_clip.iter().zip(label_mid) {
        let Some(&row) = row_of.get(c.as_str()) else { continue };
        match class_index.get(m.as_str()) {
            Some(&k) => out.targets[row * vocab.len() + k] = 1.0,
            None => {
                report.unknown_labels += 1;
                report.example_unknown.get_or_insert_with(|| (c.clone(), m.clone()));
            }
        }
    }
    (out, report)
}

/// `(x - mean) / std` in place.
pub fn normalize(x: &mut [f32], mean: f32, std: f32) {
    for v in x {
        *v = (*v - mean) / std;
    }
}

/// Pad with 0.0 at the end or cut (keeping the first frames) to `target` frames.
pub fn pad_or_cut(x: &[f32], target: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; target * MEL_BINS];
    let n = x.len().min(out.len());
    out[..n].copy_from_slice(&x[..n]);
    out
}

/// One batch: `x` is n x target_frames x 128 (normalised), `y` n x classes.
#[derive(Debug, Clone)]
pub struct Batch {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub n: usize,
    /// Index of the batch in its epoch.
    pub index: usize,
}

/// What batch assembly needs, shared with the worker thread.
pub struct BatchSource {
    pub features: Arc<FeatureStore>,
    pub clips: Arc<LabeledClips>,
    pub target_frames: usize,
    pub mean: f32,
    pub std: f32,
    pub freqm: usize,
    pub timem: usize,
    pub mixup: f64,
    pub mixup_alpha: f64,
    pub mixup_domain: MixupDomain,
    pub seed: u64,
}

/// splitmix64: a well-mixed 64-bit value from a counter.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of (seed, epoch, purpose, position): independent streams that do not depend on what ran before.
pub fn rng_for(seed: u64, epoch: u32, purpose: u64, position: u64) -> ChaCha8Rng {
    let key = splitmix(splitmix(splitmix(seed) ^ epoch as u64) ^ purpose.wrapping_mul(0x1000_0000_0000_0001)) ^ position;
    ChaCha8Rng::seed_from_u64(splitmix(key))
}

const SHUFFLE: u64 = 1;
const SAMPLE: u64 = 2;

/// A seed for libtorch's RNG (drop-connect) in epoch `epoch`.
pub fn torch_seed(seed: u64, epoch: u32) -> i64 {
    (splitmix(splitmix(seed) ^ (epoch as u64).wrapping_add(0xD1CE)) >> 1) as i64
}

/// The training order of an epoch: a seeded shuffle of all training clips (indices into `clips`).
pub fn shuffled_order(n: usize, seed: u64, epoch: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(seed, epoch, SHUFFLE, 0));
    order
}

impl BatchSource {
    /// One training example at `position` of epoch `epoch`: (features, labels).
    pub fn train_example(&self, clip: usize, epoch: u32, position: u64) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut rng = rng_for(self.seed, epoch, SAMPLE, position);
        let id = &self.clips.clips[clip];
        let (fbank, label) = if self.mixup > 0.0 && rng.random::<f64>() < self.mixup {
            let other = rng.random_range(0..self.clips.len());
            let lambda = beta(&mut rng, self.mixup_alpha, self.mixup_alpha);
            let other_id = &self.clips.clips[other];
            let fbank = match self.mixup_domain {
                MixupDomain::Mel => mix_mel(&self.features.fbank(id)?, &self.features.fbank(other_id)?, lambda),
                MixupDomain::Waveform => self.mix_audio(id, other_id, lambda)?,
            };
            (fbank, mix_labels(self.clips.target(clip), self.clips.target(other), lambda))
        } else {
            (self.features.fbank(id)?, self.clips.target(clip).to_vec())
        };
        let mut x = pad_or_cut(&fbank, self.target_frames);
        spec_augment(&mut rng, &mut x, MEL_BINS, self.freqm, self.timem);
        normalize(&mut x, self.mean, self.std);
        Ok((x, label))
    }

    /// PSLA's mixup: decode both clips' audio, mix the waveforms, compute the fbank of the mix.
    fn mix_audio(&self, a: &str, b: &str, lambda: f64) -> Result<Vec<f32>> {
        let wave = |id: &str| -> Result<Vec<f32>> {
            let uri = self.features.audio_uri(id).ok_or_else(|| {
                Error::invalid(format!("clip `{id}` has no audio_uri in the features table: waveform mixup needs the audio; use mixup_domain = \"mel\""))
            })?;
            centred_wave(uri)
        };
        let mixed = mix_waveforms(&wave(a)?, &wave(b)?, lambda);
        waveform_fbank(mixed)
    }
}

/// A clip's audio as the features stage reads it: decoded, resampled to 16 kHz, the mean of all
/// channels removed, channel 0.
pub fn centred_wave(uri: &str) -> Result<Vec<f32>> {
    let path = crate::stages::local_path(uri);
    let decoded = crate::audio::decode::decode_file(&path)?;
    let rate = 16000;
    let channels: Vec<Vec<f32>> = if decoded.sample_rate == rate {
        decoded.samples
    } else {
        decoded.samples.iter().map(|c| crate::audio::resample::resample(c, decoded.sample_rate, rate)).collect()
    };
    let count: usize = channels.iter().map(Vec::len).sum();
    let sum: f64 = channels.iter().flat_map(|c| c.iter()).map(|&v| v as f64).sum();
    let mean = (sum / count.max(1) as f64) as f32;
    Ok(channels.into_iter().next().unwrap_or_default().into_iter().map(|v| v - mean).collect())
}

/// The fbank of a 16 kHz waveform, its mean removed first (PSLA's `mix - mix.mean()`).
pub fn waveform_fbank(wave: Vec<f32>) -> Result<Vec<f32>> {
    let decoded = crate::audio::decode::Decoded { sample_rate: 16000, channels: 1, samples: vec![wave], declared_frames: None };
    Ok(crate::audio::psla_fbank(&decoded, None)?.0)
}

/// Assemble the batches of one training epoch on a worker thread, at most `ahead` batches ahead of
/// the consumer. `order` indexes the training clips. The examples of a batch are made by up to
/// [`LOADER_THREADS`] threads (reading features, mixing, masking), so that a GPU step does not wait
/// on one core; every example depends only on (seed, epoch, position), never on the thread.
pub fn spawn_epoch(source: Arc<BatchSource>, order: Vec<usize>, epoch: u32, batch_size: usize, ahead: usize) -> Receiver<Result<Batch>> {
    let (tx, rx): (SyncSender<Result<Batch>>, _) = sync_channel(ahead.max(1));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(LOADER_THREADS);
    std::thread::Builder::new()
        .name(format!("psla-batches-{epoch}"))
        .spawn(move || {
            for (index, chunk) in order.chunks(batch_size).enumerate() {
                let first = (index * batch_size) as u64;
                let positions: Vec<(u64, usize)> = chunk.iter().enumerate().map(|(k, &clip)| (first + k as u64, clip)).collect();
                let examples = crate::parallel::map_in_order(&positions, workers, |&(position, clip)| {
                    source.train_example(clip, epoch, position)
                });
                let mut x = Vec::with_capacity(chunk.len() * source.target_frames * MEL_BINS);
                let mut y = Vec::with_capacity(chunk.len() * source.clips.classes);
                let mut result = Ok(());
                for example in examples {
                    match example {
                        Ok((xi, yi)) => {
                            x.extend_from_slice(&xi);
                            y.extend_from_slice(&yi);
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                let msg = result.map(|()| Batch { x, y, n: chunk.len(), index });
                let failed = msg.is_err();
                if tx.send(msg).is_err() || failed {
                    return; // the consumer stopped, or there is nothing more to send
                }
            }
        })
        .expect("cannot start the batch thread");
    rx
}

/// At most this many threads make the examples of a training batch.
pub const LOADER_THREADS: usize = 4;

/// The evaluation inputs of clips `range` of `clips`: padded or cut, normalised, no augmentation.
pub fn eval_batch(features: &FeatureStore, clips: &LabeledClips, range: std::ops::Range<usize>, target_frames: usize, mean: f32, std: f32) -> Result<Vec<f32>> {
    let mut x = Vec::with_capacity(range.len() * target_frames * MEL_BINS);
    for i in range {
        let mut xi = pad_or_cut(&features.fbank(&clips.clips[i])?, target_frames);
        normalize(&mut xi, mean, std);
        x.extend_from_slice(&xi);
    }
    Ok(x)
}

/// Check that a config's data needs are met; used before anything is trained.
pub fn check_sampling(cfg: &TrainConfig, draws_epochs: Option<u32>) -> Option<String> {
    match (cfg.data.sampling, draws_epochs) {
        (super::config::Sampling::Draws, Some(n)) if n < cfg.optim.epochs => Some(format!(
            "epoch_draws holds {n} epochs and the recipe trains {}: epochs beyond {n} reuse the draws of epoch (e - 1) mod {n}",
            cfg.optim.epochs
        )),
        _ => None,
    }
}
