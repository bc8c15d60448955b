//! Metrics against scikit-learn's figures in ../shared/reference/label_stage (metrics.parquet,
//! summary.json), and the cases scikit-learn and PSLA treat specially.

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use psla::metrics::{average_precision, d_prime, normal_quantile, roc_auc};
use psla::stages::evaluate::{Inputs, evaluate};
use psla::table::store::read_parquet_path;

use crate::common::*;

#[test]
fn teacher_scores_evaluate_to_sklearns_per_class_ap_auc_map_and_d_prime() {
    let dir = shared().join("reference/label_stage");
    let classes = psla::stages::ingest::vocabulary_tables_classes_only(&audioset("class_labels_indices.csv")).unwrap();
    let inputs = Inputs::from_tables(
        &read_parquet_path(&dir.join("teacher_scores.parquet")).unwrap(),
        &read_parquet_path(&dir.join("labels.parquet")).unwrap(),
        &classes,
        None,
    )
    .unwrap();
    let result = evaluate(&inputs).unwrap();
    let reference = read_parquet_path(&dir.join("metrics.parquet")).unwrap();
    let mut compared = 0;
    for b in &reference.batches {
        let mids = psla::stages::evaluate::column_strings(&psla::table::TableData { schema: b.schema(), batches: vec![b.clone()] }, "mid", "m").unwrap();
        let ap = b.column_by_name("ap").unwrap().as_primitive::<Float64Type>();
        let auc = b.column_by_name("auc").unwrap().as_primitive::<Float64Type>();
        for (i, mid) in mids.iter().enumerate() {
            let ours = result.classes.iter().find(|c| &c.0 == mid).unwrap();
            assert!((ours.3.unwrap() - ap.value(i)).abs() <= 1e-6, "{mid}: AP {:?} vs {}", ours.3, ap.value(i));
            assert!((ours.4.unwrap() - auc.value(i)).abs() <= 1e-6, "{mid}: AUC {:?} vs {}", ours.4, auc.value(i));
            compared += 1;
        }
    }
    assert_eq!(compared, 527);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!((result.map - summary["mAP"].as_f64().unwrap()).abs() <= 1e-6);
    assert!((result.mauc - summary["mAUC"].as_f64().unwrap()).abs() <= 1e-6);
    assert!((result.d_prime - summary["d_prime"].as_f64().unwrap()).abs() <= 1e-6, "{}", result.d_prime);
}

#[test]
fn ties_count_as_scikit_learn_counts_them() {
    // sklearn: average_precision_score([1,0,1,0], [.8,.8,.5,.1]) = 0.5*0.5 + 0.5*(2/3) = 0.5833...
    let ap = average_precision(&[0.8, 0.8, 0.5, 0.1], &[true, false, true, false]).unwrap();
    assert!((ap - (0.25 + 1.0 / 3.0)).abs() < 1e-15, "{ap}");
    // roc_auc_score: a positive tied with a negative counts half: pairs (p1: >n2, =n1), (p2: >n2, <n1) -> 2.5/4.
    let auc = roc_auc(&[0.8, 0.8, 0.5, 0.1], &[true, false, true, false]).unwrap();
    assert!((auc - 0.625).abs() < 1e-15, "{auc}");
    // All scores equal: AP is the positive rate, AUC one half.
    let same = [0.3; 5];
    let lab = [true, false, false, true, false];
    assert!((average_precision(&same, &lab).unwrap() - 0.4).abs() < 1e-15);
    assert!((roc_auc(&same, &lab).unwrap() - 0.5).abs() < 1e-15);
    // Perfect ranking.
    assert_eq!(roc_auc(&[0.9, 0.8, 0.1], &[true, true, false]), Some(1.0));
    assert_eq!(average_precision(&[0.9, 0.8, 0.1], &[true, true, false]), Some(1.0));
}

#[test]
fn a_class_without_positives_or_negatives_has_no_ap_or_auc_and_is_left_out_of_the_means() {
    assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
    assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
    assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let inputs = Inputs {
        pred_clip: s(&["a", "a", "a", "b", "b", "b", "c", "c", "c"]),
        pred_mid: s(&["/m/x", "/m/y", "/m/z", "/m/x", "/m/y", "/m/z", "/m/x", "/m/y", "/m/z"]),
        pred_score: vec![0.9, 0.1, 0.5, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5],
        label_clip: s(&["a", "b"]),
        label_mid: s(&["/m/x", "/m/y"]),
        classes: vec![("/m/x".into(), "X".into()), ("/m/y".into(), "Y".into()), ("/m/z".into(), "Z".into())],
    };
    let r = evaluate(&inputs).unwrap();
    // Only a and b are labeled clips: c is reported as unknown; /m/z has no positive.
    assert_eq!((r.clips, r.unknown_clips, r.classes_evaluated), (2, 1, 2));
    assert_eq!((r.classes[2].3, r.classes[2].4), (None, None));
    assert_eq!(r.map, 1.0);
    assert!(r.summary_line().contains("1 classes without positives or negatives not evaluated"), "{}", r.summary_line());
    // A missing score of an evaluated clip is an error naming it.
    let mut missing = inputs;
    missing.pred_clip.remove(1);
    missing.pred_mid.remove(1);
    missing.pred_score.remove(1);
    let err = evaluate(&missing).err().unwrap().to_string();
    assert!(err.contains("clip a class /m/y"), "{err}");
}

#[test]
fn d_prime_uses_the_normal_quantile() {
    assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-12);
    assert!((normal_quantile(0.5)).abs() < 1e-15);
    assert!((normal_quantile(1e-10) + 6.361340902404056).abs() < 1e-9);
    assert!((d_prime(0.5)).abs() < 1e-15);
}
