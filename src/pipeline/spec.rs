//! Pipeline specs: TOML files in `pipelines/`.
//!
//! ```toml
//! [pipeline]
//! name = "demo"
//! description = "what it does"
//! inputs = []                  # tables that must already be in the run root
//! engine = "local"             # or "ballista://HOST:PORT": where the SQL stages run (`psla run --engine`)
//!
//! [stage.ingest]               # a stage id; its kind defaults to the id
//! segments = ["${root}/demo_data/train_segments.csv"]
//! classes = "${root}/demo_data/class_labels_indices.csv"
//!
//! [stage.train_teacher]
//! kind = "train"               # several stages of one kind need distinct ids
//! tables = { model = "teacher" }   # rename a stage's logical tables
//! ```
//! Every other key of a stage table is a parameter of its kind. Strings may use `${root}` (the run root),
//! `${pipeline_dir}` (the folder of the spec file) and `${env:NAME}`; relative paths are relative to the
//! folder of the spec file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A parsed pipeline spec, with the line of every stage and key for error messages.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub path: PathBuf,
    pub name: String,
    pub description: String,
    /// Tables the pipeline expects in the run root before it starts.
    pub inputs: Vec<String>,
    /// `engine` of `[pipeline]` as written (`${env:NAME}` allowed): where the SQL stages run.
    pub engine: Option<String>,
    pub stages: Vec<StageSpec>,
    source: String,
}

/// One `[stage.<id>]` table.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub id: String,
    pub kind: String,
    /// Logical table name -> table name in the run root.
    pub tables: BTreeMap<String, String>,
    /// The stage's parameters (every key but `kind` and `tables`), `${...}` not yet substituted.
    pub params: toml::Table,
    /// 1-based line of the `[stage.<id>]` header.
    pub line: usize,
    /// 1-based line of each key in the stage table.
    pub key_lines: BTreeMap<String, usize>,
}

impl StageSpec {
    /// The line of `key` in this stage, or of the stage header.
    pub fn line_of(&self, key: &str) -> usize {
        self.key_lines.get(key).copied().unwrap_or(self.line)
    }

    /// The run-root name of a logical table.
    pub fn table_name(&self, logical: &str) -> String {
        self.tables.get(logical).cloned().unwrap_or_else(|| logical.to_string())
    }
}

const STAGE_RESERVED: &[&str] = &["kind", "tables"];
const PIPELINE_KEYS: &[&str] = &["name", "description", "inputs", "engine"];

impl PipelineSpec {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, None, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// Parse a spec; `path` is used for messages and to resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let spec_err = |line: Option<usize>, key: &str, message: String| Error::Spec {
            path: path.to_path_buf(),
            line,
            key: key.to_string(),
            message,
        };
        let line_at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;

        let spanned = toml::de::DeTable::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_at(s.start));
            spec_err(line, "", format!("not valid TOML: {}", e.message()))
        })?;
        let values: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_at(s.start));
            spec_err(line, "", format!("not valid TOML: {}", e.message()))
        })?;

        // Top level: [pipeline] and [stage.*] only.
        for (key, _) in spanned.get_ref().iter() {
            let k = key.get_ref().as_ref();
            if k != "pipeline" && k != "stage" {
                return Err(spec_err(
                    Some(line_at(key.span().start)),
                    k,
                    format!("unknown top-level key `{k}`; a pipeline has `[pipeline]` and `[stage.<id>]` tables"),
                ));
            }
        }

        let mut name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut description = String::new();
        let mut inputs = Vec::new();
        let mut engine = None;
        if let Some((pkey, pval)) = spanned.get_ref().get_key_value("pipeline") {
            let ptable = pval.get_ref().as_table().ok_or_else(|| {
                spec_err(Some(line_at(pkey.span().start)), "pipeline", "`pipeline` must be a table".into())
            })?;
            for (k, v) in ptable.iter() {
                let kname = k.get_ref().as_ref();
                let line = Some(line_at(k.span().start));
                match kname {
                    "name" | "description" => {
                        let s = v.get_ref().as_str().ok_or_else(|| {
                            spec_err(line, &format!("pipeline.{kname}"), format!("`{kname}` must be a string"))
                        })?;
                        if kname == "name" {
                            name = s.to_string();
                        } else {
                            description = s.to_string();
                        }
                    }
                    "engine" => {
                        let s = v.get_ref().as_str().ok_or_else(|| {
                            spec_err(line, "pipeline.engine", "`engine` must be a string: \"local\" or \"ballista://HOST:PORT\"".into())
                        })?;
                        engine = Some(s.to_string());
                    }
                    "inputs" => {
                        let arr = values["pipeline"]["inputs"].as_array().ok_or_else(|| {
                            spec_err(line, "pipeline.inputs", "`inputs` must be a list of table names".into())
                        })?;
                        for item in arr {
                            let s = item.as_str().ok_or_else(|| {
                                spec_err(line, "pipeline.inputs", "`inputs` must be a list of table names".into())
                            })?;
                            inputs.push(s.to_string());
                        }
                    }
                    other => {
                        return Err(spec_err(
                            line,
                            &format!("pipeline.{other}"),
                            format!("unknown key `{other}` in [pipeline]; expected one of: {}", PIPELINE_KEYS.join(", ")),
                        ));
                    }
                }
            }
        }

        let mut stages = Vec::new();
        if let Some((skey, sval)) = spanned.get_ref().get_key_value("stage") {
            let stable = sval.get_ref().as_table().ok_or_else(|| {
                spec_err(Some(line_at(skey.span().start)), "stage", "`stage` must hold `[stage.<id>]` tables".into())
            })?;
            for (id_key, body) in stable.iter() {
                let id = id_key.get_ref().as_ref().to_string();
                let line = line_at(id_key.span().start);
                let body_table = body.get_ref().as_table().ok_or_else(|| {
                    spec_err(Some(line), &format!("stage.{id}"), format!("`stage.{id}` must be a table"))
                })?;
                let mut key_lines = BTreeMap::new();
                for (k, _) in body_table.iter() {
                    key_lines.insert(k.get_ref().as_ref().to_string(), line_at(k.span().start));
                }
                let mut params = values["stage"][&id].as_table().cloned().unwrap_or_default();
                let kind = match params.remove("kind") {
                    None => id.clone(),
                    Some(toml::Value::String(s)) => s,
                    Some(_) => {
                        return Err(spec_err(
                            key_lines.get("kind").copied(),
                            &format!("stage.{id}.kind"),
                            "`kind` must be a string naming a stage kind".into(),
                        ));
                    }
                };
                let mut tables = BTreeMap::new();
                if let Some(t) = params.remove("tables") {
                    let bad = || {
                        spec_err(
                            key_lines.get("tables").copied(),
                            &format!("stage.{id}.tables"),
                            "`tables` must map logical table names to run-root table names, e.g. \
                             tables = { predictions = \"teacher_predictions\" }"
                                .into(),
                        )
                    };
                    for (logical, actual) in t.as_table().ok_or_else(bad)? {
                        tables.insert(logical.clone(), actual.as_str().ok_or_else(bad)?.to_string());
                    }
                }
                debug_assert!(STAGE_RESERVED.iter().all(|k| !params.contains_key(*k)));
                stages.push(StageSpec { id, kind, tables, params, line, key_lines });
            }
        }
        if stages.is_empty() {
            return Err(spec_err(None, "stage", "the pipeline has no stages; add a `[stage.<id>]` table".into()));
        }
        Ok(PipelineSpec { path: path.to_path_buf(), name, description, inputs, engine, stages, source: text.to_string() })
    }

    /// A one-stage pipeline for a stage's own subcommand (`psla ingest ...`): same checks, same runner.
    pub fn single(command: &str, kind: &str, params: toml::Table) -> Self {
        PipelineSpec {
            path: PathBuf::from(command),
            name: command.to_string(),
            description: String::new(),
            inputs: Vec::new(),
            engine: None,
            stages: vec![StageSpec {
                id: kind.to_string(),
                kind: kind.to_string(),
                tables: BTreeMap::new(),
                params,
                line: 0,
                key_lines: BTreeMap::new(),
            }],
            source: String::new(),
        }
    }

    /// The spec file's folder, against which relative paths resolve.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The spec's text (it is part of no fingerprint: only resolved parameters are).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// An error about `key` of stage `stage`, located at that key's line.
    pub fn error_at(&self, stage: &StageSpec, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Spec {
            path: self.path.clone(),
            line: Some(stage.line_of(key)).filter(|&l| l > 0),
            key: if key.is_empty() { format!("stage.{}", stage.id) } else { format!("stage.{}.{key}", stage.id) },
            message: message.to_string(),
        }
    }
}

/// Substitutes `${root}`, `${pipeline_dir}` and `${env:NAME}` in parameters and resolves relative paths.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub root: String,
    pub base_dir: PathBuf,
}

impl Resolver {
    /// Substitute variables in every string of a parameter table.
    pub fn substitute(&self, value: &toml::Value) -> std::result::Result<toml::Value, String> {
        Ok(match value {
            toml::Value::String(s) => toml::Value::String(self.substitute_str(s)?),
            toml::Value::Array(a) => {
                toml::Value::Array(a.iter().map(|v| self.substitute(v)).collect::<std::result::Result<_, _>>()?)
            }
            toml::Value::Table(t) => {
                let mut out = toml::Table::new();
                for (k, v) in t {
                    out.insert(k.clone(), self.substitute(v)?);
                }
                toml::Value::Table(out)
            }
            other => other.clone(),
        })
    }

    pub fn substitute_str(&self, s: &str) -> std::result::Result<String, String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| format!("unclosed `${{` in \"{s}\""))? + start;
            let var = &rest[start + 2..end];
            match var {
                "root" => out.push_str(self.root.trim_end_matches('/')),
                "pipeline_dir" => out.push_str(&self.base_dir.to_string_lossy()),
                v if v.starts_with("env:") => {
                    let name = &v[4..];
                    out.push_str(&std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?);
                }
                other => {
                    return Err(format!("unknown variable `${{{other}}}`; use ${{root}}, ${{pipeline_dir}} or ${{env:NAME}}"));
                }
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A path parameter: URLs and absolute paths as they are, relative paths under the spec's folder.
    pub fn path(&self, p: &str) -> String {
        if p.contains("://") || Path::new(p).is_absolute() {
            p.to_string()
        } else {
            self.base_dir.join(p).to_string_lossy().into_owned()
        }
    }
}
