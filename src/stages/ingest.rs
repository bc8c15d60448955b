//! `ingest`: AudioSet-style segment CSVs, a class vocabulary, the AudioSet ontology and audio locations
//! become the tables `classes`, `ontology`, `ontology_edges`, `clips`, `labels` and `ingest_rejects`.
//!
//! Bad rows never stop the stage and never vanish: a malformed line, an unknown mid, an end before its
//! start or a duplicate clip id each become a row of `ingest_rejects` naming the file and line, and every
//! good row is kept. An input file that is missing or cannot be parsed as a whole (the vocabulary, the
//! ontology) is an error that names it, and nothing is written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::table::storage;
use crate::pipeline::spec::Resolver;
use crate::progress::group;

pub const KIND: StageKind = StageKind {
    name: "ingest",
    about: "segment CSVs, class vocabulary, ontology and audio locations -> Parquet tables",
    build: |value, resolver| {
        let mut p: IngestParams = params_from(value)?;
        p.resolve_paths(resolver);
        Ok(Box::new(p))
    },
};

/// Audio file extensions looked up under `audio`, in order of preference.
pub const AUDIO_EXTENSIONS: &[&str] = &["wav", "flac", "mp3", "ogg", "opus", "m4a"];

/// Parameters of `ingest` (the `[stage.ingest]` keys and `psla ingest` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestParams {
    /// Segment CSVs in AudioSet's layout; the split is the file name without `_segments.csv`.
    pub segments: Vec<String>,
    /// `class_labels_indices.csv` (index, mid, display_name).
    pub classes: String,
    /// AudioSet's `ontology.json`.
    pub ontology: String,
    /// A folder under which `<clip_id>.<ext>` is looked up.
    #[serde(default)]
    pub audio: Option<String>,
    /// A CSV `clip_id,path` giving each clip's audio (relative paths are relative to the CSV's folder).
    #[serde(default)]
    pub audio_manifest: Option<String>,
}

impl IngestParams {
    fn resolve_paths(&mut self, r: &Resolver) {
        for s in &mut self.segments {
            *s = r.path(s);
        }
        self.classes = r.path(&self.classes);
        self.ontology = r.path(&self.ontology);
        self.audio = self.audio.as_deref().map(|p| r.path(p));
        self.audio_manifest = self.audio_manifest.as_deref().map(|p| r.path(p));
    }
}

impl Stage for IngestParams {
    fn kind(&self) -> &'static str {
        "ingest"
    }

    fn io(&self) -> StageIo {
        let mut input_files: Vec<(&'static str, String)> =
            self.segments.iter().map(|s| ("segments", s.clone())).collect();
        input_files.push(("classes", self.classes.clone()));
        input_files.push(("ontology", self.ontology.clone()));
        if let Some(m) = &self.audio_manifest {
            input_files.push(("audio_manifest", m.clone()));
        }
        StageIo {
            reads: vec![],
            writes: super::names(&["classes", "ontology", "ontology_edges", "clips", "labels", "ingest_rejects"]),
            input_files,
            input_dirs: self.audio.iter().map(|a| ("audio", a.clone())).collect(),
            output_dirs: vec![],
        }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        run(self, ctx)
    }
}

/// One rejected input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub source: String,
    pub line: Option<u64>,
    pub clip_id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Class {
    index: i32,
    mid: String,
    display_name: String,
}

#[derive(Debug, Deserialize)]
struct OntologyEntry {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    citation_uri: String,
    #[serde(default)]
    positive_examples: Vec<String>,
    #[serde(default)]
    child_ids: Vec<String>,
    #[serde(default)]
    restrictions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Clip {
    clip_id: String,
    start_s: f64,
    end_s: f64,
    split: String,
    source: String,
    line: u64,
    labels: Vec<String>,
}

fn read_text(path: &str, what: &str) -> Result<String> {
    if storage::is_remote(path) {
        let bytes = storage::read(path).map_err(|e| Error::file(path, None, format!("cannot read the {what}: {e}")))?;
        return String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::file(path, None, format!("the {what} is not UTF-8 text: {e}")));
    }
    std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound { " (no such file; check the path)" } else { "" };
        Error::file(path, None, format!("cannot read the {what}: {e}{hint}"))
    })
}

/// Parse `class_labels_indices.csv`. Errors name the line.
fn parse_classes(path: &str) -> Result<Vec<Class>> {
    let text = read_text(path, "class vocabulary")?;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| Error::file(path, Some(1), e))?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(path, Some(1), format!("the header has no `{name}` column; expected index,mid,display_name"))
        })
    };
    let (ci, cm, cd) = (col("index")?, col("mid")?, col("display_name")?);
    let mut classes = Vec::new();
    let mut seen_mid: HashMap<String, u64> = HashMap::new();
    let mut seen_index: HashMap<i32, u64> = HashMap::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| Error::file(path, e.position().map(|p| p.line() as usize), e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let field = |i: usize| rec.get(i).unwrap_or("").to_string();
        let index: i32 = field(ci).parse().map_err(|_| {
            Error::file(path, Some(line as usize), format!("index `{}` is not an integer", field(ci)))
        })?;
        let mid = field(cm);
        if mid.is_empty() {
            return Err(Error::file(path, Some(line as usize), "empty mid"));
        }
        if let Some(first) = seen_mid.insert(mid.clone(), line) {
            return Err(Error::file(path, Some(line as usize), format!("mid {mid} already listed at line {first}")));
        }
        if let Some(first) = seen_index.insert(index, line) {
            return Err(Error::file(path, Some(line as usize), format!("index {index} already used at line {first}")));
        }
        classes.push(Class { index, mid, display_name: field(cd) });
    }
    if classes.is_empty() {
        return Err(Error::file(path, None, "the class vocabulary has no classes"));
    }
    classes.sort_by_key(|c| c.index);
    Ok(classes)
}

fn parse_ontology(path: &str) -> Result<Vec<OntologyEntry>> {
    let text = read_text(path, "ontology")?;
    let entries: Vec<OntologyEntry> = serde_json::from_str(&text).map_err(|e| {
        Error::file(path, Some(e.line()), format!("not an AudioSet ontology (a JSON array of classes): {e}"))
    })?;
    let mut seen = HashSet::new();
    for e in &entries {
        if !seen.insert(e.id.as_str()) {
            return Err(Error::file(path, None, format!("class id {} appears twice", e.id)));
        }
    }
    Ok(entries)
}

/// `start`, `end` and the label list of one data line of a segment CSV.
fn parse_segment_line(line: &str) -> std::result::Result<(String, f64, f64, Vec<String>), String> {
    let mut parts = line.splitn(4, ',');
    let (Some(id), Some(start), Some(end), Some(labels)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed line: expected `YTID, start_seconds, end_seconds, \"mid,mid,...\"`".into());
    };
    let id = id.trim();
    if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == '"') {
        return Err(format!("malformed clip id `{id}`"));
    }
    let start: f64 = start.trim().parse().map_err(|_| format!("start_seconds `{}` is not a number", start.trim()))?;
    let end: f64 = end.trim().parse().map_err(|_| format!("end_seconds `{}` is not a number", end.trim()))?;
    let labels = labels.trim();
    let inner = match (labels.starts_with('"'), labels.ends_with('"') && labels.len() >= 2) {
        (true, true) => &labels[1..labels.len() - 1],
        (false, false) => labels,
        _ => return Err(format!("malformed label list {labels}: unbalanced quote")),
    };
    if inner.contains('"') {
        return Err(format!("malformed label list {labels}: stray quote"));
    }
    let mids = inner.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect();
    Ok((id.to_string(), start, end, mids))
}

/// The split a segment file holds: its name without `_segments` and the extension.
pub fn split_name(path: &str) -> String {
    let stem = Path::new(path).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    stem.strip_suffix("_segments").unwrap_or(&stem).to_string()
}

/// Audio lookup: clip_id -> URI.
fn audio_index(params: &IngestParams, rejects: &mut Vec<Reject>) -> Result<HashMap<String, String>> {
    let mut index = HashMap::new();
    if let Some(dir) = &params.audio {
        if storage::is_remote(dir) {
            // An object-store folder: the objects directly under it, named <clip_id>.<ext>.
            let mut best: HashMap<String, (usize, String)> = HashMap::new();
            for url in storage::list_dir(dir).map_err(|e| Error::file(dir, None, format!("cannot list the audio folder: {e}")))? {
                let name = url.rsplit('/').next().unwrap_or_default();
                let Some((stem, ext)) = name.rsplit_once('.') else { continue };
                let ext = ext.to_ascii_lowercase();
                let Some(rank) = AUDIO_EXTENSIONS.iter().position(|e| *e == ext) else { continue };
                let stem = stem.to_string();
                if best.get(&stem).is_none_or(|(r, _)| rank < *r) {
                    best.insert(stem, (rank, url.clone()));
                }
            }
            index.extend(best.into_iter().map(|(stem, (_, url))| (stem, url)));
        }
        let dir = super::local_path(dir);
        let entries = if storage::is_remote(&params.audio.clone().unwrap_or_default()) {
            Vec::new()
        } else {
            std::fs::read_dir(&dir)
                .map_err(|e| Error::file(&dir, None, format!("cannot list the audio folder: {e}")))?
                .collect()
        };
        let mut best: HashMap<String, (usize, PathBuf)> = HashMap::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::file(&dir, None, e))?.path();
            let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else { continue };
            let ext = ext.to_string_lossy().to_ascii_lowercase();
            let Some(rank) = AUDIO_EXTENSIONS.iter().position(|e| *e == ext) else { continue };
            let stem = stem.to_string_lossy().into_owned();
            if best.get(&stem).is_none_or(|(r, _)| rank < *r) {
                best.insert(stem, (rank, path));
            }
        }
        for (stem, (_, path)) in best {
            index.insert(stem, file_uri(&path)?);
        }
    }
    if let Some(manifest) = &params.audio_manifest {
        let text = read_text(manifest, "audio manifest")?;
        let base = Path::new(manifest).parent().unwrap_or(Path::new("."));
        let remote_base = storage::is_remote(manifest).then(|| url::Url::parse(manifest).ok()).flatten();
        for (i, line) in text.lines().enumerate() {
            let line_no = i as u64 + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("clip_id")) {
                continue;
            }
            let Some((id, path)) = line.split_once(',') else {
                rejects.push(Reject {
                    source: manifest.clone(),
                    line: Some(line_no),
                    clip_id: None,
                    reason: "malformed line: expected `clip_id,path`".into(),
                });
                continue;
            };
            let (id, path) = (id.trim(), path.trim().trim_matches('"'));
            let uri = if path.contains("://") {
                path.to_string()
            } else if let Some(base) = &remote_base {
                // Relative to an object-store manifest: relative to its folder in the store.
                base.join(path).map_err(|e| Error::file(manifest, Some(line_no as usize), format!("bad path `{path}`: {e}")))?.to_string()
            } else {
                let p = base.join(path);
                file_uri(&p.canonicalize().unwrap_or(p))?
            };
            index.insert(id.to_string(), uri);
        }
    }
    Ok(index)
}

fn file_uri(path: &Path) -> Result<String> {
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    url::Url::from_file_path(&abs)
        .map(|u| u.to_string())
        .map_err(|_| Error::file(path, None, "cannot express the path as a file:// URL"))
}

/// Run the stage: parse, validate, stage the six tables.
pub fn run(params: &IngestParams, ctx: &StageContext) -> Result<StageOutput> {
    if params.segments.is_empty() {
        return Err(Error::invalid("ingest needs at least one segment CSV (`segments`)"));
    }
    // Whole-file inputs first: any failure here writes nothing.
    let classes = parse_classes(&params.classes)?;
    let ontology = parse_ontology(&params.ontology)?;
    let mut texts = Vec::new();
    for path in &params.segments {
        texts.push((path.clone(), read_text(path, "segment CSV")?));
    }
    let mut rejects = Vec::new();
    let audio = audio_index(params, &mut rejects)?;

    let vocabulary: HashMap<&str, &Class> = classes.iter().map(|c| (c.mid.as_str(), c)).collect();
    let ontology_ids: HashSet<&str> = ontology.iter().map(|e| e.id.as_str()).collect();

    // Segment lines.
    let total_lines: u64 = texts.iter().map(|(_, t)| t.lines().count() as u64).sum();
    let pb = ctx.progress_bar(total_lines, "lines");
    let mut clips: Vec<Clip> = Vec::new();
    let mut first_seen: HashMap<String, (String, u64)> = HashMap::new();
    let mut rows_in = 0u64;
    for (path, text) in &texts {
        let split = split_name(path);
        for (i, raw) in text.lines().enumerate() {
            pb.inc(1);
            let line_no = i as u64 + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.split(',').next().map(str::trim) == Some("YTID") {
                continue; // an uncommented header
            }
            rows_in += 1;
            let reject = |clip_id: Option<&str>, reason: String| Reject {
                source: path.clone(),
                line: Some(line_no),
                clip_id: clip_id.map(String::from),
                reason,
            };
            let (clip_id, start_s, end_s, mids) = match parse_segment_line(line) {
                Ok(v) => v,
                Err(reason) => {
                    rejects.push(reject(None, reason));
                    continue;
                }
            };
            if !(start_s >= 0.0 && end_s > start_s) {
                rejects.push(reject(
                    Some(&clip_id),
                    format!("end_seconds {end_s} is not after start_seconds {start_s}"),
                ));
                continue;
            }
            if let Some((first_file, first_line)) = first_seen.get(&clip_id) {
                rejects.push(reject(
                    Some(&clip_id),
                    format!("duplicate clip id (first seen at {first_file}:{first_line}); this row is skipped"),
                ));
                continue;
            }
            first_seen.insert(clip_id.clone(), (path.clone(), line_no));
            let mut labels = Vec::new();
            for mid in mids {
                if !vocabulary.contains_key(mid.as_str()) {
                    rejects.push(reject(
                        Some(&clip_id),
                        format!("unknown mid {mid}: not in the class vocabulary {}; label skipped, clip kept", params.classes),
                    ));
                } else if labels.contains(&mid) {
                    rejects.push(reject(Some(&clip_id), format!("mid {mid} listed twice; kept once")));
                } else {
                    labels.push(mid);
                }
            }
            clips.push(Clip { clip_id, start_s, end_s, split: split.clone(), source: path.clone(), line: line_no, labels });
        }
    }
    pb.finish_and_clear();

    // Ontology children that point nowhere are reported, not fatal (edges to them are dropped).
    for e in &ontology {
        for c in &e.child_ids {
            if !ontology_ids.contains(c.as_str()) {
                rejects.push(Reject {
                    source: params.ontology.clone(),
                    line: None,
                    clip_id: None,
                    reason: format!("class {} lists child {c}, which the ontology does not define; edge skipped", e.id),
                });
            }
        }
    }

    let without_audio =
        if audio.is_empty() && params.audio.is_none() && params.audio_manifest.is_none() { clips.len() } else {
            clips.iter().filter(|c| !audio.contains_key(&c.clip_id)).count()
        };
    let n_labels: usize = clips.iter().map(|c| c.labels.len()).sum();
    let vocab_not_in_ontology = classes.iter().filter(|c| !ontology_ids.contains(c.mid.as_str())).count();

    let tables = vec![
        ctx.stage_table("classes", classes_schema(), &[classes_batch(&classes)?])?,
        ctx.stage_table("ontology", ontology_schema(), &[ontology_batch(&ontology, &vocabulary)?])?,
        ctx.stage_table("ontology_edges", edges_schema(), &[edges_batch(&ontology, &ontology_ids)?])?,
        ctx.stage_table("clips", clips_schema(), &[clips_batch(&clips, &audio)?])?,
        ctx.stage_table("labels", labels_schema(), &[labels_batch(&clips)?])?,
        ctx.stage_table("ingest_rejects", rejects_schema(), &[rejects_batch(&rejects)?])?,
    ];
    let g = |n: usize| group(n as u64);
    let mut detail = format!(
        "{} clips, {} labels, {} classes, {} ontology entries, {} clips without audio",
        g(clips.len()),
        g(n_labels),
        g(classes.len()),
        g(ontology.len()),
        g(without_audio)
    );
    if vocab_not_in_ontology > 0 {
        detail.push_str(&format!(", {vocab_not_in_ontology} vocabulary classes not in the ontology"));
    }
    Ok(StageOutput {
        tables,
        rows_in,
        rows_out: (clips.len() + n_labels) as u64,
        rejects: rejects.len() as u64,
        detail,
    })
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn utf8_list(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false)
}

pub fn classes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("index", DataType::Int32, false),
        utf8("mid", false),
        utf8("display_name", false),
    ]))
}

pub fn ontology_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("id", false),
        utf8("name", false),
        utf8("description", false),
        utf8("citation_uri", false),
        utf8_list("positive_examples"),
        utf8_list("child_ids"),
        utf8_list("restrictions"),
        Field::new("is_abstract", DataType::Boolean, false),
        Field::new("in_vocabulary", DataType::Boolean, false),
    ]))
}

pub fn edges_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![utf8("parent", false), utf8("child", false)]))
}

pub fn clips_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("clip_id", false),
        Field::new("start_s", DataType::Float64, false),
        Field::new("end_s", DataType::Float64, false),
        utf8("split", false),
        utf8("source", false),
        Field::new("source_line", DataType::Int64, false),
        utf8("audio_uri", true),
    ]))
}

pub fn labels_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![utf8("clip_id", false), utf8("mid", false)]))
}

pub fn rejects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("source", false),
        Field::new("line", DataType::Int64, true),
        utf8("clip_id", true),
        utf8("reason", false),
    ]))
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn classes_batch(classes: &[Class]) -> Result<RecordBatch> {
    let mut index = Int32Builder::new();
    let mut mid = StringBuilder::new();
    let mut name = StringBuilder::new();
    for c in classes {
        index.append_value(c.index);
        mid.append_value(&c.mid);
        name.append_value(&c.display_name);
    }
    batch(classes_schema(), vec![Arc::new(index.finish()), Arc::new(mid.finish()), Arc::new(name.finish())])
}

fn list_of(values: &[Vec<String>]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for v in values {
        for s in v {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// PSLA's abstract test, literally: `restrictions == ["abstract"]`.
/// The mids of a `class_labels_indices.csv`, in index order.
pub fn read_vocabulary(classes_csv: &str) -> Result<Vec<String>> {
    Ok(parse_classes(classes_csv)?.into_iter().map(|c| c.mid).collect())
}

/// The `classes` table straight from a vocabulary CSV.
pub fn vocabulary_tables_classes_only(classes_csv: &str) -> Result<crate::table::TableData> {
    let classes = parse_classes(classes_csv)?;
    Ok(crate::table::TableData { schema: classes_schema(), batches: vec![classes_batch(&classes)?] })
}

/// The `classes`, `ontology` and `ontology_edges` tables straight from a vocabulary CSV and an
/// ontology JSON, for commands that take those files rather than a run root (`psla label`).
pub fn vocabulary_tables(classes_csv: &str, ontology_json: &str) -> Result<Vec<(&'static str, crate::table::TableData)>> {
    let classes = parse_classes(classes_csv)?;
    let ontology = parse_ontology(ontology_json)?;
    let vocabulary: HashMap<&str, &Class> = classes.iter().map(|c| (c.mid.as_str(), c)).collect();
    let ids: HashSet<&str> = ontology.iter().map(|e| e.id.as_str()).collect();
    let data = |schema: SchemaRef, batch: RecordBatch| crate::table::TableData { schema, batches: vec![batch] };
    Ok(vec![
        ("classes", data(classes_schema(), classes_batch(&classes)?)),
        ("ontology", data(ontology_schema(), ontology_batch(&ontology, &vocabulary)?)),
        ("ontology_edges", data(edges_schema(), edges_batch(&ontology, &ids)?)),
    ])
}

pub fn is_abstract(restrictions: &[String]) -> bool {
    restrictions.len() == 1 && restrictions[0] == "abstract"
}

fn ontology_batch(entries: &[OntologyEntry], vocabulary: &HashMap<&str, &Class>) -> Result<RecordBatch> {
    let mut id = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut desc = StringBuilder::new();
    let mut cite = StringBuilder::new();
    let mut abs = BooleanBuilder::new();
    let mut in_vocab = BooleanBuilder::new();
    for e in entries {
        id.append_value(&e.id);
        name.append_value(&e.name);
        desc.append_value(&e.description);
        cite.append_value(&e.citation_uri);
        abs.append_value(is_abstract(&e.restrictions));
        in_vocab.append_value(vocabulary.contains_key(e.id.as_str()));
    }
    let examples: Vec<_> = entries.iter().map(|e| e.positive_examples.clone()).collect();
    let children: Vec<_> = entries.iter().map(|e| e.child_ids.clone()).collect();
    let restrictions: Vec<_> = entries.iter().map(|e| e.restrictions.clone()).collect();
    batch(
        ontology_schema(),
        vec![
            Arc::new(id.finish()),
            Arc::new(name.finish()),
            Arc::new(desc.finish()),
            Arc::new(cite.finish()),
            list_of(&examples),
            list_of(&children),
            list_of(&restrictions),
            Arc::new(abs.finish()),
            Arc::new(in_vocab.finish()),
        ],
    )
}

fn edges_batch(entries: &[OntologyEntry], ids: &HashSet<&str>) -> Result<RecordBatch> {
    let mut parent = StringBuilder::new();
    let mut child = StringBuilder::new();
    for e in entries {
        for c in e.child_ids.iter().filter(|c| ids.contains(c.as_str())) {
            parent.append_value(&e.id);
            child.append_value(c);
        }
    }
    batch(edges_schema(), vec![Arc::new(parent.finish()), Arc::new(child.finish())])
}

fn clips_batch(clips: &[Clip], audio: &HashMap<String, String>) -> Result<RecordBatch> {
    let mut id = StringBuilder::new();
    let mut start = Float64Builder::new();
    let mut end = Float64Builder::new();
    let mut split = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut line = Int64Builder::new();
    let mut uri = StringBuilder::new();
    for c in clips {
        id.append_value(&c.clip_id);
        start.append_value(c.start_s);
        end.append_value(c.end_s);
        split.append_value(&c.split);
        source.append_value(&c.source);
        line.append_value(c.line as i64);
        uri.append_option(audio.get(&c.clip_id));
    }
    batch(
        clips_schema(),
        vec![
            Arc::new(id.finish()),
            Arc::new(start.finish()),
            Arc::new(end.finish()),
            Arc::new(split.finish()),
            Arc::new(source.finish()),
            Arc::new(line.finish()),
            Arc::new(uri.finish()),
        ],
    )
}

fn labels_batch(clips: &[Clip]) -> Result<RecordBatch> {
    let mut id = StringBuilder::new();
    let mut mid = StringBuilder::new();
    for c in clips {
        for m in &c.labels {
            id.append_value(&c.clip_id);
            mid.append_value(m);
        }
    }
    batch(labels_schema(), vec![Arc::new(id.finish()), Arc::new(mid.finish())])
}

fn rejects_batch(rejects: &[Reject]) -> Result<RecordBatch> {
    let mut source = StringBuilder::new();
    let mut line = Int64Builder::new();
    let mut clip = StringBuilder::new();
    let mut reason = StringBuilder::new();
    for r in rejects {
        source.append_value(&r.source);
        line.append_option(r.line.map(|l| l as i64));
        clip.append_option(r.clip_id.as_deref());
        reason.append_value(&r.reason);
    }
    batch(
        rejects_schema(),
        vec![Arc::new(source.finish()), Arc::new(line.finish()), Arc::new(clip.finish()), Arc::new(reason.finish())],
    )
}
