//! Tables: the run root that stores them (Parquet on object_store, atomic commits through the
//! manifest) and small helpers to build Arrow columns.

pub mod manifest;
pub mod storage;
pub mod store;

pub use manifest::{Manifest, StageRecord, TableEntry};
pub use store::{Commit, RunRoot, StagedTable, TableData, TableWriter, psla_version, runtime, writer_properties};
