//! Declarative pipelines: a TOML spec ([`spec`]) becomes a checked, ordered plan ([`plan`]) that the
//! [`runner`] executes stage by stage, skipping stages whose fingerprint is unchanged.

pub mod plan;
pub mod runner;
pub mod shard;
pub mod spec;

pub use plan::{Plan, plan};
pub use runner::{RunOptions, RunReport, StageStatus, run};
pub use spec::PipelineSpec;

use crate::error::Result;
use crate::table::RunRoot;

/// Load, plan and run a pipeline file on a run root: what `psla run` does.
pub fn run_file(
    path: &std::path::Path,
    root: &RunRoot,
    opts: &RunOptions,
    out: &mut dyn std::io::Write,
) -> Result<RunReport> {
    let spec = PipelineSpec::load(path)?;
    run_spec(&spec, root, opts, out)
}

/// Plan and run an already parsed spec.
pub fn run_spec(spec: &PipelineSpec, root: &RunRoot, opts: &RunOptions, out: &mut dyn std::io::Write) -> Result<RunReport> {
    let location = root.local_dir().map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|| root.location().to_string());
    let plan = plan(spec, &location)?;
    run(&plan, root, opts, out)
}
