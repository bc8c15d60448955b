//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The reference material beside the repository. Tests that need it fail (never skip) without it.
pub fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(p.join("data/audioset/ontology.json").exists(), "../shared is missing: the golden tests need it");
    p
}

pub fn audioset(file: &str) -> String {
    shared().join("data/audioset").join(file).to_string_lossy().into_owned()
}

/// The built `psla` binary, progress bars off.
pub fn psla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_psla"));
    c.env("PSLA_NO_PROGRESS", "1");
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("psla runs");
    assert!(
        out.status.success(),
        "command failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("psla runs");
    assert!(!out.status.success(), "command should fail: {:?}\nstdout:\n{}", cmd, String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A batch of the `features_rejects` schema with these clip ids (a small table to write in tests).
pub fn rejects_of(ids: &[&str]) -> arrow::array::RecordBatch {
    let rows: Vec<_> = ids
        .iter()
        .map(|i| psla::stages::features::Reject { clip_id: i.to_string(), audio_uri: String::new(), reason: "r".into() })
        .collect();
    psla::stages::features::rejects_batch(&rows).unwrap()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("psla-test-").tempdir().expect("temp dir")
}

/// `psla sql QUERY --root R --format csv`, as lines.
pub fn sql_csv(root: &Path, query: &str) -> Vec<String> {
    let out = run_ok(psla().args(["sql", query, "--root"]).arg(root).args(["--format", "csv"]));
    stdout(&out).lines().map(String::from).collect()
}

/// Single number from a `SELECT count(*) ...`.
pub fn sql_count(root: &Path, query: &str) -> u64 {
    let lines = sql_csv(root, query);
    assert_eq!(lines.len(), 2, "expected a header and one row from {query}, got {lines:?}");
    lines[1].parse().unwrap_or_else(|_| panic!("not a number: {}", lines[1]))
}

/// Ingest the shared AudioSet balanced train metadata into `root`.
pub fn ingest_balanced(root: &Path) -> Output {
    run_ok(
        psla()
            .arg("ingest")
            .args(["--segments", &audioset("balanced_train_segments.csv")])
            .args(["--classes", &audioset("class_labels_indices.csv")])
            .args(["--ontology", &audioset("ontology.json")])
            .arg("--out")
            .arg(root),
    )
}

/// The Python with pyarrow, polars and duckdb (`./dev test` creates .venv and sets PSLA_PYTHON).
pub fn python() -> PathBuf {
    let p = std::env::var_os("PSLA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(p.exists(), "{} not found: run the tests with `./dev test`, which creates .venv", p.display());
    p
}

/// One complete `psla demo` run, made once per test binary and shared by the tests that only read it
/// (the demo trains models: a run per test would cost minutes each).
pub struct DemoRun {
    pub root: PathBuf,
    /// What the first run printed.
    pub log: String,
}

/// The shared demo run, in cargo's temp dir for integration tests (emptied first, kept afterwards for a
/// look at what the tests saw).
pub fn demo_run() -> &'static DemoRun {
    static DEMO: std::sync::OnceLock<DemoRun> = std::sync::OnceLock::new();
    DEMO.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo");
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("remove the previous test demo run");
        }
        let log = stderr(&run_ok(psla().arg("demo").arg("--root").arg(&root)));
        DemoRun { root, log }
    })
}

/// A large segment CSV: the balanced set repeated `times` with distinct clip ids.
pub fn big_csv(path: &Path, times: usize) {
    let text = std::fs::read_to_string(audioset("balanced_train_segments.csv")).unwrap();
    let data: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let mut out = String::with_capacity(text.len() * times + 64);
    for k in 0..times {
        for l in &data {
            let (id, rest) = l.split_once(',').unwrap();
            out.push_str(&format!("{id}_{k},{rest}\n"));
        }
    }
    std::fs::write(path, out).unwrap();
}
