//! Snapshot tests of `--help` and of a stage's summary line. On an intended change, rerun with
//! PSLA_UPDATE_SNAPSHOTS=1 and review the diff of tests/snapshots/.

use std::fs;
use std::path::PathBuf;

use crate::common::*;

fn check_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.txt"));
    if std::env::var_os("PSLA_UPDATE_SNAPSHOTS").is_some() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no snapshot {}: run with PSLA_UPDATE_SNAPSHOTS=1 to create it", path.display()));
    assert_eq!(actual, expected, "{name} changed; if intended, rerun with PSLA_UPDATE_SNAPSHOTS=1 and review");
}

#[test]
fn help_texts() {
    let top = stdout(&run_ok(psla().env("COLUMNS", "100").arg("--help")));
    check_snapshot("help", &top);
    let subcommands = ["run", "ingest", "features", "label", "sample", "subset", "evaluate", "train", "score", "ensemble", "report", "sql", "tables", "demo", "cluster"];
    for sub in subcommands {
        let text = stdout(&run_ok(psla().env("COLUMNS", "100").args([sub, "--help"])));
        check_snapshot(&format!("help_{sub}"), &text);
    }
}

/// Times and rates vary; everything else of the summary line is fixed.
fn normalise(line: &str) -> String {
    let mut out = Vec::new();
    let words: Vec<&str> = line.split(' ').collect();
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).copied().unwrap_or("");
        if next == "s" || next.starts_with("rows/s") {
            out.push(if w.starts_with('(') { "(<N>" } else { "<N>" });
        } else {
            out.push(w);
        }
    }
    out.join(" ")
}

#[test]
fn ingest_summary_line() {
    let dir = tempdir();
    let out = ingest_balanced(&dir.path().join("root"));
    let err = stderr(&out);
    let line = err.lines().find(|l| l.starts_with("ingest:")).expect("a summary line");
    check_snapshot("summary_ingest", &format!("{}\n", normalise(line)));
    assert!(err.lines().last().unwrap().starts_with("pipeline `psla ingest`: 1 stages ran"), "{err}");
}
