//! `sql`: materialise the result of a read-only query over the run root's tables as a new table.
//!
//! ```toml
//! [stage.labels_per_class]
//! kind = "sql"
//! file = "../sql/audit/labels_per_class.sql"   # or: query = "SELECT ..."
//! reads = ["classes", "labels"]                # the tables the query uses (the pipeline's edges)
//! out = "labels_per_class"
//! ```

use serde::{Deserialize, Serialize};

use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};

pub const KIND: StageKind = StageKind {
    name: "sql",
    about: "materialise a read-only SQL query over the run root's tables as a table",
    build: |value, resolver| {
        let mut p: SqlParams = params_from(value)?;
        if p.file.is_some() == p.query.is_some() {
            return Err("give exactly one of `file` (a .sql file) and `query`".into());
        }
        p.file = p.file.as_deref().map(|f| resolver.path(f));
        Ok(Box::new(p))
    },
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlParams {
    /// A .sql file holding the query.
    #[serde(default)]
    pub file: Option<String>,
    /// The query itself.
    #[serde(default)]
    pub query: Option<String>,
    /// Tables the query reads.
    pub reads: Vec<String>,
    /// The table to write.
    pub out: String,
}

impl Stage for SqlParams {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn io(&self) -> StageIo {
        StageIo {
            reads: self.reads.clone(),
            writes: vec![self.out.clone()],
            input_files: self.file.iter().map(|f| ("file", f.clone())).collect(),
            ..Default::default()
        }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        let sql = match (&self.file, &self.query) {
            (Some(f), _) => std::fs::read_to_string(f).map_err(|e| Error::file(f, None, e))?,
            (None, Some(q)) => q.clone(),
            (None, None) => unreachable!("checked when built"),
        };
        let session = crate::sql::Session::open_tables_on(ctx.root, Some(&self.reads), ctx.engine)?;
        let result = session.query_read_only(&sql)?;
        let rows = result.num_rows();
        let table = ctx.stage_table(&self.out, result.schema.clone(), &result.batches)?;
        Ok(StageOutput { tables: vec![table], rows_in: 0, rows_out: rows as u64, rejects: 0, detail: String::new() })
    }
}
