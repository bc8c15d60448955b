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

/// A features-file run's predictions, for comparisons.
fn score_features(s: &Setup, extra: &[&str], out: &Path) -> BTreeMap<(String, i32), (String, f32)> {
    run_ok(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&s.features)
            .args(["--target-frames", "100", "--device", "cpu"]).args(extra).arg("--out").arg(out),
    );
    predictions(read(out))
}

#[test]
fn scoring_audio_equals_scoring_its_features_and_bad_files_go_to_rejects() {
    let s = setup();
    let audio = s.dir.path().join("audio");
    fs::write(audio.join("broken.wav"), b"RIFF this is not really a wav file").unwrap();
    let out = s.dir.path().join("from_audio.parquet");
    let res = run_ok(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&audio)
            .args(["--target-frames", "100", "--device", "cpu"]).arg("--out").arg(&out),
    );
    let log = stderr(&res);
    assert!(log.contains("features: 5 clips") && log.contains("1 rejects") && log.contains("score: 5 clips"), "{log}");
    let from_audio = predictions(read(&out));
    let from_features = score_features(&s, &[], &s.dir.path().join("from_features.parquet"));
    assert_eq!(from_audio.len(), 50);
    assert_eq!(from_audio, from_features, "audio in and its features table in must give the same predictions");
    // The bad file is a reject with its reason, beside the output; the temporary features are gone.
    let rejects = read(&s.dir.path().join("from_audio.rejects.parquet"));
    let ids: Vec<String> = rejects.iter().flat_map(|b| b.column_by_name("clip_id").unwrap().as_string::<i32>().iter().map(|x| x.unwrap().to_string()).collect::<Vec<_>>()).collect();
    assert_eq!(ids, ["broken.wav"]);
    let reason = rejects[0].column_by_name("reason").unwrap().as_string::<i32>().value(0).to_string();
    assert!(!reason.is_empty(), "a reject has a reason");
    assert!(!s.dir.path().join("from_audio.parquet.features.parquet").exists());
    // --features-out keeps them: a features table equal to psla features' own.
    let kept = s.dir.path().join("kept_features.parquet");
    run_ok(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&audio)
            .args(["--target-frames", "100", "--device", "cpu"]).arg("--features-out").arg(&kept).arg("--out").arg(&out),
    );
    assert_eq!(features(&kept), s.feats);
    // Mixing a features table with audio is refused.
    let err = run_err(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&audio).arg(&s.features)
            .arg("--out").arg(&out),
    );
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn top_and_min_score_keep_exactly_the_best_scores() {
    let s = setup();
    let full = score_features(&s, &[], &s.dir.path().join("full.parquet"));
    let top = score_features(&s, &["--top", "3"], &s.dir.path().join("top.parquet"));
    for clip in s.feats.keys() {
        let mut all: Vec<(i32, f32)> = full.iter().filter(|((c, _), _)| c == clip).map(|((_, k), (_, p))| (*k, *p)).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut want: Vec<i32> = all[..3].iter().map(|x| x.0).collect();
        want.sort();
        let got: Vec<i32> = top.keys().filter(|(c, _)| c == clip).map(|(_, k)| *k).collect();
        assert_eq!(got, want, "{clip}: the 3 best classes");
    }
    assert!(top.iter().all(|(key, v)| full[key] == *v));
    // A threshold in the middle of the scores (this head's outputs are not bounded by 1).
    let mut all: Vec<f32> = full.values().map(|v| v.1).collect();
    all.sort_by(f32::total_cmp);
    let cut = all[all.len() / 2];
    let min = score_features(&s, &["--min-score", &cut.to_string()], &s.dir.path().join("min.parquet"));
    let want: BTreeMap<_, _> = full.iter().filter(|(_, (_, p))| *p >= cut).map(|(k, v)| (k.clone(), v.clone())).collect();
    assert!(!want.is_empty() && want.len() < full.len(), "the threshold should cut somewhere: {}", want.len());
    assert_eq!(min, want);
}

#[test]
fn window_starts_cover_the_clip_with_whole_windows() {
    use psla::stages::score::window_starts;
    assert_eq!(window_starts(448, 98, 50), vec![0, 50, 100, 150, 200, 250, 300, 350]);
    assert_eq!(window_starts(450, 98, 50), vec![0, 50, 100, 150, 200, 250, 300, 350, 352]);
    assert_eq!(window_starts(60, 98, 50), vec![0]);
    assert_eq!(window_starts(98, 98, 98), vec![0]);
    assert_eq!(window_starts(200, 98, 98), vec![0, 98, 102]);
}

#[test]
fn windows_score_each_window_as_a_clip_and_the_clip_gets_their_max_and_mean() {
    let s = setup();
    let out = s.dir.path().join("clips.parquet");
    let windows_out = s.dir.path().join("windows.parquet");
    run_ok(
        psla().arg("score").arg("--checkpoint").arg(reference("effnet_b0_heads4.safetensors")).arg(&s.features)
            .args(["--target-frames", "100", "--device", "cpu", "--window", "1.0", "--hop", "0.5"])
            .arg("--windows-out").arg(&windows_out).arg("--out").arg(&out),
    );
    // 1 s of audio is 98 frames; a hop of 0.5 s is 50 frames.
    let (_vs, model) = reference_model(4);
    let mut expected_windows = BTreeMap::new();
    for (id, (frames, v)) in &s.feats {
        for start in psla::stages::score::window_starts(*frames, 98, 50) {
            let end = (start + 98).min(*frames);
            let one = BTreeMap::from([(id.clone(), (end - start, v[start * 128..end * 128].to_vec()))]);
            expected_windows.insert((id.clone(), start), direct(&model, &one, 100, PSLA_AUDIOSET).remove(id).unwrap());
        }
    }
    let mut got = BTreeMap::new();
    for b in read(&windows_out) {
        let names: Vec<_> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["clip_id", "start_s", "end_s", "class_index", "mid", "score"]);
        let ids = b.column(0).as_string::<i32>().clone();
        let start = b.column(1).as_primitive::<arrow::datatypes::Float64Type>().clone();
        let end = b.column(2).as_primitive::<arrow::datatypes::Float64Type>().clone();
        let k = b.column(3).as_primitive::<Int32Type>().clone();
        let score = b.column(5).as_primitive::<Float32Type>().clone();
        for i in 0..b.num_rows() {
            let frame = (start.value(i) * 100.0).round() as usize;
            let frames = s.feats[ids.value(i)].0;
            let span_frames = 98.min(frames);
            assert!((end.value(i) - (start.value(i) + (span_frames - 1) as f64 * 0.01 + 0.025)).abs() < 1e-9);
            let e: &mut Vec<f32> = got.entry((ids.value(i).to_string(), frame)).or_default();
            assert_eq!(e.len(), k.value(i) as usize);
            e.push(score.value(i));
        }
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), expected_windows.keys().collect::<Vec<_>>());
    let mut d = 0f64;
    for (key, want) in &expected_windows {
        for (a, b) in got[key].iter().zip(want) {
            d = d.max((a - b).abs() as f64);
        }
    }
    assert!(d <= 1e-6, "window scores vs a direct forward of the window: {d}");
    // Clip level: max and mean over the windows.
    for b in read(&out) {
        let names: Vec<_> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["clip_id", "class_index", "mid", "score", "score_mean", "windows"]);
        let ids = b.column(0).as_string::<i32>().clone();
        let k = b.column(1).as_primitive::<Int32Type>().clone();
        let max = b.column(3).as_primitive::<Float32Type>().clone();
        let mean = b.column(4).as_primitive::<Float32Type>().clone();
        let n = b.column(5).as_primitive::<Int32Type>().clone();
        for i in 0..b.num_rows() {
            let ws: Vec<f32> = got.iter().filter(|((c, _), _)| c == ids.value(i)).map(|(_, v)| v[k.value(i) as usize]).collect();
            assert_eq!(n.value(i) as usize, ws.len());
            assert_eq!(max.value(i), ws.iter().cloned().fold(f32::MIN, f32::max));
            let m = ws.iter().map(|&x| x as f64).sum::<f64>() / ws.len() as f64;
            assert!((mean.value(i) as f64 - m).abs() < 1e-6);
        }
    }
}

#[test]
fn a_sound_in_the_last_10_s_of_a_30_s_recording_scores_high_only_in_the_last_windows() {
    let demo = demo_run();
    let root = &demo.root;
    // The eval clip and class the demo teacher recognises best: a true label it scores high, for a class it
    // scores low on the eval clips without it.
    let pick = sql_csv(
        root,
        "WITH p AS (SELECT p.clip_id, p.mid, p.score, l.mid IS NOT NULL AS positive FROM predictions_teacher p \
           JOIN clips c ON c.clip_id = p.clip_id AND c.split = 'eval' \
           LEFT JOIN labels l ON l.clip_id = p.clip_id AND l.mid = p.mid), \
         neg AS (SELECT mid, max(score) AS worst FROM p WHERE NOT positive GROUP BY mid) \
         SELECT p.clip_id, p.mid, c.audio_uri FROM p JOIN neg USING (mid) JOIN clips c USING (clip_id) \
         WHERE p.positive ORDER BY p.score - neg.worst DESC, p.clip_id LIMIT 1",
    );
    let row: Vec<&str> = pick[1].split(',').collect();
    let (mid, uri) = (row[1].to_string(), row[2]);
    let path = url::Url::parse(uri).unwrap().to_file_path().unwrap();
    let clip: Vec<f32> = hound::WavReader::open(&path).unwrap().into_samples::<i16>().map(|s| s.unwrap() as f32 / 32768.0).collect();
    assert_eq!(clip.len(), 32000, "demo clips are 2 s at 16 kHz");
    // 20 s of faint noise, then the clip five times (10 s).
    let mut x = 12345u64;
    let mut wave: Vec<f32> = (0..20 * 16000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.002
        })
        .collect();
    for _ in 0..5 {
        wave.extend_from_slice(&clip);
    }
    let dir = tempdir();
    let audio = dir.path().join("long");
    fs::create_dir_all(&audio).unwrap();
    write_wav(&audio.join("recording.wav"), &wave);
    let out = dir.path().join("p.parquet");
    let windows_out = dir.path().join("w.parquet");
    run_ok(
        psla().arg("score").arg("--checkpoint").arg(root.join("models/teacher/epoch-06.safetensors")).arg(&audio)
            .args(["--device", "cpu", "--window", "2", "--hop", "1"]).arg("--windows-out").arg(&windows_out).arg("--out").arg(&out),
    );
    let mut windows: Vec<(f64, f32)> = Vec::new();
    for b in read(&windows_out) {
        let start = b.column(1).as_primitive::<arrow::datatypes::Float64Type>().clone();
        let mids = b.column(4).as_string::<i32>().clone();
        let score = b.column(5).as_primitive::<Float32Type>().clone();
        for i in 0..b.num_rows() {
            if mids.value(i) == mid {
                windows.push((start.value(i), score.value(i)));
            }
        }
    }
    assert_eq!(windows.len(), 29, "2 s windows every 1 s over 30 s (the last ends at the end)");
    let last: Vec<f32> = windows.iter().filter(|(s, _)| *s >= 19.99).map(|w| w.1).collect();
    let first: Vec<f32> = windows.iter().filter(|(s, _)| *s + 2.0 <= 20.01).map(|w| w.1).collect();
    let (low, high) = (last.iter().cloned().fold(f32::MAX, f32::min), first.iter().cloned().fold(f32::MIN, f32::max));
    println!("class {mid}: windows in the last 10 s score >= {low:.3}, windows in the first 20 s <= {high:.3}");
    assert!(last.len() >= 8 && first.len() >= 18);
    assert!(low > high + 0.2, "the sound's windows ({low}) must score well above the rest ({high})");
}
