//! `psla sql`: answers over the run root's tables, and refuses anything that writes.

use std::fs;
use std::path::Path;

use crate::common::*;

/// Every file under `root`, with its size: what a refused statement must not change.
fn snapshot(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), fs::metadata(&p).unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn joins_answer_and_writes_are_refused() {
    let dir = tempdir();
    let root = dir.path().join("root");
    ingest_balanced(&root);

    // A join over two tables: the most frequent class of the balanced set is Music (/m/04rlf), which
    // the shared CSV labels on 5,000+ clips; count it independently from the CSV text.
    let csv = fs::read_to_string(audioset("balanced_train_segments.csv")).unwrap();
    let music = csv.lines().filter(|l| !l.starts_with('#') && l.contains("/m/04rlf")).count();
    let rows = sql_csv(
        &root,
        "SELECT c.display_name, count(*) AS n FROM labels l JOIN classes c ON l.mid = c.mid \
         GROUP BY c.display_name ORDER BY n DESC, c.display_name LIMIT 1",
    );
    assert_eq!(rows, vec!["display_name,n".to_string(), format!("Music,{music}")]);

    // Ready-made audits run.
    let audit = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/audit/classes_without_labels.sql");
    let out = run_ok(psla().args(["sql", "--file"]).arg(&audit).arg("--root").arg(&root).args(["--format", "csv"]));
    assert_eq!(stdout(&out).lines().count(), 1, "every class has labels in the balanced set");
    let audit = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/audit/clips_per_label_count.sql");
    let out = run_ok(psla().args(["sql", "--file"]).arg(&audit).arg("--root").arg(&root).args(["--format", "csv"]));
    let total: u64 = stdout(&out).lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, 22_160);

    let before = snapshot(&root);
    let outside = dir.path().join("copied.parquet");
    for (statement, says) in [
        ("DROP TABLE labels", "DDL"),
        ("INSERT INTO labels VALUES ('x', '/m/09x0r')", "writes data"),
        (&format!("COPY labels TO '{}' STORED AS PARQUET", outside.display()), "writes data"),
        (
            &format!("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'", audioset("x.parquet")),
            "DDL",
        ),
        ("CREATE TABLE t AS SELECT * FROM labels", "DDL"),
        ("SET datafusion.execution.batch_size = 1", "changes the session"),
        ("SELECT 1; DROP TABLE clips", "DDL"),
    ] as [(&str, &str); 7]
    {
        let err = run_err(psla().args(["sql", statement, "--root"]).arg(&root));
        assert!(err.contains("refused") && err.contains(says) && err.contains("read-only"), "{statement}: {err}");
    }
    let err = run_err(psla().args(["sql", &format!("SELECT * FROM '{}'", audioset("ontology.json")), "--root"]).arg(&root));
    assert!(err.contains("error"), "{err}");
    assert!(!outside.exists());
    assert_eq!(before, snapshot(&root), "a refused statement changed the run root");
    assert_eq!(sql_count(&root, "SELECT count(*) FROM labels"), 52_882);
}

#[test]
fn formats_and_parquet_output() {
    let dir = tempdir();
    let root = dir.path().join("root");
    ingest_balanced(&root);
    let q = "SELECT \"index\", mid FROM classes ORDER BY \"index\" LIMIT 2";
    assert_eq!(sql_csv(&root, q), vec!["index,mid", "0,/m/09x0r", "1,/m/05zppz"]);
    let json = stdout(&run_ok(psla().args(["sql", q, "--format", "json", "--root"]).arg(&root)));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[1]["mid"], "/m/05zppz");
    let table = stdout(&run_ok(psla().args(["sql", q, "--root"]).arg(&root)));
    assert!(table.contains("| index | mid"), "{table}");
    let out = dir.path().join("two.parquet");
    run_ok(psla().args(["sql", q, "--root"]).arg(&root).arg("--out").arg(&out));
    let reader = parquet::file::reader::SerializedFileReader::new(fs::File::open(&out).unwrap()).unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
    // An empty result still prints its header.
    assert_eq!(sql_csv(&root, "SELECT mid FROM classes WHERE false"), vec!["mid"]);
}
