//! The features stage and `psla features`: torchaudio's goldens through the whole stage, rejects,
//! mixed folders, the tensor column, float16, shards, resuming and statistics.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Int32Type, Int64Type};

use crate::audio_golden::{errors, goldens};
use crate::common::*;

fn reference_audio() -> PathBuf {
    shared().join("reference/audio")
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// One row of a features file.
#[derive(Debug)]
struct Row {
    audio_uri: String,
    sample_rate: i32,
    channels: i32,
    num_samples: i64,
    frames: i32,
    fbank: Vec<f32>,
}

/// clip_id -> row, with the fbank flattened to f32 (float16 widened).
fn features(path: &Path) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    for b in read(path) {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (ids, uris) = (s("clip_id"), s("audio_uri"));
        let i32c = |n: &str| b.column_by_name(n).unwrap().as_primitive::<Int32Type>().clone();
        let fbank = b.column_by_name("fbank").unwrap().as_list::<i32>().clone();
        for i in 0..b.num_rows() {
            let rows = fbank.value(i);
            let rows = rows.as_fixed_size_list();
            assert_eq!(rows.value_length(), 128);
            let values = arrow::compute::cast(rows.values(), &DataType::Float32).unwrap();
            let row = Row {
                audio_uri: uris.value(i).to_string(),
                sample_rate: i32c("sample_rate").value(i),
                channels: i32c("channels").value(i),
                num_samples: b.column_by_name("num_samples").unwrap().as_primitive::<Int64Type>().value(i),
                frames: i32c("frames").value(i),
                fbank: values.as_primitive::<Float32Type>().values().to_vec(),
            };
            assert_eq!(row.fbank.len(), row.frames as usize * 128, "{}", ids.value(i));
            assert!(out.insert(ids.value(i).to_string(), row).is_none(), "duplicate {}", ids.value(i));
        }
    }
    out
}

/// clip_id -> reason.
fn rejects(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for b in read(path) {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (ids, reasons) = (s("clip_id"), s("reason"));
        for i in 0..b.num_rows() {
            out.insert(ids.value(i).to_string(), reasons.value(i).to_string());
        }
    }
    out
}

fn features_cmd(inputs: &[&Path], out: &Path) -> std::process::Command {
    let mut c = psla();
    c.arg("features").args(inputs).arg("--out").arg(out);
    c
}

fn rejects_path(out: &Path) -> PathBuf {
    out.with_file_name(format!("{}.rejects.parquet", out.file_stem().unwrap().to_string_lossy()))
}

/// Compare a features file with the goldens of one variant, with the bounds of issue 3.
fn check_against_goldens(out: &Path, variant: &str, keep_truncated: bool) {
    let feats = features(out);
    let rej = rejects(&rejects_path(out));
    let mut compared = 0;
    for g in goldens().into_iter().filter(|g| g.variant == variant) {
        if g.file == "not_audio.wav" || (g.file == "truncated_16k.wav" && !keep_truncated) || g.frames == 0 {
            assert!(rej.contains_key(&g.file), "{} should be rejected; rejects: {rej:?}", g.file);
            assert!(!feats.contains_key(&g.file));
            continue;
        }
        let row = feats.get(&g.file).unwrap_or_else(|| panic!("{} missing; rejects: {rej:?}", g.file));
        assert_eq!(row.frames as usize, g.frames, "{} {variant}: frames", g.file);
        let (mean, max, _) = errors(&row.fbank, &g.fbank);
        let resampled = g.sample_rate as i32 != row.sample_rate;
        let ok = if g.file.ends_with(".mp3") {
            mean <= 0.1
        } else if resampled {
            max <= 0.1
        } else {
            mean <= 1e-3 && max <= 5e-3
        };
        assert!(ok, "{} {variant}: mean|d| {mean:.3e} max|d| {max:.3e}", g.file);
        compared += 1;
    }
    assert!(compared >= 8, "only {compared} clips compared");
}

#[test]
fn reference_clips_match_torchaudio_through_the_stage_and_bad_ones_are_rejected_with_reasons() {
    let dir = tempdir();
    let out = dir.path().join("f.parquet");
    let res = run_ok(&mut features_cmd(&[&reference_audio()], &out).args(["--threads", "2"]));
    let line = stderr(&res);
    assert!(line.starts_with("features: 9 clips") && line.contains("3 rejects"), "{line}");
    check_against_goldens(&out, "16k", false);
    let rej = rejects(&rejects_path(&out));
    assert_eq!(rej.keys().collect::<Vec<_>>(), ["not_audio.wav", "short_20ms_16k.wav", "truncated_16k.wav"]);
    assert!(rej["not_audio.wav"].contains("not an audio file"), "{rej:?}");
    assert!(rej["short_20ms_16k.wav"].contains("too short"), "{rej:?}");
    let t = &rej["truncated_16k.wav"];
    assert!(t.contains("truncated") && t.contains("64493") && t.contains("1478"), "{t}");
    // The source's own rate and channels are recorded.
    let feats = features(&out);
    let stereo = &feats["tones_44k1_stereo.wav"];
    assert_eq!((stereo.sample_rate, stereo.channels, stereo.num_samples), (44100, 2, 110250));
    assert!(stereo.audio_uri.starts_with("file:///") && stereo.audio_uri.ends_with("/tones_44k1_stereo.wav"));
    assert!(!dir.path().join("f.parquet.partial").exists(), "the staging folder is removed");
}

#[test]
fn native_rate_and_keep_truncated_match_their_goldens() {
    let dir = tempdir();
    let out = dir.path().join("native.parquet");
    run_ok(&mut features_cmd(&[&reference_audio()], &out).args(["--native-rate", "--keep-truncated"]));
    check_against_goldens(&out, "native", true);
    let feats = features(&out);
    assert_eq!(feats["speech_8k.wav"].sample_rate, 8000);
    assert!(feats.contains_key("truncated_16k.wav"), "--keep-truncated keeps the part that is there");
}

/// A float32 WAV (hound) of `samples` at 16 kHz.
fn write_float_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec { channels: 1, sample_rate: 16000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

fn tone(n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.3 * (i as f64 * 0.2).sin()) as f32).collect()
}

#[test]
fn a_folder_mixing_good_and_bad_files_keeps_every_good_one_and_rejects_every_bad_one() {
    let dir = tempdir();
    let audio = dir.path().join("audio");
    fs::create_dir_all(audio.join("sub")).unwrap();
    let reference = reference_audio();
    fs::copy(reference.join("speech_16k.wav"), audio.join("a.wav")).unwrap();
    fs::copy(reference.join("pinknoise_16k.flac"), audio.join("a.flac")).unwrap();
    fs::copy(reference.join("speech_16k.mp3"), audio.join("sub/speech.MP3")).unwrap();
    write_float_wav(&audio.join("sub/tone.wav"), &tone(8000));
    // Bad ones.
    fs::write(audio.join("empty.wav"), b"").unwrap();
    fs::write(audio.join("text.wav"), b"this is not audio at all, just some text in a file").unwrap();
    let mut nan = tone(8000);
    nan[1234] = f32::NAN;
    write_float_wav(&audio.join("nan.wav"), &nan);
    write_float_wav(&audio.join("short.wav"), &tone(399));
    let mut flac = b"fLaC".to_vec();
    flac.extend(std::iter::repeat_n(0x5Au8, 300));
    fs::write(audio.join("corrupt.flac"), flac).unwrap();
    let whole = fs::read(reference.join("speech_16k.wav")).unwrap();
    fs::write(audio.join("sub/cut.wav"), &whole[..whole.len() / 2]).unwrap();
    // Not audio by name: ignored, not rejected.
    fs::write(audio.join("README.txt"), b"notes").unwrap();
    fs::write(audio.join(".hidden.wav"), b"").unwrap();

    let out = dir.path().join("f.parquet");
    let line = stderr(&run_ok(&mut features_cmd(&[&audio], &out).args(["--threads", "3"])));
    let feats = features(&out);
    assert_eq!(
        feats.keys().collect::<Vec<_>>(),
        ["a.flac", "a.wav", "sub/speech.MP3", "sub/tone.wav"],
        "clip ids are relative paths with their extension; {line}"
    );
    let rej = rejects(&rejects_path(&out));
    let expect = [
        ("corrupt.flac", "corrupt"),
        ("empty.wav", "empty"),
        ("nan.wav", "NaN"),
        ("short.wav", "too short"),
        ("sub/cut.wav", "truncated"),
        ("text.wav", "not an audio file"),
    ];
    assert_eq!(rej.keys().map(String::as_str).collect::<Vec<_>>(), expect.iter().map(|e| e.0).collect::<Vec<_>>(), "{rej:?}");
    for (id, word) in expect {
        assert!(rej[id].contains(word), "{id}: {:?} should mention {word:?}", rej[id]);
    }
    assert!(rej["nan.wav"].contains("sample 1234"), "{:?}", rej["nan.wav"]);
    // The same file gives the same features whatever its name or folder.
    let single = dir.path().join("one.parquet");
    run_ok(&mut features_cmd(&[&audio.join("a.wav")], &single));
    assert_eq!(features(&single)["a.wav"].fbank, feats["a.wav"].fbank);
}

#[test]
fn a_missing_input_is_an_error_naming_it() {
    let dir = tempdir();
    let err = run_err(&mut features_cmd(&[&dir.path().join("nope")], &dir.path().join("f.parquet")));
    assert!(err.contains("nope") && err.contains("no such file or folder"), "{err}");
    let err = run_err(&mut features_cmd(&[&reference_audio()], &dir.path().join("f.parquet")).args(["--shard", "3/2"]));
    assert!(err.contains("K/N"), "{err}");
}

#[test]
fn the_tensor_column_round_trips_and_every_reader_reads_it() {
    let dir = tempdir();
    let out = dir.path().join("f.parquet");
    run_ok(&mut features_cmd(&[&reference_audio()], &out));
    // Schema: List<FixedSizeList<Float32, 128>>, frames as int32.
    let batches = read(&out);
    let schema = batches[0].schema();
    let DataType::List(row) = schema.field_with_name("fbank").unwrap().data_type() else { panic!("fbank is not a list") };
    assert_eq!(row.data_type(), &DataType::FixedSizeList(std::sync::Arc::new(arrow::datatypes::Field::new("item", DataType::Float32, false)), 128));
    assert_eq!(schema.field_with_name("frames").unwrap().data_type(), &DataType::Int32);
    // Values are exactly what the library computes for the clip.
    let feats = features(&out);
    for (id, row) in &feats {
        let decoded = psla::audio::decode::decode_file(&reference_audio().join(id)).unwrap();
        let (fbank, frames) = psla::audio::psla_fbank(&decoded, Some(16000)).unwrap();
        assert_eq!(frames, row.frames as usize, "{id}");
        assert!(fbank == row.fbank, "{id}: stored values differ from computed ones");
    }
    // pyarrow, Polars and DuckDB see the same shapes and values.
    let script = r#"
import sys, json
import pyarrow.parquet as pq, polars as pl, duckdb
f = sys.argv[1]
t = pq.read_table(f)
p = pl.read_parquet(f)
d = duckdb.sql(f"SELECT clip_id, len(fbank), fbank[2][5] FROM read_parquet('{f}') ORDER BY clip_id").fetchall()
print(json.dumps({
  "pyarrow": {r["clip_id"]: [len(r["fbank"]), r["fbank"][1][4]] for r in t.select(["clip_id", "fbank"]).to_pylist()},
  "polars": {r[0]: [len(r[1]), float(r[1][1][4])] for r in p.select(["clip_id", "fbank"]).iter_rows()},
  "duckdb": {r[0]: [r[1], r[2]] for r in d},
}))
"#;
    let py = dir.path().join("check.py");
    fs::write(&py, script).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&run_ok(std::process::Command::new(python()).arg(&py).arg(&out)))).unwrap();
    for reader in ["pyarrow", "polars", "duckdb"] {
        let got = v[reader].as_object().unwrap();
        assert_eq!(got.len(), feats.len(), "{reader}");
        for (id, row) in &feats {
            let r = &got[id];
            assert_eq!(r[0].as_u64(), Some(row.frames as u64), "{reader} {id}");
            assert_eq!(r[1].as_f64().unwrap() as f32, row.fbank[128 + 4], "{reader} {id}");
        }
    }
}

#[test]
fn float16_storage_halves_the_values_and_keeps_them_within_rounding() {
    let dir = tempdir();
    let (f32_out, f16_out) = (dir.path().join("f32.parquet"), dir.path().join("f16.parquet"));
    run_ok(&mut features_cmd(&[&reference_audio()], &f32_out));
    run_ok(&mut features_cmd(&[&reference_audio()], &f16_out).args(["--dtype", "f16"]));
    let (a, b) = (features(&f32_out), features(&f16_out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (id, row) in &a {
        for (x, y) in row.fbank.iter().zip(&b[id].fbank) {
            assert!((x - y).abs() <= x.abs() * 1e-3 + 1e-4, "{id}: {x} vs {y}");
        }
    }
    let DataType::List(row) = read(&f16_out)[0].schema().field_with_name("fbank").unwrap().data_type().clone() else { panic!() };
    assert!(matches!(row.data_type(), DataType::FixedSizeList(v, 128) if v.data_type() == &DataType::Float16));
    // Writing float16 into an existing float32 file is refused rather than mixing types.
    let err = run_err(&mut features_cmd(&[&reference_audio()], &f32_out).args(["--dtype", "f16"]));
    assert!(err.contains("another schema"), "{err}");
}

#[test]
fn shards_partition_the_clips_by_a_stable_hash() {
    let dir = tempdir();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut total = 0;
    for k in 1..=3 {
        let out = dir.path().join(format!("s{k}.parquet"));
        run_ok(&mut features_cmd(&[&reference_audio()], &out).args(["--shard", &format!("{k}/3")]));
        let ids: Vec<String> = features(&out).into_keys().chain(rejects(&rejects_path(&out)).into_keys()).collect();
        for id in &ids {
            assert_eq!(psla::stages::features::shard_of(id, 3), k, "{id} in shard {k}");
        }
        total += ids.len();
        seen.extend(ids);
    }
    assert_eq!(total, 12, "every reference file in exactly one shard");
    assert_eq!(seen.len(), 12);
    assert!(psla::stages::features::shard_of("a", 1) == 1);
}

#[test]
fn a_rerun_keeps_the_clips_already_written_and_adds_only_new_ones() {
    let dir = tempdir();
    let audio = dir.path().join("audio");
    fs::create_dir_all(&audio).unwrap();
    for f in ["speech_16k.wav", "chirp_16k.wav"] {
        fs::copy(reference_audio().join(f), audio.join(f)).unwrap();
    }
    let out = dir.path().join("f.parquet");
    run_ok(&mut features_cmd(&[&audio], &out));
    let first = features(&out);
    fs::copy(reference_audio().join("pinknoise_16k.flac"), audio.join("pinknoise_16k.flac")).unwrap();
    let line = stderr(&run_ok(&mut features_cmd(&[&audio], &out)));
    assert!(line.contains("3 clips (1 new, 2 kept)"), "{line}");
    let second = features(&out);
    assert_eq!(second.len(), 3);
    for (id, row) in &first {
        assert_eq!(row.fbank, second[id].fbank, "{id} kept as it was");
    }
    let again = stderr(&run_ok(&mut features_cmd(&[&audio], &out)));
    assert!(again.contains("3 clips (0 new, 3 kept)"), "{again}");
}

#[test]
fn feature_stats_agree_with_the_stored_values() {
    let dir = tempdir();
    let out = dir.path().join("f.parquet");
    let stats = dir.path().join("stats.parquet");
    run_ok(&mut features_cmd(&[&reference_audio()], &out).arg("--stats").arg(&stats));
    let feats = features(&out);
    let all: Vec<f64> = feats.values().flat_map(|r| r.fbank.iter().map(|&v| f64::from(v))).collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let std = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    // PSLA's figures: the mean over clips of each clip's mean and unbiased std.
    let per_clip: Vec<(f64, f64)> = feats
        .values()
        .map(|r| {
            let n = r.fbank.len() as f64;
            let m = r.fbank.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let s = (r.fbank.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            (m, s)
        })
        .collect();
    let psla_mean = per_clip.iter().map(|p| p.0).sum::<f64>() / per_clip.len() as f64;
    let psla_std = per_clip.iter().map(|p| p.1).sum::<f64>() / per_clip.len() as f64;
    let b = &read(&stats)[0];
    assert_eq!(b.num_rows(), 129);
    let f = |n: &str| b.column_by_name(n).unwrap().as_primitive::<arrow::datatypes::Float64Type>().clone();
    let overall = 128;
    assert!(b.column_by_name("mel_bin").unwrap().is_null(overall));
    assert_eq!(b.column_by_name("count").unwrap().as_primitive::<Int64Type>().value(overall), all.len() as i64);
    assert!((f("mean").value(overall) - mean).abs() < 1e-9, "{} vs {mean}", f("mean").value(overall));
    assert!((f("std").value(overall) - std).abs() < 1e-6);
    assert!((f("psla_mean").value(overall) - psla_mean).abs() < 1e-9);
    assert!((f("psla_std").value(overall) - psla_std).abs() < 1e-6);
    // Bin 0 over its own column.
    let bin0: Vec<f64> = feats.values().flat_map(|r| r.fbank.chunks(128).map(|row| f64::from(row[0]))).collect();
    assert!((f("mean").value(0) - bin0.iter().sum::<f64>() / bin0.len() as f64).abs() < 1e-9);
}

#[test]
fn a_resumable_writer_keeps_completed_files_after_a_kill_and_drops_the_rest() {
    use psla::table::RunRoot;
    let dir = tempdir();
    let root = RunRoot::open(&dir.path().to_string_lossy()).unwrap();
    let schema = psla::stages::features::rejects_schema();
    let batch = rejects_of;
    let killed = {
        let (mut w, done) = root.table_writer_resumable("t", schema.clone(), "test").unwrap();
        assert!(done.is_empty());
        w.write(&batch(&["a", "b"])).unwrap();
        w.checkpoint().unwrap();
        w.write(&batch(&["c"])).unwrap();
        w.checkpoint().unwrap();
        w.write(&batch(&["d"])).unwrap();
        // Killed here: "d" was never completed. Simulate a file written after the last journal update.
        fs::write(dir.path().join(w.dir()).join("part-00099.parquet"), b"half").unwrap();
        dir.path().join(w.dir())
    };
    let (w, done) = root.table_writer_resumable("t", schema.clone(), "test").unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(w.rows(), 3);
    // The recorded files are taken over into the new writer's own folder; the unrecorded one is not.
    assert!(done.iter().all(|f| f.starts_with(&format!("{}/", w.dir()))), "{done:?} not in {}", w.dir());
    assert!(!dir.path().join(w.dir()).join("part-00099.parquet").exists());
    let ids: Vec<String> = done
        .iter()
        .flat_map(|f| root.read_parquet_file(f).unwrap())
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(String::from).collect::<Vec<_>>())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let staged = w.finish().unwrap();
    assert_eq!(staged.entry.rows, 3);
    root.commit(vec![staged], None).unwrap();
    assert_eq!(root.read_table("t").unwrap().num_rows(), 3);
    let committed = root.manifest().unwrap().tables["t"].dir.clone();
    assert!(!dir.path().join(&committed).join("_progress.json").exists(), "the journal is gone after finishing");
    assert!(!killed.exists(), "the killed writer's folder is removed by the commit");
    // A journal for another schema is discarded.
    let (_, done) = root.table_writer_resumable("t", psla::stages::features::stats_schema(), "test").unwrap();
    assert!(done.is_empty());
}
