//! `train`: PSLA's training recipe (`src/traintest.py`, `src/dataloaders/audioset_dataset.py`) over the
//! run root's tables, on CPU or CUDA, resumable after a kill at any moment.
//!
//! Reads `features`, `labels` (the training labels: map it to `labels_enhanced` for PSLA's enhanced
//! labels), `eval_labels` (the evaluation labels, usually `labels`), `classes`, `clips` (the split of
//! each clip), `feature_stats` (with `normalize = "stats"`) and `epoch_draws` (with `sampling =
//! "draws"`). Writes `models/<name>/epoch-NN.safetensors` (the model, with its metadata) and
//! `epoch-NN.optim.safetensors` (Adam's state, the step count and the running sum of the evaluation
//! predictions) after every epoch, and the table `train_metrics` (one row per epoch) at the end.
//!
//! ## One epoch
//! 1. The order: a seeded shuffle of the training clips (`sampling = "uniform"`), or the epoch's rows of
//!    `epoch_draws` (`"draws"`).
//! 2. Batches are assembled ahead of the step by up to 4 threads ([`crate::train::data::spawn_epoch`]),
//!    each clip's fbank read from the `features` files when needed ([`crate::train::data::FeatureStore`]): mixup
//!    (probability `mixup`, lambda ~ Beta(10, 10), partner uniform), pad or cut to `target_frames`,
//!    SpecAugment, normalisation.
//! 3. Per batch: the lr of the step ([`crate::train::schedule`]), forward in training mode, BCE on the
//!    probabilities clamped to [1e-7, 1 - 1e-7], backward, Adam ([`crate::train::adam`]).
//! 4. Evaluation on the eval split (eval mode, no augmentation): loss, mAP, mean AUC, d' (as
//!    [`crate::metrics`]), and the same for the mean of the predictions of all epochs so far (PSLA's
//!    checkpoint ensemble).
//! 5. The checkpoint, the optimizer state, then `train_state.json` (the commit point of the epoch).
//!
//! ## Resuming
//! `models/<name>/train_state.json` records a fingerprint of the parameters, the recipe and the input
//! tables, and the metrics of every completed epoch. A rerun with the same fingerprint loads the last
//! completed epoch's model and optimizer state and goes on from the next epoch. Every random choice of
//! an epoch is seeded from (seed, epoch) (libtorch's RNG for drop-connect too), so on a CPU a resumed run
//! ends with the same weights, bit for bit, as one that was not interrupted. A run with another
//! fingerprint starts over (the old epoch files are replaced).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::evaluate::column_strings;
use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::metrics::{average_precision, d_prime, roc_auc};
use crate::progress::group;
use crate::table::TableData;
use crate::train::adam::Adam;
use crate::train::config::{Normalize, Sampling, TrainConfig};
use crate::train::data::{self, BatchSource, FeatureStore, LabeledClips, MEL_BINS};
use crate::train::schedule::LrSchedule;

pub const KIND: StageKind = StageKind {
    name: "train",
    about: "PSLA's training recipe: features + labels -> models/<name>/epoch-NN.safetensors, train_metrics",
    build: |value, resolver| {
        let mut params: TrainParams = params_from(value)?;
        if !TrainConfig::is_builtin(&params.config) {
            params.config = resolver.path(&params.config);
        }
        if let Some(init) = &params.init {
            params.init = Some(resolver.path(init));
        }
        let stage = TrainStage::new(params, &resolver.root).map_err(|e| e.to_string())?;
        Ok(Box::new(stage))
    },
};

/// PSLA's output clamp before the BCE loss (`traintest.py`: epsilon = 1e-7).
pub const OUTPUT_CLAMP: f64 = 1e-7;

/// Parameters of `train` (the `[stage.<id>]` keys and `psla train` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// A recipe of `configs/` by name (`demo_cpu`, `psla_audioset_balanced`, ...) or a TOML file.
    pub config: String,
    /// The model's name: checkpoints go to `models/<name>/` of the run root.
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    /// `auto` (CUDA when available), `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Splits (the `clips` table's `split`) to train on [default: every split not in `eval_splits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_splits: Option<Vec<String>>,
    /// Splits evaluated after every epoch.
    #[serde(default = "default_eval_splits")]
    pub eval_splits: Vec<String>,
    /// An efficientnet_pytorch ImageNet state dict (safetensors) to start from, as PSLA's
    /// `--impretrain True` (the stem is re-initialised for one input channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Override the recipe's number of epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    /// Override the recipe's attention heads (`[model] heads`: 0 mean pooling, 1 single, N multi-head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<u32>,
    /// Override the recipe's sampling (`[data] sampling`: `uniform` or `draws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::train::config::Sampling>,
    /// libtorch's intra-op threads [default: libtorch's choice].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

fn default_device() -> String {
    "auto".into()
}

fn default_eval_splits() -> Vec<String> {
    vec!["eval".into()]
}

/// A configured `train` stage: its parameters and the recipe they name.
#[derive(Debug, Clone)]
pub struct TrainStage {
    pub params: TrainParams,
    pub config: TrainConfig,
    /// `<root>/models/<name>`.
    models_dir: String,
}

impl TrainStage {
    pub fn new(params: TrainParams, root: &str) -> Result<Self> {
        let (mut config, _) = TrainConfig::load(&params.config)?;
        if let Some(e) = params.epochs {
            if e == 0 {
                return Err(Error::invalid("`epochs` must be at least 1"));
            }
            config.optim.epochs = e;
        }
        if let Some(h) = params.heads {
            config.model.heads = h;
        }
        if let Some(sampling) = params.sampling {
            config.data.sampling = sampling;
        }
        if params.name.is_empty() || !params.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) || params.name.starts_with('.') {
            return Err(Error::invalid(format!("`name` = \"{}\": use letters, digits, `_`, `-` and `.` (it names a folder)", params.name)));
        }
        if params.eval_splits.is_empty() {
            return Err(Error::invalid("`eval_splits` must name at least one split"));
        }
        crate::model::device::parse_name(&params.device)?;
        let models_dir = format!("{}/models/{}", root.trim_end_matches('/'), params.name);
        Ok(TrainStage { params, config, models_dir })
    }
}

impl Stage for TrainStage {
    fn kind(&self) -> &'static str {
        "train"
    }

    fn io(&self) -> StageIo {
        let mut reads = super::names(&["features", "labels", "eval_labels", "classes", "clips"]);
        if self.config.input.normalize == Normalize::Stats {
            reads.push("feature_stats".into());
        }
        if self.config.data.sampling == Sampling::Draws {
            reads.push("epoch_draws".into());
        }
        let mut input_files = Vec::new();
        if !TrainConfig::is_builtin(&self.params.config) {
            input_files.push(("config", self.params.config.clone()));
        }
        if let Some(init) = &self.params.init {
            input_files.push(("init", init.clone()));
        }
        StageIo { reads, writes: super::names(&["train_metrics"]), input_files, output_dirs: vec![self.models_dir.clone()], ..Default::default() }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::json!({ "params": self.params, "config": self.config })
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        let outcome = train(self, ctx)?;
        let table = ctx.stage_table("train_metrics", metrics_schema(), &[metrics_batch(&outcome.records)?])?;
        Ok(StageOutput {
            tables: vec![table],
            rows_in: outcome.train_clips as u64,
            rows_out: outcome.records.len() as u64,
            rejects: outcome.report.without_features,
            detail: outcome.summary,
        })
    }
}

/// One row of `train_metrics`: what an epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub model: String,
    pub epoch: u32,
    /// Global steps at the end of the epoch.
    pub steps: u64,
    pub train_loss: f64,
    pub eval_loss: f64,
    pub map: Option<f64>,
    pub mauc: Option<f64>,
    pub dprime: Option<f64>,
    pub ensemble_map: Option<f64>,
    pub ensemble_mauc: Option<f64>,
    /// The lr of the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
    /// The checkpoint, relative to the run root.
    pub checkpoint: String,
}

/// `models/<name>/train_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    fingerprint: String,
    epochs: Vec<EpochRecord>,
}

/// What [`train`] did.
pub struct TrainOutcome {
    pub records: Vec<EpochRecord>,
    pub train_clips: usize,
    pub eval_clips: usize,
    pub report: data::LabelReport,
    pub resumed_after: Option<u32>,
    pub summary: String,
}

/// Per-class AP/AUC over (clips x classes) predictions: (mAP, mean AUC), means over the classes that
/// have them (None when no class has).
pub fn map_mauc(pred: &[f32], targets: &[f32], classes: usize) -> (Option<f64>, Option<f64>) {
    let n = if classes == 0 { 0 } else { pred.len() / classes };
    let (mut ap_sum, mut auc_sum, mut n_ap, mut n_auc) = (0.0, 0.0, 0usize, 0usize);
    for k in 0..classes {
        let s: Vec<f64> = (0..n).map(|i| pred[i * classes + k] as f64).collect();
        let p: Vec<bool> = (0..n).map(|i| targets[i * classes + k] > 0.5).collect();
        if let Some(a) = average_precision(&s, &p) {
            ap_sum += a;
            n_ap += 1;
        }
        if let Some(a) = roc_auc(&s, &p) {
            auc_sum += a;
            n_auc += 1;
        }
    }
    ((n_ap > 0).then(|| ap_sum / n_ap as f64), (n_auc > 0).then(|| auc_sum / n_auc as f64))
}

/// The vocabulary in index order (the `classes` table's `index`, `mid`).
fn vocabulary(classes: &TableData, table: &str) -> Result<Vec<String>> {
    let mids = column_strings(classes, "mid", table)?;
    let mut idx = Vec::new();
    for b in &classes.batches {
        let c = b.column_by_name("index").ok_or_else(|| Error::table(table, "has no column `index`"))?;
        let c = arrow::compute::cast(c, &DataType::Int64)?;
        idx.extend(c.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(i64::MAX)));
    }
    let mut pairs: Vec<(i64, String)> = idx.into_iter().zip(mids).collect();
    pairs.sort();
    if pairs.is_empty() {
        return Err(Error::table(table, "is empty: there is no class to train"));
    }
    Ok(pairs.into_iter().map(|(_, m)| m).collect())
}

/// (mean, std) of the normalisation.
fn normalization(cfg: &TrainConfig, ctx: &StageContext) -> Result<(f64, f64)> {
    match cfg.input.normalize {
        Normalize::None => Ok((0.0, 1.0)),
        Normalize::Psla => Ok((crate::model::input::PSLA_AUDIOSET.mean, crate::model::input::PSLA_AUDIOSET.std)),
        Normalize::Stats => {
            let name = ctx.table_name("feature_stats");
            let stats = ctx.read("feature_stats")?;
            for b in &stats.batches {
                let get = |c: &str| -> Result<Vec<Option<f64>>> {
                    let col = b.column_by_name(c).ok_or_else(|| Error::table(&name, format!("has no column `{c}`")))?;
                    let col = arrow::compute::cast(col, &DataType::Float64)?;
                    Ok(col.as_primitive::<Float64Type>().iter().collect())
                };
                let bins = b.column_by_name("mel_bin").ok_or_else(|| Error::table(&name, "has no column `mel_bin`"))?;
                let (mean, std) = (get("psla_mean")?, get("psla_std")?);
                for i in 0..b.num_rows() {
                    if bins.is_null(i) {
                        if let (Some(m), Some(s)) = (mean[i], std[i]) {
                            if s > 0.0 && s.is_finite() && m.is_finite() {
                                return Ok((m, s));
                            }
                        }
                    }
                }
            }
            Err(Error::table(name, "has no overall row with psla_mean and a positive psla_std: were any features computed? (or use normalize = \"psla\")"))
        }
    }
}

/// Atomic write of a small file: a temporary beside it, then a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::file(&tmp, None, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, None, e))
}

fn checkpoint_name(epoch: u32) -> String {
    format!("epoch-{epoch:02}.safetensors")
}

fn optim_name(epoch: u32) -> String {
    format!("epoch-{epoch:02}.optim.safetensors")
}

/// Fingerprint of what determines the training: parameters (but the device), the recipe, the input tables.
fn fingerprint(stage: &TrainStage, ctx: &StageContext) -> Result<String> {
    let manifest = ctx.root.manifest()?;
    let mut h = Sha256::new();
    let mut params = stage.params.clone();
    params.device = String::new();
    params.threads = None;
    h.update(serde_json::to_string(&serde_json::json!({ "params": params, "config": stage.config }))?.as_bytes());
    for t in stage.io().reads {
        let name = ctx.table_name(&t);
        let hash = manifest.tables.get(&name).map(|e| e.content_hash.clone()).unwrap_or_default();
        h.update(format!("\0{name}={hash}").as_bytes());
    }
    if let Some(init) = &stage.params.init {
        h.update(crate::table::storage::read(init)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// Train (or resume) as the module docs describe.
pub fn train(stage: &TrainStage, ctx: &StageContext) -> Result<TrainOutcome> {
    let cfg = &stage.config;
    let p = &stage.params;
    crate::malloc::keep_freed_memory();
    let started = Instant::now();
    if let Some(n) = p.threads {
        tch::set_num_threads(n as i32);
    }
    let device = crate::model::device::parse(&p.device)?;
    if let Device::Cuda(n) = device {
        if !tch::Cuda::is_available() || n >= tch::Cuda::device_count() as usize {
            return Err(Error::invalid(format!("device cuda:{n} is not available (CUDA devices: {}); use --device cpu or auto", tch::Cuda::device_count())));
        }
    }
    // Checkpoints go to <root>/models/<name>/. On an object-store root they are written into a
    // local mirror of that folder and uploaded as each epoch completes (the state file last).
    let (models_dir, mirror) = match ctx.root.local_dir() {
        Some(dir) => (dir.join("models").join(&p.name), None),
        None => {
            let mirror = crate::table::storage::Mirror::new(ctx.root.url_of(&format!("models/{}/", p.name)).as_str())?;
            mirror.pull()?;
            (mirror.local().to_path_buf(), Some(mirror))
        }
    };
    std::fs::create_dir_all(&models_dir).map_err(|e| Error::file(&models_dir, None, e))?;

    // Inputs.
    let features = Arc::new(FeatureStore::open(ctx.root, &ctx.table_name("features"))?);
    let vocab = vocabulary(&ctx.read("classes")?, &ctx.table_name("classes"))?;
    let clips = ctx.read("clips")?;
    let clip_ids = column_strings(&clips, "clip_id", &ctx.table_name("clips"))?;
    let clip_split = column_strings(&clips, "split", &ctx.table_name("clips"))?;
    let split_of: HashMap<&str, &str> = clip_ids.iter().map(String::as_str).zip(clip_split.iter().map(String::as_str)).collect();
    let in_train = |c: &str| match (split_of.get(c), &p.train_splits) {
        (None, _) => false,
        (Some(s), Some(train)) => train.iter().any(|t| t == s),
        (Some(s), None) => !p.eval_splits.iter().any(|t| t == s),
    };
    let in_eval = |c: &str| split_of.get(c).is_some_and(|s| p.eval_splits.iter().any(|t| t == s));
    let labels = ctx.read("labels")?;
    let (l_clip, l_mid) = (column_strings(&labels, "clip_id", &ctx.table_name("labels"))?, column_strings(&labels, "mid", &ctx.table_name("labels"))?);
    let train_ids: Vec<String> = distinct(l_clip.iter().filter(|c| in_train(c.as_str())));
    let (train_set, report) = data::label_clips(&train_ids, &l_clip, &l_mid, &vocab, &features);
    let eval_labels = ctx.read("eval_labels")?;
    let (e_clip, e_mid) =
        (column_strings(&eval_labels, "clip_id", &ctx.table_name("eval_labels"))?, column_strings(&eval_labels, "mid", &ctx.table_name("eval_labels"))?);
    let eval_ids: Vec<String> = distinct(e_clip.iter().filter(|c| in_eval(c.as_str())));
    let (eval_set, eval_report) = data::label_clips(&eval_ids, &e_clip, &e_mid, &vocab, &features);
    if train_set.is_empty() {
        return Err(Error::invalid(format!(
            "no training clip: {} labeled clips are in the training splits ({}), {} of them without features",
            train_ids.len(),
            p.train_splits.as_ref().map_or_else(|| format!("all but {}", p.eval_splits.join(", ")), |s| s.join(", ")),
            report.without_features
        )));
    }
    if eval_set.is_empty() {
        return Err(Error::invalid(format!(
            "no evaluation clip: no labeled clip of `{}` in the splits {} has features",
            ctx.table_name("eval_labels"),
            p.eval_splits.join(", ")
        )));
    }
    let (mean, std) = normalization(cfg, ctx)?;
    let (order_source, draws_note) = epoch_orders(stage, ctx, &train_set)?;

    // Model and optimizer.
    let classes = vocab.len();
    tch::manual_seed(data::torch_seed(p.seed, 0));
    let mut vs = tch::nn::VarStore::new(device);
    let model = build_model(&vs, cfg, classes)?;
    let mut adam = Adam::new(Adam::trainable(&vs), cfg.optim.betas, cfg.optim.eps, cfg.optim.weight_decay);
    let mut ensemble_sum = vec![0f64; eval_set.len() * classes];

    // Resume.
    let fp = fingerprint(stage, ctx)?;
    let state_path = models_dir.join("train_state.json");
    let mut state = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice::<TrainState>(&bytes).ok().filter(|s| s.fingerprint == fp),
        Err(_) => None,
    }
    .unwrap_or(TrainState { fingerprint: fp.clone(), epochs: Vec::new() });
    state.epochs.retain(|r| r.epoch <= cfg.optim.epochs);
    let resumed_after = state.epochs.last().map(|r| r.epoch);
    let mut global_step = 0u64;
    if let Some(last) = resumed_after {
        load_checkpoint(&mut vs, &models_dir.join(checkpoint_name(last)))?;
        let optim_path = models_dir.join(optim_name(last));
        let mut tensors = Tensor::read_safetensors(&optim_path).map_err(|e| Error::file(&optim_path, None, e))?;
        let mut take = |key: &str| -> Result<Tensor> {
            let i = tensors.iter().position(|(n, _)| n == key).ok_or_else(|| Error::file(&optim_path, None, format!("has no `{key}`; delete {} to start over", models_dir.display())))?;
            Ok(tensors.swap_remove(i).1)
        };
        let ens = take("ensemble_sum")?.to_kind(Kind::Double);
        if ens.numel() != ensemble_sum.len() {
            return Err(Error::file(&optim_path, None, "its ensemble predictions are for another evaluation set"));
        }
        let n = ensemble_sum.len();
        ens.copy_data(&mut ensemble_sum, n);
        global_step = take("global_step")?.int64_value(&[0]) as u64;
        adam.load_state(tensors, &optim_path)?;
    } else {
        // A fresh start: leftovers of a run with other inputs go.
        for entry in std::fs::read_dir(&models_dir).map_err(|e| Error::file(&models_dir, None, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") || name.starts_with("train_state") {
                let _ = std::fs::remove_file(entry.path());
                if let Some(m) = &mirror {
                    m.remove(&name)?;
                }
            }
        }
        if let Some(init) = &p.init {
            load_init(&mut vs, &crate::table::storage::materialize(init)?)?;
        }
    }

    let source = Arc::new(BatchSource {
        features: features.clone(),
        clips: Arc::new(train_set.clone()),
        target_frames: cfg.input.target_frames,
        mean: mean as f32,
        std: std as f32,
        freqm: cfg.augment.freqm,
        timem: cfg.augment.timem,
        mixup: cfg.augment.mixup,
        mixup_alpha: cfg.augment.mixup_alpha,
        mixup_domain: cfg.augment.mixup_domain,
        seed: p.seed,
    });
    let steps_per_epoch = order_source.steps_per_epoch(cfg.data.batch_size);
    let schedule = LrSchedule::new(&cfg.optim, steps_per_epoch);
    let abort_at: Option<u64> = std::env::var("PSLA_TRAIN_ABORT_AT_STEP").ok().and_then(|v| v.parse().ok());
    let t = cfg.input.target_frames as i64;
    let first = resumed_after.map_or(1, |e| e + 1);
    for epoch in first..=cfg.optim.epochs {
        let epoch_started = Instant::now();
        tch::manual_seed(data::torch_seed(p.seed, epoch));
        let order = order_source.order(epoch);
        let n_samples = order.len();
        let batches = data::spawn_epoch(source.clone(), order, epoch, cfg.data.batch_size, 4);
        let pb = ctx.progress_bar(n_samples as u64, &format!("epoch {epoch}/{}", cfg.optim.epochs));
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let (mut loss_sum, mut seen, mut lr) = (0f64, 0usize, 0f64);
        let train_started = Instant::now();
        for batch in batches {
            let batch = batch?;
            if abort_at == Some(global_step) {
                // For tests: die here, as a kill would (no cleanup, nothing flushed).
                std::process::abort();
            }
            lr = schedule.lr(global_step, epoch);
            let x = Tensor::from_slice(&batch.x).view([batch.n as i64, t, MEL_BINS as i64]).to_device(device);
            let y = Tensor::from_slice(&batch.y).view([batch.n as i64, classes as i64]).to_device(device);
            let out = model.forward_t(&x, true);
            // libtorch refuses a NaN probability (an error, not a NaN loss): both mean divergence.
            let loss = out.clamp(OUTPUT_CLAMP, 1.0 - OUTPUT_CLAMP).f_binary_cross_entropy::<Tensor>(&y, None, tch::Reduction::Mean);
            let value = loss.as_ref().map_or(f64::NAN, |l| l.double_value(&[]));
            let loss = match loss {
                Ok(l) if value.is_finite() => l,
                _ => {
                    return Err(Error::invalid(format!(
                        "the training loss is {value} at epoch {epoch}, step {global_step} (batch {} of the epoch): training diverged; \
                         the last good checkpoint is {}; lower the lr or check the inputs",
                        batch.index,
                        resumed_or_last(&state, &models_dir)
                    )));
                }
            };
            adam.zero_grad();
            loss.backward();
            adam.step(lr);
            global_step += 1;
            loss_sum += value * batch.n as f64;
            seen += batch.n;
            pb.inc(batch.n as u64);
            pb.set_message(format!("loss {:.4} {:.1} samples/s", loss_sum / seen as f64, seen as f64 / train_started.elapsed().as_secs_f64()));
        }
        let train_seconds = train_started.elapsed().as_secs_f64();
        pb.finish_and_clear();

        // Evaluate.
        let (pred, eval_loss) = predict(&model, &features, &eval_set, cfg, mean, std, device)?;
        let (map, mauc) = map_mauc(&pred, &eval_set.targets, classes);
        for (s, &v) in ensemble_sum.iter_mut().zip(&pred) {
            *s += v as f64;
        }
        let ensemble: Vec<f32> = ensemble_sum.iter().map(|&s| (s / epoch as f64) as f32).collect();
        let (ensemble_map, ensemble_mauc) = map_mauc(&ensemble, &eval_set.targets, classes);

        // Save: checkpoint, optimizer state, then the state file (the commit point).
        let ckpt = models_dir.join(checkpoint_name(epoch));
        save_checkpoint(&vs, &ckpt, stage, &vocab, epoch, mean, std)?;
        let mut tensors = adam.state_tensors();
        tensors.push(("ensemble_sum".into(), Tensor::from_slice(&ensemble_sum).view([eval_set.len() as i64, classes as i64])));
        tensors.push(("global_step".into(), Tensor::from_slice(&[global_step as i64])));
        let optim_path = models_dir.join(optim_name(epoch));
        let tmp = PathBuf::from(format!("{}.tmp", optim_path.display()));
        Tensor::write_safetensors(&tensors, &tmp).map_err(|e| Error::file(&tmp, None, e))?;
        std::fs::rename(&tmp, &optim_path).map_err(|e| Error::file(&optim_path, None, e))?;
        let record = EpochRecord {
            model: p.name.clone(),
            epoch,
            steps: global_step,
            train_loss: loss_sum / seen.max(1) as f64,
            eval_loss,
            map,
            mauc,
            dprime: mauc.map(d_prime),
            ensemble_map,
            ensemble_mauc,
            lr,
            seconds: epoch_started.elapsed().as_secs_f64(),
            samples_per_s: seen as f64 / train_seconds.max(1e-9),
            checkpoint: format!("models/{}/{}", p.name, checkpoint_name(epoch)),
        };
        if ctx.progress {
            eprintln!("{}", epoch_line(&record));
        }
        state.epochs.push(record);
        write_atomic(&state_path, &serde_json::to_vec_pretty(&state)?)?;
        if let Some(m) = &mirror {
            for name in [checkpoint_name(epoch), optim_name(epoch), "train_state.json".to_string()] {
                m.push(&name)?;
            }
        }
    }

    let records = state.epochs.clone();
    let last = records.last().expect("at least one epoch");
    let best = records.iter().filter(|r| r.map.is_some()).max_by(|a, b| a.map.partial_cmp(&b.map).unwrap_or(std::cmp::Ordering::Equal));
    let mut summary = format!(
        "{} on {}: {} epochs{} over {} train clips, {} eval clips, {} classes; last epoch: train loss {:.4}, mAP {}, ensemble mAP {}{}; {:.1} samples/s; {:.1} s",
        p.name,
        crate::model::device::name(device),
        records.len(),
        resumed_after.map_or(String::new(), |e| format!(" (resumed after epoch {e})")),
        group(train_set.len() as u64),
        group(eval_set.len() as u64),
        classes,
        last.train_loss,
        fmt_opt(last.map),
        fmt_opt(last.ensemble_map),
        best.map_or(String::new(), |b| format!(", best mAP {} at epoch {}", fmt_opt(b.map), b.epoch)),
        last.samples_per_s,
        started.elapsed().as_secs_f64()
    );
    for (what, r) in [("training", &report), ("evaluation", &eval_report)] {
        if r.without_features > 0 {
            summary.push_str(&format!(
                "; {} labeled {what} clips have no features and were left out (e.g. {})",
                group(r.without_features),
                r.example_without_features.as_deref().unwrap_or("")
            ));
        }
        if r.unknown_labels > 0 {
            let (c, m) = r.example_unknown.clone().unwrap_or_default();
            summary.push_str(&format!("; {} {what} labels are not in the vocabulary and were ignored (e.g. clip {c} class {m})", group(r.unknown_labels)));
        }
    }
    if let Some(n) = draws_note {
        summary.push_str("; ");
        summary.push_str(&n);
    }
    Ok(TrainOutcome { records, train_clips: train_set.len(), eval_clips: eval_set.len(), report, resumed_after, summary })
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.4}"))
}

/// `epoch 3: train loss 0.2101, eval loss 0.1902, mAP 0.5012, ensemble mAP 0.4900, lr 1.0e-3, 41.2 samples/s`.
pub fn epoch_line(r: &EpochRecord) -> String {
    format!(
        "epoch {}: train loss {:.4}, eval loss {:.4}, mAP {}, mean AUC {}, ensemble mAP {}, lr {:.2e}, {:.1} samples/s",
        r.epoch,
        r.train_loss,
        r.eval_loss,
        fmt_opt(r.map),
        fmt_opt(r.mauc),
        fmt_opt(r.ensemble_map),
        r.lr,
        r.samples_per_s
    )
}

fn resumed_or_last(state: &TrainState, dir: &Path) -> String {
    state.epochs.last().map_or("none (no epoch completed)".into(), |r| dir.join(checkpoint_name(r.epoch)).display().to_string())
}

fn distinct<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.filter(|c| seen.insert(c.as_str())).cloned().collect()
}

/// Where each epoch's order comes from.
enum Orders {
    Uniform { n: usize, seed: u64 },
    /// Per draw epoch (0-based), the training-clip indices in position order.
    Draws(Vec<Vec<usize>>),
}

impl Orders {
    fn order(&self, epoch: u32) -> Vec<usize> {
        match self {
            Orders::Uniform { n, seed } => data::shuffled_order(*n, *seed, epoch),
            Orders::Draws(d) => d[(epoch as usize - 1) % d.len()].clone(),
        }
    }

    fn steps_per_epoch(&self, batch: usize) -> u64 {
        let n = match self {
            Orders::Uniform { n, .. } => *n,
            Orders::Draws(d) => d.first().map_or(0, Vec::len),
        };
        n.div_ceil(batch) as u64
    }
}

fn epoch_orders(stage: &TrainStage, ctx: &StageContext, train: &LabeledClips) -> Result<(Orders, Option<String>)> {
    if stage.config.data.sampling == Sampling::Uniform {
        return Ok((Orders::Uniform { n: train.len(), seed: stage.params.seed }, None));
    }
    let name = ctx.table_name("epoch_draws");
    let draws = ctx.read("epoch_draws")?;
    let index: HashMap<&str, usize> = train.clips.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut by_epoch: std::collections::BTreeMap<i64, Vec<(i64, usize)>> = Default::default();
    let mut unknown = 0u64;
    let mut example = None;
    for b in &draws.batches {
        let col = |c: &str| b.column_by_name(c).ok_or_else(|| Error::table(&name, format!("has no column `{c}`")));
        let e = arrow::compute::cast(col("epoch")?, &DataType::Int64)?;
        let pos = arrow::compute::cast(col("position")?, &DataType::Int64)?;
        let clip = arrow::compute::cast(col("clip_id")?, &DataType::Utf8)?;
        let (e, pos, clip) = (e.as_primitive::<Int64Type>(), pos.as_primitive::<Int64Type>(), clip.as_string::<i32>());
        for i in 0..b.num_rows() {
            match index.get(clip.value(i)) {
                Some(&k) => by_epoch.entry(e.value(i)).or_default().push((pos.value(i), k)),
                None => {
                    unknown += 1;
                    example.get_or_insert_with(|| clip.value(i).to_string());
                }
            }
        }
    }
    if by_epoch.is_empty() {
        return Err(Error::table(&name, "has no draw of a training clip: run the sample stage over the training labels"));
    }
    let n_epochs = by_epoch.len() as u32;
    let orders: Vec<Vec<usize>> = by_epoch
        .into_values()
        .map(|mut v| {
            v.sort();
            v.into_iter().map(|(_, k)| k).collect()
        })
        .collect();
    let mut notes = Vec::new();
    if let Some(n) = data::check_sampling(&stage.config, Some(n_epochs)) {
        notes.push(n);
    }
    if unknown > 0 {
        notes.push(format!("{} draws of clips outside the training set were skipped (e.g. {})", group(unknown), example.unwrap_or_default()));
    }
    Ok((Orders::Draws(orders), (!notes.is_empty()).then(|| notes.join("; "))))
}

/// Eval-mode predictions of every eval clip (clips x classes) and PSLA's eval loss (the mean over
/// batches of each batch's mean BCE).
fn predict(
    model: &crate::model::PslaModel,
    features: &FeatureStore,
    eval: &LabeledClips,
    cfg: &TrainConfig,
    mean: f64,
    std: f64,
    device: Device,
) -> Result<(Vec<f32>, f64)> {
    let classes = eval.classes;
    let bs = cfg.eval_batch_size();
    let t = cfg.input.target_frames as i64;
    let mut pred = Vec::with_capacity(eval.len() * classes);
    let mut losses = Vec::new();
    let mut start = 0;
    while start < eval.len() {
        let end = (start + bs).min(eval.len());
        let x = data::eval_batch(features, eval, start..end, cfg.input.target_frames, mean as f32, std as f32)?;
        let n = (end - start) as i64;
        let (out, loss) = tch::no_grad(|| {
            let x = Tensor::from_slice(&x).view([n, t, MEL_BINS as i64]).to_device(device);
            let y = Tensor::from_slice(&eval.targets[start * classes..end * classes]).view([n, classes as i64]).to_device(device);
            let out = model.forward_t(&x, false);
            let loss = out.clamp(OUTPUT_CLAMP, 1.0 - OUTPUT_CLAMP).f_binary_cross_entropy::<Tensor>(&y, None, tch::Reduction::Mean);
            (out.to_device(Device::Cpu).to_kind(Kind::Float).contiguous(), loss.map_or(f64::NAN, |l| l.double_value(&[])))
        });
        let mut buf = vec![0f32; (end - start) * classes];
        let len = buf.len();
        out.copy_data(&mut buf, len);
        pred.extend_from_slice(&buf);
        losses.push(loss);
        start = end;
    }
    Ok((pred, losses.iter().sum::<f64>() / losses.len().max(1) as f64))
}

// ---- the model's API, in one place -------------------------------------------------------------

fn build_model(vs: &tch::nn::VarStore, cfg: &TrainConfig, classes: usize) -> Result<crate::model::PslaModel> {
    let arch: crate::model::Arch = cfg.model.arch.parse().map_err(|e| Error::invalid(format!("model.arch: {e}")))?;
    let mc = crate::model::ModelConfig { arch, heads: cfg.model.heads as _, classes: classes as _ };
    let momentum = cfg.model.bn_momentum.unwrap_or(crate::model::efficientnet::BN_MOMENTUM);
    if !(momentum > 0.0 && momentum <= 1.0) {
        return Err(Error::invalid(format!("model.bn_momentum must be in (0, 1], got {momentum}")));
    }
    Ok(crate::model::PslaModel::with_bn_momentum(&vs.root(), &mc, momentum))
}

fn save_checkpoint(vs: &tch::nn::VarStore, path: &Path, stage: &TrainStage, vocab: &[String], epoch: u32, mean: f64, std: f64) -> Result<()> {
    let meta = crate::model::checkpoint::CheckpointMeta {
        arch: stage.config.model.arch.parse().map_err(|e| Error::invalid(format!("model.arch: {e}")))?,
        heads: stage.config.model.heads as _,
        classes: vocab.to_vec(),
        epoch: Some(epoch),
        config: serde_json::json!({ "params": stage.params, "config": stage.config }),
        norm_mean: mean,
        norm_std: std,
        target_frames: stage.config.input.target_frames as _,
    };
    crate::model::checkpoint::save(vs, path, &meta)
}

fn load_checkpoint(vs: &mut tch::nn::VarStore, path: &Path) -> Result<()> {
    crate::model::checkpoint::load(vs, path).map(|_| ())
}

fn load_init(vs: &mut tch::nn::VarStore, path: &Path) -> Result<()> {
    crate::model::checkpoint::load_imagenet_init(vs, path).map(|_| ())
}

// ---- the train_metrics table --------------------------------------------------------------------

pub fn metrics_schema() -> SchemaRef {
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    Arc::new(Schema::new(vec![
        f("model", DataType::Utf8, false),
        f("epoch", DataType::Int32, false),
        f("steps", DataType::Int64, false),
        f("train_loss", DataType::Float64, false),
        f("eval_loss", DataType::Float64, false),
        f("map", DataType::Float64, true),
        f("mauc", DataType::Float64, true),
        f("dprime", DataType::Float64, true),
        f("ensemble_map", DataType::Float64, true),
        f("ensemble_mauc", DataType::Float64, true),
        f("lr", DataType::Float64, false),
        f("seconds", DataType::Float64, false),
        f("samples_per_s", DataType::Float64, false),
        f("checkpoint", DataType::Utf8, false),
    ]))
}

pub fn metrics_batch(records: &[EpochRecord]) -> Result<RecordBatch> {
    let f64s = |g: fn(&EpochRecord) -> f64| Arc::new(Float64Array::from_iter_values(records.iter().map(g)));
    let opts = |g: fn(&EpochRecord) -> Option<f64>| Arc::new(Float64Array::from(records.iter().map(g).collect::<Vec<_>>()));
    Ok(RecordBatch::try_new(
        metrics_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.model.as_str()))),
            Arc::new(Int32Array::from_iter_values(records.iter().map(|r| r.epoch as i32))),
            Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.steps as i64))),
            f64s(|r| r.train_loss),
            f64s(|r| r.eval_loss),
            opts(|r| r.map),
            opts(|r| r.mauc),
            opts(|r| r.dprime),
            opts(|r| r.ensemble_map),
            opts(|r| r.ensemble_mauc),
            f64s(|r| r.lr),
            f64s(|r| r.seconds),
            f64s(|r| r.samples_per_s),
            Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.checkpoint.as_str()))),
        ],
    )?)
}
