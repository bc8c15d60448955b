use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use psla::stages::demo_data::{DemoData, DemoDataParams, generate};
use psla::error::Error;

fn small() -> DemoDataParams {
    DemoDataParams { train_clips: 60, eval_clips: 20, clip_seconds: 0.5, ..DemoDataParams::default() }
}

fn generated(params: &DemoDataParams) -> (tempfile::TempDir, DemoData) {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(params, dir.path()).unwrap();
    (dir, data)
}

fn relative_bytes(root: &Path, files: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    files.iter().map(|f| (f.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(f).unwrap())).collect()
}

type Labels = BTreeMap<String, (bool, Option<String>)>;

fn truth_by_clip(data: &DemoData) -> BTreeMap<(String, String), Labels> {
    let mut clips: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
    for row in &data.truth {
        clips
            .entry((row.split.clone(), row.clip_id.clone()))
            .or_default()
            .insert(row.mid.clone(), (row.observed, row.dropped.clone()));
    }
    clips
}

fn parent_of(data: &DemoData) -> BTreeMap<String, Option<String>> {
    data.classes.iter().map(|c| (c.mid.clone(), c.parent.clone())).collect()
}

fn label_ancestors(data: &DemoData, mid: &str) -> Vec<String> {
    let parents = parent_of(data);
    let is_abstract: BTreeMap<_, _> = data.classes.iter().map(|c| (c.mid.clone(), c.is_abstract)).collect();
    let mut out = Vec::new();
    let mut up = parents[mid].clone();
    while let Some(p) = up {
        if !is_abstract[&p] {
            out.push(p.clone());
        }
        up = parents[&p].clone();
    }
    out
}

struct Segments {
    header: Vec<String>,
    rows: Vec<(String, String, String, Vec<String>)>,
}

fn read_segments(path: &Path) -> Segments {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'));
    let header: Vec<String> = lines[..3].iter().map(|l| l.to_string()).collect();
    assert!(header[0].starts_with("# Segments csv created"));
    assert!(header[1].starts_with("# num_ytids="));
    assert_eq!(header[2], "# YTID, start_seconds, end_seconds, positive_labels");
    let rows = lines[3..]
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, ", ").collect();
            assert_eq!(fields.len(), 4, "{line}");
            let labels = fields[3].strip_prefix('"').and_then(|l| l.strip_suffix('"')).expect("quoted labels");
            let labels: Vec<String> = labels.split(',').map(str::to_string).collect();
            (fields[0].to_string(), fields[1].to_string(), fields[2].to_string(), labels)
        })
        .collect();
    Segments { header, rows }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let params = small();
    let (dir_a, a) = generated(&params);
    let (dir_b, b) = generated(&params);
    let bytes_a = relative_bytes(dir_a.path(), &a.files);
    assert_eq!(bytes_a, relative_bytes(dir_b.path(), &b.files));
    assert_eq!(a, DemoData { files: a.files.clone(), ..b.clone() });
    assert_eq!(a.files.len(), 5 + a.clips);

    let (dir_c, c) = generated(&DemoDataParams { seed: 8, ..params });
    let bytes_c = relative_bytes(dir_c.path(), &c.files);
    assert_ne!(bytes_a[Path::new("train_segments.csv")], bytes_c[Path::new("train_segments.csv")]);
    assert_ne!(bytes_a[Path::new("true_labels.csv")], bytes_c[Path::new("true_labels.csv")]);
    assert_eq!(bytes_a[Path::new("ontology.json")], bytes_c[Path::new("ontology.json")]);
}

#[test]
fn noise_probabilities_do_not_move_clips_or_audio() {
    let (dir_a, a) = generated(&small());
    let (dir_b, b) = generated(&DemoDataParams { type1_drop: 0.0, type2_drop: 1.0, ..small() });
    let bytes_a = relative_bytes(dir_a.path(), &a.files);
    let bytes_b = relative_bytes(dir_b.path(), &b.files);
    for (path, bytes) in &bytes_a {
        if path.extension().is_some_and(|e| e == "wav") || path == Path::new("eval_segments.csv") {
            assert_eq!(bytes, &bytes_b[path], "{}", path.display());
        }
    }
}

#[test]
fn true_labels_are_closed_under_non_abstract_ancestors() {
    let (_dir, data) = generated(&DemoDataParams::default());
    let vocabulary: BTreeSet<String> = data.classes.iter().filter(|c| !c.is_abstract).map(|c| c.mid.clone()).collect();
    for ((_, clip), labels) in truth_by_clip(&data) {
        for mid in labels.keys() {
            assert!(vocabulary.contains(mid), "{clip}: {mid} is not a label");
            for ancestor in label_ancestors(&data, mid) {
                assert!(labels.contains_key(&ancestor), "{clip}: {mid} without {ancestor}");
            }
        }
    }
}

#[test]
fn observed_labels_are_a_nonempty_subset_with_consistent_drop_tags() {
    let (_dir, data) = generated(&DemoDataParams::default());
    let parents = parent_of(&data);
    let mut kinds = BTreeMap::new();
    for ((split, clip), labels) in truth_by_clip(&data) {
        assert!(labels.values().any(|(observed, _)| *observed), "{clip} has no observed label");
        for (mid, (observed, dropped)) in &labels {
            assert_eq!(*observed, dropped.is_none(), "{clip} {mid}");
            if split == "eval" {
                assert!(observed, "eval clip {clip} lost {mid}");
            }
            match dropped.as_deref() {
                None => {}
                Some("type1") => {
                    let parent = parents[mid].clone().unwrap();
                    assert_eq!(labels.get(&parent).map(|l| l.0), Some(true), "{clip}: type1 {mid} without {parent}");
                }
                Some("type2") => {
                    let kept_descendant =
                        labels.iter().any(|(d, (obs, _))| *obs && label_ancestors(&data, d).contains(mid));
                    assert!(kept_descendant, "{clip}: type2 {mid} without an observed descendant");
                }
                Some(other) => panic!("unknown drop tag {other}"),
            }
            *kinds.entry(dropped.clone()).or_insert(0) += 1;
        }
    }
    assert!(kinds[&Some("type1".to_string())] > 10, "{kinds:?}");
    assert!(kinds[&Some("type2".to_string())] > 10, "{kinds:?}");
}

#[test]
fn no_noise_keeps_every_label() {
    let (_dir, data) = generated(&DemoDataParams { type1_drop: 0.0, type2_drop: 0.0, ..small() });
    assert!(data.truth.iter().all(|r| r.observed && r.dropped.is_none()));
}

#[test]
fn segments_files_follow_the_official_layout_and_match_the_truth() {
    let (dir, data) = generated(&DemoDataParams::default());
    let truth = truth_by_clip(&data);
    for (split, file, count) in [("train", "train_segments.csv", 240), ("eval", "eval_segments.csv", 80)] {
        let segments = read_segments(&dir.path().join(file));
        assert_eq!(segments.rows.len(), count);
        let ids: Vec<&String> = segments.rows.iter().map(|r| &r.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sorted and unique");
        let mut unique = BTreeSet::new();
        let mut positives = 0;
        for (id, start, end, labels) in &segments.rows {
            assert_eq!(id.len(), 11);
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
            assert_eq!((start.as_str(), end.as_str()), ("0.000", "2.000"));
            let mut sorted = labels.clone();
            sorted.sort();
            assert_eq!(&sorted, labels);
            let observed: Vec<String> = truth[&(split.to_string(), id.clone())]
                .iter()
                .filter(|(_, (obs, _))| *obs)
                .map(|(mid, _)| mid.clone())
                .collect();
            assert_eq!(&observed, labels, "{id}");
            unique.extend(labels.iter().cloned());
            positives += labels.len();
        }
        assert_eq!(
            segments.header[1],
            format!(
                "# num_ytids={count}, num_segs={count}, num_unique_labels={}, num_positive_labels={positives}",
                unique.len()
            )
        );
    }
    let all_ids: BTreeSet<&String> = truth.keys().map(|(_, id)| id).collect();
    assert_eq!(all_ids.len(), data.clips);
}

#[test]
fn wav_files_have_the_right_format_and_length() {
    let params = DemoDataParams { sample_rate: 8000, clip_seconds: 1.25, ..small() };
    let (dir, data) = generated(&params);
    let wavs: Vec<&PathBuf> = data.files.iter().filter(|f| f.extension().is_some_and(|e| e == "wav")).collect();
    assert_eq!(wavs.len(), data.clips);
    for path in wavs {
        assert_eq!(path.parent().unwrap(), dir.path().join("audio"));
        let mut reader = hound::WavReader::open(path).unwrap();
        let spec = reader.spec();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (1, 8000, 16));
        assert_eq!(spec.sample_format, hound::SampleFormat::Int);
        assert_eq!(reader.duration(), 10000);
        let peak = reader.samples::<i16>().map(|s| s.unwrap().unsigned_abs()).max().unwrap();
        assert!(peak > 8000 && f64::from(peak) <= 0.9 * 32767.0 + 1.0, "{}: peak {peak}", path.display());
    }
}

#[test]
fn ontology_and_vocabulary_files_match_the_classes() {
    let (dir, data) = generated(&small());
    let text = std::fs::read_to_string(dir.path().join("ontology.json")).unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(entries.len(), data.classes.len());
    assert!((12..=16).contains(&entries.len()));
    let keys = ["id", "name", "description", "citation_uri", "positive_examples", "child_ids", "restrictions"];
    for entry in &entries {
        let object = entry.as_object().unwrap();
        assert_eq!(object.keys().map(String::as_str).collect::<BTreeSet<_>>(), keys.into_iter().collect());
        let mid = entry["id"].as_str().unwrap();
        let class = data.classes.iter().find(|c| c.mid == mid).unwrap();
        assert_eq!(entry["name"], class.name.as_str());
        let restrictions: Vec<&str> =
            entry["restrictions"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert_eq!(restrictions, if class.is_abstract { vec!["abstract"] } else { vec![] });
        let children: Vec<&str> = entry["child_ids"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        let expected: Vec<&str> =
            data.classes.iter().filter(|c| c.parent.as_deref() == Some(mid)).map(|c| c.mid.as_str()).collect();
        assert_eq!(children.iter().collect::<BTreeSet<_>>(), expected.iter().collect::<BTreeSet<_>>(), "{mid}");
    }
    let parents_with_children = data
        .classes
        .iter()
        .filter(|p| !p.is_abstract && data.classes.iter().any(|c| c.parent.as_deref() == Some(p.mid.as_str())))
        .count();
    assert!(parents_with_children >= 3);

    let mut reader = csv::Reader::from_path(dir.path().join("class_labels_indices.csv")).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["index", "mid", "display_name"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let vocabulary: Vec<_> = data.classes.iter().filter(|c| !c.is_abstract).collect();
    assert_eq!(rows.len(), vocabulary.len());
    for (row, class) in rows.iter().zip(vocabulary) {
        assert_eq!(row[0].parse::<usize>().unwrap(), class.index);
        assert_eq!((&row[1], &row[2]), (class.mid.as_str(), class.name.as_str()));
    }
    assert!(data.classes.iter().enumerate().all(|(i, c)| c.index == i));
    let first = std::fs::read_to_string(dir.path().join("class_labels_indices.csv")).unwrap();
    assert!(first.lines().nth(1).unwrap().ends_with('"'));
}

#[test]
fn true_labels_file_matches_the_truth_rows() {
    let (dir, data) = generated(&small());
    let mut reader = csv::Reader::from_path(dir.path().join("true_labels.csv")).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["clip_id", "split", "mid", "observed", "dropped"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), data.truth.len());
    for (row, truth) in rows.iter().zip(&data.truth) {
        assert_eq!(&row[0], truth.clip_id);
        assert_eq!(&row[1], truth.split);
        assert_eq!(&row[2], truth.mid);
        assert_eq!(row[3].parse::<bool>().unwrap(), truth.observed);
        assert_eq!(&row[4], truth.dropped.as_deref().unwrap_or(""));
    }
}

#[test]
fn imbalance_skews_leaf_frequencies() {
    let count_first_and_last = |imbalance: f64| {
        let (_dir, data) = generated(&DemoDataParams { imbalance, ..DemoDataParams::default() });
        let count = |mid: &str| data.truth.iter().filter(|r| r.mid == mid).count();
        (count("/x/pure_tone"), count("/x/beeping"))
    };
    let (first, last) = count_first_and_last(0.0);
    assert!(first > 20 && last > 20 && first.abs_diff(last) < first.max(last) / 2, "{first} vs {last}");
    let (first, last) = count_first_and_last(1.5);
    assert!(first > 5 * last, "{first} vs {last}");
}

#[test]
fn extreme_sizes_work() {
    for (sample_rate, clip_seconds) in [(8000, 0.1), (96000, 0.3)] {
        let params = DemoDataParams { train_clips: 1, eval_clips: 1, sample_rate, clip_seconds, ..small() };
        let (dir, data) = generated(&params);
        assert_eq!(data.clips, 2);
        let wav = data.files.iter().find(|f| f.extension().is_some_and(|e| e == "wav")).unwrap();
        let reader = hound::WavReader::open(wav).unwrap();
        assert_eq!(reader.duration() as f64, (clip_seconds * f64::from(sample_rate)).round());
        let segments = read_segments(&dir.path().join("train_segments.csv"));
        assert_eq!(segments.rows.len(), 1);
    }
}

#[test]
fn invalid_parameters_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("train_clips", DemoDataParams { train_clips: 0, ..small() }),
        ("eval_clips", DemoDataParams { eval_clips: 0, ..small() }),
        ("clip_seconds", DemoDataParams { clip_seconds: 0.05, ..small() }),
        ("clip_seconds", DemoDataParams { clip_seconds: f64::NAN, ..small() }),
        ("sample_rate", DemoDataParams { sample_rate: 4000, ..small() }),
        ("type1_drop", DemoDataParams { type1_drop: 1.5, ..small() }),
        ("type2_drop", DemoDataParams { type2_drop: -0.1, ..small() }),
        ("imbalance", DemoDataParams { imbalance: -1.0, ..small() }),
    ];
    for (name, params) in cases {
        match generate(&params, &dir.path().join("out")) {
            Err(Error::Invalid(message)) => assert!(message.contains(name), "{message}"),
            other => panic!("{name}: expected an invalid-parameter error, got {other:?}"),
        }
    }
    assert!(!dir.path().join("out").exists());
}

#[test]
fn params_deserialize_with_defaults_and_refuse_unknown_fields() {
    let params: DemoDataParams = serde_json::from_str(r#"{"seed": 3, "imbalance": 1.0}"#).unwrap();
    assert_eq!(params, DemoDataParams { seed: 3, imbalance: 1.0, ..DemoDataParams::default() });
    assert!(serde_json::from_str::<DemoDataParams>(r#"{"seeds": 3}"#).is_err());
}
