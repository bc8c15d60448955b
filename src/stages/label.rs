//! `label`: PSLA's label enhancement, as the SQL in `sql/label/` run by DataFusion.
//!
//! AudioSet labels miss children of labeled parents (Type I) and ancestors of labeled children
//! (Type II). With a teacher's scores, a per-class threshold (mean, median or a percentile of the
//! teacher's scores on the clips labeled with the class) decides which missing labels to add. The
//! rules are SQL files, embedded in the binary; this module only registers tables, binds the
//! placeholders, checks the inputs and writes the results:
//!
//! | step | file | result |
//! |---|---|---|
//! | ancestors | `ancestors.sql` | `ontology_ancestors`: PSLA's ancestor closure of the ontology (a recursive query; in this process even on a cluster) |
//! | class order | `class_order.sql` | `class_order`: each ontology class's rank in mid order, how the rules' "smallest mid" is picked |
//! | needed pairs | `needed_pairs.sql` | the (clip, class) pairs whose score a rule can read: original labels, and each rule's candidates with the original label that makes them one |
//! | score pass | `score_pass.sql` | their scores, by pair number: the one pass of the rules over the teacher's table |
//! | needed scores | `needed_scores.sql` | the needed pairs with their scores |
//! | input checks | `needed_checks.sql`, `needed_check_examples.sql` | refuse missing, duplicate or invalid scores of the needed pairs |
//! | thresholds | `thresholds.sql` | `label_thresholds` |
//! | Type I | `type1.sql` | the Type I candidates above their class threshold: added children, with the parent that caused each |
//! | Type II | `type2.sql` | the same for Type II: added ancestors, with the descendant that caused each |
//! | merge | `merge.sql` | `labels_enhanced`: the full label set with provenance |
//! | summary | `changes.sql` | `label_changes`: per class, what each rule added |
//!
//! The result equals the output of PSLA's own scripts label for label (tests/label.rs).
//!
//! The teacher's table is read once, whatever its size (AudioSet: 1.076 billion scores), by
//! `score_pass.sql`, which keeps the ~2% of the scores the rules can read; the checks,
//! thresholds, Type I and Type II then run on those. Memory grows with the clips and the needed
//! pairs, not with the scores. `check = "full"` (`--check full`) adds `checks.sql` and
//! `check_examples.sql` first: a pass over the whole table that checks every labeled clip is
//! scored once for every class, whether the rules read the score or not.

use serde::{Deserialize, Serialize};

use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::progress::group;
use crate::sql::Session;
use crate::table::TableData;

pub const KIND: StageKind = StageKind {
    name: "label",
    about: "PSLA label enhancement (Type I / Type II with teacher thresholds) as SQL -> labels_enhanced",
    build: |value, _resolver| {
        let p: LabelParams = params_from(value)?;
        p.rules()?;
        Ok(Box::new(p))
    },
};

/// The SQL of the stage, embedded from `sql/label/`.
pub mod sql {
    pub const CHECKS: &str = include_str!("../../sql/label/checks.sql");
    pub const CHECK_EXAMPLES: &str = include_str!("../../sql/label/check_examples.sql");
    pub const NEEDED_CHECKS: &str = include_str!("../../sql/label/needed_checks.sql");
    pub const NEEDED_CHECK_EXAMPLES: &str = include_str!("../../sql/label/needed_check_examples.sql");
    pub const ANCESTORS: &str = include_str!("../../sql/label/ancestors.sql");
    pub const CLASS_ORDER: &str = include_str!("../../sql/label/class_order.sql");
    pub const NEEDED_PAIRS: &str = include_str!("../../sql/label/needed_pairs.sql");
    pub const SCORE_PASS: &str = include_str!("../../sql/label/score_pass.sql");
    pub const NEEDED_SCORES: &str = include_str!("../../sql/label/needed_scores.sql");
    pub const THRESHOLDS: &str = include_str!("../../sql/label/thresholds.sql");
    pub const TYPE1: &str = include_str!("../../sql/label/type1.sql");
    pub const TYPE2: &str = include_str!("../../sql/label/type2.sql");
    pub const MERGE: &str = include_str!("../../sql/label/merge.sql");
    pub const CHANGES: &str = include_str!("../../sql/label/changes.sql");
    pub const SPLIT_LABELS: &str = include_str!("../../sql/label/split_labels.sql");
}

/// How a class's threshold is computed from the teacher's scores on the clips labeled with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdKind {
    Mean,
    Median,
    /// 25th percentile (numpy's linear interpolation).
    P25,
    /// 10th percentile.
    P10,
    /// 5th percentile.
    P5,
}

impl ThresholdKind {
    pub fn name(self) -> &'static str {
        match self {
            ThresholdKind::Mean => "mean",
            ThresholdKind::Median => "median",
            ThresholdKind::P25 => "p25",
            ThresholdKind::P10 => "p10",
            ThresholdKind::P5 => "p5",
        }
    }

    /// (`${kind}`, `${percentile}`) of thresholds.sql.
    fn sql_binding(self) -> (&'static str, &'static str) {
        match self {
            ThresholdKind::Mean => ("mean", "50"),
            ThresholdKind::Median => ("median", "50"),
            ThresholdKind::P25 => ("percentile", "25"),
            ThresholdKind::P10 => ("percentile", "10"),
            ThresholdKind::P5 => ("percentile", "5"),
        }
    }
}

/// Which teacher scores the label stage checks before it uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TeacherCheck {
    /// The scores the rules read (original labels and the rules' candidates): each present once,
    /// in [0, 1]. No extra pass over the teacher's table.
    #[default]
    Needed,
    /// Every labeled clip scored once for every vocabulary class, in [0, 1]: one more pass over
    /// the whole table.
    Full,
}

impl TeacherCheck {
    fn is_needed(&self) -> bool {
        *self == TeacherCheck::Needed
    }
}

/// Parameters of `label` (the `[stage.<id>]` keys and `psla label` flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelParams {
    pub threshold: ThresholdKind,
    /// `type1`, `type2` or `type1,type2`.
    #[serde(default = "default_rules")]
    pub rules: String,
    /// Classes with fewer labeled clips get no threshold (so nothing is added to them); 1 is PSLA.
    #[serde(default = "default_min_support")]
    pub min_support: u64,
    /// Enhance only the labels of clips of these splits (the `clips` table's `split`), e.g.
    /// `["balanced_train"]`: PSLA never touches evaluation labels. Absent: every label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<String>>,
    /// Which teacher scores to check before using them: `needed` (the default) or `full`.
    /// The default is not serialized, so stages written before this key keep their fingerprint.
    #[serde(default, skip_serializing_if = "TeacherCheck::is_needed")]
    pub check: TeacherCheck,
}

fn default_rules() -> String {
    "type1,type2".into()
}

fn default_min_support() -> u64 {
    1
}

impl LabelParams {
    /// (type1, type2) enabled, from `rules`.
    pub fn rules(&self) -> std::result::Result<(bool, bool), String> {
        let (mut t1, mut t2) = (false, false);
        for r in self.rules.split(',').map(str::trim) {
            match r {
                "type1" => t1 = true,
                "type2" => t2 = true,
                other => return Err(format!("unknown rule `{other}` in rules `{}`: use type1, type2 or type1,type2", self.rules)),
            }
        }
        if self.splits.as_ref().is_some_and(|s| s.is_empty() || s.iter().any(|x| x.contains('\''))) {
            return Err("splits must be a non-empty list of split names (without quotes)".into());
        }
        if self.min_support == 0 {
            return Err("min_support must be at least 1".into());
        }
        Ok((t1, t2))
    }
}

impl Stage for LabelParams {
    fn kind(&self) -> &'static str {
        "label"
    }

    fn io(&self) -> StageIo {
        StageIo {
            reads: if self.splits.is_some() {
                super::names(&["labels", "predictions", "classes", "ontology", "ontology_edges", "clips"])
            } else {
                super::names(&["labels", "predictions", "classes", "ontology", "ontology_edges"])
            },
            writes: super::names(&["labels_enhanced", "label_thresholds", "label_changes"]),
            ..Default::default()
        }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        // The SQL names the teacher's table `teacher_scores`; the pipeline's is `predictions`.
        let mut names = vec![
            ("teacher_scores", "predictions"),
            ("classes", "classes"),
            ("ontology", "ontology"),
            ("ontology_edges", "ontology_edges"),
        ];
        if self.splits.is_some() {
            names.extend([("all_labels", "labels"), ("clips", "clips")]);
        } else {
            names.push(("labels", "labels"));
        }
        let names: Vec<(String, String)> =
            names.iter().map(|(sql, logical)| (sql.to_string(), ctx.table_name(logical))).collect();
        let mut session = Session::open_mapped_on(ctx.root, &names, ctx.engine)?;
        if let Some(splits) = &self.splits {
            let list: Vec<String> = splits.iter().map(|s| format!("'{s}'")).collect();
            let labels = session.query_read_only(&bind(sql::SPLIT_LABELS, &[("splits", &list.join(", "))])?)?;
            session.register_batches("labels", &labels)?;
        }
        let result = enhance(&mut session, self)?;
        let tables = vec![
            ctx.stage_table("labels_enhanced", result.enhanced.schema.clone(), &result.enhanced.batches)?,
            ctx.stage_table("label_thresholds", result.thresholds.schema.clone(), &result.thresholds.batches)?,
            ctx.stage_table("label_changes", result.changes.schema.clone(), &result.changes.batches)?,
        ];
        Ok(StageOutput {
            tables,
            rows_in: result.checks.original_labels,
            rows_out: result.enhanced.num_rows() as u64,
            rejects: 0,
            detail: result.summary(self),
        })
    }
}

/// The counts of the input checks that describe the labels (both check modes report them).
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub labeled_clips: u64,
    pub original_labels: u64,
    pub vocabulary: u64,
    pub labels_outside_vocabulary: u64,
    pub classes_without_labels: u64,
}

/// What [`enhance`] produced.
pub struct Enhanced {
    pub thresholds: TableData,
    pub enhanced: TableData,
    pub changes: TableData,
    pub checks: Checks,
    pub added_type1: u64,
    pub added_type2: u64,
    /// Wall seconds of each step, in order: full checks (`check = "full"` only), needed pairs,
    /// score pass, needed scores, checks, thresholds, rules (type1 and type2), merge (with changes).
    pub steps: Vec<(&'static str, f64)>,
}

impl Enhanced {
    /// "checks 10.1 s, needed pairs 1.2 s, ..."
    pub fn steps_line(&self) -> String {
        self.steps.iter().map(|(name, s)| format!("{name} {s:.2} s")).collect::<Vec<_>>().join(", ")
    }

    /// "52,882 original labels + 13,663 added (type1 4,821, type2 9,639) = 66,545; ..."
    pub fn summary(&self, params: &LabelParams) -> String {
        let total = self.enhanced.num_rows() as u64;
        let added = total.saturating_sub(self.checks.original_labels);
        let mut s = format!(
            "{} threshold, rules {}: {} original labels + {} added (by type1 {}, by type2 {}) = {} labels on {} clips",
            params.threshold.name(),
            params.rules,
            group(self.checks.original_labels),
            group(added),
            group(self.added_type1),
            group(self.added_type2),
            group(total),
            group(self.checks.labeled_clips),
        );
        let no_threshold = self.checks.vocabulary - self.thresholds.num_rows() as u64;
        if no_threshold > 0 {
            s.push_str(&format!(
                "; {} classes have no threshold (fewer than {} labeled clips), nothing added to them",
                group(no_threshold),
                params.min_support
            ));
        }
        if self.checks.labels_outside_vocabulary > 0 {
            s.push_str(&format!(
                "; {} original labels are not vocabulary classes (kept, never scored)",
                group(self.checks.labels_outside_vocabulary)
            ));
        }
        s
    }
}

/// Replace every `${name}` of `sql` by its value; an unbound placeholder is an error.
pub fn bind(sql: &str, values: &[(&str, &str)]) -> Result<String> {
    let mut out = sql.to_string();
    for (name, value) in values {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    // Comments may mention placeholders; only code lines must be fully bound.
    let code: String = out.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    if let Some(start) = code.find("${") {
        let name: String = code[start + 2..].chars().take_while(|c| *c != '}').collect();
        return Err(Error::Sql(format!("placeholder ${{{name}}} has no value")));
    }
    Ok(out)
}

/// Run label enhancement in a session where `labels`, `teacher_scores`, `classes`, `ontology` and
/// `ontology_edges` are registered. Registers its results and the small intermediate ones
/// (`ontology_ancestors`, `class_order`, `thresholds`, `added_type1`, `added_type2`,
/// `labels_enhanced`, `label_thresholds`) in the session too. The large intermediates
/// (`needed_pairs`, `pair_scores`, `needed_scores`: millions of rows at AudioSet scale) are
/// deregistered as soon as the last query reading them has run, so that their memory is free
/// for the next steps.
pub fn enhance(session: &mut Session, params: &LabelParams) -> Result<Enhanced> {
    let (type1, type2) = params.rules().map_err(Error::invalid)?;
    crate::malloc::return_freed_memory();
    let mut steps = Vec::new();
    let mut clock = std::time::Instant::now();
    let mut lap = |name: &'static str| {
        steps.push((name, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    if params.check == TeacherCheck::Full {
        check_all_scores(session)?;
        lap("full checks");
    }
    let flag = |b: bool| if b { "TRUE" } else { "FALSE" };

    // The ontology's ancestor closure: a recursive query over a few hundred classes, which Ballista
    // 55's executors cannot run, so it runs in this process whatever the engine.
    let ancestors = session.query_in_process(sql::ANCESTORS)?;
    session.register_batches("ontology_ancestors", &ancestors)?;
    let order = session.query_in_process(sql::CLASS_ORDER)?;
    session.register_batches("class_order", &order)?;
    // The one pass of the rules over the teacher's scores: keep the pairs they can read.
    let needed = session.query_read_only(&bind(
        sql::NEEDED_PAIRS,
        &[("enable_type1", flag(type1)), ("enable_type2", flag(type2))],
    )?)?;
    let needed = one_batch(with_string_views(needed, &["clip_id", "mid"])?)?;
    session.register_batches("needed_pairs", &needed)?;
    drop(needed);
    crate::malloc::release();
    lap("needed pairs");
    let scores = query_score_pass(session)?;
    session.register_batches("pair_scores", &scores)?;
    drop(scores);
    lap("score pass");
    let kept = session.query_read_only(sql::NEEDED_SCORES)?;
    session.register_batches("needed_scores", &kept)?;
    drop(kept);
    session.deregister("needed_pairs")?;
    lap("needed scores");
    let checks = check_needed_scores(session)?;
    session.deregister("pair_scores")?;
    lap("checks");

    let (kind, percentile) = params.threshold.sql_binding();
    let min_support = params.min_support.to_string();
    let thresholds = session.query_read_only(&bind(
        sql::THRESHOLDS,
        &[("kind", kind), ("percentile", percentile), ("min_support", &min_support), ("threshold_kind", params.threshold.name())],
    )?)?;
    session.register_batches("thresholds", &thresholds)?;
    session.register_batches("label_thresholds", &thresholds)?;
    lap("thresholds");

    // A disabled rule has no candidates in needed_pairs, so its query returns no row.
    let added1 = session.query_read_only(sql::TYPE1)?;
    let added2 = session.query_read_only(sql::TYPE2)?;
    session.register_batches("added_type1", &added1)?;
    session.register_batches("added_type2", &added2)?;
    session.deregister("needed_scores")?;
    lap("rules");
    let enhanced = session.query_read_only(&bind(
        sql::MERGE,
        &[("enable_type1", flag(type1)), ("enable_type2", flag(type2)), ("threshold_kind", params.threshold.name())],
    )?)?;
    session.register_batches("labels_enhanced", &enhanced)?;
    let changes = session.query_read_only(sql::CHANGES)?;
    lap("merge");
    Ok(Enhanced {
        thresholds,
        enhanced,
        changes,
        checks,
        added_type1: added1.num_rows() as u64,
        added_type2: added2.num_rows() as u64,
        steps,
    })
}

/// Run `score_pass.sql` with its join planned as written. It joins the teacher's scores (up to
/// billions of rows, streamed from Parquet) with the needed pairs (millions, in memory): the pairs
/// must be the hash table, built once and probed by every partition of the scan (CollectLeft).
/// DataFusion's defaults would choose otherwise: a partitioned join (collecting a side only under
/// 1 MB / 128K rows) hashes and shuffles every score row between threads, and its statistics-driven
/// swap of the join sides can put the Parquet side in the hash table (its size estimate is not its
/// size), i.e. load every score into memory. So, for this one query: no swap, the left side
/// (needed_pairs) collected whatever its size, and no dynamic filter (it would test every score row
/// against the same hash table a second time). The session's settings are restored afterwards.
fn query_score_pass(session: &Session) -> Result<TableData> {
    let state = session.context().state_ref();
    let saved = state.read().config().options().optimizer.clone();
    {
        let mut state = state.write();
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.join_reordering = false;
        optimizer.hash_join_single_partition_threshold = usize::MAX;
        optimizer.hash_join_single_partition_threshold_rows = usize::MAX;
        optimizer.enable_join_dynamic_filter_pushdown = false;
    }
    let result = session.query_read_only(sql::SCORE_PASS);
    state.write().config_mut().options_mut().optimizer = saved;
    result
}

/// `data` with the string columns `names` as string views (`Utf8View`), the type DataFusion reads
/// Parquet strings as. The score pass joins the needed pairs' (clip_id, mid) with the teacher's;
/// with plain strings on the pairs' side, DataFusion casts that side's keys to views for the join
/// and its hash table keeps both the strings and their views (AudioSet: ~1 GB for the 16M pairs
/// instead of ~0.6 GB, and another ~0.5 GB while it is built). Ids and mids of up to 12 bytes fit
/// in the view itself, 16 bytes a row.
fn with_string_views(data: TableData, names: &[&str]) -> Result<TableData> {
    use arrow::datatypes::{DataType, Field, Schema};
    let fields: Vec<Field> = data
        .schema
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if names.contains(&f.name().as_str()) { f.with_data_type(DataType::Utf8View) } else { f }
        })
        .collect();
    let schema = std::sync::Arc::new(Schema::new(fields));
    let mut batches = Vec::with_capacity(data.batches.len());
    for b in data.batches {
        let columns = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    return Ok(c.clone());
                }
                // The cast makes views into the strings' buffer, which the view array then keeps
                // alive even when every string is inlined; gc() drops it (~20 bytes a pair).
                use arrow::array::AsArray;
                let view = arrow::compute::cast(c, f.data_type())?;
                Ok(std::sync::Arc::new(view.as_string_view().gc()) as arrow::array::ArrayRef)
            })
            .collect::<std::result::Result<Vec<_>, arrow::error::ArrowError>>()?;
        batches.push(arrow::record_batch::RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(TableData { schema, batches })
}

/// `data` as one record batch. The score pass builds its hash table on the needed pairs; from one
/// batch, the build side is that batch (arrow's concat of a single array is a slice), from many it
/// is a concatenated copy. Measured at AudioSet scale (16M pairs, back-to-back runs): peak RSS
/// 2131-2134 MB against 2187-2227 MB.
fn one_batch(data: TableData) -> Result<TableData> {
    let one = arrow::compute::concat_batches(&data.schema, &data.batches)?;
    Ok(TableData { schema: data.schema, batches: vec![one] })
}

/// One row of counts (`Int64` columns) from `sql`, read by name.
fn counts(session: &Session, sql: &str, file: &str) -> Result<impl Fn(&str) -> Result<u64>> {
    let row = session.query_read_only(sql)?;
    let b = row.batches.into_iter().find(|b| b.num_rows() > 0).ok_or_else(|| Error::Sql(format!("{file} returned no row")))?;
    let file = file.to_string();
    Ok(move |name: &str| -> Result<u64> {
        use arrow::array::AsArray;
        let col = b.column_by_name(name).ok_or_else(|| Error::Sql(format!("{file} has no column {name}")))?;
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64)?;
        Ok(col.as_primitive::<arrow::datatypes::Int64Type>().value(0) as u64)
    })
}

/// Run needed_checks.sql; an error for missing, duplicate or invalid scores of the needed pairs,
/// with examples (needed_check_examples.sql).
fn check_needed_scores(session: &Session) -> Result<Checks> {
    let get = counts(session, sql::NEEDED_CHECKS, "needed_checks.sql")?;
    let c = Checks {
        labeled_clips: get("labeled_clips")?,
        original_labels: get("original_labels")?,
        vocabulary: get("vocabulary")?,
        labels_outside_vocabulary: get("labels_outside_vocabulary")?,
        classes_without_labels: get("classes_without_labels")?,
    };
    if c.labeled_clips == 0 {
        return Err(Error::invalid("the labels table is empty: there is nothing to enhance"));
    }
    let (pairs, missing, duplicate, invalid) =
        (get("needed_pairs")?, get("missing_scores")?, get("duplicate_scores")?, get("invalid_scores")?);
    let mut problems = Vec::new();
    if missing > 0 {
        problems.push(format!(
            "{} of the {} (clip, class) pairs the rules read have no teacher score",
            group(missing),
            group(pairs)
        ));
    }
    if duplicate > 0 {
        problems.push(format!("{} more teacher rows than pairs: some pairs are scored more than once", group(duplicate)));
    }
    if invalid > 0 {
        problems.push(format!("{} teacher scores the rules read are null, NaN or outside [0, 1]", group(invalid)));
    }
    if problems.is_empty() {
        return Ok(c);
    }
    Err(refusal(session, &problems, sql::NEEDED_CHECK_EXAMPLES)?)
}

/// The error for unusable teacher scores: the problems, and examples from `examples_sql`
/// (rows of problem, clip_id, mid).
fn refusal(session: &Session, problems: &[String], examples_sql: &str) -> Result<Error> {
    let examples = session.query_read_only(examples_sql)?;
    let mut lines = Vec::new();
    for b in &examples.batches {
        use arrow::array::AsArray;
        let utf8 = |i: usize| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8);
        let (p, id, mid) = (utf8(0)?, utf8(1)?, utf8(2)?);
        let (p, id, mid) = (p.as_string::<i32>(), id.as_string::<i32>(), mid.as_string::<i32>());
        for i in 0..b.num_rows() {
            lines.push(format!("  {}: clip {} class {}", p.value(i), id.value(i), mid.value(i)));
        }
    }
    Ok(Error::invalid(format!(
        "the teacher's scores cannot be used: {}. Examples:\n{}\nScore every labeled clip for every vocabulary class once, \
         with probabilities in [0, 1].",
        problems.join("; "),
        lines.join("\n")
    )))
}

/// `check = "full"`: run checks.sql, one pass over the whole teacher table; an error for
/// missing, duplicate or invalid scores of any labeled clip, with examples (check_examples.sql).
fn check_all_scores(session: &Session) -> Result<()> {
    let get = counts(session, sql::CHECKS, "checks.sql")?;
    let labeled_clips = get("labeled_clips")?;
    if labeled_clips == 0 {
        return Err(Error::invalid("the labels table is empty: there is nothing to enhance"));
    }
    let mut problems = Vec::new();
    let without = get("clips_without_scores")?;
    if without > 0 {
        problems.push(format!("{} of the {} labeled clips have no teacher score at all", group(without), group(labeled_clips)));
    }
    let wrong = get("clips_with_wrong_scores")?;
    if wrong > 0 {
        problems.push(format!(
            "{} labeled clips are not scored exactly once for each of the {} vocabulary classes (classes missing or \
             duplicated)",
            group(wrong),
            group(get("vocabulary")?)
        ));
    }
    let invalid = get("invalid_scores")?;
    if invalid > 0 {
        problems.push(format!("{} teacher scores are null, NaN or outside [0, 1]", group(invalid)));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(refusal(session, &problems, sql::CHECK_EXAMPLES)?)
}
