//! Sharded runs of a `features` stage, for batch schedulers' array jobs and many machines.
//!
//! `psla run P --root R --only features --shard K/N` runs shard K of N of the stage (the clips whose
//! stable hash falls in shard K, see [`crate::stages::features::shard_of`]) as a stage of its own:
//! its id and every table it writes get the suffix `_shard_K_of_N` (`features_shard_3_of_8`, ...),
//! and its parameters gain `shard = "K/N"`. The N runs may go at once, on one machine or many, on one
//! run root: they write disjoint tables, and a commit that loses the race for a manifest generation
//! is applied again on top of the winner's ([`crate::table::RunRoot::apply`]). Each shard resumes
//! and is skipped when up to date, like any stage.
//!
//! The next plain run of the stage (`psla run P --root R`) finds all N shards committed for its
//! current parameters and inputs and merges them instead of computing: the shards' Parquet files are
//! copied into `features` and `features_rejects` (server-side copies or hard links; nothing is
//! decoded), `feature_stats` is the sum of the shards' sums, and the shard tables and records are
//! removed in the same commit. Some shards missing is an error that names them.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::Plan;
use super::runner::{fingerprint, staleness};
use crate::error::{Error, Result};
use crate::table::Manifest;

/// Stage kinds that can run in shards.
pub const SHARDABLE: &[&str] = &["features"];

/// What is appended to the stage id and to each table name for shard K of N.
pub fn suffix(k: u64, n: u64) -> String {
    format!("_shard_{k}_of_{n}")
}

/// A one-stage plan that runs shard K of N of stage `i` of `plan` (see the module docs). The tables
/// it reads must already be in the run root.
pub fn plan_shard(plan: &Plan, i: usize, k: u64, n: u64) -> Result<Plan> {
    let stage = &plan.stages[i];
    let kind = stage.stage.kind();
    if !SHARDABLE.contains(&kind) {
        return Err(Error::invalid(format!(
            "--shard applies to a {} stage; `{}` is a `{kind}` stage",
            SHARDABLE.join(" or "),
            stage.spec.id
        )));
    }
    if stage.spec.params.contains_key("shard") {
        return Err(Error::invalid(format!(
            "stage `{}` already sets `shard` in {}; remove it there to run shards with --shard",
            stage.spec.id,
            plan.spec.path.display()
        )));
    }
    let sfx = suffix(k, n);
    let mut spec = stage.spec.clone();
    spec.id = format!("{}{sfx}", stage.spec.id);
    spec.params.insert("shard".into(), toml::Value::String(format!("{k}/{n}")));
    for logical in &stage.io.writes {
        spec.tables.insert(logical.clone(), format!("{}{sfx}", stage.spec.table_name(logical)));
    }
    let mut pipeline = plan.spec.clone();
    pipeline.stages = vec![spec];
    pipeline.inputs = stage.reads.clone();
    super::plan(&pipeline, &plan.root)
}

/// The shards of one stage a run root holds for the stage's current parameters and inputs.
#[derive(Debug)]
pub enum Shards {
    /// No shard of this stage, or none for its current parameters and inputs.
    None,
    /// All N shards are committed and up to date.
    Complete(ShardSet),
    /// Some of N are committed and up to date, these are not.
    Incomplete { n: u64, done: Vec<u64>, missing: Vec<u64> },
}

/// All shards of one stage: for each shard (1..=n), its stage id and its logical -> table names.
#[derive(Debug)]
pub struct ShardSet {
    pub n: u64,
    pub ids: Vec<String>,
    pub tables: Vec<BTreeMap<String, String>>,
}

/// Which shards of stage `i` the manifest holds (see [`Shards`]). A shard counts when its record's
/// fingerprint is the one that shard would have now and its tables are all there.
pub fn committed(plan: &Plan, i: usize, manifest: &Manifest) -> Result<Shards> {
    let stage = &plan.stages[i];
    if !SHARDABLE.contains(&stage.stage.kind()) || stage.spec.params.contains_key("shard") {
        return Ok(Shards::None);
    }
    let prefix = format!("{}_shard_", stage.spec.id);
    let counts: BTreeSet<u64> = manifest
        .stages
        .keys()
        .filter_map(|id| id.strip_prefix(&prefix)?.split_once("_of_")?.1.parse().ok())
        .collect();
    let mut partial = None;
    // The largest shard count first: a complete set wins over any other.
    for &n in counts.iter().rev() {
        let mut set = ShardSet { n, ids: Vec::new(), tables: Vec::new() };
        let (mut done, mut missing) = (Vec::new(), Vec::new());
        for k in 1..=n {
            let shard = plan_shard(plan, i, k, n)?;
            let s = &shard.stages[0];
            let current = fingerprint(s, manifest).ok().filter(|(fp, _)| staleness(s, manifest, fp).is_none());
            if current.is_some() {
                done.push(k);
                set.ids.push(s.spec.id.clone());
                set.tables.push(s.io.writes.iter().map(|t| (t.clone(), s.spec.table_name(t))).collect());
            } else {
                missing.push(k);
            }
        }
        if missing.is_empty() {
            return Ok(Shards::Complete(set));
        }
        if !done.is_empty() && partial.is_none() {
            partial = Some(Shards::Incomplete { n, done, missing });
        }
    }
    Ok(partial.unwrap_or(Shards::None))
}

/// `1, 2, 5` for messages.
pub fn list(ks: &[u64]) -> String {
    ks.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}
