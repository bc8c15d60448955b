//! `psla ingest`: the real AudioSet metadata, and bad input.

use std::fs;

use crate::common::*;

#[test]
fn balanced_train_gives_audiosets_counts() {
    let dir = tempdir();
    let root = dir.path().join("root");
    let out = ingest_balanced(&root);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM clips"), 22_160);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM labels"), 52_882);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM classes"), 527);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM ontology"), 632);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM ingest_rejects"), 0);
    // Every clip is in the split named after its file, and labels use only vocabulary mids.
    assert_eq!(sql_count(&root, "SELECT count(*) FROM clips WHERE split = 'balanced_train'"), 22_160);
    assert_eq!(
        sql_count(&root, "SELECT count(*) FROM labels l LEFT JOIN classes c ON l.mid = c.mid WHERE c.mid IS NULL"),
        0
    );
    // A clip from the file, with its two labels.
    assert_eq!(
        sql_csv(&root, "SELECT mid FROM labels WHERE clip_id = '--PJHxphWEs' ORDER BY mid"),
        vec!["mid", "/m/09x0r", "/t/dd00088"]
    );
    assert_eq!(sql_csv(&root, "SELECT start_s, end_s FROM clips WHERE clip_id = '--PJHxphWEs'"), vec!["start_s,end_s", "30.0,40.0"]);
    // Ontology edges: Human sounds (abstract) -> Human voice, and the abstract flag as PSLA tests it.
    assert_eq!(sql_count(&root, "SELECT count(*) FROM ontology_edges WHERE parent = '/m/0dgw9r' AND child = '/m/09l8g'"), 1);
    assert_eq!(sql_csv(&root, "SELECT is_abstract FROM ontology WHERE id = '/m/0dgw9r'"), vec!["is_abstract", "true"]);
    // The summary line.
    let err = stderr(&out);
    assert!(err.contains("22,160 clips, 52,882 labels, 527 classes, 632 ontology entries"), "{err}");
}

/// A segment CSV with every kind of bad row next to good ones.
const BAD_CSV: &str = "\
# Segments csv created for a test
# num_ytids=8
# YTID, start_seconds, end_seconds, positive_labels
good_one___, 0.000, 10.000, \"/m/09x0r,/t/dd00088\"
good_two___, 5.000, 15.000, \"/m/05zppz\"
this line is not a segment
bad_number_, abc, 10.000, \"/m/09x0r\"
bad_order__, 20.000, 10.000, \"/m/09x0r\"
has_unknown, 0.000, 10.000, \"/m/09x0r,/m/notamid\"
good_one___, 0.000, 10.000, \"/m/05zppz\"
unbalanced_, 0.000, 10.000, \"/m/09x0r
good_three_, 1.000, 2.000, /m/09x0r
";

#[test]
fn bad_rows_go_to_rejects_with_their_line_and_good_rows_stay() {
    let dir = tempdir();
    let csv = dir.path().join("test_segments.csv");
    fs::write(&csv, BAD_CSV).unwrap();
    let root = dir.path().join("root");
    let out = run_ok(
        psla()
            .arg("ingest")
            .arg("--segments")
            .arg(&csv)
            .args(["--classes", &audioset("class_labels_indices.csv"), "--ontology", &audioset("ontology.json")])
            .arg("--out")
            .arg(&root),
    );
    // Good rows: the three good clips plus has_unknown (kept, without its unknown label).
    assert_eq!(
        sql_csv(&root, "SELECT clip_id, split FROM clips ORDER BY source_line"),
        vec!["clip_id,split", "good_one___,test", "good_two___,test", "has_unknown,test", "good_three_,test"]
    );
    assert_eq!(
        sql_csv(&root, "SELECT clip_id, mid FROM labels ORDER BY clip_id, mid"),
        vec![
            "clip_id,mid",
            "good_one___,/m/09x0r",
            "good_one___,/t/dd00088",
            "good_three_,/m/09x0r",
            "good_two___,/m/05zppz",
            "has_unknown,/m/09x0r",
        ]
    );
    let rejects = sql_csv(&root, "SELECT line, clip_id, reason FROM ingest_rejects ORDER BY line");
    let expect = [
        (6, "", "malformed line"),
        (7, "", "start_seconds `abc` is not a number"),
        (8, "bad_order__", "end_seconds 10 is not after start_seconds 20"),
        (9, "has_unknown", "unknown mid /m/notamid"),
        (10, "good_one___", "duplicate clip id (first seen at"),
        (11, "", "unbalanced quote"),
    ];
    assert_eq!(rejects.len(), expect.len() + 1, "{rejects:?}");
    for (row, (line, clip, reason)) in rejects[1..].iter().zip(expect) {
        assert!(row.starts_with(&format!("{line},{clip},")), "row {row:?} should be line {line}, clip {clip:?}");
        assert!(row.contains(reason), "row {row:?} should say {reason:?}");
    }
    assert!(stderr(&out).contains("6 rejects"), "{}", stderr(&out));
}

#[test]
fn missing_or_unparsable_inputs_are_errors_naming_the_file_and_nothing_is_written() {
    let dir = tempdir();
    let root = dir.path().join("root");
    let missing = dir.path().join("nope_segments.csv");
    let err = run_err(
        psla()
            .arg("ingest")
            .arg("--segments")
            .arg(&missing)
            .args(["--classes", &audioset("class_labels_indices.csv"), "--ontology", &audioset("ontology.json")])
            .arg("--out")
            .arg(&root),
    );
    assert!(err.contains(&missing.display().to_string()) && err.contains("does not exist"), "{err}");
    assert!(!root.join("manifest.json").exists());

    let bad_json = dir.path().join("ontology.json");
    fs::write(&bad_json, "[\n {\"id\": \"/m/x\", \"name\": \"x\"},\n {\"id\": oops}\n]").unwrap();
    let err = run_err(
        psla()
            .arg("ingest")
            .args(["--segments", &audioset("balanced_train_segments.csv"), "--classes", &audioset("class_labels_indices.csv")])
            .arg("--ontology")
            .arg(&bad_json)
            .arg("--out")
            .arg(&root),
    );
    assert!(err.contains(&format!("{}:3:", bad_json.display())), "error should name file and line 3: {err}");
    assert!(!root.join("manifest.json").exists());

    let bad_classes = dir.path().join("classes.csv");
    fs::write(&bad_classes, "index,mid,display_name\n0,/m/09x0r,Speech\nx,/m/05zppz,Male\n").unwrap();
    let err = run_err(
        psla()
            .arg("ingest")
            .args(["--segments", &audioset("balanced_train_segments.csv")])
            .arg("--classes")
            .arg(&bad_classes)
            .args(["--ontology", &audioset("ontology.json")])
            .arg("--out")
            .arg(&root),
    );
    assert!(err.contains(&format!("{}:3:", bad_classes.display())) && err.contains("index `x`"), "{err}");
    assert!(!root.join("manifest.json").exists());
}

#[test]
fn audio_is_found_by_clip_id_or_manifest_and_missing_audio_is_counted() {
    let dir = tempdir();
    let audio = dir.path().join("audio");
    fs::create_dir(&audio).unwrap();
    let csv = dir.path().join("mini_segments.csv");
    fs::write(&csv, "YTID, start_seconds, end_seconds, positive_labels\naaa, 0, 1, \"/m/09x0r\"\nbbb, 0, 1, \"/m/09x0r\"\nccc, 0, 1, \"/m/09x0r\"\n").unwrap();
    fs::write(audio.join("aaa.wav"), b"RIFF").unwrap();
    fs::write(audio.join("aaa.mp3"), b"ID3").unwrap(); // wav preferred
    fs::write(audio.join("bbb.flac"), b"fLaC").unwrap();
    let root = dir.path().join("root");
    let out = run_ok(
        psla()
            .arg("ingest")
            .arg("--segments")
            .arg(&csv)
            .args(["--classes", &audioset("class_labels_indices.csv"), "--ontology", &audioset("ontology.json")])
            .arg("--audio")
            .arg(&audio)
            .arg("--out")
            .arg(&root),
    );
    let rows = sql_csv(&root, "SELECT clip_id, audio_uri FROM clips ORDER BY clip_id");
    assert!(rows[1].starts_with("aaa,file://") && rows[1].ends_with("/audio/aaa.wav"), "{rows:?}");
    assert!(rows[2].starts_with("bbb,file://") && rows[2].ends_with("/audio/bbb.flac"), "{rows:?}");
    assert_eq!(rows[3], "ccc,");
    assert!(stderr(&out).contains("1 clips without audio"), "{}", stderr(&out));

    let manifest = dir.path().join("audio.csv");
    fs::write(&manifest, "clip_id,path\nccc,audio/bbb.flac\n").unwrap();
    run_ok(
        psla()
            .arg("ingest")
            .arg("--segments")
            .arg(&csv)
            .args(["--classes", &audioset("class_labels_indices.csv"), "--ontology", &audioset("ontology.json")])
            .arg("--audio-manifest")
            .arg(&manifest)
            .arg("--out")
            .arg(&root),
    );
    let rows = sql_csv(&root, "SELECT clip_id, audio_uri FROM clips ORDER BY clip_id");
    assert_eq!(rows[1], "aaa,");
    assert!(rows[3].starts_with("ccc,file://") && rows[3].ends_with("/audio/bbb.flac"), "{rows:?}");
}
