//! Running a plan: fingerprint each stage, skip what is up to date, run the rest in order, commit each
//! stage's tables together with its record in the manifest.
//!
//! A stage's fingerprint is a sha256 over its kind, its resolved parameters, the content hash of every
//! table it reads, the content of every file it reads, and the psla version. A stage whose fingerprint
//! matches its record (and whose tables are all present) is skipped. Because each stage commits
//! atomically, a run killed at any point resumes after the last stage that completed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::plan::{Plan, PlannedStage};
use super::shard::{ShardSet, Shards};
use crate::error::{Error, Result};
use crate::progress::summary_line;
use crate::stages::{StageContext, StageOutput};
use crate::table::{Commit, Manifest, RunRoot, StageRecord, psla_version, store::now_rfc3339};

/// Which stages to run, and how.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print the plan and what would run; run nothing.
    pub dry_run: bool,
    /// Run just this stage (skipped if up to date, unless `force`).
    pub only: Option<String>,
    /// Rerun this stage and every stage after it in the plan, even if up to date.
    pub from: Option<String>,
    /// Rerun every selected stage even if up to date.
    pub force: bool,
    /// Draw progress bars.
    pub progress: bool,
    /// Where the SQL stages run, over the pipeline's `engine` (None: the pipeline's).
    pub engine: Option<crate::cluster::Engine>,
    /// Run shard K of N of the `only` stage, a features stage (see [`super::shard`]).
    pub shard: Option<(u64, u64)>,
}

/// What happened to one stage.
#[derive(Debug, Clone, PartialEq)]
pub enum StageStatus {
    /// Ran and committed; the summary line.
    Ran(String),
    /// Up to date: not run.
    UpToDate,
    /// Not selected by --only / --from.
    NotSelected,
    /// --dry-run: would run, and why.
    WouldRun(String),
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub stages: Vec<(String, StageStatus)>,
    pub seconds: f64,
}

impl RunReport {
    pub fn ran(&self) -> Vec<&str> {
        self.stages.iter().filter(|(_, s)| matches!(s, StageStatus::Ran(_))).map(|(id, _)| id.as_str()).collect()
    }
}

/// Fingerprint of a stage given the current manifest; `Err` names a missing input table.
pub fn fingerprint(stage: &PlannedStage, manifest: &Manifest) -> Result<(String, BTreeMap<String, String>)> {
    let mut h = Sha256::new();
    h.update(b"psla-stage-v1\0");
    h.update(stage.stage.kind().as_bytes());
    h.update(b"\0");
    h.update(serde_json::to_string(&stage.stage.params_json())?.as_bytes());
    h.update(b"\0");
    let mut inputs = BTreeMap::new();
    for t in &stage.reads {
        let entry = manifest.tables.get(t).ok_or_else(|| {
            Error::table(t, format!("stage `{}` reads it, but the run root has no such table yet", stage.spec.id))
        })?;
        h.update(t.as_bytes());
        h.update(b"=");
        h.update(entry.content_hash.as_bytes());
        h.update(b"\0");
        inputs.insert(t.clone(), entry.content_hash.clone());
    }
    for (key, path) in &stage.io.input_files {
        h.update(key.as_bytes());
        h.update(b"=");
        h.update(hash_file(path)?.as_bytes());
        h.update(b"\0");
    }
    h.update(psla_version().as_bytes());
    Ok((hex::encode(h.finalize()), inputs))
}

fn hash_file(path: &str) -> Result<String> {
    if crate::table::storage::is_remote(path) {
        let bytes = crate::table::storage::read(path)?;
        return Ok(hex::encode(Sha256::digest(&bytes)));
    }
    let p = crate::stages::local_path(path);
    let mut f = std::fs::File::open(&p).map_err(|e| Error::file(&p, None, format!("cannot read: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::file(&p, None, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether an output folder is there: a local folder, or an object-store prefix holding an object.
fn output_dir_exists(dir: &str) -> bool {
    if crate::table::storage::is_remote(dir) {
        return crate::table::storage::list_dir(dir).is_ok_and(|objects| !objects.is_empty());
    }
    crate::stages::local_path(dir).exists()
}

/// Why a stage must run, or None when it is up to date.
pub(crate) fn staleness(stage: &PlannedStage, manifest: &Manifest, fp: &str) -> Option<String> {
    let Some(record) = manifest.stages.get(&stage.spec.id) else {
        return Some("never ran in this run root".into());
    };
    if record.fingerprint != fp {
        return Some("its parameters, inputs or psla version changed".into());
    }
    if let Some(missing) = stage.writes.iter().find(|t| !manifest.tables.contains_key(*t)) {
        return Some(format!("its output table `{missing}` is missing"));
    }
    if let Some(dir) = stage.io.output_dirs.iter().find(|d| !output_dir_exists(d)) {
        return Some(format!("its output folder {dir} is missing"));
    }
    None
}

/// Run (or with `dry_run`, describe) a plan on a run root. Progress and summaries go to `out`.
pub fn run(plan: &Plan, root: &RunRoot, opts: &RunOptions, out: &mut dyn Write) -> Result<RunReport> {
    let started = Instant::now();
    let check_id = |id: &str| {
        plan.index_of(id).ok_or_else(|| {
            Error::invalid(format!("no stage `{id}` in pipeline `{}`; its stages: {}", plan.name, plan.stage_ids().join(", ")))
        })
    };
    if let Some((k, n)) = opts.shard {
        let Some(id) = &opts.only else {
            return Err(Error::invalid("--shard K/N runs one shard of one stage: name the stage with --only"));
        };
        let shard = super::shard::plan_shard(plan, check_id(id)?, k, n)?;
        let manifest = root.manifest()?;
        if let Some(t) = shard.inputs.iter().find(|t| !manifest.tables.contains_key(*t)) {
            return Err(Error::table(
                t,
                format!(
                    "stage `{id}` reads it, and run root {} does not have it yet: run the stages before `{id}` \
                     first (psla run with --only for each of them), then the shards",
                    root.location()
                ),
            ));
        }
        let opts = RunOptions { shard: None, only: None, from: None, ..opts.clone() };
        return run(&shard, root, &opts, out);
    }
    let n = plan.stages.len();
    let (selected, forced): (BTreeSet<usize>, BTreeSet<usize>) = match (&opts.only, &opts.from) {
        (Some(_), Some(_)) => return Err(Error::invalid("--only and --from cannot be combined")),
        (Some(id), None) => {
            let i = check_id(id)?;
            (BTreeSet::from([i]), if opts.force { BTreeSet::from([i]) } else { BTreeSet::new() })
        }
        (None, Some(id)) => {
            let i = check_id(id)?;
            let from: BTreeSet<usize> = (i..n).collect();
            (from.clone(), from)
        }
        (None, None) => ((0..n).collect(), if opts.force { (0..n).collect() } else { BTreeSet::new() }),
    };

    let mut manifest = root.manifest()?;
    for t in &plan.inputs {
        if !manifest.tables.contains_key(t) {
            return Err(Error::table(
                t,
                format!("pipeline `{}` expects it in run root {} ([pipeline] inputs), but it is not there", plan.name, root.location()),
            ));
        }
    }

    let mut report = RunReport { stages: Vec::new(), seconds: 0.0 };
    // Stages that ran (or would run, in a dry run) in this invocation.
    let mut changed: BTreeSet<usize> = BTreeSet::new();
    if opts.dry_run {
        writeln!(out, "pipeline `{}`: {} stages, run root {}", plan.name, n, root.location())?;
    }
    for (i, stage) in plan.stages.iter().enumerate() {
        let id = stage.spec.id.clone();
        if !selected.contains(&i) {
            if opts.dry_run {
                writeln!(out, "  {:>2}. {id:<16} not selected", i + 1)?;
            }
            report.stages.push((id, StageStatus::NotSelected));
            continue;
        }
        let upstream_changes = stage.deps.iter().any(|d| changed.contains(d));
        // Shards committed for this stage's current parameters and inputs are merged, not recomputed
        // (unless forced).
        let shards = if forced.contains(&i) { Shards::None } else { super::shard::committed(plan, i, &manifest)? };
        let reason = if forced.contains(&i) {
            Some("forced".to_string())
        } else if opts.dry_run && upstream_changes {
            Some("a stage it depends on will run".to_string())
        } else {
            match fingerprint(stage, &manifest) {
                Ok((fp, _)) => staleness(stage, &manifest, &fp),
                Err(e) if opts.dry_run => Some(format!("cannot fingerprint yet: {e}")),
                Err(e) => return Err(Error::Stage { stage: id.clone(), source: Box::new(e) }),
            }
        };
        let reason = match (reason, &shards) {
            (Some(r), Shards::Complete(set)) => Some(format!("{r}; its {} shards are committed and would be merged", set.n)),
            (r, _) => r,
        };
        if opts.dry_run {
            let what = match &reason {
                Some(r) => format!("would run ({r})"),
                None => "up to date".to_string(),
            };
            writeln!(
                out,
                "  {:>2}. {id:<16} [{}] reads: {} -> writes: {}  {what}",
                i + 1,
                stage.stage.kind(),
                if stage.reads.is_empty() { "-".to_string() } else { stage.reads.join(", ") },
                stage.writes.join(", ")
            )?;
            match reason {
                Some(r) => {
                    changed.insert(i);
                    report.stages.push((id, StageStatus::WouldRun(r)));
                }
                None => report.stages.push((id, StageStatus::UpToDate)),
            }
            continue;
        }
        if reason.is_none() {
            writeln!(out, "{id}: up to date, skipped")?;
            report.stages.push((id, StageStatus::UpToDate));
            continue;
        }
        let engine = opts.engine.as_ref().unwrap_or(&plan.engine);
        let line = match shards {
            Shards::Complete(set) => execute(stage, root, &mut manifest, opts.progress, engine, Some(&set))?,
            Shards::Incomplete { n, done, missing } => {
                return Err(Error::Stage {
                    stage: id.clone(),
                    source: Box::new(Error::invalid(format!(
                        "shards {} of {n} are committed for its current parameters and inputs, shards {} are not: \
                         run those (psla run ... --only {id} --shard K/{n}) and then this again, or pass --force \
                         to compute the whole stage in this one run",
                        super::shard::list(&done),
                        super::shard::list(&missing)
                    ))),
                });
            }
            Shards::None => run_stage(stage, root, &mut manifest, opts.progress, engine)?,
        };
        writeln!(out, "{line}")?;
        changed.insert(i);
        report.stages.push((id, StageStatus::Ran(line)));
    }
    report.seconds = started.elapsed().as_secs_f64();
    if !opts.dry_run {
        let ran = report.ran().len();
        let skipped = report.stages.iter().filter(|(_, s)| *s == StageStatus::UpToDate).count();
        let summary = if ran == 0 {
            format!("pipeline `{}`: nothing to do, all {skipped} selected stages are up to date", plan.name)
        } else {
            format!("pipeline `{}`: {ran} stages ran, {skipped} up to date, in {:.2} s", plan.name, report.seconds)
        };
        writeln!(out, "{summary}")?;
    }
    Ok(report)
}

/// Run one planned stage and commit its tables with its record. Returns the summary line.
pub fn run_stage(
    stage: &PlannedStage,
    root: &RunRoot,
    manifest: &mut Manifest,
    progress: bool,
    engine: &crate::cluster::Engine,
) -> Result<String> {
    execute(stage, root, manifest, progress, engine, None)
}

/// Run a stage, or with `shards` merge its committed shards into its tables (see
/// [`super::shard`]), and commit its tables and record (with shards: removing the shards' tables
/// and records in the same commit). Returns the summary line.
fn execute(
    stage: &PlannedStage,
    root: &RunRoot,
    manifest: &mut Manifest,
    progress: bool,
    engine: &crate::cluster::Engine,
    shards: Option<&ShardSet>,
) -> Result<String> {
    let id = stage.spec.id.clone();
    let wrap = |e: Error| Error::Stage { stage: id.clone(), source: Box::new(e) };
    let (fp, inputs) = fingerprint(stage, manifest).map_err(wrap)?;
    let started = Instant::now();
    let ctx = StageContext { root, id: &id, tables: &stage.spec.tables, progress, engine };
    let output: StageOutput = match shards {
        None => stage.stage.run(&ctx),
        Some(set) => crate::stages::features::merge_shards(&ctx, &set.tables),
    }
    .map_err(wrap)?;
    let seconds = started.elapsed().as_secs_f64();
    let record = StageRecord {
        kind: stage.stage.kind().to_string(),
        fingerprint: fp,
        inputs,
        outputs: output.tables.iter().map(|t| t.name.clone()).collect(),
        rows_in: output.rows_in,
        rows_out: output.rows_out,
        rejects: output.rejects,
        seconds,
        finished_at: now_rfc3339(),
        psla_version: psla_version().to_string(),
    };
    let line = summary_line(&id, output.rows_in, output.rows_out, output.rejects, seconds, &output.detail);
    let mut change = Commit { tables: output.tables, stage: Some((id.clone(), record)), ..Default::default() };
    if let Some(set) = shards {
        for tables in &set.tables {
            for name in tables.values() {
                let dir = manifest.tables.get(name).map(|e| e.dir.clone()).unwrap_or_default();
                change.drop_tables.push((name.clone(), dir));
            }
        }
        change.drop_stages = set.ids.clone();
    }
    *manifest = root.apply(change).map_err(wrap)?;
    Ok(line)
}
