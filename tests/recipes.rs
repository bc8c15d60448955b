//! The PSLA recipe pipelines (pipelines/audioset_balanced.toml, audioset_full.toml, fsd50k.toml and
//! score.toml), checked with `psla run --dry-run` against the shared AudioSet and FSD50K metadata.
//!
//! What ../shared lacks (eval and unbalanced segment lists, FSD50K's converted ground truth, audio, the
//! ImageNet weights) are stand-in files in a temp dir, given through the pipelines' `${env:...}`
//! variables. The planner refuses an input file that neither exists nor lies under a folder another stage
//! writes, so a dry run that succeeds also proves each score stage is ordered after the train stage whose
//! checkpoints it reads, each average_weights stage after the train stage whose checkpoints it averages,
//! and each WA score stage after the average_weights stage that writes its model. The printed plan is
//! parsed and checked: every stage of the recipe with its kind, every table read after the stage that
//! writes it, and the recipe's own order and edges. The plan does not print file edges, so those are
//! also proved by removing a stage: the dry run then names the checkpoint that nothing writes. The stage
//! parameters that carry PSLA's recipe (the weight-averaging window, the splits each model scores) are
//! checked in the TOML itself.

use std::path::{Path, PathBuf};

use crate::common::*;

/// One line of a dry run's plan: `  N. id  [kind] reads: a, b -> writes: c, d  would run (why)`.
#[derive(Debug)]
struct Step {
    id: String,
    kind: String,
    reads: Vec<String>,
    writes: Vec<String>,
    what: String,
}

struct Plan {
    steps: Vec<Step>,
    text: String,
}

impl Plan {
    fn parse(text: &str) -> Plan {
        let header = text.lines().find(|l| l.starts_with("pipeline `")).unwrap_or_else(|| panic!("no plan header in:\n{text}"));
        let mut steps = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("  ")) {
            let line = line.trim_start();
            let Some((number, rest)) = line.split_once(". ") else { continue };
            if number.parse::<usize>().ok() != Some(steps.len() + 1) {
                continue;
            }
            let (id, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("no id in plan line {line:?}"));
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('[').unwrap_or_else(|| panic!("no [kind] in plan line {line:?}"));
            let (kind, rest) = rest.split_once("] reads: ").unwrap_or_else(|| panic!("no reads in plan line {line:?}"));
            let (reads, rest) = rest.split_once(" -> writes: ").unwrap_or_else(|| panic!("no writes in plan line {line:?}"));
            let (writes, what) = rest.split_once("  ").unwrap_or((rest, ""));
            let list = |s: &str| -> Vec<String> {
                if s.trim() == "-" { Vec::new() } else { s.split(", ").map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect() }
            };
            steps.push(Step {
                id: id.to_string(),
                kind: kind.to_string(),
                reads: list(reads),
                writes: list(writes),
                what: what.trim().to_string(),
            });
        }
        let count = format!(": {} stages,", steps.len());
        assert!(header.contains(&count), "the header counts another number of stages than the {} parsed:\n{text}", steps.len());
        Plan { steps, text: text.to_string() }
    }

    fn pos(&self, id: &str) -> usize {
        self.steps.iter().position(|s| s.id == id).unwrap_or_else(|| panic!("no stage `{id}` in the plan:\n{}", self.text))
    }

    fn step(&self, id: &str) -> &Step {
        &self.steps[self.pos(id)]
    }

    fn ids(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.id.as_str()).collect()
    }

    /// `a` runs before `b`.
    fn before(&self, a: &str, b: &str) {
        assert!(self.pos(a) < self.pos(b), "`{a}` should run before `{b}`:\n{}", self.text);
    }

    fn reads(&self, id: &str, table: &str) {
        assert!(self.step(id).reads.iter().any(|t| t == table), "`{id}` should read `{table}`:\n{}", self.text);
    }

    fn writes(&self, id: &str, table: &str) {
        assert!(self.step(id).writes.iter().any(|t| t == table), "`{id}` should write `{table}`:\n{}", self.text);
    }

    /// Exactly these stages (id, kind), every one to run (a fresh run root), every table read written
    /// by an earlier stage (none of these pipelines takes tables from outside).
    fn check(&self, expected: &[(&str, &str)]) {
        let mut got: Vec<(&str, &str)> = self.steps.iter().map(|s| (s.id.as_str(), s.kind.as_str())).collect();
        let mut want = expected.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "the plan's stages (id, kind):\n{}", self.text);
        for (i, s) in self.steps.iter().enumerate() {
            assert!(s.what.starts_with("would run"), "`{}` should run in a fresh run root:\n{}", s.id, self.text);
            for t in &s.reads {
                assert!(
                    self.steps[..i].iter().any(|p| p.writes.contains(t)),
                    "`{}` reads `{t}`, which no earlier stage writes:\n{}",
                    s.id,
                    self.text
                );
            }
        }
    }
}

fn pipeline(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines").join(name)
}

fn fsd50k(file: &str) -> String {
    shared().join("data/fsd50k").join(file).to_string_lossy().into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// AudioSet's segment-file header and one line, for the lists ../shared does not hold.
fn segments_stand_in(dir: &Path, name: &str, line: &str) -> String {
    write(dir, name, &format!("# stand-in\n# num_ytids=1\n# YTID, start_seconds, end_seconds, positive_labels\n{line}\n"))
}

/// The variables of the AudioSet recipes: the shared metadata, stand-ins for the rest.
fn audioset_env(dir: &Path) -> Vec<(&'static str, String)> {
    let audio = dir.join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    vec![
        ("AUDIOSET_CLASSES", audioset("class_labels_indices.csv")),
        ("AUDIOSET_ONTOLOGY", audioset("ontology.json")),
        ("AUDIOSET_BALANCED_SEGMENTS", audioset("balanced_train_segments.csv")),
        ("AUDIOSET_UNBALANCED_SEGMENTS", segments_stand_in(dir, "unbalanced_train_segments.csv", "---1_cCGK4M, 0.000, 10.000, \"/m/01g50p\"")),
        ("AUDIOSET_EVAL_SEGMENTS", segments_stand_in(dir, "eval_segments.csv", "--4gqARaEJE, 0.000, 10.000, \"/m/068hy,/m/07q6cd_\"")),
        ("AUDIOSET_AUDIO", audio.to_string_lossy().into_owned()),
        ("PSLA_B2_IMAGENET", write(dir, "efficientnet-b2-imagenet.safetensors", "stand-in")),
    ]
}

fn fsd50k_env(dir: &Path) -> Vec<(&'static str, String)> {
    let segments = dir.join("fsd50k_segments");
    for (split, line) in [("train", "64760, 0.0, 30.0, \"/m/0242l,/m/04rlf\""), ("val", "21914, 0.0, 30.0, \"/m/09x0r\""), ("eval", "37199, 0.0, 30.0, \"/m/0mkg\"")] {
        write(&segments, &format!("{split}_segments.csv"), &format!("{line}\n"));
    }
    let audio = dir.join("fsd50k_audio");
    std::fs::create_dir_all(&audio).unwrap();
    vec![
        ("FSD50K_CLASSES", fsd50k("class_labels_indices.csv")),
        ("FSD50K_ONTOLOGY", audioset("ontology.json")),
        ("FSD50K_SEGMENTS", segments.to_string_lossy().into_owned()),
        ("FSD50K_AUDIO", audio.to_string_lossy().into_owned()),
        ("PSLA_B2_IMAGENET", write(dir, "efficientnet-b2-imagenet.safetensors", "stand-in")),
    ]
}

fn dry_run(spec: &Path, root: &Path, env: &[(&str, String)]) -> Plan {
    let mut cmd = psla();
    cmd.arg("run").arg(spec).arg("--root").arg(root).arg("--dry-run");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Plan::parse(&stderr(&run_ok(&mut cmd)))
}

/// The stages every dataset recipe shares: ingest, features, the teacher, its scores, label enhancement,
/// sampling, three students, their last checkpoints' scores, their weight averages (WA) and those scores,
/// the evaluations, the ensemble of the WA models, its evaluation, the report.
const RECIPE: &[(&str, &str)] = &[
    ("ingest", "ingest"),
    ("features", "features"),
    ("train_labels", "sql"),
    ("train_teacher", "train"),
    ("score_teacher", "score"),
    ("evaluate_teacher", "evaluate"),
    ("label", "label"),
    ("sample", "sample"),
    ("train_student_1", "train"),
    ("train_student_2", "train"),
    ("train_student_3", "train"),
    ("score_student_1", "score"),
    ("score_student_2", "score"),
    ("score_student_3", "score"),
    ("evaluate_student_1", "evaluate"),
    ("evaluate_student_2", "evaluate"),
    ("evaluate_student_3", "evaluate"),
    ("average_weights_student_1", "average_weights"),
    ("average_weights_student_2", "average_weights"),
    ("average_weights_student_3", "average_weights"),
    ("score_student_1_wa", "score"),
    ("score_student_2_wa", "score"),
    ("score_student_3_wa", "score"),
    ("evaluate_student_1_wa", "evaluate"),
    ("evaluate_student_2_wa", "evaluate"),
    ("evaluate_student_3_wa", "evaluate"),
    ("ensemble", "ensemble"),
    ("evaluate", "evaluate"),
    ("report", "report"),
];

/// The order and edges of PSLA's recipe, common to the three dataset pipelines.
fn check_recipe(plan: &Plan, balanced_sampling: bool) {
    for (a, b) in [
        ("ingest", "features"),
        ("features", "train_labels"),
        ("train_labels", "train_teacher"),
        ("train_teacher", "score_teacher"),
        ("score_teacher", "evaluate_teacher"),
        ("score_teacher", "label"),
        ("label", "sample"),
        ("ensemble", "evaluate"),
    ] {
        plan.before(a, b);
    }
    plan.reads("features", "clips");
    plan.writes("features", "features");
    plan.reads("train_labels", "features");
    plan.writes("train_labels", "train_labels");
    plan.reads("train_teacher", "features");
    plan.reads("train_teacher", "train_labels");
    plan.writes("score_teacher", "teacher_predictions");
    plan.reads("evaluate_teacher", "teacher_predictions");
    plan.reads("label", "teacher_predictions");
    plan.reads("label", "train_labels");
    plan.reads("label", "ontology_edges");
    plan.writes("label", "labels_enhanced");
    plan.reads("sample", "labels_enhanced");
    // The teacher scores with a split filter that keeps the training clips (label enhancement needs them).
    plan.reads("score_teacher", "clips");
    for s in 1..=3 {
        let (train, score, eval) = (format!("train_student_{s}"), format!("score_student_{s}"), format!("evaluate_student_{s}"));
        let (wa, score_wa, eval_wa) =
            (format!("average_weights_student_{s}"), format!("score_student_{s}_wa"), format!("evaluate_student_{s}_wa"));
        plan.before("label", &train);
        plan.before(&train, &score);
        plan.before(&score, &eval);
        plan.reads(&train, "labels_enhanced");
        plan.writes(&score, &format!("student_{s}_predictions"));
        plan.reads(&eval, &format!("student_{s}_predictions"));
        // Weight averaging: after the student's training, its model scored after it, the ensemble after that.
        plan.before(&train, &wa);
        plan.before(&wa, &score_wa);
        plan.before(&score_wa, &eval_wa);
        plan.before(&score_wa, "ensemble");
        assert!(plan.step(&wa).reads.is_empty() && plan.step(&wa).writes.is_empty(), "`{wa}` reads and writes files only:\n{}", plan.text);
        plan.writes(&score_wa, &format!("student_{s}_wa_predictions"));
        plan.reads(&eval_wa, &format!("student_{s}_wa_predictions"));
        plan.writes(&eval_wa, &format!("student_{s}_wa_metrics_summary"));
        plan.reads("report", &format!("student_{s}_wa_metrics_summary"));
        // The ensemble averages the WA models (PSLA's README averages each run's last model; the pipelines
        // say how to switch); the last checkpoints are only evaluated.
        plan.reads("ensemble", &format!("student_{s}_wa_predictions"));
        assert!(
            !plan.step("ensemble").reads.contains(&format!("student_{s}_predictions")),
            "the ensemble averages the WA models, not the last checkpoints:\n{}",
            plan.text
        );
        // Students and WA models score the eval split only: the split filter reads the clips table.
        plan.reads(&score, "clips");
        plan.reads(&score_wa, "clips");
        // PSLA's --bal: balanced sampling reads the sample stage's draws, the balanced set shuffles uniformly.
        assert_eq!(
            plan.step(&train).reads.iter().any(|t| t == "epoch_draws"),
            balanced_sampling,
            "`{train}` reads epoch_draws only with balanced sampling:\n{}",
            plan.text
        );
        if balanced_sampling {
            plan.before("sample", &train);
        }
    }
    plan.writes("ensemble", "ensemble_predictions");
    plan.reads("evaluate", "ensemble_predictions");
    plan.writes("evaluate", "ensemble_metrics_summary");
    assert_eq!(plan.ids().last(), Some(&"report"), "the report comes last:\n{}", plan.text);
    plan.reads("report", "ensemble_metrics_summary");
}

/// One `[stage.<id>]` table of a pipeline file.
fn stage_params(spec: &toml::Table, id: &str) -> toml::Table {
    spec.get("stage")
        .and_then(|s| s.get(id))
        .and_then(|s| s.as_table())
        .unwrap_or_else(|| panic!("no [stage.{id}] in the pipeline"))
        .clone()
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    match v {
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(a)) => a.iter().map(|x| x.as_str().expect("a string").to_string()).collect(),
        _ => Vec::new(),
    }
}

/// The parameters that carry PSLA's recipe: each student's weights averaged over PSLA's window
/// (--wa_start, --wa_end) into models/student_N_wa/, that file scored; students and WA models scored on
/// the eval split only, the teacher on its training splits too.
fn check_recipe_params(name: &str, wa: (u32, u32), last_epoch: u32, teacher_splits: &[&str]) {
    let text = std::fs::read_to_string(pipeline(name)).unwrap();
    let spec: toml::Table = text.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(strings(stage_params(&spec, "score_teacher").get("splits")), teacher_splits, "{name}: score_teacher's splits");
    for s in 1..=3 {
        let avg = stage_params(&spec, &format!("average_weights_student_{s}"));
        let window: Vec<String> = (wa.0..=wa.1).map(|e| format!("${{root}}/models/student_{s}/epoch-{e:02}.safetensors")).collect();
        assert_eq!(strings(avg.get("checkpoints")), window, "{name}: student_{s}'s WA window is PSLA's epochs {}-{}", wa.0, wa.1);
        let out = format!("${{root}}/models/student_{s}_wa/model.safetensors");
        assert_eq!(strings(avg.get("out")), [out.clone()], "{name}: average_weights_student_{s}'s out");
        assert_eq!(avg.get("psla_compat").and_then(|v| v.as_bool()), None, "{name}: the plain mean (psla_compat unset)");
        let score_wa = stage_params(&spec, &format!("score_student_{s}_wa"));
        assert_eq!(strings(score_wa.get("checkpoint")), [out], "{name}: score_student_{s}_wa scores the WA model");
        assert_eq!(strings(score_wa.get("splits")), ["eval"], "{name}: score_student_{s}_wa's splits");
        let score = stage_params(&spec, &format!("score_student_{s}"));
        assert_eq!(
            strings(score.get("checkpoint")),
            [format!("${{root}}/models/student_{s}/epoch-{last_epoch:02}.safetensors")],
            "{name}: score_student_{s} scores the last epoch"
        );
        assert_eq!(strings(score.get("splits")), ["eval"], "{name}: score_student_{s}'s splits");
    }
}

/// `name` without the given stages, written into `dir`; its dry run's error.
fn dry_run_without(name: &str, drop: &[&str], dir: &Path, env: &[(&str, String)]) -> (String, String) {
    let text = std::fs::read_to_string(pipeline(name)).unwrap();
    let parts: Vec<&str> = text.split("\n[stage.").collect();
    let kept: Vec<&str> = parts.iter().copied().filter(|part| !drop.iter().any(|d| part.starts_with(&format!("{d}]")))).collect();
    assert_eq!(kept.len() + drop.len(), parts.len(), "{name} has one [stage.X] for each of {drop:?}");
    let text = kept.join("\n[stage.");
    let file = format!("without_{}.toml", drop.join("_"));
    let spec = write(dir, &file, &text);
    let mut cmd = psla();
    cmd.arg("run").arg(&spec).arg("--root").arg(dir.join("root")).arg("--dry-run");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (run_err(&mut cmd), text)
}

/// The file edges of weight averaging: without the average_weights stage, the WA score stage's checkpoint
/// is a file nothing writes; without the student's train stage (and its last-epoch score), the
/// average_weights stage's checkpoints are.
fn check_wa_edges(name: &str, wa_start: u32, env: &[(&str, String)]) {
    let dir = tempdir();
    let (err, text) = dry_run_without(name, &["average_weights_student_2"], dir.path(), env);
    let line = 1 + text
        .lines()
        .position(|l| l == "checkpoint = \"${root}/models/student_2_wa/model.safetensors\"")
        .expect("score_student_2_wa's checkpoint line");
    assert!(err.contains(&format!(".toml:{line}")), "{name}: the error should name score_student_2_wa's checkpoint line {line}: {err}");
    assert!(err.contains("`checkpoint`") && err.contains("models/student_2_wa/model.safetensors") && err.contains("does not exist"), "{name}: {err}");

    let (err, text) = dry_run_without(name, &["train_student_2", "score_student_2"], dir.path(), env);
    let line = 1 + text.lines().position(|l| l.starts_with("[stage.average_weights_student_2]")).unwrap();
    let first = format!("models/student_2/epoch-{wa_start:02}.safetensors");
    assert!(err.contains("`checkpoints`") && err.contains(&first) && err.contains("does not exist"), "{name}: {err}");
    let at: u64 = err.split(".toml:").nth(1).and_then(|r| r.split(':').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{name}: no line in {err}"));
    assert!(at as usize > line, "{name}: the error should point into [stage.average_weights_student_2] (line {line}): {err}");
}

#[test]
fn audioset_balanced_recipe_plans_psla_in_order() {
    let dir = tempdir();
    let plan = dry_run(&pipeline("audioset_balanced.toml"), &dir.path().join("root"), &audioset_env(dir.path()));
    plan.check(RECIPE);
    check_recipe(&plan, false);
    // The balanced recipe's teacher shuffles uniformly too: no teacher draws.
    assert!(!plan.step("train_teacher").reads.iter().any(|t| t.contains("epoch_draws")), "{}", plan.text);
    // egs/audioset/run.sh, subset=balanced: 60 epochs, --wa_start 41 --wa_end 60.
    check_recipe_params("audioset_balanced.toml", (41, 60), 60, &["balanced_train", "eval"]);
    check_wa_edges("audioset_balanced.toml", 41, &audioset_env(dir.path()));
}

#[test]
fn audioset_full_recipe_plans_psla_in_order() {
    let dir = tempdir();
    let plan = dry_run(&pipeline("audioset_full.toml"), &dir.path().join("root"), &audioset_env(dir.path()));
    let mut expected = RECIPE.to_vec();
    expected.push(("sample_teacher", "sample"));
    plan.check(&expected);
    check_recipe(&plan, true);
    plan.reads("sample_teacher", "train_labels");
    plan.writes("sample_teacher", "teacher_epoch_draws");
    plan.reads("train_teacher", "teacher_epoch_draws");
    plan.before("sample_teacher", "train_teacher");
    // egs/audioset/run.sh, subset=full: 30 epochs, --wa_start 16 --wa_end 30.
    check_recipe_params("audioset_full.toml", (16, 30), 30, &["balanced_train", "unbalanced_train", "eval"]);
    check_wa_edges("audioset_full.toml", 16, &audioset_env(dir.path()));
}

#[test]
fn fsd50k_recipe_plans_psla_in_order() {
    let dir = tempdir();
    let plan = dry_run(&pipeline("fsd50k.toml"), &dir.path().join("root"), &fsd50k_env(dir.path()));
    let mut expected = RECIPE.to_vec();
    expected.push(("sample_teacher", "sample"));
    plan.check(&expected);
    check_recipe(&plan, true);
    plan.reads("train_teacher", "teacher_epoch_draws");
    plan.before("sample_teacher", "train_teacher");
    // egs/fsd50k/run.sh: 40 epochs, --wa_start 21 --wa_end 40; the teacher need not score `val`.
    check_recipe_params("fsd50k.toml", (21, 40), 40, &["train", "eval"]);
    check_wa_edges("fsd50k.toml", 21, &fsd50k_env(dir.path()));
}

#[test]
fn score_recipe_plans_features_then_score_of_a_folder() {
    let dir = tempdir();
    let env = vec![
        ("PSLA_AUDIO", shared().join("reference/audio").to_string_lossy().into_owned()),
        ("PSLA_CHECKPOINT", shared().join("reference/model/effnet_b0_heads4.safetensors").to_string_lossy().into_owned()),
    ];
    let plan = dry_run(&pipeline("score.toml"), &dir.path().join("root"), &env);
    plan.check(&[("features", "features"), ("score", "score"), ("top_tags", "sql")]);
    // No ingest: features lists the folder itself.
    assert!(plan.step("features").reads.is_empty(), "{}", plan.text);
    plan.before("features", "score");
    plan.before("score", "top_tags");
    plan.reads("score", "features");
    plan.writes("score", "predictions");
    // Sliding windows: the per-window rows too.
    plan.writes("score", "window_predictions");
    plan.reads("top_tags", "predictions");
    plan.writes("top_tags", "top_tags");
    let spec: toml::Table = std::fs::read_to_string(pipeline("score.toml")).unwrap().parse().unwrap();
    let score = stage_params(&spec, "score");
    assert_eq!(score.get("window").and_then(|v| v.as_float()), Some(10.0), "score.toml's window");
    assert_eq!(score.get("hop").and_then(|v| v.as_float()), Some(5.0), "score.toml's hop");
    // One way to cut the tags: top_tags, so predictions keep every class.
    assert!(score.get("top").is_none(), "score.toml cuts the tags in top_tags, not with `top`");
}

#[test]
fn score_recipe_tags_the_shared_reference_audio_with_the_reference_model() {
    // A real run (about 2 s on 2 cores): every decodable clip of the folder gets the five highest of the
    // checkpoint's 10 classes, best first; the three clips that are no audio, too short or truncated are
    // features rejects.
    let dir = tempdir();
    let root = dir.path().join("root");
    let out = run_ok(
        psla()
            .arg("run")
            .arg(pipeline("score.toml"))
            .arg("--root")
            .arg(&root)
            .env("PSLA_AUDIO", shared().join("reference/audio"))
            .env("PSLA_CHECKPOINT", shared().join("reference/model/effnet_b0_heads4.safetensors")),
    );
    let log = stderr(&out);
    assert!(log.contains("pipeline `score`: 3 stages ran"), "{log}");
    assert_eq!(sql_count(&root, "SELECT count(*) FROM features"), 9);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM features_rejects"), 3);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM top_tags"), 9 * 5);
    assert_eq!(sql_count(&root, "SELECT count(DISTINCT clip_id) FROM top_tags"), 9);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM top_tags WHERE tag_rank BETWEEN 1 AND 5"), 9 * 5);
    assert_eq!(
        sql_count(
            &root,
            "SELECT count(*) FROM top_tags a JOIN top_tags b ON a.clip_id = b.clip_id AND a.tag_rank < b.tag_rank \
             WHERE a.score < b.score"
        ),
        0
    );
    assert_eq!(
        sql_count(
            &root,
            "SELECT count(*) FROM top_tags t JOIN (SELECT clip_id, max(score) AS m FROM predictions GROUP BY clip_id) p \
             ON p.clip_id = t.clip_id WHERE t.tag_rank = 1 AND t.score <> p.m"
        ),
        0
    );
    // Windows of 10 s every 5 s: every reference clip is 10 s or shorter, so one window each, starting at 0,
    // and the clip's score is that window's.
    assert_eq!(sql_count(&root, "SELECT count(*) FROM window_predictions"), 9 * 10);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM window_predictions WHERE start_s <> 0"), 0);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM predictions WHERE windows <> 1 OR score <> score_mean"), 0);
    assert_eq!(
        sql_count(
            &root,
            "SELECT count(*) FROM predictions p JOIN window_predictions w ON w.clip_id = p.clip_id AND w.mid = p.mid \
             WHERE w.score <> p.score"
        ),
        0
    );
}

#[test]
fn score_recipe_tags_a_long_recording_in_full() {
    // A 23 s recording (2,298 frames): windows of 998 frames (10 s) start every 500 frames while one fits
    // (0, 5, 10 s), then one more ends at the recording's end (13 s); the clip's score is the max over
    // the four, its score_mean the mean.
    let dir = tempdir();
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let spec = hound::WavSpec { channels: 1, sample_rate: 16000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(audio.join("long.wav"), spec).unwrap();
    for i in 0..23 * 16000u32 {
        let t = i as f32 / 16000.0;
        // A tone for the first 8 s, then a rising chirp, so the windows differ.
        let f = if t < 8.0 { 440.0 } else { 200.0 + 150.0 * (t - 8.0) };
        w.write_sample(((2.0 * std::f32::consts::PI * f * t).sin() * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    let root = dir.path().join("root");
    let log = stderr(&run_ok(
        psla()
            .arg("run")
            .arg(pipeline("score.toml"))
            .arg("--root")
            .arg(&root)
            .env("PSLA_AUDIO", &audio)
            .env("PSLA_CHECKPOINT", shared().join("reference/model/effnet_b0_heads4.safetensors")),
    ));
    assert!(log.contains("pipeline `score`: 3 stages ran"), "{log}");
    assert_eq!(sql_csv(&root, "SELECT DISTINCT start_s FROM window_predictions ORDER BY start_s"), ["start_s", "0.0", "5.0", "10.0", "13.0"]);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM window_predictions"), 4 * 10);
    assert_eq!(sql_count(&root, "SELECT count(*) FROM predictions WHERE windows = 4"), 10);
    assert_eq!(
        sql_count(
            &root,
            "SELECT count(*) FROM predictions p JOIN (SELECT mid, max(score) AS mx, avg(score) AS mean FROM window_predictions GROUP BY mid) w \
             ON w.mid = p.mid WHERE p.score <> w.mx OR abs(p.score_mean - w.mean) > 1e-6"
        ),
        0
    );
    assert_eq!(sql_count(&root, "SELECT count(*) FROM top_tags"), 5);
}

#[test]
fn recipe_without_its_teacher_is_refused_at_the_teachers_checkpoint() {
    // The checkpoint edge is what orders score_teacher after train_teacher: without the train stage the
    // checkpoint is a missing input file, and the dry run names it.
    let dir = tempdir();
    let text = std::fs::read_to_string(pipeline("audioset_balanced.toml")).unwrap();
    let kept: Vec<&str> = text.split("\n[stage.").filter(|part| !part.starts_with("train_teacher]")).collect();
    assert_eq!(kept.len() + 1, text.split("\n[stage.").count(), "audioset_balanced.toml has one [stage.train_teacher]");
    let text = kept.join("\n[stage.");
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("checkpoint = \"${root}/models/teacher/"))
        .expect("score_teacher's checkpoint line");
    let spec = write(dir.path(), "no_teacher.toml", &text);
    let mut cmd = psla();
    cmd.arg("run").arg(&spec).arg("--root").arg(dir.path().join("root")).arg("--dry-run");
    for (k, v) in audioset_env(dir.path()) {
        cmd.env(k, v);
    }
    let err = run_err(&mut cmd);
    assert!(err.contains(&format!("no_teacher.toml:{line}")), "the error should name score_teacher's checkpoint line {line}: {err}");
    assert!(err.contains("`checkpoint`") && err.contains("models/teacher/epoch-60.safetensors") && err.contains("does not exist"), "{err}");
}
