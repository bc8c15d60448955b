//! Atomic commits: a writer killed with SIGKILL at any moment leaves every table at a complete,
//! committed version, and a rerun produces exactly what an uninterrupted run produces.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::common::*;

/// content_hash and rows of every table in a run root's manifest.
fn tables(root: &Path) -> Vec<(String, String, u64)> {
    let m: serde_json::Value = serde_json::from_slice(&fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let mut out: Vec<_> = m["tables"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["content_hash"].as_str().unwrap().to_string(), v["rows"].as_u64().unwrap()))
        .collect();
    out.sort();
    out
}

fn ingest_cmd(csv: &Path, root: &Path) -> Command {
    let mut c = psla();
    c.arg("ingest")
        .arg("--segments")
        .arg(csv)
        .args(["--classes", &audioset("class_labels_indices.csv"), "--ontology", &audioset("ontology.json")])
        .arg("--out")
        .arg(root);
    c
}

#[test]
fn sigkill_mid_write_leaves_the_previous_version_and_a_rerun_completes_identically() {
    let dir = tempdir();
    let big = dir.path().join("big_segments.csv");
    big_csv(&big, 12);

    // The reference: an uninterrupted run of the big ingest in its own root.
    let clean = dir.path().join("clean");
    let t0 = Instant::now();
    run_ok(&mut ingest_cmd(&big, &clean));
    let duration = t0.elapsed();
    let expected_new = tables(&clean);

    // The run root under test holds a committed first version (from a small input of the same name).
    let root = dir.path().join("root");
    let small_dir = dir.path().join("small");
    fs::create_dir(&small_dir).unwrap();
    let small = small_dir.join("big_segments.csv");
    fs::write(&small, fs::read_to_string(audioset("balanced_train_segments.csv")).unwrap()).unwrap();
    run_ok(&mut ingest_cmd(&small, &root));
    let previous = tables(&root);
    assert_ne!(previous, expected_new);

    let mut saw_previous = 0;
    for i in 1..=10 {
        let delay = duration.mul_f64(i as f64 / 10.0);
        let mut child = ingest_cmd(&big, &root).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL on Unix
        child.wait().unwrap();
        // Whatever the moment, each table is one complete committed version: all previous or all new.
        let now = tables(&root);
        assert!(now == previous || now == expected_new, "kill at {delay:?} left a mixed state: {now:?}");
        if now == previous {
            saw_previous += 1;
            // Readable, with the previous content.
            assert_eq!(sql_count(&root, "SELECT count(*) FROM clips"), 22_160);
        } else {
            assert_eq!(sql_count(&root, "SELECT count(*) FROM clips"), 22_160 * 12);
            // Back to the previous version for the next round.
            run_ok(&mut ingest_cmd(&small, &root));
        }
    }
    assert!(saw_previous >= 2, "the kills should mostly land before the commit ({saw_previous} of 10 did)");

    // A rerun after a kill completes with exactly the content of an uninterrupted run.
    let mut child = ingest_cmd(&big, &root).spawn().unwrap();
    std::thread::sleep(duration / 2);
    let _ = child.kill();
    child.wait().unwrap();
    run_ok(&mut ingest_cmd(&big, &root));
    assert_eq!(tables(&root), expected_new);
    // Only the committed version's folder is left for each table.
    for (name, _, _) in tables(&root) {
        let versions: Vec<_> = fs::read_dir(root.join("tables").join(&name)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(versions.len(), 1, "{name}: {versions:?}");
    }
}

/// Two writers of one table at once (the same stage started twice on one root, or a retried job
/// beside the one it retries): each writes its own folder, the first commit wins, the second is
/// refused, and the committed table holds exactly the winner's rows. Both plain and resumable
/// writers (`features` uses the latter).
#[test]
fn two_writers_of_one_table_at_once_cannot_mix_their_files() {
    use arrow::array::AsArray;
    use psla::table::RunRoot;
    let dir = tempdir();
    let root = RunRoot::open(&dir.path().to_string_lossy()).unwrap();
    let schema = psla::stages::features::rejects_schema();
    let batch = rejects_of;
    let ids = |root: &RunRoot| -> Vec<String> {
        let t = root.read_table("t").unwrap();
        t.batches.iter().flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(String::from).collect::<Vec<_>>()).collect()
    };
    for resumable in [false, true] {
        let open = || match resumable {
            true => root.table_writer_resumable("t", schema.clone(), "a").unwrap().0,
            false => root.table_writer("t", schema.clone(), "a").unwrap(),
        };
        let before = root.manifest().unwrap().tables.get("t").map(|e| e.version);
        let mut a = open();
        a.write(&batch(&["a1", "a2"])).unwrap();
        a.checkpoint().unwrap();
        // The second writer starts while the first is mid-write, and writes more files than it.
        let mut b = open();
        assert_ne!(a.dir(), b.dir(), "two writers share a folder");
        b.write(&batch(&["b1"])).unwrap();
        b.checkpoint().unwrap();
        b.write(&batch(&["b2"])).unwrap();
        a.write(&batch(&["a3"])).unwrap();
        let (a, b) = (a.finish().unwrap(), b.finish().unwrap());
        root.commit(vec![a], None).unwrap();
        let loser = dir.path().join(&b.entry.dir);
        let err = root.commit(vec![b], None).unwrap_err().to_string();
        assert!(err.contains("committed by another writer"), "{err}");
        assert!(!loser.exists(), "the refused writer's folder is removed");
        let entry = root.manifest().unwrap().tables["t"].clone();
        assert_eq!(Some(entry.version), Some(before.map_or(1, |v| v + 1)));
        assert_eq!(ids(&root), ["a1", "a2", "a3"], "resumable: {resumable}");
        assert_eq!(entry.rows, 3);
        // The table's folder holds its files and nothing else (SQL reads the folder).
        let mut on_disk: Vec<String> = fs::read_dir(dir.path().join(&entry.dir))
            .unwrap()
            .map(|e| format!("{}/{}", entry.dir, e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, entry.files, "resumable: {resumable}");
        // After the next commit of the table only its folder is left.
        let w = root.table_writer("t", schema.clone(), "c").unwrap();
        let c = w.finish().unwrap();
        let kept = c.entry.dir.clone();
        root.commit(vec![c], None).unwrap();
        let folders: Vec<String> = fs::read_dir(dir.path().join("tables/t")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(folders, [kept.rsplit('/').next().unwrap()], "resumable: {resumable}");
    }
}
