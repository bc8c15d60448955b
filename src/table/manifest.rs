//! `manifest.json`: the one file that says which version of each table is current and what each stage
//! last did. Replacing it is the commit point of every write (see [`crate::table::RunRoot::commit`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole state of a run root.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Incremented by every commit.
    pub generation: u64,
    /// The psla version that wrote the last commit.
    pub psla_version: String,
    pub tables: BTreeMap<String, TableEntry>,
    pub stages: BTreeMap<String, StageRecord>,
}

/// One committed table version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    /// Monotonic per table; the data lives in `dir`, `tables/<name>/v<version>-<token>/`.
    pub version: u64,
    /// Folder of this version, relative to the run root.
    pub dir: String,
    /// Parquet files of this version, relative to the run root, in row order.
    pub files: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    /// sha256 over the files' bytes: equal content, equal hash (used in stage fingerprints).
    pub content_hash: String,
    /// Arrow schema, one `name: type` line per column.
    pub schema: Vec<String>,
    /// The stage (or command) that wrote it.
    pub written_by: String,
    pub committed_at: String,
}

/// What a stage did the last time it ran to completion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRecord {
    pub kind: String,
    /// sha256 of the stage kind, its resolved parameters, its input tables' content and input files'
    /// content, and the psla version. Equal fingerprint: the stage is skipped.
    pub fingerprint: String,
    /// Input table name -> content hash at the time of the run.
    pub inputs: BTreeMap<String, String>,
    /// Output table names.
    pub outputs: Vec<String>,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rejects: u64,
    pub seconds: f64,
    pub finished_at: String,
    pub psla_version: String,
}
