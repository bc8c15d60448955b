//! Pipeline stages. Each stage kind is a module with typed parameters and one `run` function from those
//! parameters and input tables to output tables. The pipeline runner and the stage's own subcommand
//! (`psla ingest`, ...) both call that function, so they never drift apart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Result;
use crate::pipeline::spec::Resolver;
use crate::table::{RunRoot, StagedTable, TableData, TableWriter};

pub mod demo_data;
pub mod ensemble;
pub mod evaluate;
pub mod features;
pub mod ingest;
pub mod label;
pub mod report;
pub mod sample;
pub mod score;
pub mod subset;
pub mod sql_stage;
pub mod train;

/// What a configured stage reads and writes: the edges of the pipeline graph.
#[derive(Debug, Clone, Default)]
pub struct StageIo {
    /// Logical names of the tables it reads.
    pub reads: Vec<String>,
    /// Logical names of the tables it writes (all committed together).
    pub writes: Vec<String>,
    /// Files it reads: (parameter key, path). Their content is part of the stage's fingerprint.
    pub input_files: Vec<(&'static str, String)>,
    /// Folders it reads without fingerprinting their content (e.g. audio): (parameter key, path).
    pub input_dirs: Vec<(&'static str, String)>,
    /// Folders it writes files into (a stage reading a file under one of them runs after it).
    pub output_dirs: Vec<String>,
}

/// A stage with its parameters resolved, ready to run.
pub trait Stage {
    /// The stage kind (`ingest`, ...).
    fn kind(&self) -> &'static str;
    fn io(&self) -> StageIo;
    /// The resolved parameters, for the fingerprint and the manifest.
    fn params_json(&self) -> serde_json::Value;
    fn run(&self, ctx: &StageContext) -> Result<StageOutput>;
}

/// What a stage gets when it runs: the run root and the mapping of its logical table names.
pub struct StageContext<'a> {
    pub root: &'a RunRoot,
    /// The stage id in the pipeline (the kind, for a subcommand).
    pub id: &'a str,
    pub tables: &'a BTreeMap<String, String>,
    /// Show progress bars (false in tests and when stderr is not a terminal).
    pub progress: bool,
    /// Where the stage's SQL runs (stages whose SQL may run on a cluster: label, ensemble, sql).
    pub engine: &'a crate::cluster::Engine,
}

impl StageContext<'_> {
    pub fn table_name(&self, logical: &str) -> String {
        self.tables.get(logical).cloned().unwrap_or_else(|| logical.to_string())
    }

    pub fn read(&self, logical: &str) -> Result<TableData> {
        self.root.read_table(&self.table_name(logical))
    }

    pub fn writer(&self, logical: &str, schema: arrow::datatypes::SchemaRef) -> Result<TableWriter> {
        self.root.table_writer(&self.table_name(logical), schema, self.id)
    }

    pub fn stage_table(
        &self,
        logical: &str,
        schema: arrow::datatypes::SchemaRef,
        batches: &[arrow::array::RecordBatch],
    ) -> Result<StagedTable> {
        self.root.stage_table(&self.table_name(logical), schema, batches, self.id)
    }

    /// A progress bar for `len` items of `what`; hidden unless progress is on.
    pub fn progress_bar(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        crate::progress::bar(self.progress, len, &format!("{} {what}", self.id))
    }
}

/// What a stage produced: staged tables (committed by the caller) and figures for the summary line.
#[derive(Debug, Default)]
pub struct StageOutput {
    pub tables: Vec<StagedTable>,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rejects: u64,
    /// Extra figures for the summary line, e.g. "22160 clips, 52882 labels".
    pub detail: String,
}

/// A stage kind: its name, a one-line description and how to build it from spec parameters.
pub struct StageKind {
    pub name: &'static str,
    pub about: &'static str,
    /// Build from `[stage.<id>]` parameters (variables already substituted). An `Err` is a message;
    /// an unknown key is reported as "unknown field `key`" (the caller adds the line).
    pub build: fn(toml::Value, &Resolver) -> std::result::Result<Box<dyn Stage>, String>,
}

/// Every stage kind a pipeline may use.
pub fn kinds() -> &'static [StageKind] {
    &[
        demo_data::KIND,
        ingest::KIND,
        ensemble::KIND,
        ensemble::AVERAGE_WEIGHTS_KIND,
        evaluate::KIND,
        features::KIND,
        label::KIND,
        report::KIND,
        sample::KIND,
        score::KIND,
        sql_stage::KIND,
        train::KIND,
    ]
}

pub fn kind(name: &str) -> Option<&'static StageKind> {
    kinds().iter().find(|k| k.name == name)
}

/// Deserialize typed parameters from a TOML value, turning serde's message into one for users.
pub fn params_from<T: serde::de::DeserializeOwned>(value: toml::Value) -> std::result::Result<T, String> {
    T::deserialize(value).map_err(|e| e.message().trim().to_string())
}

/// Owned table names from literals.
pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Paths helper for stages: resolved strings to PathBufs.
pub fn local_path(p: &str) -> PathBuf {
    PathBuf::from(p.strip_prefix("file://").unwrap_or(p))
}
