//! `ensemble`: PSLA's prediction ensemble, the (weighted) mean of several models' probabilities,
//! as the SQL in `sql/ensemble/` run by DataFusion.
//!
//! PSLA averages the sigmoid outputs of the checkpoints of one run, of runs with other seeds and of
//! runs with other settings; each is the same mean. The members are predictions tables (clip_id, mid,
//! score) with the same (clip, class) pairs; the result is a predictions table like any other, so
//! `evaluate` and the label stage read it unchanged. A member that lacks a (clip, class) another one
//! scored, or scores one twice, is an error naming an example: a mean over fewer models would be
//! another ensemble, silently.

use serde::{Deserialize, Serialize};

use super::label::bind;
use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::progress::group;
use crate::sql::Session;
use crate::table::TableData;

pub const KIND: StageKind = StageKind {
    name: "ensemble",
    about: "PSLA's prediction ensemble: the (weighted) mean of predictions tables, as SQL -> predictions",
    build: |value, _resolver| {
        let p: EnsembleParams = params_from(value)?;
        p.check().map_err(|e| e.to_string())?;
        Ok(Box::new(p))
    },
};

/// The SQL of the stage, embedded from `sql/ensemble/`.
pub mod sql {
    pub const AVERAGE_PREDICTIONS: &str = include_str!("../../sql/ensemble/average_predictions.sql");
    pub const MEMBER: &str = include_str!("../../sql/ensemble/member.sql");
}

/// Parameters of `ensemble` (the `[stage.<id>]` keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleParams {
    /// The predictions tables to average (at least two).
    pub members: Vec<String>,
    /// One positive weight per member; absent: all equal (PSLA's plain mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
}

impl EnsembleParams {
    pub fn check(&self) -> Result<()> {
        check_members(&self.members, self.weights.as_deref())
    }

    fn weights(&self) -> Vec<f64> {
        self.weights.clone().unwrap_or_else(|| vec![1.0; self.members.len()])
    }
}

fn check_members(members: &[String], weights: Option<&[f64]>) -> Result<()> {
    if members.len() < 2 {
        return Err(Error::invalid(format!("an ensemble needs at least two members, got {}", members.len())));
    }
    if let Some(bad) = members.iter().find(|m| m.contains('\'')) {
        return Err(Error::invalid(format!("member name {bad:?} contains a quote")));
    }
    if let Some(w) = weights {
        if w.len() != members.len() {
            return Err(Error::invalid(format!("{} weights given for {} members: give one per member", w.len(), members.len())));
        }
        if let Some(x) = w.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
            return Err(Error::invalid(format!("weight {x} is not a positive number")));
        }
    }
    Ok(())
}

impl Stage for EnsembleParams {
    fn kind(&self) -> &'static str {
        "ensemble"
    }

    fn io(&self) -> StageIo {
        StageIo { reads: self.members.clone(), writes: super::names(&["predictions"]), ..Default::default() }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        // Each member is registered as m0, m1, ... so that any table name is safe in the SQL.
        let names: Vec<(String, String)> =
            self.members.iter().enumerate().map(|(i, m)| (format!("m{i}"), ctx.table_name(m))).collect();
        let session = Session::open_mapped_on(ctx.root, &names, ctx.engine)?;
        let result = average(&session, &self.members, &self.weights())?;
        let tables = vec![ctx.stage_table("predictions", result.table.schema.clone(), &result.table.batches)?];
        Ok(StageOutput { tables, rows_in: result.rows_in, rows_out: result.table.num_rows() as u64, rejects: 0, detail: result.summary() })
    }
}

/// What [`average`] produced.
pub struct Averaged {
    /// (clip_id, mid, score) in clip_id, mid order.
    pub table: TableData,
    pub members: usize,
    pub rows_in: u64,
}

impl Averaged {
    pub fn summary(&self) -> String {
        format!("mean of {} members: {} (clip, class) scores", self.members, group(self.table.num_rows() as u64))
    }
}

/// Average the members registered in `session` as `m0`, `m1`, ... (`names` are what errors call them).
pub fn average(session: &Session, names: &[String], weights: &[f64]) -> Result<Averaged> {
    check_members(names, Some(weights))?;
    let mut parts = Vec::new();
    for (i, (name, w)) in names.iter().zip(weights).enumerate() {
        parts.push(bind(sql::MEMBER, &[("member", name), ("table", &format!("m{i}")), ("weight", &format!("{w:?}"))])?);
    }
    let members_sql: Vec<String> = parts.iter().map(|p| strip_comments(p)).collect();
    // The comments are dropped first: they mention ${members}, whose value spans lines.
    let template = strip_comments(sql::AVERAGE_PREDICTIONS);
    let result = session.query_read_only(&bind(&template, &[("members", &members_sql.join("\nUNION ALL\n"))])?)?;

    // Every (clip, class) must be scored once by every member.
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let n = names.len() as i64;
    let mut rows_in = 0u64;
    for b in &result.batches {
        let members = b.column_by_name("members").expect("members column").as_primitive::<Int64Type>();
        let rows = b.column_by_name("rows").expect("rows column").as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            rows_in += rows.value(i) as u64;
            if members.value(i) != n || rows.value(i) != n {
                let clip = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
                let mid = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)?;
                let what = if rows.value(i) > members.value(i) {
                    "is scored more than once by a member".to_string()
                } else {
                    format!("is scored by {} of the {n} members", members.value(i))
                };
                return Err(Error::invalid(format!(
                    "cannot average {}: clip {} class {} {what}. Every member must score the same clips for the same classes \
                     once (score them with the same features table and vocabulary)",
                    names.join(", "),
                    clip.as_string::<i32>().value(i),
                    mid.as_string::<i32>().value(i),
                )));
            }
        }
    }
    // The output is a predictions table (clip_id Utf8, mid Utf8, score Float32): the bookkeeping columns
    // are dropped, and strings come back as Utf8 whatever string type the members' files used.
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]));
    let mut batches = Vec::new();
    for b in &result.batches {
        let columns = (0..3)
            .map(|i| arrow::compute::cast(b.column(i), schema.field(i).data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        batches.push(arrow::array::RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(Averaged { table: TableData { schema, batches }, members: names.len(), rows_in })
}

fn strip_comments(sql: &str) -> String {
    sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n")
}

/// `psla ensemble average-predictions`: average predictions Parquet files into `out`.
pub fn average_files(inputs: &[std::path::PathBuf], weights: Option<&[f64]>, out: &std::path::Path) -> Result<String> {
    let started = std::time::Instant::now();
    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let weights = weights.map(<[f64]>::to_vec).unwrap_or_else(|| vec![1.0; inputs.len()]);
    check_members(&names, Some(&weights))?;
    let mut session = Session::empty();
    for (i, p) in inputs.iter().enumerate() {
        session.register_parquet(&format!("m{i}"), p)?;
    }
    let result = average(&session, &names, &weights)?;
    crate::table::store::write_parquet_path(out, &result.table)?;
    Ok(format!("ensemble: {} in {:.2} s -> {}", result.summary(), started.elapsed().as_secs_f64(), out.display()))
}

/// How [`average_checkpoints`] weighs its checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightMean {
    /// The arithmetic mean of the N checkpoints.
    Mean,
    /// PSLA's figure (traintest.py `wa`): the first checkpoint is counted twice, the sum divided by N + 1.
    PslaCompat,
}

/// PSLA's weight averaging: every tensor of the checkpoints (weights, biases, BatchNorm running
/// statistics) averaged arithmetically into one checkpoint at `out`. The checkpoints must have the same
/// keys, shapes and dtypes. Float tensors are summed in f64 and stored in their own dtype; integer
/// tensors (BatchNorm's `num_batches_tracked`) get the mean truncated toward zero, as PyTorch does when
/// PSLA's float mean is loaded into them. The metadata is the last checkpoint's, plus `averaged_from`
/// (the files, in order) and `average` (`mean` or `psla-compat`).
pub fn average_checkpoints(paths: &[std::path::PathBuf], out: &std::path::Path, how: WeightMean) -> Result<String> {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    let started = std::time::Instant::now();
    if paths.len() < 2 {
        return Err(Error::invalid(format!("weight averaging needs at least two checkpoints, got {}", paths.len())));
    }
    let bytes: Vec<Vec<u8>> =
        paths.iter().map(|p| std::fs::read(p).map_err(|e| Error::file(p, None, e))).collect::<Result<_>>()?;
    let files: Vec<SafeTensors> = bytes
        .iter()
        .zip(paths)
        .map(|(b, p)| SafeTensors::deserialize(b).map_err(|e| Error::file(p, None, format!("not a safetensors checkpoint: {e:?}"))))
        .collect::<Result<_>>()?;
    // Per file, its factor in the sum and the divisor.
    let n = paths.len() as f64;
    let (factors, divisor): (Vec<f64>, f64) = match how {
        WeightMean::Mean => (vec![1.0; paths.len()], n),
        WeightMean::PslaCompat => ((0..paths.len()).map(|i| if i == 0 { 2.0 } else { 1.0 }).collect(), n + 1.0),
    };
    let mut names: Vec<String> = files[0].names().into_iter().cloned().collect();
    names.sort();
    let mut averaged: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in &names {
        let first = files[0].tensor(name).expect("listed");
        let (dtype, shape) = (first.dtype(), first.shape().to_vec());
        let mut sum = vec![0f64; shape.iter().product()];
        for ((f, p), k) in files.iter().zip(paths).zip(&factors) {
            let t = f.tensor(name).map_err(|_| Error::file(p, None, format!("has no tensor `{name}` (the first checkpoint has)")))?;
            if t.dtype() != dtype || t.shape() != shape.as_slice() {
                return Err(Error::file(
                    p,
                    None,
                    format!("tensor `{name}` is {:?} {:?}, the first checkpoint's is {dtype:?} {shape:?}", t.dtype(), t.shape()),
                ));
            }
            add_scaled(&mut sum, t.data(), dtype, *k).map_err(|m| Error::file(p, None, format!("tensor `{name}`: {m}")))?;
        }
        averaged.push((name.clone(), dtype, shape, encode_mean(&sum, divisor, dtype)));
    }
    for (f, p) in files.iter().zip(paths).skip(1) {
        if let Some(extra) = f.names().into_iter().find(|k| !names.contains(k)) {
            return Err(Error::file(p, None, format!("has tensor `{extra}`, which the first checkpoint lacks")));
        }
    }
    let (_, header) = SafeTensors::read_metadata(&bytes[bytes.len() - 1]).map_err(|e| Error::invalid(format!("{e:?}")))?;
    let mut meta = header.metadata().clone().unwrap_or_default();
    meta.insert("averaged_from".into(), serde_json::to_string(&paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>())?);
    meta.insert("average".into(), if how == WeightMean::Mean { "mean" } else { "psla-compat" }.into());
    let views: Vec<(String, TensorView)> = averaged
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid(format!("{e:?}")))?;
    let data = safetensors::tensor::serialize(views, &Some(meta)).map_err(|e| Error::invalid(format!("{e:?}")))?;
    let tmp = std::path::PathBuf::from(format!("{}.tmp", out.display()));
    std::fs::write(&tmp, &data).map_err(|e| Error::file(&tmp, None, e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::file(out, None, e))?;
    let values: usize = averaged.iter().map(|a| a.2.iter().product::<usize>()).sum();
    Ok(format!(
        "ensemble: {} of {} checkpoints ({} tensors, {} values) in {:.2} s -> {}",
        if how == WeightMean::Mean { "mean" } else { "PSLA-compatible mean (first counted twice)" },
        paths.len(),
        averaged.len(),
        group(values as u64),
        started.elapsed().as_secs_f64(),
        out.display()
    ))
}

/// sum += factor * values (little-endian `dtype` bytes).
fn add_scaled(sum: &mut [f64], data: &[u8], dtype: safetensors::tensor::Dtype, factor: f64) -> std::result::Result<(), String> {
    use safetensors::tensor::Dtype;
    macro_rules! add {
        ($t:ty) => {
            for (s, c) in sum.iter_mut().zip(data.chunks_exact(std::mem::size_of::<$t>())) {
                *s += factor * <$t>::from_le_bytes(c.try_into().unwrap()) as f64;
            }
        };
    }
    match dtype {
        Dtype::F32 => add!(f32),
        Dtype::F64 => add!(f64),
        Dtype::I64 => add!(i64),
        Dtype::I32 => add!(i32),
        other => return Err(format!("dtype {other:?} cannot be averaged (F32, F64, I32 and I64 can)")),
    }
    Ok(())
}

/// The mean `sum / divisor` as little-endian `dtype` bytes (integers truncated toward zero).
fn encode_mean(sum: &[f64], divisor: f64, dtype: safetensors::tensor::Dtype) -> Vec<u8> {
    use safetensors::tensor::Dtype;
    let mut out = Vec::with_capacity(sum.len() * dtype.size());
    for s in sum {
        let m = s / divisor;
        match dtype {
            Dtype::F32 => out.extend((m as f32).to_le_bytes()),
            Dtype::F64 => out.extend(m.to_le_bytes()),
            Dtype::I64 => out.extend((m.trunc() as i64).to_le_bytes()),
            Dtype::I32 => out.extend((m.trunc() as i32).to_le_bytes()),
            _ => unreachable!("add_scaled refused it"),
        }
    }
    out
}

/// The `average_weights` stage: PSLA's weight averaging of a run's last checkpoints into one model file.
pub const AVERAGE_WEIGHTS_KIND: StageKind = StageKind {
    name: "average_weights",
    about: "PSLA's weight averaging: the mean of checkpoints (BatchNorm statistics included) -> one model file",
    build: |value, resolver| {
        let mut p: AverageWeightsParams = params_from(value)?;
        for c in &mut p.checkpoints {
            *c = resolver.path(c);
        }
        p.out = resolver.path(&p.out);
        p.check().map_err(|e| e.to_string())?;
        Ok(Box::new(p))
    },
};

/// Parameters of `average_weights` (the `[stage.<id>]` keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AverageWeightsParams {
    /// The checkpoints to average (at least two), e.g. the last epochs of one training run.
    pub checkpoints: Vec<String>,
    /// The averaged model file; its folder is this stage's output (a stage reading a file there runs after it).
    pub out: String,
    /// PSLA's own figure, which counts the first checkpoint twice (see docs/training.md).
    #[serde(default)]
    pub psla_compat: bool,
}

impl AverageWeightsParams {
    fn check(&self) -> Result<()> {
        if self.checkpoints.len() < 2 {
            return Err(Error::invalid(format!("weight averaging needs at least two checkpoints, got {}", self.checkpoints.len())));
        }
        let out = super::local_path(&self.out);
        if out.parent().is_none_or(|p| p.as_os_str().is_empty()) || out.file_name().is_none() {
            return Err(Error::invalid(format!("`out` = {:?}: give a file path inside a folder", self.out)));
        }
        if self.checkpoints.iter().any(|c| super::local_path(c) == out) {
            return Err(Error::invalid("`out` is one of the checkpoints it averages"));
        }
        Ok(())
    }

    fn out_dir(&self) -> String {
        match self.out.rsplit_once('/') {
            Some((dir, _)) if crate::table::storage::is_remote(&self.out) => dir.to_string(),
            _ => super::local_path(&self.out).parent().expect("checked").display().to_string(),
        }
    }
}

/// A fresh private folder under the system's temp dir.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("psla-average-{}-{}", std::process::id(), crate::table::store::now_rfc3339().replace([':', '.'], "")));
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, None, e))?;
    Ok(dir)
}

impl Stage for AverageWeightsParams {
    fn kind(&self) -> &'static str {
        "average_weights"
    }

    fn io(&self) -> StageIo {
        StageIo {
            input_files: self.checkpoints.iter().map(|c| ("checkpoints", c.clone())).collect(),
            output_dirs: vec![self.out_dir()],
            ..Default::default()
        }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, _ctx: &StageContext) -> Result<StageOutput> {
        use crate::table::storage;
        // Object-store checkpoints are read through local copies; an object-store `out` is written
        // locally, then uploaded in one put.
        let paths: Vec<std::path::PathBuf> = self.checkpoints.iter().map(|c| storage::materialize(c)).collect::<Result<_>>()?;
        let how = if self.psla_compat { WeightMean::PslaCompat } else { WeightMean::Mean };
        let detail = if storage::is_remote(&self.out) {
            let staging = tempfile_dir()?;
            let local = staging.join(self.out.rsplit('/').next().unwrap_or("model.safetensors"));
            let detail = average_checkpoints(&paths, &local, how)?;
            storage::write(&self.out, std::fs::read(&local).map_err(|e| Error::file(&local, None, e))?)?;
            let _ = std::fs::remove_dir_all(&staging);
            detail.replace(&local.display().to_string(), &self.out)
        } else {
            let out = super::local_path(&self.out);
            std::fs::create_dir_all(out.parent().expect("checked")).map_err(|e| Error::file(&out, None, e))?;
            average_checkpoints(&paths, &out, how)?
        };
        Ok(StageOutput { rows_in: paths.len() as u64, rows_out: 1, detail, ..Default::default() })
    }
}
