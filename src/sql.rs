//! SQL over a run root with DataFusion.
//!
//! [`Session::open`] registers every committed table of a run root under its name. Queries from users
//! (`psla sql`) go through [`Session::query_read_only`], which refuses anything that is not a query:
//! DDL (CREATE, DROP, CREATE EXTERNAL TABLE), DML (INSERT, UPDATE, DELETE, COPY) and statements (SET,
//! transactions). Reading files by path (`SELECT * FROM 'file.parquet'`) is not enabled, so a query sees
//! the run root's tables and nothing else.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::DFParser;

use crate::cluster::Engine;
use crate::error::{Error, Result};
use crate::table::{RunRoot, TableData, runtime};

/// A DataFusion session with a run root's tables registered.
///
/// Its queries run in this process, or on a Ballista cluster ([`Engine::Ballista`]): the same SQL,
/// planned here and executed by the cluster's executors. On a cluster, tables registered from
/// memory ([`Session::register_batches`]) are first written as Parquet under the run root's
/// `_scratch/` (executors cannot read this process's memory); that folder is removed when the
/// session is dropped.
pub struct Session {
    ctx: SessionContext,
    tables: Vec<String>,
    engine: Engine,
    cluster: Option<ClusterParts>,
}

/// What a session on a cluster has besides its remote context.
struct ClusterParts {
    /// An in-process context with the same tables, for the few queries Ballista 55 cannot run
    /// (recursive CTEs; see [`Session::query_in_process`]).
    local: SessionContext,
    /// Where registered batches go: `<run root>/_scratch/<session>/`.
    store: Arc<dyn object_store::ObjectStore>,
    url: url::Url,
    prefix: object_store::path::Path,
    written: usize,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            if let Ok(dir) = c.url.to_file_path() {
                // A local folder: remove it, and the scratch folder above it once empty.
                let _ = std::fs::remove_dir_all(&dir);
                let _ = dir.parent().map(std::fs::remove_dir);
                return;
            }
            let (store, prefix) = (c.store.clone(), c.prefix.clone());
            let _ = runtime().block_on(async move {
                use futures::TryStreamExt;
                use futures::StreamExt;
                let paths = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
                store.delete_stream(paths).try_collect::<Vec<_>>().await
            });
        }
    }
}

impl Session {
    /// Register every table of `root` (its committed version) by name.
    pub fn open(root: &RunRoot) -> Result<Self> {
        Self::open_tables(root, None)
    }

    /// A session with no tables (register them with [`Session::register_parquet`] and
    /// [`Session::register_batches`]).
    pub fn empty() -> Self {
        let mut config = SessionConfig::new().with_information_schema(true);
        // Results come back with plain strings (as every psla table stores them), not Utf8View:
        // `query_read_only` converts them after collecting (see `expand_views`). DataFusion's own
        // `expand_views_at_output` is not used: its cast above a sort hides the sort order from the
        // planner, which may then split the sorted output over partitions and lose the order.
        config.options_mut().optimizer.expand_views_at_output = false;
        Session { ctx: SessionContext::new_with_config(config), tables: Vec::new(), engine: Engine::Local, cluster: None }
    }

    /// A session with no tables whose queries run on `engine`. On a cluster, tables registered from
    /// memory are written under `scratch` (a folder URL the executors can read: the run root's
    /// `_scratch/`, or beside a command's output), in a folder of this session's own.
    pub fn empty_on(engine: &Engine, scratch: Option<&url::Url>) -> Result<Self> {
        let Engine::Ballista { addr, partitions } = engine else { return Ok(Self::empty()) };
        let scratch = scratch.ok_or_else(|| {
            Error::invalid(format!("{engine}: a cluster session needs a folder the executors can read (a run root)"))
        })?;
        // Fail here, not at the first query, when no scheduler answers.
        runtime().block_on(crate::cluster::check_scheduler(addr))?;
        let mut config = crate::cluster::session_config();
        if let Some(n) = partitions {
            config = config.with_target_partitions(*n);
        }
        let ctx = runtime().block_on(crate::cluster::client_context(addr, config))?;
        let unique = format!(
            "{}-{}/",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        );
        let url = scratch.join(&unique).map_err(|e| Error::invalid(format!("{scratch}: {e}")))?;
        let (store, prefix) = crate::table::storage::store_for(&url)?;
        Ok(Session {
            ctx,
            tables: Vec::new(),
            engine: engine.clone(),
            cluster: Some(ClusterParts { local: Self::empty().ctx.clone(), store, url, prefix, written: 0 }),
        })
    }

    /// Where this session's queries run.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Register only `only` (all tables when None): a stage sees the tables it declares and no others.
    pub fn open_tables(root: &RunRoot, only: Option<&[String]>) -> Result<Self> {
        Self::open_tables_on(root, only, &Engine::Local)
    }

    /// [`Session::open_tables`] with its queries on `engine`.
    pub fn open_tables_on(root: &RunRoot, only: Option<&[String]>, engine: &Engine) -> Result<Self> {
        let names: Vec<(String, String)> = match only {
            Some(only) => only.iter().map(|t| (t.clone(), t.clone())).collect(),
            None => root.manifest()?.tables.keys().map(|t| (t.clone(), t.clone())).collect(),
        };
        Self::open_mapped_on(root, &names, engine)
    }

    /// Register run-root tables under other names: `(sql_name, table)` pairs. A stage whose SQL says
    /// `teacher_scores` reads whatever table the pipeline maps there.
    pub fn open_mapped(root: &RunRoot, names: &[(String, String)]) -> Result<Self> {
        Self::open_mapped_on(root, names, &Engine::Local)
    }

    /// [`Session::open_mapped`] with its queries on `engine`.
    pub fn open_mapped_on(root: &RunRoot, names: &[(String, String)], engine: &Engine) -> Result<Self> {
        let mut session = Self::empty_on(engine, Some(&root.url_of("_scratch/")))?;
        let manifest = root.manifest()?;
        if root.local_dir().is_none() {
            let url = root.url();
            let base = url::Url::parse(&format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")))
                .map_err(|e| Error::invalid(format!("{url}: {e}")))?;
            for ctx in session.contexts() {
                ctx.register_object_store(&base, root.object_store());
            }
        }
        for (sql_name, table) in names {
            let entry = manifest.tables.get(table).ok_or_else(|| root.table_entry(table).expect_err("the table is missing"))?;
            let dir = root.url_of(&format!("{}/", entry.dir));
            session.register_listing(sql_name, dir.as_str()).map_err(|e| Error::table(table, format!("cannot register for SQL: {e}")))?;
        }
        Ok(session)
    }

    /// The session's contexts: its engine's, and on a cluster the in-process one.
    fn contexts(&self) -> impl Iterator<Item = &SessionContext> {
        std::iter::once(&self.ctx).chain(self.cluster.as_ref().map(|c| &c.local))
    }

    /// Register the Parquet files under the folder URL `dir` as `name`, in every context.
    fn register_listing(&mut self, name: &str, dir: &str) -> std::result::Result<(), datafusion::error::DataFusionError> {
        let options = || ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        for ctx in self.contexts() {
            ctx.deregister_table(name)?;
            runtime().block_on(ctx.register_listing_table(name, dir, options(), None, None))?;
        }
        if !self.tables.iter().any(|t| t == name) {
            self.tables.push(name.to_string());
        }
        Ok(())
    }

    /// Register a Parquet file (or a folder of them) under `name`.
    pub fn register_parquet(&mut self, name: &str, path: &std::path::Path) -> Result<()> {
        if !path.exists() {
            return Err(Error::file(path, None, "no such file"));
        }
        let abs = std::path::absolute(path).map_err(|e| Error::file(path, None, e))?;
        for ctx in self.contexts() {
            let options = datafusion::prelude::ParquetReadOptions::default();
            runtime()
                .block_on(ctx.register_parquet(name, abs.to_string_lossy().as_ref(), options))
                .map_err(|e| Error::file(path, None, format!("cannot read as Parquet: {e}")))?;
        }
        self.tables.push(name.to_string());
        Ok(())
    }

    /// Register in-memory batches under `name` (replacing a table of that name).
    pub fn register_batches(&mut self, name: &str, data: &TableData) -> Result<()> {
        if self.cluster.is_some() {
            return self.register_batches_as_parquet(name, data);
        }
        let table = datafusion::datasource::MemTable::try_new(data.schema.clone(), vec![data.batches.clone()])?;
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, Arc::new(table))?;
        if !self.tables.iter().any(|t| t == name) {
            self.tables.push(name.to_string());
        }
        Ok(())
    }

    /// Drop the table `name` from the session (every context), freeing what it holds in memory; a
    /// name the session does not know is not an error.
    pub fn deregister(&mut self, name: &str) -> Result<()> {
        for ctx in self.contexts() {
            ctx.deregister_table(name)?;
        }
        self.tables.retain(|t| t != name);
        Ok(())
    }

    /// On a cluster: write `data` under the scratch folder and register it from there.
    fn register_batches_as_parquet(&mut self, name: &str, data: &TableData) -> Result<()> {
        let c = self.cluster.as_mut().expect("a cluster session");
        c.written += 1;
        let dir = format!("{:03}-{name}", c.written);
        let path = object_store::path::Path::from(format!("{}/{dir}/part-0.parquet", c.prefix));
        let url = c.url.join(&format!("{dir}/")).map_err(|e| Error::invalid(format!("{}: {e}", c.url)))?;
        let writer = object_store::buffered::BufWriter::new(c.store.clone(), path);
        let props = crate::table::writer_properties(&data.schema);
        runtime().block_on(async {
            let mut w = parquet::arrow::AsyncArrowWriter::try_new(writer, data.schema.clone(), Some(props))?;
            for b in &data.batches {
                w.write(b).await?;
            }
            w.close().await?;
            Ok::<_, parquet::errors::ParquetError>(())
        })
        .map_err(|e| Error::invalid(format!("cannot write table {name} for the cluster under {url}: {e}")))?;
        self.register_listing(name, url.as_str())?;
        Ok(())
    }

    /// Run a query in this process even on a cluster. Only for what Ballista 55 cannot distribute:
    /// recursive CTEs (its executors have no RecursiveQueryExec), over small tables (the ontology).
    pub fn query_in_process(&self, sql: &str) -> Result<TableData> {
        match &self.cluster {
            None => self.query_read_only(sql),
            Some(c) => query_in(&c.local, &self.tables, sql),
        }
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn table_names(&self) -> &[String] {
        &self.tables
    }

    /// Run one or more `;`-separated queries; returns the result of the last one. Anything that would
    /// change a table, create one, or touch files is refused before it runs.
    pub fn query_read_only(&self, sql: &str) -> Result<TableData> {
        query_in(&self.ctx, &self.tables, sql)
    }
}

/// Run read-only `sql` in `ctx` (see [`Session::query_read_only`]); `tables` are named when one is unknown.
fn query_in(ctx: &SessionContext, tables: &[String], sql: &str) -> Result<TableData> {
    {
        let statements = DFParser::parse_sql(sql).map_err(|e| Error::Sql(e.to_string()))?;
        if statements.is_empty() {
            return Err(Error::Sql("no SQL statement given".into()));
        }
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let mut last = None;
        let state = ctx.state();
        for statement in statements {
            let text = statement.to_string();
            let plan = runtime().block_on(state.statement_to_plan(statement)).map_err(|e| planning_error(tables, e))?;
            options.verify_plan(&plan).map_err(|e| refusal(&text, e))?;
            let df = runtime().block_on(ctx.execute_logical_plan(plan)).map_err(|e| Error::Sql(e.to_string()))?;
            let schema = df.schema().inner().clone();
            // Each batch's views are expanded as it arrives, so a result is never held twice.
            let batches = runtime().block_on(async {
                use futures::StreamExt;
                let mut stream = df.execute_stream().await.map_err(|e| Error::Sql(e.to_string()))?;
                let mut out = Vec::new();
                while let Some(batch) = stream.next().await {
                    out.push(expand_views(batch.map_err(|e| Error::Sql(e.to_string()))?)?);
                }
                Ok::<_, Error>(out)
            })?;
            // The batches' schema is the one to keep: the plan's may differ in nullability.
            let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| expanded_schema(&schema));
            last = Some(TableData { schema, batches });
        }
        Ok(last.expect("at least one statement"))
    }
}

/// A planning error; an unknown table also lists the tables there are.
fn planning_error(tables: &[String], e: datafusion::error::DataFusionError) -> Error {
    let msg = e.to_string();
    if msg.contains("table '") && msg.contains("not found") {
        let known = if tables.is_empty() { "none: run a stage first".to_string() } else { tables.join(", ") };
        return Error::Sql(format!("{msg}. Tables in this run root: {known}"));
    }
    Error::Sql(msg)
}

/// Turn DataFusion's "DDL not supported" family into a message that says what to do instead.
fn refusal(statement: &str, e: datafusion::error::DataFusionError) -> Error {
    let msg = e.to_string();
    let kind = if msg.contains("DDL not supported") {
        Some("it defines or drops a table (DDL)")
    } else if msg.contains("DML not supported") {
        Some("it writes data (INSERT, UPDATE, DELETE or COPY)")
    } else if msg.contains("Statement not supported") {
        Some("it changes the session (SET, transactions)")
    } else {
        None
    };
    match kind {
        Some(kind) => Error::Sql(format!(
            "refused `{}`: {kind}. `psla sql` is read-only; tables change only through pipeline stages, \
             and `--out FILE.parquet` saves a query's result",
            truncate(statement, 80)
        )),
        None => Error::Sql(msg),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}...", s.chars().take(n).collect::<String>()) }
}

/// `dt` with string / binary views (also inside lists and structs) as plain strings / binaries
/// (`Utf8`, `Binary`: the types docs/tables.md gives, and what a Ballista cluster, which reads
/// Parquet without views, returns, so that both engines write the same tables).
fn expanded(dt: &arrow::datatypes::DataType) -> arrow::datatypes::DataType {
    use arrow::datatypes::{DataType, Field};
    let field = |f: &Arc<Field>| Arc::new(f.as_ref().clone().with_data_type(expanded(f.data_type())));
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
        other => other.clone(),
    }
}

fn expanded_schema(schema: &arrow::datatypes::SchemaRef) -> arrow::datatypes::SchemaRef {
    let fields: Vec<arrow::datatypes::Field> =
        schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(expanded(f.data_type()))).collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with its view columns expanded (see [`expanded`]).
fn expand_views(batch: arrow::array::RecordBatch) -> Result<arrow::array::RecordBatch> {
    let schema = expanded_schema(&batch.schema());
    if schema == batch.schema() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { arrow::compute::cast(c, f.data_type()) })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(arrow::array::RecordBatch::try_new(schema, columns)?)
}
