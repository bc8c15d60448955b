//! Every table psla writes is plain Parquet: pyarrow, Polars (Python and Rust) and DuckDB read it with
//! the row counts and content the manifest and `psla sql` report.

use std::fs;
use std::path::Path;

use crate::common::*;

const CHECK_PY: &str = r#"
import json, sys, glob
import pyarrow.parquet as pq, polars as pl, duckdb
root = sys.argv[1]
m = json.load(open(f"{root}/manifest.json"))
out = {}
for name, t in sorted(m["tables"].items()):
    d = f"{root}/{t['dir']}"
    a = pq.read_table(d)
    p = pl.read_parquet(f"{d}/*.parquet")
    k = duckdb.sql(f"SELECT count(*) FROM read_parquet('{d}/*.parquet')").fetchall()[0][0]
    out[name] = {"pyarrow": a.num_rows, "polars": p.height, "duckdb": k, "manifest": t["rows"],
                 "columns": a.column_names}
labels = pl.read_parquet(f"{root}/{m['tables']['labels']['dir']}/*.parquet")
out["speech_clips"] = labels.filter(pl.col("mid") == "/m/09x0r").height
print(json.dumps(out))
"#;

#[test]
fn pyarrow_polars_and_duckdb_read_every_table() {
    let dir = tempdir();
    let root = dir.path().join("root");
    ingest_balanced(&root);
    let script = dir.path().join("check.py");
    fs::write(&script, CHECK_PY).unwrap();
    let out = run_ok(std::process::Command::new(python()).arg(&script).arg(&root));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for name in ["classes", "ontology", "ontology_edges", "clips", "labels", "ingest_rejects"] {
        let t = &v[name];
        let rows = t["manifest"].as_u64().unwrap();
        assert_eq!(t["pyarrow"].as_u64(), Some(rows), "{name}: {t}");
        assert_eq!(t["polars"].as_u64(), Some(rows), "{name}: {t}");
        assert_eq!(t["duckdb"].as_u64(), Some(rows), "{name}: {t}");
    }
    assert_eq!(v["labels"]["manifest"], 52_882);
    assert_eq!(v["speech_clips"].as_u64(), Some(sql_count(&root, "SELECT count(*) FROM labels WHERE mid = '/m/09x0r'")));
    assert_eq!(v["clips"]["columns"], serde_json::json!(["clip_id", "start_s", "end_s", "split", "source", "source_line", "audio_uri"]));
}

#[test]
fn rust_polars_reads_the_tables() {
    use polars::prelude::*;
    let dir = tempdir();
    let root = dir.path().join("root");
    ingest_balanced(&root);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let file = Path::new(&root).join(m["tables"]["classes"]["files"][0].as_str().unwrap());
    let df = ParquetReader::new(fs::File::open(&file).unwrap()).finish().unwrap();
    assert_eq!(df.height(), 527);
    let mids = df.column("mid").unwrap().str().unwrap().clone();
    assert_eq!(mids.get(0), Some("/m/09x0r"));
    // Float columns are written with BYTE_STREAM_SPLIT (src/table/store.rs): Rust Polars decodes them.
    let file = Path::new(&root).join(m["tables"]["clips"]["files"][0].as_str().unwrap());
    let df = ParquetReader::new(fs::File::open(&file).unwrap()).finish().unwrap();
    let start: f64 = df.column("start_s").unwrap().f64().unwrap().sum().unwrap();
    let expected: f64 = sql_csv(&root, "SELECT sum(start_s) FROM clips")[1].parse().unwrap();
    assert!(start > 0.0 && (start - expected).abs() < 1e-6 * expected, "{start} vs {expected}");
}
