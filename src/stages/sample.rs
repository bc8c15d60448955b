//! `sample`: PSLA's balanced-sampling weights, reproducible epoch draws and what each class received.
//!
//! PSLA samples training clips with replacement, as many draws per epoch as there are clips, with
//! probability proportional to a weight that favours rare classes (its `gen_weight_file.py`):
//!
//! ```text
//! count[c]        = clips labeled with class c
//! label_weight[c] = 1000 / (count[c] + 0.01)
//! weight[clip]    = sum of label_weight over the clip's labels
//! ```
//!
//! Tables (docs/tables.md): `sample_weights` (clip_id, weight, n_labels), `epoch_draws` (epoch,
//! position, clip_id) and `class_exposure` (epoch, mid, draws, clips_with_label, expected_share).
//! The counting is plain Rust over the label columns (exact, and at AudioSet's full scale well under a
//! second); Polars 0.55 deprecates its eager group-by aggregations in favour of its lazy engine, which
//! this build leaves out to keep compile times down.
//!
//! Draws are reproducible: epoch `e` draws from ChaCha8 seeded with `seed` on stream `e`, over the
//! clips in clip_id order, so the same labels and seed give the same table on any machine.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::progress::group;
use crate::table::TableData;

pub const KIND: StageKind = StageKind {
    name: "sample",
    about: "PSLA balanced-sampling weights, seeded epoch draws and per-class exposure",
    build: |value, _resolver| {
        let p: SampleParams = params_from(value)?;
        if p.splits.as_ref().is_some_and(|s| s.is_empty()) {
            return Err("splits must list at least one split".into());
        }
        Ok(Box::new(p))
    },
};

/// A hash map with a fast, non-cryptographic hasher (ids are not attacker-controlled here).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// PSLA's constant in `1000 / (count + 0.01)`.
const WEIGHT_SCALE: f64 = 1000.0;
const COUNT_SMOOTHING: f64 = 0.01;

/// Parameters of `sample` (the `[stage.<id>]` keys and `psla sample` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleParams {
    /// Epochs of draws to write (0: weights only).
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    #[serde(default)]
    pub seed: u64,
    /// Draw uniformly (PSLA's balanced-subset recipe) instead of by weight.
    #[serde(default)]
    pub uniform: bool,
    /// Only the clips of these splits (the `clips` table's `split`), e.g. `["train"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<String>>,
}

fn default_epochs() -> u32 {
    1
}

impl Stage for SampleParams {
    fn kind(&self) -> &'static str {
        "sample"
    }

    fn io(&self) -> StageIo {
        let mut reads = super::names(&["labels", "classes"]);
        if self.splits.is_some() {
            reads.push("clips".into());
        }
        StageIo {
            reads,
            writes: super::names(&["sample_weights", "epoch_draws", "class_exposure"]),
            ..Default::default()
        }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        let labels = ctx.read("labels")?;
        let label_columns = StrColumns::new(&labels, &["clip_id", "mid"], &ctx.table_name("labels"))?;
        let (mut clip_ids, mut mids) = (label_columns.values(0), label_columns.values(1));
        let clips;
        if let Some(splits) = &self.splits {
            clips = ctx.read("clips")?;
            let clip_columns = StrColumns::new(&clips, &["clip_id", "split"], &ctx.table_name("clips"))?;
            let (ids, split) = (clip_columns.values(0), clip_columns.values(1));
            let keep: HashSet<&str> =
                ids.iter().zip(&split).filter(|(_, s)| splits.iter().any(|x| x == *s)).map(|(i, _)| *i).collect();
            let (c, m): (Vec<_>, Vec<_>) = clip_ids.into_iter().zip(mids).filter(|(c, _)| keep.contains(c)).unzip();
            (clip_ids, mids) = (c, m);
        }
        let classes = ctx.read("classes")?;
        let (vocab, _) = string_columns(&classes, &["mid", "display_name"], &ctx.table_name("classes"))?;
        let result = sample(&clip_ids, &mids, &vocab, self)?;
        let tables = vec![
            ctx.stage_table("sample_weights", weights_schema(), &[result.weights_batch()?])?,
            ctx.stage_table("epoch_draws", draws_schema(), &result.draws_batches()?)?,
            ctx.stage_table("class_exposure", exposure_schema(), &[result.exposure_batch()?])?,
        ];
        Ok(StageOutput {
            tables,
            rows_in: clip_ids.len() as u64,
            rows_out: result.clips.len() as u64,
            rejects: 0,
            detail: result.summary(self),
        })
    }
}

/// Two columns of a table as Utf8 arrays (cast when stored otherwise), borrowed as `&str` by
/// [`StrColumns::values`] without a copy per value.
pub struct StrColumns {
    arrays: [Vec<ArrayRef>; 2],
}

impl StrColumns {
    pub fn new(data: &TableData, names: &[&str; 2], table: &str) -> Result<Self> {
        let mut arrays: [Vec<ArrayRef>; 2] = [Vec::new(), Vec::new()];
        for batch in &data.batches {
            for (out, name) in arrays.iter_mut().zip(names) {
                let c = batch.column_by_name(name).ok_or_else(|| Error::table(table, format!("has no column `{name}`")))?;
                out.push(if c.data_type() == &DataType::Utf8 { c.clone() } else { arrow::compute::cast(c, &DataType::Utf8)? });
            }
        }
        Ok(StrColumns { arrays })
    }

    /// Column `i` (0 or 1), a null as "".
    pub fn values(&self, i: usize) -> Vec<&str> {
        let n = self.arrays[i].iter().map(|a| a.len()).sum();
        let mut out = Vec::with_capacity(n);
        for a in &self.arrays[i] {
            out.extend(a.as_string::<i32>().iter().map(|v| v.unwrap_or_default()));
        }
        out
    }
}

/// Utf8 columns of a table, by name, as owned strings (for small tables).
pub fn string_columns(data: &TableData, names: &[&str; 2], table: &str) -> Result<(Vec<String>, Vec<String>)> {
    let cols = StrColumns::new(data, names, table)?;
    let owned = |i| cols.values(i).into_iter().map(str::to_string).collect();
    Ok((owned(0), owned(1)))
}

/// What `psla sample` does: labels from a Parquet file (clip_id, mid), the vocabulary from a
/// `class_labels_indices.csv`; writes the weights, and with epochs > 0 the draws and the exposure.
pub fn run_to_files(
    params: &SampleParams,
    labels: &std::path::Path,
    classes_csv: &str,
    out: &std::path::Path,
    draws_out: Option<&std::path::Path>,
) -> Result<String> {
    let started = std::time::Instant::now();
    let data = crate::table::store::read_parquet_path(labels)?;
    let columns = StrColumns::new(&data, &["clip_id", "mid"], &labels.display().to_string())?;
    let vocabulary = super::ingest::read_vocabulary(classes_csv)?;
    let result = sample(&columns.values(0), &columns.values(1), &vocabulary, params)?;
    crate::table::store::write_parquet_path(out, &TableData { schema: weights_schema(), batches: vec![result.weights_batch()?] })?;
    if let Some(d) = draws_out {
        crate::table::store::write_parquet_path(d, &TableData { schema: draws_schema(), batches: result.draws_batches()? })?;
        let exposure = d.with_file_name(format!(
            "{}.exposure.parquet",
            d.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        ));
        crate::table::store::write_parquet_path(&exposure, &TableData { schema: exposure_schema(), batches: vec![result.exposure_batch()?] })?;
    }
    Ok(format!("sample: {} in {:.2} s -> {}", result.summary(params), started.elapsed().as_secs_f64(), out.display()))
}

/// What `psla subset` does: a balanced subset with at least `min_per_class` clips per class where
/// available, split into train and validation by iterative stratification; writes (clip_id, split).
pub fn subset_to_file(
    labels: &std::path::Path,
    classes_csv: &str,
    min_per_class: usize,
    val_fraction: f64,
    seed: u64,
    out: &std::path::Path,
) -> Result<String> {
    use super::subset::{LabelSets, balanced_subset, stratified_split};
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::invalid(format!("--val-fraction {val_fraction}: must be in [0, 1)")));
    }
    let started = std::time::Instant::now();
    let data = crate::table::store::read_parquet_path(labels)?;
    let (clip_ids, mids) = string_columns(&data, &["clip_id", "mid"], &labels.display().to_string())?;
    let vocabulary = super::ingest::read_vocabulary(classes_csv)?;
    let sets = LabelSets::new(&clip_ids, &mids, &vocabulary)?;
    let chosen = balanced_subset(&sets, min_per_class, seed);
    let val = stratified_split(&sets, &chosen, val_fraction, seed);
    let schema = subset_schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(chosen.iter().map(|&i| sets.clips[i].as_str()))),
            Arc::new(StringArray::from_iter_values(val.iter().map(|&v| if v { "val" } else { "train" }))),
        ],
    )?;
    crate::table::store::write_parquet_path(out, &TableData { schema, batches: vec![batch] })?;
    let counts = sets.counts();
    let short = counts.iter().filter(|&&n| n > 0 && n < min_per_class).count();
    let absent = counts.iter().filter(|&&n| n == 0).count();
    let n_val = val.iter().filter(|&&v| v).count();
    let mut line = format!(
        "subset: {} of {} clips (at least {min_per_class} per class; {short} classes have fewer and are all in), {} train / {n_val} val, in {:.2} s -> {}",
        group(chosen.len() as u64),
        group(sets.clips.len() as u64),
        group((chosen.len() - n_val) as u64),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    if absent > 0 {
        line.push_str(&format!("; {absent} classes have no clip"));
    }
    if sets.unknown_labels > 0 {
        line.push_str(&format!("; {} labels outside the vocabulary ignored", group(sets.unknown_labels)));
    }
    Ok(line)
}

pub fn subset_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("clip_id", DataType::Utf8, false), Field::new("split", DataType::Utf8, false)]))
}

/// What [`sample`] computed.
#[derive(Debug, Clone)]
pub struct Sampling {
    /// Clip ids in clip_id order: the order draws index into.
    pub clips: Vec<String>,
    pub weights: Vec<f64>,
    pub n_labels: Vec<i32>,
    /// For each epoch, the index into `clips` of each draw.
    pub draws: Vec<Vec<u32>>,
    /// Per vocabulary class (in vocabulary order): (mid, clips labeled with it).
    pub class_counts: Vec<(String, u64)>,
    /// Labels whose mid is not a vocabulary class (not used), and a few examples.
    pub unknown_labels: u64,
    pub unknown_examples: Vec<String>,
    /// Exposure rows: (epoch, mid, draws, clips_with_label, expected_share).
    pub exposure: Vec<(i32, String, i64, i64, f64)>,
}

/// Compute weights, draws and exposure for labels given as parallel `clip_ids` / `mids` columns.
pub fn sample<S: AsRef<str>>(clip_ids: &[S], mids: &[S], vocabulary: &[String], params: &SampleParams) -> Result<Sampling> {
    if clip_ids.is_empty() {
        return Err(Error::invalid("the label table is empty: there is nothing to sample"));
    }
    let class_index: FastMap<&str, usize> = vocabulary.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();

    // Each clip's classes, in the order its labels come (PSLA sums in that order); labels outside the
    // vocabulary are counted and shown, not used; a repeated (clip, class) counts once.
    // Clips get a number in order of first appearance (a hash lookup per label, skipped while the
    // labels of one clip come in a row, as they usually do), then are put in clip_id order.
    let mut number: FastMap<&str, u32> = FastMap::with_capacity_and_hasher(clip_ids.len() / 2, Default::default());
    let mut names: Vec<&str> = Vec::new();
    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(clip_ids.len()); // (clip number, class)
    let mut last: Option<(&str, u32)> = None;
    let mut unknown_labels = 0u64;
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    for (c, m) in clip_ids.iter().zip(mids) {
        let (c, m) = (c.as_ref(), m.as_ref());
        let Some(&k) = class_index.get(m) else {
            unknown_labels += 1;
            unknown.insert(m);
            continue;
        };
        let i = match last {
            Some((previous, i)) if previous == c => i,
            _ => {
                let i = *number.entry(c).or_insert_with(|| {
                    names.push(c);
                    (names.len() - 1) as u32
                });
                last = Some((c, i));
                i
            }
        };
        pairs.push((i, k as u32));
    }
    let unknown_examples: Vec<String> = unknown.iter().take(5).map(|m| m.to_string()).collect();
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "none of the {} labels is a vocabulary class (e.g. {}): check the label table and the vocabulary",
            group(unknown_labels),
            unknown_examples.join(", ")
        )));
    }
    // rank[number] = position in clip_id order
    // Sorted by each id's first 8 bytes, then by the whole id where those tie: comparing two
    // integers held in the vector, not two strings elsewhere in memory.
    let prefix = |s: &str| {
        let mut key = [0u8; 8];
        let b = s.as_bytes();
        key[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
        u64::from_be_bytes(key)
    };
    let mut keyed: Vec<(u64, u32)> = names.iter().enumerate().map(|(i, s)| (prefix(s), i as u32)).collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| names[a.1 as usize].cmp(names[b.1 as usize])));
    let order: Vec<u32> = keyed.into_iter().map(|(_, i)| i).collect();
    let mut rank = vec![0u32; names.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    // The classes of clip r (in clip_id order) are flat[start[r]..start[r + 1]], in label order.
    let mut start = vec![0usize; names.len() + 1];
    for &(i, _) in &pairs {
        start[rank[i as usize] as usize + 1] += 1;
    }
    for r in 0..names.len() {
        start[r + 1] += start[r];
    }
    let mut flat = vec![0usize; pairs.len()];
    let mut fill = start.clone();
    for &(i, k) in &pairs {
        let r = rank[i as usize] as usize;
        flat[fill[r]] = k as usize;
        fill[r] += 1;
    }
    drop(pairs);
    // a repeated (clip, class) counts once: keep its first occurrence
    let mut kept: Vec<usize> = Vec::with_capacity(flat.len());
    let mut kept_start = vec![0usize; names.len() + 1];
    for r in 0..names.len() {
        let from = kept.len();
        for &k in &flat[start[r]..start[r + 1]] {
            if !kept[from..].contains(&k) {
                kept.push(k);
            }
        }
        kept_start[r + 1] = kept.len();
    }
    drop(flat);
    let clip_classes: Vec<&[usize]> = (0..names.len()).map(|r| &kept[kept_start[r]..kept_start[r + 1]]).collect();

    // count[c], label_weight[c] = 1000 / (count[c] + 0.01), weight[clip] = sum over its labels.
    let mut count = vec![0u64; vocabulary.len()];
    for classes in &clip_classes {
        for &k in classes.iter() {
            count[k] += 1;
        }
    }
    let label_weight: Vec<f64> = count.iter().map(|&n| WEIGHT_SCALE / (n as f64 + COUNT_SMOOTHING)).collect();
    let clips: Vec<String> = order.iter().map(|&i| names[i as usize].to_string()).collect();
    let weights: Vec<f64> = clip_classes.iter().map(|ks| ks.iter().map(|&k| label_weight[k]).sum()).collect();
    let n_labels: Vec<i32> = clip_classes.iter().map(|ks| ks.len() as i32).collect();

    let draws: Vec<Vec<u32>> =
        (0..params.epochs).map(|e| draw_epoch(&weights, clips.len(), params.seed, e, params.uniform)).collect();

    // Exposure: per epoch and class, the draws of clips labeled with it, against the expected share.
    let class_counts: Vec<(String, u64)> = vocabulary.iter().cloned().zip(count.iter().copied()).collect();
    let total: f64 = weights.iter().sum();
    let mut expected = vec![0.0f64; vocabulary.len()];
    for (i, cls) in clip_classes.iter().copied().enumerate() {
        let share = if params.uniform { 1.0 / clips.len() as f64 } else { weights[i] / total };
        for &k in cls {
            expected[k] += share;
        }
    }
    let mut exposure = Vec::new();
    for (e, epoch) in draws.iter().enumerate() {
        let mut per_class = vec![0i64; vocabulary.len()];
        for &d in epoch {
            for &k in clip_classes[d as usize] {
                per_class[k] += 1;
            }
        }
        for (k, (mid, n)) in class_counts.iter().enumerate() {
            exposure.push((e as i32, mid.clone(), per_class[k], *n as i64, expected[k]));
        }
    }
    Ok(Sampling { clips, weights, n_labels, draws, class_counts, unknown_labels, unknown_examples, exposure })
}

/// One epoch: `n` draws with replacement, by weight (or uniform), from ChaCha8(`seed`, stream `epoch`).
pub fn draw_epoch(weights: &[f64], n: usize, seed: u64, epoch: u32, uniform: bool) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::from(epoch));
    if uniform {
        return (0..n).map(|_| rng.random_range(0..weights.len()) as u32).collect();
    }
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0f64;
    for w in weights {
        acc += w;
        cumulative.push(acc);
    }
    // Each draw is the first clip whose cumulative weight exceeds u * total. Rather than a binary
    // search per draw (~21 cache misses each at AudioSet scale), the draws are sorted by u and
    // matched in one merge over the cumulative weights: the same clips, in a fraction of the time.
    // (u >= 0, so ordering the f64 bit patterns orders the values.)
    let mut by_u: Vec<(u64, u32)> = (0..n).map(|j| ((rng.random::<f64>() * acc).to_bits(), j as u32)).collect();
    by_u.sort_unstable();
    let mut out = vec![0u32; n];
    let mut k = 0usize;
    for (bits, j) in by_u {
        let u = f64::from_bits(bits);
        while k < cumulative.len() && cumulative[k] <= u {
            k += 1;
        }
        out[j as usize] = k.min(weights.len() - 1) as u32;
    }
    out
}

impl Sampling {
    /// "22,160 clips, weights 0.95-1,234.5; 1 epoch x 22,160 draws; 3 classes without clips (...)"
    pub fn summary(&self, params: &SampleParams) -> String {
        let (lo, hi) = self.weights.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &w| (lo.min(w), hi.max(w)));
        let mut s = format!(
            "{} clips, weights {lo:.3}-{hi:.3}; {} epochs x {} {} draws (seed {})",
            group(self.clips.len() as u64),
            params.epochs,
            group(self.clips.len() as u64),
            if params.uniform { "uniform" } else { "weighted" },
            params.seed
        );
        let empty: Vec<&str> = self.class_counts.iter().filter(|c| c.1 == 0).map(|c| c.0.as_str()).collect();
        if !empty.is_empty() {
            s.push_str(&format!(
                "; {} classes have no clip and get no weight ({}{})",
                empty.len(),
                empty.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                if empty.len() > 5 { ", ..." } else { "" }
            ));
        }
        if self.unknown_labels > 0 {
            s.push_str(&format!(
                "; {} labels with mids outside the vocabulary were not used (e.g. {})",
                group(self.unknown_labels),
                self.unknown_examples.join(", ")
            ));
        }
        s
    }

    pub fn weights_batch(&self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            weights_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(&self.clips)),
                Arc::new(Float64Array::from(self.weights.clone())),
                Arc::new(Int32Array::from(self.n_labels.clone())),
            ],
        )?)
    }

    /// One batch per epoch.
    pub fn draws_batches(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for (e, epoch) in self.draws.iter().enumerate() {
            out.push(RecordBatch::try_new(
                draws_schema(),
                vec![
                    Arc::new(Int32Array::from(vec![e as i32; epoch.len()])),
                    Arc::new(Int64Array::from_iter_values(0..epoch.len() as i64)),
                    Arc::new(StringArray::from_iter_values(epoch.iter().map(|&d| self.clips[d as usize].as_str()))),
                ],
            )?);
        }
        if out.is_empty() {
            out.push(RecordBatch::new_empty(draws_schema()));
        }
        Ok(out)
    }

    pub fn exposure_batch(&self) -> Result<RecordBatch> {
        let e = &self.exposure;
        Ok(RecordBatch::try_new(
            exposure_schema(),
            vec![
                Arc::new(Int32Array::from_iter_values(e.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(e.iter().map(|r| r.1.as_str()))),
                Arc::new(Int64Array::from_iter_values(e.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(e.iter().map(|r| r.3))),
                Arc::new(Float64Array::from_iter_values(e.iter().map(|r| r.4))),
            ],
        )?)
    }
}

pub fn weights_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("weight", DataType::Float64, false),
        Field::new("n_labels", DataType::Int32, false),
    ]))
}

pub fn draws_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::Int32, false),
        Field::new("position", DataType::Int64, false),
        Field::new("clip_id", DataType::Utf8, false),
    ]))
}

pub fn exposure_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::Int32, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("draws", DataType::Int64, false),
        Field::new("clips_with_label", DataType::Int64, false),
        Field::new("expected_share", DataType::Float64, false),
    ]))
}
