//! One error type for the whole crate.
//!
//! Every variant carries the context a user needs to fix the problem: the file (and line, where there is
//! one), the table, the key. Messages end with what to do where that is not obvious.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written or parsed. `line` is 1-based where known.
    #[error("{}: {message}", location(path, *line))]
    File { path: PathBuf, line: Option<usize>, message: String },

    /// A pipeline spec is invalid: names the file, the line and the key.
    #[error("{}: {message}", location(path, *line))]
    Spec { path: PathBuf, line: Option<usize>, key: String, message: String },

    /// A table of a run root is missing, unreadable or has the wrong shape.
    #[error("table `{table}`: {message}")]
    Table { table: String, message: String },

    /// A pipeline stage failed; `source` says why.
    #[error("stage `{stage}` failed: {source}")]
    Stage { stage: String, source: Box<Error> },

    /// A SQL statement was refused or failed.
    #[error("sql: {0}")]
    Sql(String),

    /// Invalid user input that is not tied to one file (a flag, a parameter).
    #[error("{0}")]
    Invalid(String),

    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

fn location(path: &std::path::Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{}", path.display(), l),
        None => path.display().to_string(),
    }
}

impl Error {
    /// An error about a file, with an optional 1-based line.
    pub fn file(path: impl Into<PathBuf>, line: Option<usize>, message: impl fmt::Display) -> Self {
        Error::File { path: path.into(), line, message: message.to_string() }
    }

    pub fn table(table: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Table { table: table.into(), message: message.to_string() }
    }

    pub fn invalid(message: impl fmt::Display) -> Self {
        Error::Invalid(message.to_string())
    }
}

/// Attach a file path to io errors: `fs::read(p).with_path(p)?`.
pub trait WithPath<T> {
    fn with_path(self, path: &std::path::Path) -> Result<T>;
}

impl<T> WithPath<T> for std::result::Result<T, std::io::Error> {
    fn with_path(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::file(path, None, e))
    }
}
