//! Label enhancement against the outputs of PSLA's own scripts (../shared/reference/label_stage), its
//! provenance, its input checks, and the demo pipeline's label stage.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use psla::sql::Session;
use psla::stages::label::{LabelParams, TeacherCheck, ThresholdKind, enhance};

use crate::common::*;

fn reference(file: &str) -> PathBuf {
    shared().join("reference/label_stage").join(file)
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

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let col = arrow::compute::cast(col, &DataType::Utf8).unwrap();
    col.as_string::<i32>().iter().map(|v| v.map(String::from)).collect()
}

type Pairs = BTreeSet<(String, String)>;

/// The reference: (kind, rule) -> the full label set.
fn reference_sets() -> BTreeMap<(String, String), Pairs> {
    let mut out: BTreeMap<(String, String), Pairs> = BTreeMap::new();
    for b in read(&reference("enhanced.parquet")) {
        let (k, r, c, m) = (strings(&b, "kind"), strings(&b, "rule"), strings(&b, "clip_id"), strings(&b, "mid"));
        for i in 0..b.num_rows() {
            out.entry((k[i].clone().unwrap(), r[i].clone().unwrap()))
                .or_default()
                .insert((c[i].clone().unwrap(), m[i].clone().unwrap()));
        }
    }
    out
}

fn session() -> Session {
    let mut s = Session::empty();
    s.register_parquet("labels", &reference("labels.parquet")).unwrap();
    s.register_parquet("teacher_scores", &reference("teacher_scores.parquet")).unwrap();
    for (name, data) in psla::stages::ingest::vocabulary_tables(&audioset("class_labels_indices.csv"), &audioset("ontology.json")).unwrap() {
        s.register_batches(name, &data).unwrap();
    }
    s
}

/// (clip, mid, origin, via_mid) rows of a labels_enhanced result.
fn rows(data: &psla::table::TableData) -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for b in &data.batches {
        let (c, m, o, v) = (strings(b, "clip_id"), strings(b, "mid"), strings(b, "origin"), strings(b, "via_mid"));
        for i in 0..b.num_rows() {
            out.push((c[i].clone().unwrap(), m[i].clone().unwrap(), o[i].clone().unwrap(), v[i].clone()));
        }
    }
    out
}

const KINDS: [(ThresholdKind, &str); 5] = [
    (ThresholdKind::Mean, "mean"),
    (ThresholdKind::Median, "median"),
    (ThresholdKind::P25, "25"),
    (ThresholdKind::P10, "10"),
    (ThresholdKind::P5, "5"),
];

#[test]
fn all_15_threshold_kinds_and_rule_sets_equal_psla_label_for_label_and_thresholds_to_1e_9() {
    let expected = reference_sets();
    assert_eq!(expected.len(), 15);
    let mut ref_thresholds: HashMap<(String, String), f64> = HashMap::new();
    for b in read(&reference("thresholds.parquet")) {
        let (m, k) = (strings(&b, "mid"), strings(&b, "kind"));
        let t = b.column_by_name("threshold").unwrap().as_primitive::<Float64Type>().clone();
        for i in 0..b.num_rows() {
            ref_thresholds.insert((k[i].clone().unwrap(), m[i].clone().unwrap()), t.value(i));
        }
    }
    let mut s = session();
    for (kind, ref_kind) in KINDS {
        // With both rules on, the origin column says which rule added each label, so the type1 and
        // type2 sets follow from the same run; the one-rule runs are checked on their own after it.
        let params = LabelParams { threshold: kind, rules: "type1,type2".into(), min_support: 1, splits: None, check: Default::default() };
        let result = enhance(&mut s, &params).unwrap();
        let all = rows(&result.enhanced);
        let set = |keep: &dyn Fn(&str) -> bool| -> Pairs {
            all.iter().filter(|r| keep(&r.2)).map(|r| (r.0.clone(), r.1.clone())).collect()
        };
        let type1_2 = set(&|_| true);
        let type1 = set(&|o| o == "original" || o.contains("type1"));
        let type2 = set(&|o| o == "original" || o.contains("type2"));
        for (rule, ours) in [("type1", &type1), ("type2", &type2), ("type1_2", &type1_2)] {
            let theirs = &expected[&(ref_kind.to_string(), rule.to_string())];
            let extra: Vec<_> = ours.difference(theirs).take(3).collect();
            let missing: Vec<_> = theirs.difference(ours).take(3).collect();
            assert!(extra.is_empty() && missing.is_empty(), "{ref_kind} {rule}: extra {extra:?}, missing {missing:?}");
            assert_eq!(ours.len(), theirs.len());
        }
        assert_eq!(all.len(), type1_2.len(), "one row per (clip, class)");
        // Thresholds.
        let b = &result.thresholds.batches;
        let mut n = 0;
        for batch in b {
            let m = strings(batch, "mid");
            let t = batch.column_by_name("threshold").unwrap().as_primitive::<Float64Type>().clone();
            for i in 0..batch.num_rows() {
                let theirs = ref_thresholds[&(ref_kind.to_string(), m[i].clone().unwrap())];
                assert!((t.value(i) - theirs).abs() <= 1e-9, "{ref_kind} {:?}: {} vs {theirs}", m[i], t.value(i));
                n += 1;
            }
        }
        assert_eq!(n, 527, "{ref_kind}: a threshold for every class");
        // Each rule alone: its own set, and nothing from the other rule.
        for rule in ["type1", "type2"] {
            let params = LabelParams { threshold: kind, rules: rule.into(), min_support: 1, splits: None, check: Default::default() };
            let result = enhance(&mut s, &params).unwrap();
            let ours: Pairs = rows(&result.enhanced).into_iter().map(|r| (r.0, r.1)).collect();
            assert!(ours == expected[&(ref_kind.to_string(), rule.to_string())], "{ref_kind} {rule} alone");
            let other = if rule == "type1" { result.added_type2 } else { result.added_type1 };
            assert_eq!(other, 0, "{ref_kind} {rule} alone: the other rule added labels");
        }
    }
    // The full check (a pass over every score) changes nothing in the result.
    let params = LabelParams { threshold: ThresholdKind::Mean, rules: "type1,type2".into(), min_support: 1, splits: None, check: TeacherCheck::Full };
    let full = rows(&enhance(&mut s, &params).unwrap().enhanced);
    let params = LabelParams { check: TeacherCheck::Needed, ..params };
    let needed = rows(&enhance(&mut s, &params).unwrap().enhanced);
    // labels_enhanced is ordered by (clip_id, mid), as docs/tables.md says
    for r in [&full, &needed] {
        let bad = r.windows(2).position(|w| (&w[0].0, &w[0].1) >= (&w[1].0, &w[1].1));
        assert_eq!(bad, None, "labels_enhanced is not in (clip_id, mid) order at that row");
    }
    let diff: Vec<_> = full.iter().zip(&needed).filter(|(a, b)| a != b).take(3).collect();
    assert!(diff.is_empty() && full.len() == needed.len(), "{} vs {} rows: {diff:?}", full.len(), needed.len());
}

#[test]
fn the_cli_runs_one_rule_alone_and_writes_thresholds_and_changes_beside_the_output() {
    let dir = tempdir();
    let out = dir.path().join("enhanced.parquet");
    let res = run_ok(
        psla()
            .arg("label")
            .arg("--labels")
            .arg(reference("labels.parquet"))
            .arg("--teacher")
            .arg(reference("teacher_scores.parquet"))
            .args(["--ontology", &audioset("ontology.json"), "--classes", &audioset("class_labels_indices.csv")])
            .args(["--threshold", "p25", "--rules", "type2", "--out"])
            .arg(&out),
    );
    let line = stderr(&res);
    assert!(line.contains("52,882 original labels") && line.contains("= 66,297 labels"), "{line}");
    let ours: Pairs = read(&out)
        .iter()
        .flat_map(|b| strings(b, "clip_id").into_iter().zip(strings(b, "mid")).map(|(c, m)| (c.unwrap(), m.unwrap())))
        .collect();
    assert_eq!(ours, reference_sets()[&("25".to_string(), "type2".to_string())]);
    let changes = read(&dir.path().join("enhanced.changes.parquet"));
    let added: i64 = changes.iter().map(|b| arrow::compute::sum(b.column_by_name("added").unwrap().as_primitive::<arrow::datatypes::Int64Type>()).unwrap()).sum();
    assert_eq!(added, 66_297 - 52_882);
    let t1: i64 = changes.iter().map(|b| arrow::compute::sum(b.column_by_name("added_type1").unwrap().as_primitive::<arrow::datatypes::Int64Type>()).unwrap_or(0)).sum();
    assert_eq!(t1, 0, "type1 was not enabled");
    assert_eq!(read(&dir.path().join("enhanced.thresholds.parquet")).iter().map(|b| b.num_rows()).sum::<usize>(), 527);
}

/// child -> parents (links from non-abstract parents only), from the real ontology.
fn parent_links() -> HashMap<String, Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(audioset("ontology.json")).unwrap()).unwrap();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for e in v.as_array().unwrap() {
        let abstract_ = e["restrictions"].as_array().is_some_and(|r| r.len() == 1 && r[0] == "abstract");
        if abstract_ {
            continue;
        }
        for c in e["child_ids"].as_array().unwrap() {
            out.entry(c.as_str().unwrap().to_string()).or_default().push(e["id"].as_str().unwrap().to_string());
        }
    }
    out
}

/// Fewest links from `mid` up to `ancestor`, if it is one.
fn depth(mid: &str, ancestor: &str, links: &HashMap<String, Vec<String>>) -> Option<usize> {
    let (mut level, mut seen, mut d) = (vec![mid.to_string()], HashSet::new(), 0);
    while !level.is_empty() {
        d += 1;
        let next: Vec<String> =
            level.iter().flat_map(|m| links.get(m).into_iter().flatten()).filter(|p| seen.insert((*p).clone())).cloned().collect();
        if next.iter().any(|p| p == ancestor) {
            return Some(d);
        }
        level = next;
    }
    None
}

fn ancestors(mid: &str, links: &HashMap<String, Vec<String>>) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut stack = vec![mid.to_string()];
    while let Some(m) = stack.pop() {
        for p in links.get(&m).into_iter().flatten() {
            if out.insert(p.clone()) {
                stack.push(p.clone());
            }
        }
    }
    out
}

#[test]
fn every_added_label_names_an_original_label_it_follows_from() {
    let mut s = session();
    let params = LabelParams { threshold: ThresholdKind::P10, rules: "type1,type2".into(), min_support: 1, splits: None, check: Default::default() };
    let result = enhance(&mut s, &params).unwrap();
    let all = rows(&result.enhanced);
    let original: HashSet<(String, String)> =
        all.iter().filter(|r| r.2 == "original").map(|r| (r.0.clone(), r.1.clone())).collect();
    let mut labels_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (clip, mid) in &original {
        labels_of.entry(clip.as_str()).or_default().push(mid.as_str());
    }
    let links = parent_links();
    let mut checked = 0;
    for (clip, mid, origin, via) in all.iter().filter(|r| r.2 != "original") {
        let via = via.as_ref().unwrap_or_else(|| panic!("{clip} {mid}: no via_mid"));
        assert!(original.contains(&(clip.clone(), via.clone())), "{clip} {mid}: via {via} is not an original label");
        let labels = &labels_of[clip.as_str()];
        if origin.starts_with("type1") {
            assert!(links.get(mid).is_some_and(|p| p.contains(via)), "{clip} {mid}: {via} is not its (non-abstract) parent");
            // the documented choice among several parents: the smallest mid
            let first = labels.iter().filter(|l| links.get(mid).is_some_and(|p| p.iter().any(|p| p == *l))).min();
            assert_eq!(first, Some(&via.as_str()), "{clip} {mid}: via is not the smallest original parent");
        } else {
            assert!(ancestors(via, &links).contains(mid), "{clip} {mid}: not an ancestor of {via}");
            // the documented choice: the nearest original descendant, ties to the smallest mid
            let nearest = labels.iter().filter_map(|l| depth(l, mid, &links).map(|d| (d, *l))).min().map(|(_, l)| l);
            assert_eq!(nearest, Some(via.as_str()), "{clip} {mid}: via is not the nearest original descendant");
        }
        checked += 1;
    }
    assert_eq!(checked, 75_524 - 52_882);
    // Score and threshold are recorded, and the score is above the threshold.
    for b in &result.enhanced.batches {
        let o = strings(b, "origin");
        let score = b.column_by_name("score").unwrap().as_primitive::<arrow::datatypes::Float32Type>().clone();
        let thr = b.column_by_name("threshold").unwrap().as_primitive::<Float64Type>().clone();
        for i in 0..b.num_rows() {
            if o[i].as_deref() != Some("original") {
                assert!(f64::from(score.value(i)) > thr.value(i));
            } else {
                assert!(score.is_null(i) && thr.is_null(i));
            }
        }
    }
}

/// Write (clip_id, mid[, score]) rows as Parquet.
fn write_pairs(path: &Path, rows: &[(String, String)], scores: Option<&[f32]>) {
    let mut fields = vec![Field::new("clip_id", DataType::Utf8, false), Field::new("mid", DataType::Utf8, false)];
    let mut cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
    ];
    if let Some(s) = scores {
        fields.push(Field::new("score", DataType::Float32, false));
        cols.push(Arc::new(Float32Array::from(s.to_vec())));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The first `n` clips of the reference labels and all their teacher scores.
fn subset(n: usize) -> (Vec<(String, String)>, Vec<(String, String)>, Vec<f32>) {
    let mut labels = Vec::new();
    let mut clips = BTreeSet::new();
    for b in read(&reference("labels.parquet")) {
        for (c, m) in strings(&b, "clip_id").into_iter().zip(strings(&b, "mid")) {
            let c = c.unwrap();
            if clips.len() < n || clips.contains(&c) {
                clips.insert(c.clone());
                labels.push((c, m.unwrap()));
            }
        }
    }
    let (mut pairs, mut scores) = (Vec::new(), Vec::new());
    for b in read(&reference("teacher_scores.parquet")) {
        let s = b.column_by_name("score").unwrap().as_primitive::<arrow::datatypes::Float32Type>().clone();
        for (i, (c, m)) in strings(&b, "clip_id").into_iter().zip(strings(&b, "mid")).enumerate() {
            let c = c.unwrap();
            if clips.contains(&c) {
                pairs.push((c, m.unwrap()));
                scores.push(s.value(i));
            }
        }
    }
    (labels, pairs, scores)
}

fn label_cmd(labels: &Path, teacher: &Path, out: &Path) -> std::process::Command {
    let mut c = psla();
    c.arg("label").arg("--labels").arg(labels).arg("--teacher").arg(teacher);
    c.args(["--ontology", &audioset("ontology.json"), "--classes", &audioset("class_labels_indices.csv"), "--out"]).arg(out);
    c
}

#[test]
fn missing_duplicate_and_invalid_teacher_scores_are_errors_with_counts_and_examples() {
    let dir = tempdir();
    let (labels, pairs, scores) = subset(50);
    assert_eq!(pairs.len(), 50 * 527);
    let l = dir.path().join("labels.parquet");
    write_pairs(&l, &labels, None);
    let t = dir.path().join("teacher.parquet");
    let out = dir.path().join("out.parquet");
    let full = |c: &mut std::process::Command| -> String { run_err(c.args(["--check", "full"])) };

    // Good input first: runs, in both check modes, and classes without labels are named in the summary.
    write_pairs(&t, &pairs, Some(&scores));
    let ok = stderr(&run_ok(&mut label_cmd(&l, &t, &out)));
    assert!(ok.contains("classes have no threshold"), "{ok}");
    run_ok(label_cmd(&l, &t, &out).args(["--check", "full"]));

    // The scores the rules read (needed) and the others, by position in `pairs`.
    let labeled: HashSet<(String, String)> = labels.iter().cloned().collect();
    let needed = |i: usize| labeled.contains(&pairs[i]);
    let a = (0..pairs.len()).find(|&i| needed(i)).unwrap();
    let b = (a + 1..pairs.len()).find(|&i| needed(i)).unwrap();
    // a score of clip a no rule reads: not a label, nor a child or an ancestor of one
    let links = parent_links();
    let clip_labels: Vec<&String> = labels.iter().filter(|l| l.0 == pairs[a].0).map(|l| &l.1).collect();
    let read = |mid: &String| {
        clip_labels.contains(&mid)
            || links.get(mid).is_some_and(|ps| ps.iter().any(|p| clip_labels.contains(&p)))
            || clip_labels.iter().any(|l| ancestors(l, &links).contains(mid))
    };
    let unread = (0..pairs.len()).find(|&i| pairs[i].0 == pairs[a].0 && !read(&pairs[i].1)).unwrap();

    // A needed score missing: refused by default, with the pair named; the full check names the clip's problem.
    let keep: Vec<usize> = (0..pairs.len()).filter(|&i| i != a).collect();
    write_pairs(&t, &keep.iter().map(|&i| pairs[i].clone()).collect::<Vec<_>>(), Some(&keep.iter().map(|&i| scores[i]).collect::<Vec<_>>()));
    let err = run_err(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("1 of the ") && err.contains(" (clip, class) pairs the rules read have no teacher score"), "{err}");
    assert!(err.contains(&format!("missing: clip {} class {}", pairs[a].0, pairs[a].1)), "{err}");
    let err = full(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("1 labeled clips are not scored exactly once"), "{err}");
    assert!(err.contains(&format!("missing: clip {} class {}", pairs[a].0, pairs[a].1)), "{err}");

    // A score no rule reads missing: the default check lets it be (it cannot change the result),
    // the full check refuses it.
    let keep: Vec<usize> = (0..pairs.len()).filter(|&i| i != unread).collect();
    write_pairs(&t, &keep.iter().map(|&i| pairs[i].clone()).collect::<Vec<_>>(), Some(&keep.iter().map(|&i| scores[i]).collect::<Vec<_>>()));
    run_ok(&mut label_cmd(&l, &t, &out));
    let err = full(&mut label_cmd(&l, &t, &out));
    assert!(err.contains(&format!("missing: clip {} class {}", pairs[unread].0, pairs[unread].1)), "{err}");

    // A whole clip without scores, and a duplicated needed row.
    let first_clip = &pairs[0].0;
    let dup = (0..pairs.len()).find(|&i| needed(i) && &pairs[i].0 != first_clip).unwrap();
    let keep: Vec<usize> = (0..pairs.len()).filter(|&i| &pairs[i].0 != first_clip).chain([dup]).collect();
    let p: Vec<_> = keep.iter().map(|&i| pairs[i].clone()).collect();
    let s: Vec<_> = keep.iter().map(|&i| scores[i]).collect();
    write_pairs(&t, &p, Some(&s));
    let err = run_err(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("1 more teacher rows than pairs"), "{err}");
    assert!(err.contains(&format!("duplicate: clip {} class {}", pairs[dup].0, pairs[dup].1)), "{err}");
    assert!(err.contains(&format!("missing: clip {first_clip} class ")), "{err}");
    let err = full(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("1 of the 50 labeled clips have no teacher score at all"), "{err}");
    assert!(err.contains(&format!("duplicate: clip {} class {}", pairs[dup].0, pairs[dup].1)), "{err}");

    // NaN and out-of-range scores the rules read; and one they do not read.
    let mut bad = scores.clone();
    bad[a] = f32::NAN;
    bad[b] = 1.5;
    bad[unread] = -0.5;
    write_pairs(&t, &pairs, Some(&bad));
    let err = run_err(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("2 teacher scores the rules read are null, NaN or outside [0, 1]"), "{err}");
    assert!(err.contains(&format!("invalid: clip {} class {}", pairs[a].0, pairs[a].1)), "{err}");
    let err = full(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("3 teacher scores are null, NaN or outside [0, 1]"), "{err}");

    // Empty labels.
    write_pairs(&l, &[], None);
    write_pairs(&t, &pairs, Some(&scores));
    let err = run_err(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("labels table is empty"), "{err}");
    let err = full(&mut label_cmd(&l, &t, &out));
    assert!(err.contains("labels table is empty"), "{err}");
}

#[test]
fn bad_parameters_are_refused_before_any_work() {
    let dir = tempdir();
    let err = run_err(&mut label_cmd(&reference("labels.parquet"), &reference("teacher_scores.parquet"), &dir.path().join("o.parquet")).args(["--rules", "type3"]));
    assert!(err.contains("unknown rule `type3`"), "{err}");
    let err = run_err(&mut label_cmd(&dir.path().join("nope.parquet"), &reference("teacher_scores.parquet"), &dir.path().join("o.parquet")));
    assert!(err.contains("nope.parquet") && err.contains("no such file"), "{err}");
}

#[test]
fn min_support_leaves_rare_classes_without_a_threshold() {
    let mut s = session();
    let params = LabelParams { threshold: ThresholdKind::Mean, rules: "type1,type2".into(), min_support: 100, splits: None, check: Default::default() };
    let result = enhance(&mut s, &params).unwrap();
    let support: Vec<i64> = result
        .thresholds
        .batches
        .iter()
        .flat_map(|b| b.column_by_name("support").unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().to_vec())
        .collect();
    assert!(!support.is_empty() && support.iter().all(|&n| n >= 100), "{support:?}");
    assert!(support.len() < 527);
    assert!(result.summary(&params).contains(&format!("{} classes have no threshold", 527 - support.len())));
}

/// needed_pairs.sql's provenance on one clip labeled Waves, surf (/m/034srq) and Ocean (/m/05kq4):
/// Water (/m/0838f) is Ocean's parent and Waves' grandparent, so Type II's via is Ocean, the
/// nearest, although Waves has the smaller mid.
#[test]
fn type2_names_the_nearest_original_descendant() {
    let mut s = session();
    let labels = s.query_read_only("SELECT * FROM (VALUES ('c', '/m/019jd'), ('c', '/m/034srq'), ('c', '/m/03m9d0z'), ('c', '/m/05kq4'), ('c', '/m/0hsrw'), ('c', '/t/dd00092')) AS t(clip_id, mid)").unwrap();
    s.register_batches("labels", &labels).unwrap();
    let ancestors = s.query_read_only(psla::stages::label::sql::ANCESTORS).unwrap();
    s.register_batches("ontology_ancestors", &ancestors).unwrap();
    let order = s.query_read_only(psla::stages::label::sql::CLASS_ORDER).unwrap();
    s.register_batches("class_order", &order).unwrap();
    let sql = psla::stages::label::bind(
        psla::stages::label::sql::NEEDED_PAIRS,
        &[("enable_type1", "TRUE"), ("enable_type2", "TRUE")],
    )
    .unwrap();
    s.register_batches("needed_pairs", &s.query_read_only(&sql).unwrap()).unwrap();
    // The via is a class_order rank; class_order turns it back into the mid.
    let row = s
        .query_read_only("SELECT o.mid AS type2_via FROM needed_pairs AS n JOIN class_order AS o ON o.mid_rank = n.type2_via WHERE n.mid = '/m/0838f'")
        .unwrap();
    assert_eq!(strings(&row.batches[0], "type2_via"), vec![Some("/m/05kq4".to_string())]);
}


