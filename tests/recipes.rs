//! The PSLA recipe pipelines (pipelines/audioset_balanced.toml, audioset_full.toml, fsd50k.toml and
//! score.toml), checked with `psla run --dry-run` against the shared AudioSet and FSD50K metadata.
//!
//! What ../shared lacks (eval and unbalanced segment lists, FSD50K's converted ground truth, audio, the
//! ImageNet weights) are stand-in files in a temp dir, given through the pipelines' `${env:...}`
//! variables. The planner refuses an input file that neither exists nor lies under a folder another stage
//! writes, so a dry run that succeeds also proves each score stage is ordered after the train stage whose
//! checkpoints it reads. The printed plan is parsed and checked: every stage of the recipe with its kind,
//! every table read after the stage that writes it, and the recipe's own order and edges.

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
/// sampling, three students, their scores and evaluations, the ensemble, its evaluation, the report.
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
    for s in 1..=3 {
        let (train, score, eval) = (format!("train_student_{s}"), format!("score_student_{s}"), format!("evaluate_student_{s}"));
        plan.before("label", &train);
        plan.before(&train, &score);
        plan.before(&score, &eval);
        plan.before(&score, "ensemble");
        plan.reads(&train, "labels_enhanced");
        plan.writes(&score, &format!("student_{s}_predictions"));
        plan.reads(&eval, &format!("student_{s}_predictions"));
        plan.reads("ensemble", &format!("student_{s}_predictions"));
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

#[test]
fn audioset_balanced_recipe_plans_psla_in_order() {
    let dir = tempdir();
    let plan = dry_run(&pipeline("audioset_balanced.toml"), &dir.path().join("root"), &audioset_env(dir.path()));
    plan.check(RECIPE);
    check_recipe(&plan, false);
    // The balanced recipe's teacher shuffles uniformly too: no teacher draws.
    assert!(!plan.step("train_teacher").reads.iter().any(|t| t.contains("epoch_draws")), "{}", plan.text);
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
    plan.reads("top_tags", "predictions");
    plan.writes("top_tags", "top_tags");
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
