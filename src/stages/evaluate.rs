//! `evaluate`: per-class AP and AUC of predictions against labels, their means and d-prime, as PSLA
//! reports them (scikit-learn's definitions, see [`crate::metrics`]).
//!
//! Predictions are long (clip_id, mid, score); labels are the positives (clip_id, mid). The clips
//! evaluated are those of the labels that have predictions; a clip of the labels without any
//! prediction and a prediction for a clip outside the labels are counted and reported, and a
//! missing (clip, class) score of an evaluated clip is an error naming an example.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::metrics::{average_precision, d_prime, roc_auc};
use crate::progress::group;
use crate::table::TableData;

pub const KIND: StageKind = StageKind {
    name: "evaluate",
    about: "per-class AP and AUC, mAP, mean AUC and d-prime of predictions against labels",
    build: |value, _resolver| Ok(Box::new(params_from::<EvaluateParams>(value)?)),
};

/// Parameters of `evaluate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Evaluate only the clips of these splits (the `clips` table's `split`), e.g. `["eval"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<String>>,
}

impl Stage for EvaluateParams {
    fn kind(&self) -> &'static str {
        "evaluate"
    }

    fn io(&self) -> StageIo {
        let mut reads = super::names(&["predictions", "labels", "classes"]);
        if self.splits.is_some() {
            reads.push("clips".into());
        }
        StageIo { reads, writes: super::names(&["metrics", "metrics_summary"]), ..Default::default() }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        let keep: Option<HashSet<String>> = match &self.splits {
            None => None,
            Some(splits) => {
                let clips = ctx.read("clips")?;
                let ids = column_strings(&clips, "clip_id", "clips")?;
                let split = column_strings(&clips, "split", "clips")?;
                Some(ids.into_iter().zip(split).filter(|(_, s)| splits.contains(s)).map(|(i, _)| i).collect())
            }
        };
        let inputs = Inputs::from_tables(&ctx.read("predictions")?, &ctx.read("labels")?, &ctx.read("classes")?, keep.as_ref())?;
        let result = evaluate(&inputs)?;
        let tables = vec![
            ctx.stage_table("metrics", metrics_schema(), &[result.metrics_batch()?])?,
            ctx.stage_table("metrics_summary", summary_schema(), &[result.summary_batch()?])?,
        ];
        Ok(StageOutput { tables, rows_in: inputs.pred_rows(), rows_out: result.classes.len() as u64, rejects: 0, detail: result.summary_line() })
    }
}

/// Column `name` of a table as strings (any string type).
pub fn column_strings(data: &TableData, name: &str, table: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in &data.batches {
        let c = b.column_by_name(name).ok_or_else(|| Error::table(table, format!("has no column `{name}`")))?;
        let c = arrow::compute::cast(c, &DataType::Utf8)?;
        out.extend(c.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string()));
    }
    Ok(out)
}

fn column_f64(data: &TableData, name: &str, table: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for b in &data.batches {
        let c = b.column_by_name(name).ok_or_else(|| Error::table(table, format!("has no column `{name}`")))?;
        let c = arrow::compute::cast(c, &DataType::Float64)?;
        let c = c.as_primitive::<Float64Type>();
        out.extend((0..c.len()).map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) }));
    }
    Ok(out)
}

/// The columns evaluation needs.
pub struct Inputs {
    pub pred_clip: Vec<String>,
    pub pred_mid: Vec<String>,
    pub pred_score: Vec<f64>,
    pub label_clip: Vec<String>,
    pub label_mid: Vec<String>,
    /// (mid, display_name) in vocabulary order.
    pub classes: Vec<(String, String)>,
}

impl Inputs {
    /// From predictions (clip_id, mid, score), labels (clip_id, mid) and classes (mid, display_name),
    /// keeping only the clips in `keep` when given.
    pub fn from_tables(pred: &TableData, labels: &TableData, classes: &TableData, keep: Option<&HashSet<String>>) -> Result<Self> {
        let mut s = Inputs {
            pred_clip: column_strings(pred, "clip_id", "predictions")?,
            pred_mid: column_strings(pred, "mid", "predictions")?,
            pred_score: column_f64(pred, "score", "predictions")?,
            label_clip: column_strings(labels, "clip_id", "labels")?,
            label_mid: column_strings(labels, "mid", "labels")?,
            classes: column_strings(classes, "mid", "classes")?.into_iter().zip(column_strings(classes, "display_name", "classes")?).collect(),
        };
        if let Some(keep) = keep {
            let (c, m): (Vec<_>, Vec<_>) =
                s.label_clip.into_iter().zip(s.label_mid).filter(|(c, _)| keep.contains(c)).unzip();
            (s.label_clip, s.label_mid) = (c, m);
        }
        Ok(s)
    }

    fn pred_rows(&self) -> u64 {
        self.pred_clip.len() as u64
    }
}

/// Per-class and overall results.
pub struct Evaluation {
    /// (mid, display_name, positives, ap, auc) per vocabulary class.
    pub classes: Vec<(String, String, i64, Option<f64>, Option<f64>)>,
    pub map: f64,
    pub mauc: f64,
    pub d_prime: f64,
    pub clips: u64,
    pub classes_evaluated: u64,
    /// Labeled clips without any prediction (not evaluated).
    pub clips_without_predictions: u64,
    /// Distinct clips with predictions but no labels (not evaluated).
    pub unknown_clips: u64,
}

/// Evaluate; see the module docs for what is counted and what is an error.
pub fn evaluate(inputs: &Inputs) -> Result<Evaluation> {
    let class_index: HashMap<&str, usize> = inputs.classes.iter().enumerate().map(|(i, c)| (c.0.as_str(), i)).collect();
    let mut clip_index: HashMap<&str, usize> = HashMap::new();
    let mut clips: Vec<&str> = Vec::new();
    for c in &inputs.label_clip {
        clip_index.entry(c.as_str()).or_insert_with(|| {
            clips.push(c.as_str());
            clips.len() - 1
        });
    }
    if clips.is_empty() {
        return Err(Error::invalid("the labels have no clip: nothing to evaluate"));
    }
    let n_classes = inputs.classes.len();
    let mut scores = vec![f64::NAN; clips.len() * n_classes];
    let mut has_pred = vec![false; clips.len()];
    let mut unknown: HashSet<&str> = HashSet::new();
    for ((c, m), &s) in inputs.pred_clip.iter().zip(&inputs.pred_mid).zip(&inputs.pred_score) {
        let Some(&i) = clip_index.get(c.as_str()) else {
            unknown.insert(c.as_str());
            continue;
        };
        let Some(&k) = class_index.get(m.as_str()) else {
            return Err(Error::invalid(format!("a prediction for clip {c} has class {m}, which is not in the vocabulary")));
        };
        if s.is_nan() {
            return Err(Error::invalid(format!("the prediction for clip {c} class {m} is NaN or null")));
        }
        let cell = &mut scores[i * n_classes + k];
        if !cell.is_nan() {
            return Err(Error::invalid(format!("clip {c} class {m} has more than one prediction")));
        }
        *cell = s;
        has_pred[i] = true;
    }
    let evaluated: Vec<usize> = (0..clips.len()).filter(|&i| has_pred[i]).collect();
    if evaluated.is_empty() {
        return Err(Error::invalid("no labeled clip has predictions: check that the clip ids match"));
    }
    let missing: Vec<(usize, usize)> =
        evaluated.iter().flat_map(|&i| (0..n_classes).map(move |k| (i, k))).filter(|&(i, k)| scores[i * n_classes + k].is_nan()).collect();
    if let Some(&(i, k)) = missing.first() {
        return Err(Error::invalid(format!(
            "{} (clip, class) predictions are missing for clips that have some, e.g. clip {} class {}; \
             predict every class for every clip",
            group(missing.len() as u64),
            clips[i],
            inputs.classes[k].0
        )));
    }
    let mut positive = vec![false; clips.len() * n_classes];
    for (c, m) in inputs.label_clip.iter().zip(&inputs.label_mid) {
        if let (Some(&i), Some(&k)) = (clip_index.get(c.as_str()), class_index.get(m.as_str())) {
            positive[i * n_classes + k] = true;
        }
    }
    let mut classes = Vec::with_capacity(n_classes);
    let (mut ap_sum, mut auc_sum, mut n_ap, mut n_auc) = (0.0, 0.0, 0u64, 0u64);
    for (k, (mid, name)) in inputs.classes.iter().enumerate() {
        let s: Vec<f64> = evaluated.iter().map(|&i| scores[i * n_classes + k]).collect();
        let p: Vec<bool> = evaluated.iter().map(|&i| positive[i * n_classes + k]).collect();
        let positives = p.iter().filter(|&&x| x).count() as i64;
        let ap = average_precision(&s, &p);
        let auc = roc_auc(&s, &p);
        if let Some(a) = ap {
            ap_sum += a;
            n_ap += 1;
        }
        if let Some(a) = auc {
            auc_sum += a;
            n_auc += 1;
        }
        classes.push((mid.clone(), name.clone(), positives, ap, auc));
    }
    let mauc = if n_auc > 0 { auc_sum / n_auc as f64 } else { f64::NAN };
    Ok(Evaluation {
        classes,
        map: if n_ap > 0 { ap_sum / n_ap as f64 } else { f64::NAN },
        mauc,
        d_prime: d_prime(mauc),
        clips: evaluated.len() as u64,
        classes_evaluated: n_auc.min(n_ap),
        clips_without_predictions: (clips.len() - evaluated.len()) as u64,
        unknown_clips: unknown.len() as u64,
    })
}

impl Evaluation {
    pub fn summary_line(&self) -> String {
        let mut s = format!(
            "mAP {:.4}, mean AUC {:.4}, d' {:.3} over {} clips and {} classes",
            self.map,
            self.mauc,
            self.d_prime,
            group(self.clips),
            self.classes_evaluated
        );
        let skipped = self.classes.len() as u64 - self.classes_evaluated;
        if skipped > 0 {
            s.push_str(&format!("; {skipped} classes without positives or negatives not evaluated"));
        }
        if self.clips_without_predictions > 0 {
            s.push_str(&format!("; {} labeled clips have no predictions", group(self.clips_without_predictions)));
        }
        if self.unknown_clips > 0 {
            s.push_str(&format!("; {} predicted clips are not in the labels", group(self.unknown_clips)));
        }
        s
    }

    pub fn metrics_batch(&self) -> Result<RecordBatch> {
        let c = &self.classes;
        Ok(RecordBatch::try_new(
            metrics_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(c.iter().map(|r| r.0.as_str()))),
                Arc::new(StringArray::from_iter_values(c.iter().map(|r| r.1.as_str()))),
                Arc::new(Int64Array::from_iter_values(c.iter().map(|r| r.2))),
                Arc::new(Float64Array::from(c.iter().map(|r| r.3).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(c.iter().map(|r| r.4).collect::<Vec<_>>())),
            ],
        )?)
    }

    pub fn summary_batch(&self) -> Result<RecordBatch> {
        let opt = |x: f64| if x.is_nan() { None } else { Some(x) };
        Ok(RecordBatch::try_new(
            summary_schema(),
            vec![
                Arc::new(Float64Array::from(vec![opt(self.map)])),
                Arc::new(Float64Array::from(vec![opt(self.mauc)])),
                Arc::new(Float64Array::from(vec![opt(self.d_prime)])),
                Arc::new(Int64Array::from(vec![self.clips as i64])),
                Arc::new(Int64Array::from(vec![self.classes_evaluated as i64])),
                Arc::new(Int64Array::from(vec![(self.classes.len() as u64 - self.classes_evaluated) as i64])),
                Arc::new(Int64Array::from(vec![self.clips_without_predictions as i64])),
                Arc::new(Int64Array::from(vec![self.unknown_clips as i64])),
            ],
        )?)
    }
}

pub fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("mid", DataType::Utf8, false),
        Field::new("display_name", DataType::Utf8, false),
        Field::new("positives", DataType::Int64, false),
        Field::new("ap", DataType::Float64, true),
        Field::new("auc", DataType::Float64, true),
    ]))
}

pub fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("map", DataType::Float64, true),
        Field::new("mauc", DataType::Float64, true),
        Field::new("d_prime", DataType::Float64, true),
        Field::new("clips", DataType::Int64, false),
        Field::new("classes_evaluated", DataType::Int64, false),
        Field::new("classes_skipped", DataType::Int64, false),
        Field::new("clips_without_predictions", DataType::Int64, false),
        Field::new("unknown_clips", DataType::Int64, false),
    ]))
}

/// What `psla evaluate` does: files in, metrics to `out` and the summary beside it.
pub fn run_to_files(predictions: &std::path::Path, labels: &std::path::Path, classes_csv: &str, out: &std::path::Path) -> Result<String> {
    use crate::table::store::{read_parquet_path, write_parquet_path};
    let started = std::time::Instant::now();
    let vocab = super::ingest::vocabulary_tables_classes_only(classes_csv)?;
    let inputs = Inputs::from_tables(&read_parquet_path(predictions)?, &read_parquet_path(labels)?, &vocab, None)?;
    let result = evaluate(&inputs)?;
    write_parquet_path(out, &TableData { schema: metrics_schema(), batches: vec![result.metrics_batch()?] })?;
    let summary = out.with_file_name(format!(
        "{}.summary.parquet",
        out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    write_parquet_path(&summary, &TableData { schema: summary_schema(), batches: vec![result.summary_batch()?] })?;
    Ok(format!("evaluate: {} in {:.2} s -> {}", result.summary_line(), started.elapsed().as_secs_f64(), out.display()))
}
