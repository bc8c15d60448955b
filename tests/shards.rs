//! Sharded features runs (`psla run --only features --shard K/N`): shards run at once on one root
//! (local and S3), the next plain run merges them into the tables one run writes, and the run root
//! keeps one writer's view at every commit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use psla::table::{Commit, RunRoot};

use crate::common::*;
use crate::s3::{committed, new_root, psla_s3, tables_of};

/// Known-truth audio (40 + 16 one-second clips), one of them overwritten with bytes that are not
/// audio, and a pipeline that ingests it and computes features. Returns (spec, data folder).
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let generator = dir.join("gen.toml");
    std::fs::write(
        &generator,
        format!(
            "[pipeline]\nname = \"gen\"\n[stage.demo_data]\nout = \"{}\"\nseed = 9\ntrain_clips = 40\neval_clips = 16\nclip_seconds = 1.0\n",
            data.display()
        ),
    )
    .unwrap();
    run_ok(psla().arg("run").arg(&generator).arg("--root").arg(dir.join("gen-root")));
    let mut wavs: Vec<_> = std::fs::read_dir(data.join("audio")).unwrap().map(|e| e.unwrap().path()).collect();
    wavs.sort();
    assert_eq!(wavs.len(), 56);
    std::fs::write(&wavs[0], b"this is not a wav file").unwrap();

    let spec = dir.join("shards.toml");
    std::fs::write(
        &spec,
        format!(
            r#"[pipeline]
name = "shards"

[stage.ingest]
segments = ["{d}/train_segments.csv", "{d}/eval_segments.csv"]
classes = "{d}/class_labels_indices.csv"
ontology = "{d}/ontology.json"
audio = "{d}/audio"

[stage.features]
sample_rate = 16000
"#,
            d = data.display()
        ),
    )
    .unwrap();
    (spec, data)
}

/// clip_id -> the row (all columns) of a features or rejects table.
fn rows_by_clip(root: &RunRoot, table: &str) -> BTreeMap<String, RecordBatch> {
    let data = root.read_table(table).unwrap();
    let mut out = BTreeMap::new();
    for b in &data.batches {
        let ids = b.column_by_name("clip_id").unwrap().as_string::<i32>().clone();
        for i in 0..b.num_rows() {
            assert!(out.insert(ids.value(i).to_string(), b.slice(i, 1)).is_none(), "{table}: clip {} twice", ids.value(i));
        }
    }
    out
}

/// (mel_bin, count, clips, sum, sum_sq, mean, std) of feature_stats, in bin order (overall last).
type StatsRow = (Option<i32>, i64, i64, f64, f64, f64, f64);
fn stats(root: &RunRoot) -> Vec<StatsRow> {
    let data = root.read_table("feature_stats").unwrap();
    let mut out = Vec::new();
    for b in &data.batches {
        let f = |n: &str| b.column_by_name(n).unwrap().as_primitive::<Float64Type>().clone();
        let i = |n: &str| b.column_by_name(n).unwrap().as_primitive::<Int64Type>().clone();
        let bins = b.column_by_name("mel_bin").unwrap().as_primitive::<Int32Type>().clone();
        let (count, clips, sum, sum_sq, mean, std) = (i("count"), i("clips"), f("sum"), f("sum_sq"), f("mean"), f("std"));
        for r in 0..b.num_rows() {
            let bin = (!bins.is_null(r)).then(|| bins.value(r));
            out.push((bin, count.value(r), clips.value(r), sum.value(r), sum_sq.value(r), mean.value(r), std.value(r)));
        }
    }
    out
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0), "{what}: {a} vs {b}");
}

/// The merged root holds what one run holds: the same features rows (bit for bit), the same
/// rejects, statistics equal to rounding, and no trace of the shards.
fn assert_same_as_one_run(single: &RunRoot, merged: &RunRoot, merged_dir: &Path) {
    let (a, b) = (rows_by_clip(single, "features"), rows_by_clip(merged, "features"));
    assert_eq!(a.len(), 55);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (id, row) in &a {
        assert_eq!(row, &b[id], "features of {id} differ");
    }
    let (ra, rb) = (rows_by_clip(single, "features_rejects"), rows_by_clip(merged, "features_rejects"));
    assert_eq!(ra.len(), 1);
    assert_eq!(ra, rb);
    let (sa, sb) = (stats(single), stats(merged));
    assert_eq!(sa.len(), 129);
    assert_eq!(sa.len(), sb.len());
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!((x.0, x.1, x.2), (y.0, y.1, y.2), "bin, count, clips");
        assert_eq!(x.2, 55);
        for (u, v, what) in [(x.3, y.3, "sum"), (x.4, y.4, "sum_sq"), (x.5, y.5, "mean")] {
            close(u, v, &format!("bin {:?} {what}", x.0));
        }
        // The variance is E[x^2] - E[x]^2: on a bin that is (nearly) constant in this synthetic audio
        // it is rounding noise of E[x^2], so it is compared on that scale.
        let scale = x.5 * x.5 + x.6 * x.6;
        assert!((x.6 * x.6 - y.6 * y.6).abs() <= 1e-9 * scale.max(1.0), "bin {:?} std: {} vs {}", x.0, x.6, y.6);
    }
    let manifest = merged.manifest().unwrap();
    let leftover: Vec<_> = manifest.tables.keys().chain(manifest.stages.keys()).filter(|k| k.contains("_shard_")).collect();
    assert!(leftover.is_empty(), "shard tables or records left in the manifest: {leftover:?}");
    // No file of a shard is left (an S3 server's disk may keep empty folders: S3 has none).
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { files(&p, out) } else { out.push(p) }
        }
    }
    let mut on_disk = Vec::new();
    files(&merged_dir.join("tables"), &mut on_disk);
    on_disk.retain(|p| p.to_string_lossy().contains("_shard_"));
    assert!(on_disk.is_empty(), "shard folders left: {on_disk:?}");
}

fn shard(base: Command, spec: &Path, root: &str, k: u64, n: u64) -> Command {
    let mut c = base;
    c.arg("run").arg(spec).args(["--root", root, "--only", "features", "--shard", &format!("{k}/{n}")]);
    c
}

#[test]
fn shards_run_at_once_on_an_s3_root_and_merge_into_what_one_run_writes() {
    let dir = tempdir();
    let (spec, _) = setup(dir.path());
    let single = dir.path().join("single");
    let one = stderr(&run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&single)));
    assert!(!one.contains("merged"), "{one}");

    let (url, on_disk) = new_root("shards");
    // Shards before their input is there: an error naming the table and what to run.
    let err = run_err(&mut shard(psla_s3(), &spec, &url, 1, 3));
    assert!(err.contains("clips") && err.contains("--only"), "{err}");

    run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &url, "--only", "ingest"]));
    // Three shards at once, as an array job would start them: each commits on its own generation.
    let children: Vec<_> = (1..=3).map(|k| shard(psla_s3(), &spec, &url, k, 3).spawn().unwrap()).collect();
    for (k, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "shard {}/3 failed:\n{}", k + 1, stderr(&out));
    }
    let manifest = committed(&on_disk);
    let mut rows = 0;
    let mut rejects = 0;
    for k in 1..=3 {
        let t = &manifest["tables"][format!("features_shard_{k}_of_3")];
        assert!(t.is_object(), "shard {k} not committed: {manifest}");
        rows += t["rows"].as_u64().unwrap();
        rejects += manifest["tables"][format!("features_rejects_shard_{k}_of_3")]["rows"].as_u64().unwrap();
        assert_eq!(manifest["stages"][format!("features_shard_{k}_of_3")]["kind"], "features");
    }
    assert_eq!((rows, rejects), (55, 1));
    // A shard that is up to date is skipped.
    let again = stderr(&run_ok(&mut shard(psla_s3(), &spec, &url, 2, 3)));
    assert!(again.contains("up to date") && !again.contains("running"), "{again}");

    let dry = run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &url, "--dry-run"]));
    let plan = stdout(&dry) + &stderr(&dry);
    assert!(plan.contains("its 3 shards are committed and would be merged"), "{plan}");
    let merge = stderr(&run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &url])));
    assert!(merge.contains("merged 3 shards") && merge.contains("nothing recomputed"), "{merge}");

    let single_root = RunRoot::open(single.to_str().unwrap()).unwrap();
    assert_same_as_one_run(&single_root, &RunRoot::open(on_disk.to_str().unwrap()).unwrap(), &on_disk);
    // The merged stage is up to date like one that ran whole.
    let rerun = stderr(&run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &url])));
    assert!(!rerun.contains("running") && !rerun.contains("merged"), "{rerun}");
}

#[test]
fn missing_shards_are_named_and_shards_on_a_local_root_merge_too() {
    let dir = tempdir();
    let (spec, _) = setup(dir.path());
    let single = dir.path().join("single");
    run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&single));
    let root = dir.path().join("sharded");
    let r = root.to_str().unwrap();

    // --shard is for a features stage named with --only.
    let err = run_err(psla().arg("run").arg(&spec).args(["--root", r, "--shard", "1/2"]));
    assert!(err.contains("--only"), "{err}");
    let err = run_err(psla().arg("run").arg(&spec).args(["--root", r, "--only", "ingest", "--shard", "1/2"]));
    assert!(err.contains("--shard applies to a features stage") && err.contains("`ingest`"), "{err}");
    let err = run_err(psla().arg("run").arg(&spec).args(["--root", r, "--only", "features", "--shard", "3/2"]));
    assert!(err.contains("3/2") && err.contains("K/N"), "{err}");

    run_ok(psla().arg("run").arg(&spec).args(["--root", r, "--only", "ingest"]));
    run_ok(&mut shard(psla(), &spec, r, 2, 4));
    run_ok(&mut shard(psla(), &spec, r, 4, 4));
    let err = run_err(psla().arg("run").arg(&spec).args(["--root", r]));
    assert!(err.contains("shards 2, 4 of 4 are committed") && err.contains("shards 1, 3 are not"), "{err}");
    assert!(err.contains("--shard K/4") && err.contains("--force"), "{err}");

    // The two missing shards at once, then the merge.
    let children: Vec<_> = [1, 3].into_iter().map(|k| shard(psla(), &spec, r, k, 4).spawn().unwrap()).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let merge = stderr(&run_ok(psla().arg("run").arg(&spec).args(["--root", r])));
    assert!(merge.contains("merged 4 shards"), "{merge}");
    let single_root = RunRoot::open(single.to_str().unwrap()).unwrap();
    assert_same_as_one_run(&single_root, &RunRoot::open(r).unwrap(), &root);

    // A shard rerun after the merge (a retried array task) leaves tables nothing merges: `psla tables
    // --drop` removes them, with the shard's stage record, and the root is as after the merge.
    run_ok(&mut shard(psla(), &spec, r, 2, 4));
    let tables = |root: &Path| tables_of(&committed(root)).into_iter().map(|t| t.0).collect::<Vec<_>>();
    assert!(tables(&root).iter().any(|t| t.contains("_shard_")), "{:?}", tables(&root));
    let err = run_err(psla().args(["tables", "--root", r, "--drop", "no_such_*"]));
    assert!(err.contains("no table matches `no_such_*`") && err.contains("features_shard_2_of_4"), "{err}");
    let dropped = stderr(&run_ok(psla().args(["tables", "--root", r, "--drop", "*_shard_*"])));
    assert!(dropped.contains("dropped 3 tables") && dropped.contains("features_shard_2_of_4"), "{dropped}");
    assert!(dropped.contains("records of stages features_shard_2_of_4"), "{dropped}");
    let manifest = committed(&root);
    let left: Vec<_> = tables(&root).into_iter().chain(manifest["stages"].as_object().unwrap().keys().cloned()).filter(|k| k.contains("_shard_")).collect();
    assert!(left.is_empty(), "{left:?}");
    assert_same_as_one_run(&single_root, &RunRoot::open(r).unwrap(), &root);
    let rerun = stderr(&run_ok(psla().arg("run").arg(&spec).args(["--root", r])));
    assert!(rerun.contains("nothing to do"), "dropping the shard tables leaves the pipeline up to date: {rerun}");
    // A dropped output makes its stage run again (whole, here), and it writes what one run writes.
    run_ok(psla().args(["tables", "--root", r, "--drop", "features"]));
    assert!(!tables(&root).contains(&"features".to_string()));
    let rerun = stderr(&run_ok(psla().arg("run").arg(&spec).args(["--root", r])));
    assert!(rerun.contains("1 stages ran") && rerun.contains("features: 56 rows in"), "{rerun}");
    assert_eq!(committed(&root)["tables"]["features"]["content_hash"], committed(&single)["tables"]["features"]["content_hash"]);

    // Shards of other parameters are not merged into this stage (it stays up to date), and the
    // pipeline they belong to merges them.
    let other = std::fs::read_to_string(&spec).unwrap().replace("sample_rate = 16000", "sample_rate = 16000\ndtype = \"f16\"");
    let spec2 = dir.path().join("f16.toml");
    std::fs::write(&spec2, other).unwrap();
    for k in 1..=2 {
        run_ok(&mut shard(psla(), &spec2, r, k, 2));
    }
    let plain = stderr(&run_ok(psla().arg("run").arg(&spec).args(["--root", r])));
    assert!(!plain.contains("merged") && !plain.contains("running"), "{plain}");
    let merged2 = stderr(&run_ok(psla().arg("run").arg(&spec2).args(["--root", r])));
    assert!(merged2.contains("merged 2 shards"), "{merged2}");
}

fn tiny_table(root: &RunRoot, name: &str, value: i64) -> psla::table::StagedTable {
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "v",
        arrow::datatypes::DataType::Int64,
        false,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(arrow::array::Int64Array::from(vec![value]))]).unwrap();
    root.stage_table(name, schema, &[batch], "test").unwrap()
}

#[test]
fn commits_of_disjoint_tables_from_many_writers_all_land_and_a_replaced_input_is_a_conflict() {
    let dir = tempdir();
    let root = RunRoot::open(dir.path().to_str().unwrap()).unwrap();
    root.commit(vec![tiny_table(&root, "base", 0)], None).unwrap();
    std::thread::scope(|s| {
        for w in 0..8 {
            let root = root.clone();
            s.spawn(move || {
                for i in 0..5 {
                    let t = tiny_table(&root, &format!("w{w}_{i}"), w * 10 + i);
                    root.commit(vec![t], None).unwrap();
                }
            });
        }
    });
    let manifest = root.manifest().unwrap();
    let names: BTreeSet<_> = manifest.tables.keys().cloned().collect();
    assert_eq!(names.len(), 41, "{names:?}");
    assert_eq!(manifest.generation, 41);
    for w in 0..8 {
        for i in 0..5 {
            let data = root.read_table(&format!("w{w}_{i}")).unwrap();
            assert_eq!(data.batches[0].column(0).as_primitive::<Int64Type>().value(0), w * 10 + i);
        }
    }

    // A stage that read `base` while another writer replaced it commits nothing.
    let seen = manifest.tables["base"].content_hash.clone();
    root.commit(vec![tiny_table(&root, "base", 1)], None).unwrap();
    let record = psla::table::StageRecord {
        kind: "test".into(),
        fingerprint: "f".into(),
        inputs: [("base".to_string(), seen)].into_iter().collect(),
        outputs: vec!["derived".into()],
        rows_in: 1,
        rows_out: 1,
        rejects: 0,
        seconds: 0.0,
        finished_at: String::new(),
        psla_version: String::new(),
    };
    let change = Commit { tables: vec![tiny_table(&root, "derived", 2)], stage: Some(("derive".into(), record)), ..Default::default() };
    let err = root.apply(change).unwrap_err().to_string();
    assert!(err.contains("base") && err.contains("stage `derive` read it") && err.contains("rerun"), "{err}");
    let after = root.manifest().unwrap();
    assert!(!after.tables.contains_key("derived") && !after.stages.contains_key("derive"));
    assert_eq!(after.generation, 42);
}
