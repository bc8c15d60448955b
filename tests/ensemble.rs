//! Prediction ensembles (sql/ensemble/): the SQL mean equals a direct computation; members that do not
//! score the same (clip, class) pairs are refused with an example.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};
use psla::table::TableData;
use psla::table::store::{read_parquet_path, write_parquet_path};

use crate::common::*;

/// A predictions file with the given rows (clip_id, mid, score).
fn write_predictions(path: &Path, rows: &[(String, String, f32)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("clip_id", DataType::Utf8, false),
        Field::new("mid", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    write_parquet_path(path, &TableData { schema, batches: vec![batch] }).unwrap();
}

/// Deterministic scores in [0, 1) for 50 clips x 7 classes, a different sequence per `seed`.
fn model_rows(seed: u64) -> Vec<(String, String, f32)> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut rows = Vec::new();
    for clip in 0..50 {
        for class in 0..7 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            rows.push((format!("clip{clip:03}"), format!("/m/c{class}"), ((x >> 40) as f32) / (1u64 << 24) as f32));
        }
    }
    rows
}

fn read_scores(path: &Path) -> BTreeMap<(String, String), f32> {
    let t = read_parquet_path(path).unwrap();
    let mut out = BTreeMap::new();
    for b in &t.batches {
        let (c, m) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        let s = b.column(2).as_primitive::<Float32Type>();
        for i in 0..b.num_rows() {
            out.insert((c.value(i).to_string(), m.value(i).to_string()), s.value(i));
        }
    }
    out
}

#[test]
fn averaged_predictions_equal_the_direct_mean_weighted_or_not() {
    let dir = tempdir();
    let members: Vec<_> = (1..=3).map(|s| (dir.path().join(format!("m{s}.parquet")), model_rows(s))).collect();
    for (p, rows) in &members {
        write_predictions(p, rows);
    }
    let out = dir.path().join("ens.parquet");
    let mut cmd = psla();
    cmd.args(["ensemble", "average-predictions"]);
    for (p, _) in &members {
        cmd.arg("--predictions").arg(p);
    }
    let log = stderr(&run_ok(cmd.arg("--out").arg(&out)));
    assert!(log.contains("mean of 3 members: 350"), "{log}");
    let got = read_scores(&out);
    assert_eq!(got.len(), 350);
    for (i, (c, m, _)) in members[0].1.iter().enumerate() {
        let direct = members.iter().map(|(_, r)| r[i].2 as f64).sum::<f64>() / 3.0;
        let ours = got[&(c.clone(), m.clone())] as f64;
        assert!((ours - direct).abs() <= 1e-7, "{c} {m}: {ours} vs {direct}");
    }

    // Weighted: 3:1 between two members.
    let mut cmd = psla();
    cmd.args(["ensemble", "average-predictions", "--predictions"]).arg(&members[0].0).arg("--predictions").arg(&members[1].0);
    run_ok(cmd.args(["--weights", "3,1", "--out"]).arg(&out));
    let got = read_scores(&out);
    for (i, (c, m, _)) in members[0].1.iter().enumerate() {
        let direct = (3.0 * members[0].1[i].2 as f64 + members[1].1[i].2 as f64) / 4.0;
        assert!((got[&(c.clone(), m.clone())] as f64 - direct).abs() <= 1e-7);
    }
}

#[test]
fn members_that_do_not_score_the_same_pairs_are_refused_with_an_example() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_predictions(&a, &model_rows(1));
    let mut missing = model_rows(2);
    missing.retain(|(c, m, _)| !(c == "clip007" && m == "/m/c3"));
    write_predictions(&b, &missing);
    let out = dir.path().join("ens.parquet");
    let run = |b: &Path| {
        let mut cmd = psla();
        cmd.args(["ensemble", "average-predictions", "--predictions"]).arg(&a).arg("--predictions").arg(b);
        run_err(cmd.arg("--out").arg(&out))
    };
    let err = run(&b);
    assert!(err.contains("clip clip007 class /m/c3 is scored by 1 of the 2 members"), "{err}");
    assert!(!out.exists(), "nothing is written when the members disagree");

    let mut dup = model_rows(2);
    dup.push(("clip010".into(), "/m/c0".into(), 0.5));
    write_predictions(&b, &dup);
    let err = run(&b);
    assert!(err.contains("clip clip010 class /m/c0 is scored more than once by a member"), "{err}");

    let mut cmd = psla();
    cmd.args(["ensemble", "average-predictions", "--predictions"]).arg(&a).arg("--predictions").arg(&a);
    let err = run_err(cmd.args(["--weights", "1", "--out"]).arg(&out));
    assert!(err.contains("1 weights given for 2 members"), "{err}");
    let mut cmd = psla();
    let err = run_err(cmd.args(["ensemble", "average-predictions", "--predictions"]).arg(&a).arg("--out").arg(&out));
    assert!(err.contains("at least two members"), "{err}");
}

/// A checkpoint with an f32 weight, an f64 statistic and an i64 counter, and metadata `epoch`.
fn write_checkpoint(path: &Path, w: &[f32], stat: f64, count: i64, epoch: u32) {
    use safetensors::tensor::{Dtype, TensorView};
    let wb: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let sb = stat.to_le_bytes().to_vec();
    let cb = count.to_le_bytes().to_vec();
    let views = vec![
        ("bn.num_batches_tracked".to_string(), TensorView::new(Dtype::I64, vec![], &cb).unwrap()),
        ("bn.running_var".to_string(), TensorView::new(Dtype::F64, vec![1], &sb).unwrap()),
        ("conv.weight".to_string(), TensorView::new(Dtype::F32, vec![w.len()], &wb).unwrap()),
    ];
    let meta = std::collections::HashMap::from([("epoch".to_string(), epoch.to_string())]);
    std::fs::write(path, safetensors::tensor::serialize(views, &Some(meta)).unwrap()).unwrap();
}

fn read_checkpoint(path: &Path) -> (Vec<f32>, f64, i64, std::collections::HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("conv.weight").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let s = f64::from_le_bytes(st.tensor("bn.running_var").unwrap().data().try_into().unwrap());
    let c = i64::from_le_bytes(st.tensor("bn.num_batches_tracked").unwrap().data().try_into().unwrap());
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    (w, s, c, header.metadata().clone().unwrap())
}

#[test]
fn weight_averaging_is_the_exact_mean_and_psla_compat_counts_the_first_twice() {
    let dir = tempdir();
    let (a, b, c) = (dir.path().join("e1.safetensors"), dir.path().join("e2.safetensors"), dir.path().join("e3.safetensors"));
    write_checkpoint(&a, &[1.0, -2.0, 0.1], 0.5, 10, 1);
    write_checkpoint(&b, &[3.0, 2.0, 0.2], 1.5, 20, 2);
    write_checkpoint(&c, &[5.0, 6.0, 0.6], 4.0, 31, 3);
    let out = dir.path().join("wa.safetensors");

    let log = stderr(&run_ok(psla().args(["ensemble", "average-weights", "--checkpoints"]).arg(&a).arg(&b).arg("--out").arg(&out)));
    assert!(log.contains("mean of 2 checkpoints (3 tensors, 5 values)"), "{log}");
    let (w, s, n, meta) = read_checkpoint(&out);
    assert_eq!(w, vec![2.0, 0.0, ((0.1f32 as f64 + 0.2f32 as f64) / 2.0) as f32]);
    assert_eq!((s, n), (1.0, 15));
    assert_eq!(meta["epoch"], "2", "the metadata is the last checkpoint's");
    assert_eq!(meta["average"], "mean");
    assert!(meta["averaged_from"].contains("e1.safetensors") && meta["averaged_from"].contains("e2.safetensors"));

    // PSLA's wa(): sdA = first; for every epoch first..last: sdA += sd; divide by (count + 1).
    run_ok(psla().args(["ensemble", "average-weights", "--psla-compat", "--checkpoints"]).arg(&a).arg(&b).arg(&c).arg("--out").arg(&out));
    let (w, s, n, meta) = read_checkpoint(&out);
    assert_eq!(w[0], (2.0 * 1.0 + 3.0 + 5.0) / 4.0);
    assert_eq!(w[1], (2.0 * -2.0 + 2.0 + 6.0) / 4.0);
    assert_eq!(s, (2.0 * 0.5 + 1.5 + 4.0) / 4.0);
    assert_eq!(n, (2 * 10 + 20 + 31) / 4, "integers: the mean truncated toward zero");
    assert_eq!(meta["average"], "psla-compat");

    // Mismatched checkpoints name the file and the key.
    write_checkpoint(&c, &[5.0, 6.0], 4.0, 31, 3);
    let err = run_err(psla().args(["ensemble", "average-weights", "--checkpoints"]).arg(&a).arg(&c).arg("--out").arg(&out));
    assert!(err.contains("e3.safetensors") && err.contains("tensor `conv.weight` is F32 [2]"), "{err}");
}
