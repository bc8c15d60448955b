//! `psla score` and the score stage: predictions equal a direct forward of the model, metadata decides the
//! class ids and the input preparation, ensembles average, the pipeline stage writes the same table.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Int32Type};
use psla::model::checkpoint::{self, CheckpointMeta};
use psla::model::input::{pad_or_cut, Normalization, PSLA_AUDIOSET};
use psla::model::{Arch, ModelConfig, PslaModel};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::common::*;

fn reference(name: &str) -> PathBuf {
    shared().join("reference/model").join(name)
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

fn write_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec { channels: 1, sample_rate: 16000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Five clips of different lengths (some shorter, some longer than the target frames) and content.
fn make_audio(dir: &Path) -> PathBuf {
    let audio = dir.join("audio");
    fs::create_dir_all(&audio).unwrap();
    let lens = [0.7, 2.0, 3.1, 4.5, 1.2];
    for (i, secs) in lens.iter().enumerate() {
        let n = (secs * 16000.0) as usize;
        let f = 0.02 + 0.05 * i as f64;
        let s: Vec<f32> = (0..n)
            .map(|t| (0.3 * (t as f64 * f).sin() + 0.1 * ((t * (i + 3)) as f64 * 0.37).sin() * (t as f64 / n as f64)) as f32)
            .collect();
        write_wav(&audio.join(format!("clip{i}.wav")), &s);
    }
    audio
}

/// clip_id -> (frames, fbank values) of a features file.
fn features(path: &Path) -> BTreeMap<String, (usize, Vec<f32>)> {
    let mut out = BTreeMap::new();
    for b in read(path) {
        let ids = b.column_by_name("clip_id").unwrap().as_string::<i32>().clone();
        let fbank = b.column_by_name("fbank").unwrap().as_list::<i32>().clone();
        for i in 0..b.num_rows() {
            let rows = fbank.value(i);
            let rows = rows.as_fixed_size_list();
            let v = arrow::compute::cast(rows.values(), &DataType::Float32).unwrap();
            out.insert(ids.value(i).to_string(), (rows.len(), v.as_primitive::<Float32Type>().values().to_vec()));
        }
    }
    out
}

/// (clip_id, class_index) -> (mid, score) of a predictions file or table folder.
fn predictions(batches: Vec<RecordBatch>) -> BTreeMap<(String, i32), (String, f32)> {
    let mut out = BTreeMap::new();
    for b in batches {
        let names: Vec<_> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["clip_id", "class_index", "mid", "score"]);
        let ids = b.column_by_name("clip_id").unwrap().as_string::<i32>().clone();
        let idx = b.column_by_name("class_index").unwrap().as_primitive::<Int32Type>().clone();
        let mids = b.column_by_name("mid").unwrap().as_string::<i32>().clone();
        let scores = b.column_by_name("score").unwrap().as_primitive::<Float32Type>().clone();
        for i in 0..b.num_rows() {
            let prev = out.insert((ids.value(i).to_string(), idx.value(i)), (mids.value(i).to_string(), scores.value(i)));
            assert!(prev.is_none(), "duplicate prediction");
        }
    }
    out
}

/// The model of a reference state dict, loaded directly.
fn reference_model(heads: usize) -> (VarStore, PslaModel) {
    let mut vs = VarStore::new(Device::Cpu);
    let model = PslaModel::new(&vs.root(), &ModelConfig { arch: Arch::B0, heads, classes: 10 });
    checkpoint::load_psla_state_dict(&mut vs, &reference(&format!("effnet_b0_heads{heads}.safetensors"))).unwrap();
    (vs, model)
}

/// A direct forward of each clip alone: clip -> 10 probabilities.
fn direct(model: &PslaModel, feats: &BTreeMap<String, (usize, Vec<f32>)>, target: usize, norm: Normalization) -> BTreeMap<String, Vec<f32>> {
    feats
        .iter()
        .map(|(id, (frames, v))| {
            let mut x = pad_or_cut(v, *frames, target);
            norm.apply(&mut x);
            let x = Tensor::from_slice(&x).view([1, target as i64, 128]);
            let y = tch::no_grad(|| model.forward_t(&x, false)).view([-1]);
            (id.clone(), Vec::<f32>::try_from(&y).unwrap())
        })
        .collect()
}

/// max |predictions - expected| over every (clip, class), checking that both cover the same pairs.
fn max_diff(pred: &BTreeMap<(String, i32), (String, f32)>, expected: &BTreeMap<String, Vec<f32>>) -> f64 {
    assert_eq!(pred.len(), expected.len() * 10);
    let mut d = 0f64;
    for (clip, scores) in expected {
        for (k, s) in scores.iter().enumerate() {
            let (_, p) = &pred[&(clip.clone(), k as i32)];
            d = d.max((*p as f64 - *s as f64).abs());
        }
    }
    d
}

struct Setup {
    dir: tempfile::TempDir,
    features: PathBuf,
    feats: BTreeMap<String, (usize, Vec<f32>)>,
}

fn setup() -> Setup {
    let dir = tempdir();
    let audio = make_audio(dir.path());
    let features = dir.path().join("features.parquet");
    let stats = dir.path().join("stats.parquet");
    run_ok(psla().arg("features").arg(&audio).arg("--out").arg(&features).arg("--stats").arg(&stats));
    let feats = features_of(&features);
    Setup { dir, features, feats }
}

fn features_of(p: &Path) -> BTreeMap<String, (usize, Vec<f32>)> {
    let f = features(p);
    assert_eq!(f.len(), 5);
    f
}

#[test]
fn scoring_a_psla_state_dict_equals_a_direct_forward() {
    let s = setup();
    let out = s.dir.path().join("p.parquet");
    // No metadata: the model (B0, 4 heads, 10 classes) is told from the shapes; PSLA's constants.
    let res = run_ok(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&s.features)
            .args(["--target-frames", "250", "--batch-size", "2", "--device", "cpu", "--arch", "b0", "--heads", "4"]).arg("--out").arg(&out),
    );
    let line = stderr(&res);
    assert!(line.contains("score: 5 clips x 10 classes") && line.contains("efficientnet-b0, 4 heads, 250 frames"), "{line}");
    let pred = predictions(read(&out));
    let (_vs, model) = reference_model(4);
    let d = max_diff(&pred, &direct(&model, &s.feats, 250, PSLA_AUDIOSET));
    println!("psla score vs direct forward: max |d| = {d:.3e}");
    assert!(d <= 1e-6, "{d}");
    // Without a vocabulary, mid is the class index as text.
    assert!(pred.iter().all(|((_, k), (mid, _))| mid == &k.to_string()));

    // A mismatching --heads is refused, naming what the file holds.
    let err = run_err(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&s.features)
            .args(["--heads", "1"]).arg("--out").arg(&out),
    );
    assert!(err.contains("--heads 1") && err.contains("4 heads"), "{err}");
    let err = run_err(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&s.features)
            .args(["--normalize", "stats"]).arg("--out").arg(&out),
    );
    assert!(err.contains("--stats"), "{err}");
    let err = run_err(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&s.features)
            .args(["--device", "tpu"]).arg("--out").arg(&out),
    );
    assert!(err.contains("device `tpu`"), "{err}");
}

fn save_with_meta(path: &Path, heads: usize, mids: &[String], norm: Normalization, frames: i64) {
    let (vs, _model) = reference_model(heads);
    let meta = CheckpointMeta {
        arch: Arch::B0,
        heads,
        classes: mids.to_vec(),
        epoch: Some(3),
        config: serde_json::json!({"test": true}),
        norm_mean: norm.mean,
        norm_std: norm.std,
        target_frames: frames,
    };
    checkpoint::save(&vs, path, &meta).unwrap();
}

fn mids() -> Vec<String> {
    (0..10).map(|i| format!("/m/c{i}")).collect()
}

#[test]
fn metadata_gives_mids_normalisation_and_frames_and_ensembles_average() {
    let s = setup();
    let norm = Normalization { mean: -5.5, std: 3.25 };
    let (a, b) = (s.dir.path().join("a.safetensors"), s.dir.path().join("b.safetensors"));
    save_with_meta(&a, 4, &mids(), norm, 300);
    save_with_meta(&b, 1, &mids(), norm, 300);

    let out = s.dir.path().join("p.parquet");
    run_ok(psla().arg("score").arg("--checkpoint").arg(&a).arg(&s.features).arg("--out").arg(&out));
    let pred = predictions(read(&out));
    let (_v4, m4) = reference_model(4);
    let d4 = direct(&m4, &s.feats, 300, norm);
    assert!(max_diff(&pred, &d4) <= 1e-6);
    assert!(pred.iter().all(|((_, k), (mid, _))| mid == &format!("/m/c{k}")));

    // --normalize and --target-frames override the metadata.
    run_ok(psla().arg("score").arg("--checkpoint").arg(&a).arg(&s.features).args(["--normalize=-1,2", "--target-frames", "120"]).arg("--out").arg(&out));
    let over = predictions(read(&out));
    assert!(max_diff(&over, &direct(&m4, &s.feats, 120, Normalization { mean: -1.0, std: 2.0 })) <= 1e-6);

    // Two checkpoints: the mean of their probabilities.
    let ens = s.dir.path().join("ens.parquet");
    let res = run_ok(psla().arg("score").arg("--checkpoint").arg(&a).arg("--checkpoint").arg(&b).arg(&s.features).arg("--out").arg(&ens));
    assert!(stderr(&res).contains("2 checkpoints averaged"), "{}", stderr(&res));
    let (_v1, m1) = reference_model(1);
    let d1 = direct(&m1, &s.feats, 300, norm);
    let mean: BTreeMap<String, Vec<f32>> =
        d4.iter().map(|(k, v)| (k.clone(), v.iter().zip(&d1[k]).map(|(x, y)| (x + y) / 2.0).collect())).collect();
    let d = max_diff(&predictions(read(&ens)), &mean);
    println!("ensemble of 2 vs mean of direct forwards: max |d| = {d:.3e}");
    assert!(d <= 1e-6, "{d}");

    // Checkpoints with different vocabularies are not averaged.
    let c = s.dir.path().join("c.safetensors");
    let mut other = mids();
    other[9] = "/m/other".into();
    save_with_meta(&c, 4, &other, norm, 300);
    let err = run_err(psla().arg("score").arg("--checkpoint").arg(&a).arg("--checkpoint").arg(&c).arg(&s.features).arg("--out").arg(&ens));
    assert!(err.contains("class list differs"), "{err}");

    // The predictions are what `psla evaluate` reads.
    let classes = s.dir.path().join("classes.csv");
    let mut csv = String::from("index,mid,display_name\n");
    for (i, m) in mids().iter().enumerate() {
        csv.push_str(&format!("{i},{m},class {i}\n"));
    }
    fs::write(&classes, csv).unwrap();
    let labels = s.dir.path().join("labels.parquet");
    let clip: Vec<String> = s.feats.keys().cloned().collect();
    let label_mid: Vec<String> = (0..clip.len()).map(|i| format!("/m/c{}", i % 3)).collect();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("clip_id", DataType::Utf8, false),
        arrow::datatypes::Field::new("mid", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![std::sync::Arc::new(arrow::array::StringArray::from(clip)), std::sync::Arc::new(arrow::array::StringArray::from(label_mid))],
    )
    .unwrap();
    psla::table::store::write_parquet_path(&labels, &psla::table::TableData { schema, batches: vec![batch] }).unwrap();
    let metrics = s.dir.path().join("metrics.parquet");
    let res = run_ok(psla().arg("evaluate").arg("--predictions").arg(&ens).arg("--labels").arg(&labels).arg("--classes").arg(&classes).arg("--out").arg(&metrics));
    assert!(stderr(&res).contains("evaluate:"), "{}", stderr(&res));
}

#[test]
fn the_score_stage_writes_the_same_predictions_in_a_pipeline() {
    let s = setup();
    let ckpt = s.dir.path().join("models/teacher/epoch-03.safetensors");
    save_with_meta(&ckpt, 4, &mids(), PSLA_AUDIOSET, 200);
    let audio = s.dir.path().join("audio");
    let spec = s.dir.path().join("score.toml");
    fs::write(
        &spec,
        format!(
            "[pipeline]\nname = \"score test\"\n\n[stage.features]\ninputs = [\"{}\"]\n\n[stage.score]\ncheckpoint = \"{}\"\nbatch_size = 3\nnormalize = \"stats\"\n",
            audio.display(),
            ckpt.display()
        ),
    )
    .unwrap();
    let root = s.dir.path().join("root");
    let res = run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&root));
    let err = stderr(&res);
    assert!(err.lines().any(|l| l.starts_with("score: 5 rows in, 50 rows out")), "{err}");

    // Same as the CLI with the feature statistics of the same clips and the same batches.
    let file = s.dir.path().join("p.parquet");
    run_ok(psla().arg("score").arg("--checkpoint").arg(&ckpt).arg(&s.features).args(["--batch-size", "3", "--normalize", "stats", "--stats"]).arg(s.dir.path().join("stats.parquet")).arg("--out").arg(&file));
    let from_file = predictions(read(&file));
    let table_dir = fs::read_dir(root.join("tables/predictions")).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    let mut batches = Vec::new();
    for f in fs::read_dir(&table_dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "parquet") {
            batches.extend(read(&f));
        }
    }
    let from_stage = predictions(batches);
    assert_eq!(from_stage.len(), 50);
    assert_eq!(from_stage, from_file);

    // The stage is skipped when nothing changed, and reruns when the checkpoint changes.
    let res = run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&root));
    assert!(stderr(&res).lines().any(|l| l.starts_with("score: up to date")), "{}", stderr(&res));
    save_with_meta(&ckpt, 4, &mids(), Normalization { mean: 0.0, std: 1.0 }, 200);
    let res = run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&root));
    assert!(stderr(&res).lines().any(|l| l.starts_with("score: 5 rows in")), "{}", stderr(&res));
}
