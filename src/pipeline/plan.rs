//! Planning: build every stage from its spec, check the whole pipeline, order stages by the table graph.
//! Nothing runs until the whole spec is valid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::spec::{PipelineSpec, Resolver, StageSpec};
use crate::error::{Error, Result};
use crate::stages::{self, Stage, StageIo};

/// A stage ready to run, with its edges resolved to run-root table names.
pub struct PlannedStage {
    pub spec: StageSpec,
    pub stage: Box<dyn Stage>,
    pub io: StageIo,
    /// Run-root names of the tables it reads / writes.
    pub reads: Vec<String>,
    pub writes: Vec<String>,
    /// Indices (into [`Plan::stages`]) of the stages it depends on.
    pub deps: Vec<usize>,
}

/// Stages in an order where every stage comes after the stages it depends on.
pub struct Plan {
    pub name: String,
    pub stages: Vec<PlannedStage>,
    /// Tables the pipeline expects to find in the run root.
    pub inputs: Vec<String>,
    /// Where the SQL stages run (`[pipeline] engine`; `psla run --engine` overrides it).
    pub engine: crate::cluster::Engine,
    /// The spec it was planned from, and the run root location `${root}` stood for (to plan
    /// variants of a stage: [`super::shard`]).
    pub spec: PipelineSpec,
    pub root: String,
}

impl Plan {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.spec.id == id)
    }

    pub fn stage_ids(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.spec.id.as_str()).collect()
    }

    /// `i` and every stage that depends on it, directly or not.
    pub fn downstream_of(&self, i: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::from([i]);
        // Stages are topologically ordered: one pass suffices.
        for (j, s) in self.stages.iter().enumerate().skip(i + 1) {
            if s.deps.iter().any(|d| out.contains(d)) {
                out.insert(j);
            }
        }
        out
    }
}

/// Is `file` inside `dir` (both resolved paths or URLs)?
fn is_under(file: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    file == dir || file.starts_with(&format!("{dir}/"))
}

fn exists(p: &str) -> bool {
    if crate::table::storage::is_remote(p) {
        // One HEAD request; a store that cannot be asked (credentials, endpoint) is reported by
        // the stage that reads the file, with the store's own message.
        return crate::table::storage::exists(p).unwrap_or(true);
    }
    Path::new(p.strip_prefix("file://").unwrap_or(p)).exists()
}

/// Build and check every stage; order them. `root` is the run root location (for `${root}`).
pub fn plan(spec: &PipelineSpec, root: &str) -> Result<Plan> {
    let resolver = Resolver { root: root.to_string(), base_dir: spec.base_dir() };
    let mut built: Vec<(StageSpec, Box<dyn Stage>, StageIo)> = Vec::new();
    for s in &spec.stages {
        let Some(kind) = stages::kind(&s.kind) else {
            let known: Vec<_> = stages::kinds().iter().map(|k| k.name).collect();
            let key = if s.key_lines.contains_key("kind") { "kind" } else { "" };
            return Err(spec.error_at(
                s,
                key,
                format!("unknown stage kind `{}`; known kinds: {}", s.kind, known.join(", ")),
            ));
        };
        let mut params = toml::Table::new();
        for (k, v) in &s.params {
            let v = resolver.substitute(v).map_err(|m| spec.error_at(s, k, m))?;
            params.insert(k.clone(), v);
        }
        let stage = (kind.build)(toml::Value::Table(params), &resolver).map_err(|m| {
            let key = quoted_key(&m, "unknown field").unwrap_or_default();
            let message = if m.starts_with("unknown field") {
                format!("unknown key for a `{}` stage: {m}", s.kind)
            } else {
                m.clone()
            };
            let key = if key.is_empty() { quoted_key(&m, "invalid").unwrap_or_default() } else { key };
            spec.error_at(s, if s.key_lines.contains_key(&key) { &key } else { "" }, message)
        })?;
        let io = stage.io();
        for logical in s.tables.keys() {
            if !io.reads.contains(logical) && !io.writes.contains(logical) {
                let names: Vec<_> = io.reads.iter().chain(io.writes.iter()).cloned().collect();
                return Err(spec.error_at(
                    s,
                    "tables",
                    format!("a `{}` stage has no table `{logical}`; its tables are: {}", s.kind, names.join(", ")),
                ));
            }
        }
        built.push((s.clone(), stage, io));
    }

    // Who writes each table and each output folder.
    let mut producer: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (s, _, io)) in built.iter().enumerate() {
        for t in &io.writes {
            let name = s.table_name(t);
            if let Some(&j) = producer.get(&name) {
                return Err(spec.error_at(
                    s,
                    "",
                    format!("table `{name}` is already written by stage `{}`; give one of them another name with `tables = {{ {t} = \"...\" }}`", built[j].0.id),
                ));
            }
            producer.insert(name, i);
        }
    }

    let output_dirs: Vec<Vec<String>> = built.iter().map(|(_, _, io)| io.output_dirs.clone()).collect();
    let mut planned: Vec<PlannedStage> = Vec::new();
    for (i, (s, stage, io)) in built.into_iter().enumerate() {
        let mut deps = BTreeSet::new();
        let reads: Vec<String> = io.reads.iter().map(|t| s.table_name(t)).collect();
        for t in &reads {
            match producer.get(t) {
                Some(&j) if j != i => {
                    deps.insert(j);
                }
                Some(_) => {}
                None if spec.inputs.contains(t) => {}
                None => {
                    let names_it = |v: &toml::Value| match v {
                        toml::Value::String(x) => x == t,
                        toml::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(t.as_str())),
                        _ => false,
                    };
                    let key = s
                        .params
                        .iter()
                        .find(|(_, v)| names_it(v))
                        .map(|(k, _)| k.as_str())
                        .unwrap_or(if s.tables.values().any(|v| v == t) { "tables" } else { "" });
                    return Err(spec.error_at(
                        &s,
                        key,
                        format!(
                            "stage `{}` reads table `{t}`, which no stage of this pipeline writes; add the stage \
                             that writes it, or list it in [pipeline] inputs = [\"{t}\"] if the run root already has it",
                            s.id
                        ),
                    ));
                }
            }
        }
        let paths = io.input_files.iter().chain(io.input_dirs.iter());
        for (key, path) in paths {
            let writers: Vec<usize> = output_dirs
                .iter()
                .enumerate()
                .filter(|(j, dirs)| *j != i && dirs.iter().any(|d| is_under(path, d)))
                .map(|(j, _)| j)
                .collect();
            if writers.is_empty() && !exists(path) {
                return Err(spec.error_at(&s, key, format!("`{key}`: {path} does not exist")));
            }
            deps.extend(writers);
        }
        let writes = io.writes.iter().map(|t| s.table_name(t)).collect();
        planned.push(PlannedStage { spec: s, stage, io, reads, writes, deps: deps.into_iter().collect() });
    }
    let stages = topological_order(spec, planned)?;
    let engine = match &spec.engine {
        None => crate::cluster::Engine::Local,
        Some(text) => {
            let bad = |message: String| Error::Spec { path: spec.path.clone(), line: None, key: "pipeline.engine".into(), message };
            crate::cluster::Engine::parse(&resolver.substitute_str(text).map_err(bad)?).map_err(|e| bad(e.to_string()))?
        }
    };
    Ok(Plan { name: spec.name.clone(), stages, inputs: spec.inputs.clone(), engine, spec: spec.clone(), root: root.to_string() })
}

/// The first quoted (`key`) word after `prefix` in a serde message.
fn quoted_key(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)?..];
    let start = rest.find('`')? + 1;
    let end = rest[start..].find('`')? + start;
    Some(rest[start..end].to_string())
}

/// Kahn's algorithm, keeping the file's order among stages that are ready together.
fn topological_order(spec: &PipelineSpec, stages: Vec<PlannedStage>) -> Result<Vec<PlannedStage>> {
    let n = stages.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !placed[i] && stages[i].deps.iter().all(|&d| placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                let stuck: Vec<_> = (0..n).filter(|&i| !placed[i]).collect();
                let names: Vec<_> = stuck.iter().map(|&i| format!("`{}`", stages[i].spec.id)).collect();
                return Err(spec.error_at(
                    &stages[stuck[0]].spec,
                    "",
                    format!("the stages {} depend on each other in a cycle", names.join(", ")),
                ));
            }
        }
    }
    // Re-index dependencies to the new order.
    let mut new_index = vec![0; n];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<PlannedStage>> = stages.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(n);
    for &old in &order {
        let mut s = slots[old].take().expect("each stage placed once");
        s.deps = s.deps.iter().map(|&d| new_index[d]).collect();
        s.deps.sort_unstable();
        out.push(s);
    }
    Ok(out)
}
