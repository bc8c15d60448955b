//! A run root: a folder or object-store URL holding `_manifests/`, `manifest.json`,
//! `tables/<name>/v<N>/*.parquet` and `models/<name>/`.
//!
//! ## How a write stays atomic
//! 1. A [`TableWriter`] writes Parquet files into `tables/<name>/v<N>-<token>/`, where N is one more than
//!    the committed version and the token is drawn by the writer: two writers of one table at once
//!    never share a folder. Nothing refers to that folder yet: readers go through the manifest.
//! 2. [`RunRoot::commit`] writes the next manifest as a new object `_manifests/<generation>.json`
//!    (20 digits), with a conditional put that fails if the object exists (`PutMode::Create`: an
//!    exclusive create on a local disk, `If-None-Match: *` on S3, the same on GCS and Azure). That
//!    put is the commit point: readers take the highest generation, so before it every reader sees
//!    the previous versions, after it the new ones. Several tables (all outputs of a stage) commit
//!    together. Object stores have no rename; this needs none, and the same code runs on every store.
//!    Two writers that commit on the same generation cannot both win: the second gets an error and
//!    writes nothing visible.
//! 3. `manifest.json` is then rewritten with the same content, as a convenience for people and tools
//!    that read one file (it can lag behind the log if a process dies between the two puts; psla
//!    itself never reads it when the log exists). Log entries older than the last
//!    [`MANIFESTS_KEPT`] are removed, and so are the table's folders up to the committed version
//!    (replaced versions, writers that lost this version's commit). A process killed at any moment
//!    leaves at worst an uncommitted folder, which the next commit of that table removes.
//!
//! Roots written before the log existed have only `manifest.json`; it is read as the manifest until
//! the first commit adds the log.
//!
//! ## Resuming a long write
//! A writer opened with [`RunRoot::table_writer_resumable`] records each Parquet file it completes in
//! `v<N>-<token>/_progress.json` (written after the file, in one put). When the process is killed, the
//! next resumable writer of that version copies the recorded files into its own folder (server-side
//! copies, hard links on a local disk), leaves the rest, and tells its caller which files are already
//! there, so a stage (features) redoes only the rows of the file that was open. The interrupted folder
//! is never written again (its writer may in fact still be running). The journal is removed when the
//! writer finishes.
//!
//! Local folders and object-store URLs go through the same code (object_store; see [`storage`] for
//! how stores are configured).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use url::Url;

use super::manifest::{Manifest, StageRecord, TableEntry};
use super::storage;
use crate::error::{Error, Result};

/// The latest manifest, for people and tools (see the module docs); psla reads the log.
const MANIFEST: &str = "manifest.json";
/// The manifest log: one immutable object per committed generation.
const MANIFEST_LOG: &str = "_manifests";
/// How many generations of the log are kept (older ones are deleted after a commit).
pub const MANIFESTS_KEPT: u64 = 10;
/// The journal of a resumable writer, inside its version folder.
const JOURNAL: &str = "_progress.json";
/// A Parquet file is closed and a new one started once this many bytes are buffered.
const TARGET_FILE_BYTES: usize = 64 << 20;
/// Rows per row group: small enough for readers to stream, large enough to compress well.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The process-wide tokio runtime that drives object_store and DataFusion.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("psla-io")
            .build()
            .expect("cannot start the tokio runtime")
    })
}

pub fn psla_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A run root (see the module docs). Cheap to clone.
#[derive(Clone, Debug)]
pub struct RunRoot {
    /// What the user gave (a path or a URL), for messages.
    location: String,
    /// `file:///abs/path/` or `s3://bucket/prefix/`: always ends with `/`.
    url: Url,
    /// The local folder, for a local root.
    local: Option<PathBuf>,
    store: Arc<dyn ObjectStore>,
    /// Prefix of the root inside `store`.
    prefix: StorePath,
}

/// How many times [`RunRoot::apply`] rebases a change on a newer generation before it gives up.
const COMMIT_ATTEMPTS: u64 = 50;

/// One commit: what becomes visible together (see [`RunRoot::apply`]).
#[derive(Debug, Default)]
pub struct Commit {
    /// Tables to add or replace.
    pub tables: Vec<StagedTable>,
    /// The record of the stage that wrote them, under its id.
    pub stage: Option<(String, StageRecord)>,
    /// Tables to remove, each with the folder of the version the caller saw (a table another writer
    /// replaced meanwhile is a conflict).
    pub drop_tables: Vec<(String, String)>,
    /// Stage records to remove.
    pub drop_stages: Vec<String>,
}

impl Commit {
    /// The manifest after this change, on top of `base` (the latest committed one), or the conflict.
    fn applied_to(&self, mut base: Manifest, location: &str) -> Result<Manifest> {
        for t in &self.tables {
            if let Some(old) = base.tables.get(&t.name) {
                if old.version >= t.entry.version {
                    return Err(Error::table(
                        &t.name,
                        format!(
                            "version {} was committed by another writer while this one wrote version {}; rerun",
                            old.version, t.entry.version
                        ),
                    ));
                }
            }
        }
        if let Some((id, record)) = &self.stage {
            for (input, hash) in &record.inputs {
                if base.tables.get(input).map(|e| &e.content_hash) != Some(hash) {
                    return Err(Error::table(
                        input,
                        format!(
                            "stage `{id}` read it, and another writer replaced or removed it in run root {location} \
                             while the stage ran; nothing of this run was committed: rerun"
                        ),
                    ));
                }
            }
        }
        for (name, dir) in &self.drop_tables {
            if base.tables.get(name).map(|e| &e.dir) != Some(dir) {
                return Err(Error::table(name, format!("another writer replaced or removed it in run root {location}; rerun")));
            }
            base.tables.remove(name);
        }
        for id in &self.drop_stages {
            base.stages.remove(id);
        }
        for t in &self.tables {
            base.tables.insert(t.name.clone(), t.entry.clone());
        }
        if let Some((id, record)) = &self.stage {
            base.stages.insert(id.clone(), record.clone());
        }
        base.generation += 1;
        base.psla_version = psla_version().to_string();
        Ok(base)
    }
}

/// A table version written but not yet committed.
#[derive(Debug, Clone)]
pub struct StagedTable {
    pub name: String,
    pub entry: TableEntry,
}

/// A table read back whole.
#[derive(Debug, Clone)]
pub struct TableData {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl TableData {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

impl RunRoot {
    /// Open (creating if needed) a run root at a local path or an object-store URL.
    pub fn open(location: &str) -> Result<Self> {
        let has_scheme = location.contains("://");
        if !has_scheme || location.starts_with("file://") {
            let path = if has_scheme {
                Url::parse(location)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .ok_or_else(|| Error::invalid(format!("`{location}` is not a valid file:// URL")))?
            } else {
                PathBuf::from(location)
            };
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::file(&path, None, format!("cannot create the run root: {e}")))?;
            let abs = path.canonicalize().map_err(|e| Error::file(&path, None, e))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&abs)?;
            let url = Url::from_directory_path(&abs)
                .map_err(|_| Error::invalid(format!("cannot turn {} into a URL", abs.display())))?;
            return Ok(RunRoot {
                location: location.to_string(),
                url,
                local: Some(abs),
                store: Arc::new(store),
                prefix: StorePath::default(),
            });
        }
        let mut url = Url::parse(location).map_err(|e| Error::invalid(format!("`{location}` is not a URL: {e}")))?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let (store, prefix) = storage::store_for(&url)?;
        // A missing bucket or refused credentials must not look like an empty root: list the root
        // once (one request) and say what is wrong.
        runtime()
            .block_on(store.list_with_delimiter(Some(&prefix)))
            .map_err(|e| Error::invalid(format!("cannot open run root {}", storage::explain(location, &e))))?;
        Ok(RunRoot { location: location.to_string(), url, local: None, store, prefix })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The root as a URL ending with `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local folder of a local root.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn path(&self, rel: &str) -> StorePath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// URL of a path relative to the root.
    pub fn url_of(&self, rel: &str) -> Url {
        self.url.join(rel).expect("relative table paths are valid URL paths")
    }

    /// The committed manifest (empty for a new root): the highest generation of the log, or
    /// `manifest.json` for a root written before the log existed.
    pub fn manifest(&self) -> Result<Manifest> {
        // A commit prunes old generations, so one listed here may be gone by the time it is read:
        // list again then (it takes MANIFESTS_KEPT commits in between).
        for _ in 0..3 {
            let rel = match self.latest_generation()? {
                Some(g) => log_entry(g),
                None => MANIFEST.to_string(),
            };
            let got = runtime().block_on(async {
                match self.store.get(&self.path(&rel)).await {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            });
            match got.map_err(|e| storage::context(self.url_of(&rel).as_str(), e))? {
                Some(bytes) => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        Error::file(
                            self.url_of(&rel).to_string(),
                            Some(e.line()),
                            format!("the manifest is not valid JSON ({e}); was it edited by hand?"),
                        )
                    });
                }
                None if rel == MANIFEST => return Ok(Manifest::default()),
                None => continue,
            }
        }
        Err(Error::invalid(format!("run root {}: its manifest log changes faster than it can be read", self.location)))
    }

    /// The highest generation in the manifest log, if any.
    fn latest_generation(&self) -> Result<Option<u64>> {
        let dir = self.path(MANIFEST_LOG);
        let listed = runtime()
            .block_on(self.store.list(Some(&dir)).try_collect::<Vec<_>>())
            .map_err(|e| storage::context(self.url_of(MANIFEST_LOG).as_str(), e))?;
        Ok(listed
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse::<u64>().ok())
            .max())
    }

    /// Start writing a new version of `name`, in a folder of its own (see [`TableWriter::dir`]).
    pub fn table_writer(&self, name: &str, schema: SchemaRef, written_by: &str) -> Result<TableWriter> {
        let mut w = self.new_writer(name, schema, written_by)?;
        w.resumable = false;
        Ok(w)
    }

    /// Start or resume writing a new version of `name` (see the module docs). Returns the writer and
    /// the files an interrupted earlier attempt completed (relative to the root), which the writer
    /// keeps: the caller must not write their rows again. A journal written for another schema is
    /// discarded with its files.
    pub fn table_writer_resumable(
        &self,
        name: &str,
        schema: SchemaRef,
        written_by: &str,
    ) -> Result<(TableWriter, Vec<String>)> {
        let mut w = self.new_writer(name, schema, written_by)?;
        // An interrupted writer of this version left a folder `v<N>-<token>/` with a journal: take
        // over the one with the most recorded files (and the same schema). Its recorded files are
        // copied into this writer's own folder (server-side copies, hard links on a local disk), so
        // the folder taken over is never written to: were its writer still running, neither would
        // see the other's files. It is removed with the other leftovers by the next commit of the table.
        let mut best: Option<Journal> = None;
        for folder in self.version_folders(name)?.into_iter().filter(|(v, _)| *v == w.version).map(|(_, f)| f) {
            let journal: Option<Journal> = match self.read_bytes(&format!("{folder}/{JOURNAL}")) {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                Err(Error::ObjectStore(object_store::Error::NotFound { .. })) => None,
                Err(e) => return Err(e),
            };
            if let Some(j) = journal.filter(|j| j.schema == schema_strings(&w.schema)) {
                if best.as_ref().is_none_or(|b| j.files.len() > b.files.len()) {
                    best = Some(j);
                }
            }
        }
        let Some(journal) = best.filter(|j| !j.files.is_empty()) else {
            return Ok((w, Vec::new()));
        };
        let mut pairs = Vec::new();
        for (i, mut f) in journal.files.into_iter().enumerate() {
            let to = format!("{}/part-{i:05}.parquet", w.dir);
            let from = std::mem::replace(&mut f.path, to);
            pairs.push((from, f.path.clone()));
            w.rows += f.rows;
            w.bytes += f.bytes;
            w.files.push(f.path.clone());
            w.file_hashes.push(f.sha256.clone());
            w.journal.push(f);
        }
        self.copy_files(&pairs)?;
        // Recorded here at once, so that a writer killed before its next file resumes from this folder.
        w.write_journal()?;
        let files = w.files.clone();
        Ok((w, files))
    }

    fn new_writer(&self, name: &str, schema: SchemaRef, written_by: &str) -> Result<TableWriter> {
        validate_table_name(name)?;
        let version = self.manifest()?.tables.get(name).map_or(1, |t| t.version + 1);
        Ok(TableWriter {
            root: self.clone(),
            name: name.to_string(),
            written_by: written_by.to_string(),
            version,
            dir: format!("tables/{name}/v{version:06}-{:08x}", rand::random::<u32>()),
            schema,
            current: None,
            files: Vec::new(),
            file_hashes: Vec::new(),
            journal: Vec::new(),
            resumable: true,
            rows: 0,
            bytes: 0,
        })
    }

    /// Record batches of one Parquet file of the run root (relative path), read whole.
    pub fn read_parquet_file(&self, rel: &str) -> Result<Vec<RecordBatch>> {
        let bytes = self.read_bytes(rel)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| Error::file(rel, None, e))?
            .build()?;
        Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// A store path turned back into a path relative to the root.
    fn rel(&self, path: &StorePath) -> String {
        path.as_ref().strip_prefix(self.prefix.as_ref()).unwrap_or(path.as_ref()).trim_start_matches('/').to_string()
    }

    /// Write a whole table from batches (convenience over [`RunRoot::table_writer`]). Not committed yet.
    pub fn stage_table(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: &[RecordBatch],
        written_by: &str,
    ) -> Result<StagedTable> {
        let mut w = self.table_writer(name, schema, written_by)?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()
    }

    /// Make staged tables (and optionally a stage record) visible in one step: the next generation of
    /// the manifest log is created with one conditional put (see the module docs). Then rewrites
    /// `manifest.json` and removes old log entries and the folders of the replaced versions.
    pub fn commit(&self, tables: Vec<StagedTable>, stage: Option<(String, StageRecord)>) -> Result<Manifest> {
        self.apply(Commit { tables, stage, ..Default::default() })
    }

    /// Commit `change` (see [`Commit`]). When another writer commits the same generation first, the
    /// change is applied again on top of that writer's manifest, as long as it touched none of this
    /// change's tables and none of its stage's inputs (shards of one stage committing at once);
    /// otherwise nothing is committed, the change's staged folders are removed, and the error says
    /// which table conflicted.
    pub fn apply(&self, change: Commit) -> Result<Manifest> {
        // Refused for certain (not a store error, after which the put may have landed): the staged
        // folders are this writer's own, and nothing will refer to them.
        let refused = |e: Error| {
            for t in &change.tables {
                let _ = self.delete_prefix(&t.entry.dir);
            }
            e
        };
        let mut attempt = 0;
        let manifest = loop {
            let manifest = change.applied_to(self.manifest()?, &self.location).map_err(refused)?;
            let json = serde_json::to_vec_pretty(&manifest)?;
            let entry = log_entry(manifest.generation);
            let create = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
            match runtime().block_on(self.store.put_opts(&self.path(&entry), PutPayload::from(json.clone()), create)) {
                Ok(_) => {
                    // Committed. What follows is tidying: a failure leaves a stale hint or unused
                    // objects, not a wrong root.
                    let _ = runtime().block_on(self.store.put(&self.path(MANIFEST), PutPayload::from(json)));
                    break manifest;
                }
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })
                    if attempt + 1 < COMMIT_ATTEMPTS =>
                {
                    attempt += 1;
                    // Another writer won this generation: back off a little (jittered, so that
                    // shards started together spread out) and rebase on its manifest.
                    let jitter = u64::from(std::process::id() % 7) + attempt * 3;
                    std::thread::sleep(std::time::Duration::from_millis(10 * jitter));
                }
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    return Err(refused(Error::invalid(format!(
                        "run root {}: other writers committed generation {} and the {COMMIT_ATTEMPTS} before it \
                         while this one tried; nothing of this run was committed: rerun",
                        self.location, manifest.generation
                    ))));
                }
                Err(e) => return Err(storage::context(self.url_of(&entry).as_str(), e)),
            }
        };
        for old in manifest.generation.saturating_sub(MANIFESTS_KEPT * 2)..=manifest.generation.saturating_sub(MANIFESTS_KEPT) {
            if old > 0 {
                let _ = runtime().block_on(self.store.delete(&self.path(&log_entry(old))));
            }
        }
        for t in &change.tables {
            // Best effort: a leftover folder is harmless (nothing refers to it) and cleared next time.
            let _ = self.remove_other_versions(&t.name, &t.entry.dir, t.entry.version);
        }
        for (name, _) in &change.drop_tables {
            let _ = self.delete_prefix(&format!("tables/{name}"));
        }
        Ok(manifest)
    }

    /// Remove the tables whose names match `patterns` (`*` matches any run of characters) in one
    /// commit, with the records of the stages that wrote them (such a stage runs again next time).
    /// Each pattern must match a table. Returns the tables removed (with their entries) and the
    /// stage records removed.
    pub fn drop_tables(&self, patterns: &[String]) -> Result<(Vec<(String, TableEntry)>, Vec<String>)> {
        let manifest = self.manifest()?;
        let mut dropped: Vec<(String, TableEntry)> = Vec::new();
        for pattern in patterns {
            let matched: Vec<_> = manifest.tables.iter().filter(|(name, _)| wildcard_match(pattern, name)).collect();
            if matched.is_empty() {
                let names: Vec<&str> = manifest.tables.keys().map(String::as_str).collect();
                return Err(Error::invalid(format!(
                    "run root {}: no table matches `{pattern}`; its tables: {}",
                    self.location,
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                )));
            }
            for (name, entry) in matched {
                if !dropped.iter().any(|(n, _)| n == name) {
                    dropped.push((name.clone(), entry.clone()));
                }
            }
        }
        let stages: Vec<String> = manifest
            .stages
            .iter()
            .filter(|(_, r)| r.outputs.iter().any(|o| dropped.iter().any(|(n, _)| n == o)))
            .map(|(id, _)| id.clone())
            .collect();
        self.apply(Commit {
            drop_tables: dropped.iter().map(|(n, e)| (n.clone(), e.dir.clone())).collect(),
            drop_stages: stages.clone(),
            ..Default::default()
        })?;
        Ok((dropped, stages))
    }

    /// Copy committed files of this root to new relative paths (a server-side copy on object stores,
    /// a hard link on a local disk): the copies do not depend on the originals staying.
    pub fn copy_files(&self, pairs: &[(String, String)]) -> Result<()> {
        runtime().block_on(async {
            for (from, to) in pairs {
                self.store
                    .copy(&self.path(from), &self.path(to))
                    .await
                    .map_err(|e| storage::context(self.url_of(from).as_str(), e))?;
            }
            Ok(())
        })
    }

    /// Stage a new version of `name` holding copies of the files of `sources` (committed tables of
    /// this root with one schema), in order: no row is decoded or re-encoded. The content hash is
    /// the sha256 of the sources' content hashes.
    pub fn stage_concatenation(&self, name: &str, sources: &[TableEntry], written_by: &str) -> Result<StagedTable> {
        let w = self.new_writer(name, Arc::new(arrow::datatypes::Schema::empty()), written_by)?;
        let schema = sources.first().map(|s| s.schema.clone()).unwrap_or_default();
        let mut pairs = Vec::new();
        let mut hasher = Sha256::new();
        let (mut rows, mut bytes) = (0, 0);
        for s in sources {
            if s.schema != schema {
                return Err(Error::table(name, format!("cannot concatenate tables of different schemas ({} vs {})", s.dir, sources[0].dir)));
            }
            for f in &s.files {
                pairs.push((f.clone(), format!("{}/part-{:05}.parquet", w.dir, pairs.len())));
            }
            hasher.update(s.content_hash.as_bytes());
            rows += s.rows;
            bytes += s.bytes;
        }
        self.copy_files(&pairs)?;
        Ok(StagedTable {
            name: name.to_string(),
            entry: TableEntry {
                version: w.version,
                dir: w.dir,
                files: pairs.into_iter().map(|(_, to)| to).collect(),
                rows,
                bytes,
                content_hash: hex::encode(hasher.finalize()),
                schema,
                written_by: written_by.to_string(),
                committed_at: now_rfc3339(),
            },
        })
    }

    /// Delete the folders of table `name` up to version `committed` but `keep`: older versions,
    /// leftovers of killed writers, and the folders of writers that lost the commit of this version.
    /// Folders of later versions belong to writers that started after this commit and are kept.
    fn remove_other_versions(&self, name: &str, keep: &str, committed: u64) -> Result<()> {
        for (version, folder) in self.version_folders(name)? {
            if version <= committed && folder != keep {
                self.delete_prefix(&folder)?;
            }
        }
        Ok(())
    }

    /// The version folders of table `name` (relative to the root) with their versions: `v<N>-<token>`,
    /// and `v<N>` as written before writers had tokens. Anything else in the table's folder is left out.
    fn version_folders(&self, name: &str) -> Result<Vec<(u64, String)>> {
        let dir = format!("tables/{name}");
        let listing = runtime()
            .block_on(self.store.list_with_delimiter(Some(&self.path(&dir))))
            .map_err(|e| storage::context(self.url_of(&dir).as_str(), e))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| {
                let folder = p.filename()?;
                let digits = folder.strip_prefix('v')?.split('-').next()?;
                Some((digits.parse().ok()?, self.rel(p)))
            })
            .collect())
    }

    fn delete_prefix(&self, rel: &str) -> Result<()> {
        let prefix = self.path(rel);
        runtime().block_on(async {
            let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
            for m in metas {
                self.store.delete(&m.location).await?;
            }
            Ok::<_, Error>(())
        })?;
        if let Some(local) = &self.local {
            // Local file systems keep empty folders; remove them so one version folder remains visible.
            let _ = std::fs::remove_dir_all(local.join(rel));
        }
        Ok(())
    }

    /// The committed entry of a table, or an error listing the tables there are.
    pub fn table_entry(&self, name: &str) -> Result<TableEntry> {
        let manifest = self.manifest()?;
        manifest.tables.get(name).cloned().ok_or_else(|| {
            let known: Vec<_> = manifest.tables.keys().cloned().collect();
            Error::table(
                name,
                format!(
                    "no such table in run root {} (tables there: {})",
                    self.location,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            )
        })
    }

    /// Read a whole committed table.
    pub fn read_table(&self, name: &str) -> Result<TableData> {
        self.read_entry(name, &self.table_entry(name)?)
    }

    /// Read the files of a table entry of this root (one already looked up in a manifest).
    pub fn read_entry(&self, name: &str, entry: &TableEntry) -> Result<TableData> {
        let mut schema = None;
        let mut batches = Vec::new();
        for file in &entry.files {
            let bytes = self.read_bytes(file)?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| Error::table(name, format!("{file}: {e}")))?;
            schema.get_or_insert_with(|| builder.schema().clone());
            for b in builder.build()? {
                batches.push(b?);
            }
        }
        let schema = schema.ok_or_else(|| Error::table(name, "the table has no files"))?;
        Ok(TableData { schema, batches })
    }

    /// Bytes of a file relative to the root.
    pub fn read_bytes(&self, rel: &str) -> Result<Bytes> {
        let path = self.path(rel);
        runtime()
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .map_err(|e| storage::context(self.url_of(rel).as_str(), e))
    }

    /// Write a file relative to the root in one put (atomic on local disks and object stores).
    pub fn write_bytes(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(rel);
        runtime()
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map_err(|e| storage::context(self.url_of(rel).as_str(), e))?;
        Ok(())
    }
}

/// Read a whole local Parquet file (outside any run root), e.g. a `--labels` input.
pub fn read_parquet_path(path: &std::path::Path) -> Result<TableData> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, None, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::file(path, None, format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let batches = builder.build()?.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(TableData { schema, batches })
}

/// Write a local Parquet file through `<path>.tmp` and a rename: a killed write leaves no half file.
pub fn write_parquet_path(path: &std::path::Path, data: &TableData) -> Result<()> {
    let mut w = LocalParquetWriter::create(path, data.schema.clone())?;
    for b in &data.batches {
        w.write(b)?;
    }
    w.commit()?;
    Ok(())
}

/// The Parquet settings of every table psla writes (and of every file its commands write).
///
/// zstd level 3 and dictionary encoding where they pay: ids, mids, labels and integers repeat and
/// compress several-fold. Floating-point columns (scores, weights and, above all, the fbank
/// tensors) are stored without a dictionary (distinct values: building one is work thrown away),
/// with the BYTE_STREAM_SPLIT encoding (the bytes of each value split into streams, so that the
/// sign-and-exponent stream, which barely changes, compresses well) and zstd level 1: cheaper to
/// write than zstd 3, and smaller on log-mel features (1,000 bench clips: 400 MB against 456 MB;
/// bench/README.md, features figures). pyarrow, Polars and DuckDB all read the encoding.
pub fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    use parquet::basic::{Encoding, Type as PhysicalType};
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    if let Ok(parquet_schema) = parquet::arrow::ArrowSchemaConverter::new().convert(schema) {
        for column in parquet_schema.columns() {
            if matches!(column.physical_type(), PhysicalType::FLOAT | PhysicalType::DOUBLE) {
                let path = column.path().clone();
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path.clone(), Encoding::BYTE_STREAM_SPLIT)
                    .set_column_compression(path, Compression::ZSTD(ZstdLevel::try_new(1).expect("valid zstd level")));
            }
        }
    }
    b.build()
}

/// A local Parquet file written through `<path>.tmp` with [`writer_properties`], renamed into
/// place by [`LocalParquetWriter::commit`]: until then, `path` keeps what it had (or stays absent),
/// so a killed or failed write leaves no half file.
pub struct LocalParquetWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<std::fs::File>,
    rows: u64,
}

impl LocalParquetWriter {
    pub fn create(path: &std::path::Path, schema: SchemaRef) -> Result<Self> {
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let file = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, None, e))?;
        let props = writer_properties(&schema);
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(Self { path: path.to_path_buf(), tmp, writer, rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).map_err(|e| Error::file(&self.tmp, None, e))
    }

    /// Close the file and move it into place; returns the rows written.
    pub fn commit(self) -> Result<u64> {
        self.writer.close().map_err(|e| Error::file(&self.tmp, None, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::file(&self.path, None, e))?;
        Ok(self.rows)
    }

    /// Drop the temporary file: `path` is left as it was.
    pub fn abandon(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// The log object of a generation (relative to the root).
fn log_entry(generation: u64) -> String {
    format!("{MANIFEST_LOG}/{generation:020}.json")
}

fn validate_table_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{name}` is not a valid table name: use lower-case letters, digits and `_`, starting with a letter"
        )))
    }
}

/// Writes one new version of a table as zstd Parquet files; see [`RunRoot::table_writer`].
pub struct TableWriter {
    root: RunRoot,
    name: String,
    written_by: String,
    version: u64,
    dir: String,
    schema: SchemaRef,
    current: Option<ArrowWriter<Vec<u8>>>,
    files: Vec<String>,
    /// sha256 of each file of `files`.
    file_hashes: Vec<String>,
    /// What the journal records (resumable writers only).
    journal: Vec<JournalFile>,
    resumable: bool,
    rows: u64,
    bytes: u64,
}

/// `v<N>/_progress.json`: the files a resumable writer has completed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Journal {
    schema: Vec<String>,
    files: Vec<JournalFile>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct JournalFile {
    path: String,
    rows: u64,
    bytes: u64,
    sha256: String,
}

fn schema_strings(schema: &SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect()
}

impl TableWriter {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The folder this writer writes, relative to the root (`tables/<name>/v<N>-<token>`).
    pub fn dir(&self) -> &str {
        &self.dir
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(Error::table(
                &self.name,
                format!("batch schema {:?} differs from the table schema {:?}", batch.schema(), self.schema),
            ));
        }
        if self.current.is_none() {
            self.current = Some(ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(writer_properties(&self.schema)))?);
        }
        let w = self.current.as_mut().expect("just created");
        w.write(batch)?;
        self.rows += batch.num_rows() as u64;
        if w.bytes_written() + w.in_progress_size() >= TARGET_FILE_BYTES {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let bytes = w.into_inner()?;
            let sha = hex::encode(Sha256::digest(&bytes));
            let len = bytes.len() as u64;
            let rel = format!("{}/part-{:05}.parquet", self.dir, self.files.len());
            self.root.write_bytes(&rel, bytes)?;
            self.bytes += len;
            self.files.push(rel.clone());
            self.file_hashes.push(sha.clone());
            if self.resumable {
                let rows = self.rows - self.journal.iter().map(|f| f.rows).sum::<u64>();
                self.journal.push(JournalFile { path: rel, rows, bytes: len, sha256: sha });
                self.write_journal()?;
            }
        }
        Ok(())
    }

    /// Write the journal of the files completed so far into this writer's folder (one put).
    fn write_journal(&self) -> Result<()> {
        let journal = Journal { schema: schema_strings(&self.schema), files: self.journal.clone() };
        self.root.write_bytes(&format!("{}/{JOURNAL}", self.dir), serde_json::to_vec_pretty(&journal)?)
    }

    /// Complete the open file now (a resumable writer records it in its journal), so that a killed
    /// process does not redo its rows. Files also complete by themselves at 64 MB.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.close_file()
    }

    /// Rows written so far (including those of files resumed from a journal).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Close the last file. The table is staged, not committed: pass it to [`RunRoot::commit`].
    /// The content hash is the sha256 of the files' sha256s, in order.
    pub fn finish(mut self) -> Result<StagedTable> {
        if self.files.is_empty() && self.current.is_none() {
            // An empty table still gets one file, so readers see its schema.
            self.current = Some(ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(writer_properties(&self.schema)))?);
        }
        self.close_file()?;
        if self.resumable {
            let journal = self.root.path(&format!("{}/{JOURNAL}", self.dir));
            match runtime().block_on(self.root.store.delete(&journal)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut hasher = Sha256::new();
        for h in &self.file_hashes {
            hasher.update(h.as_bytes());
        }
        Ok(StagedTable {
            name: self.name.clone(),
            entry: TableEntry {
                version: self.version,
                dir: self.dir.clone(),
                files: self.files.clone(),
                rows: self.rows,
                bytes: self.bytes,
                content_hash: hex::encode(hasher.finalize()),
                schema: schema_strings(&self.schema),
                written_by: self.written_by.clone(),
                committed_at: now_rfc3339(),
            },
        })
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (none included).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}
