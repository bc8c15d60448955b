//! `report`: one self-contained `report.html` for a run root: the pipeline, label enhancement,
//! sampling, training curves and evaluation, each figure drawn from a query in `sql/report/` or
//! `sql/audit/` (shown beside it, so a reader can rerun it with `psla sql`).
//!
//! The page has no scripts and loads nothing: charts are inline SVG. A section whose tables the run
//! root lacks says so instead of being left out silently. The markup is well-formed XML (XHTML), so
//! any XML parser can check it.

use std::fmt::Write as _;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};

use super::label::bind;
use super::{Stage, StageContext, StageIo, StageKind, StageOutput, params_from};
use crate::error::{Error, Result};
use crate::sql::Session;
use crate::table::{RunRoot, TableData};

pub const KIND: StageKind = StageKind {
    name: "report",
    about: "report.html: pipeline, label enhancement, sampling, training and evaluation of a run root",
    build: |value, _resolver| Ok(Box::new(params_from::<ReportParams>(value)?)),
};

/// The queries behind the figures, embedded from `sql/`.
pub mod sql {
    pub const LABEL_COUNTS: (&str, &str) = ("sql/report/label_counts.sql", include_str!("../../sql/report/label_counts.sql"));
    pub const LABEL_ADDITIONS: (&str, &str) =
        ("sql/audit/label_additions_per_class.sql", include_str!("../../sql/audit/label_additions_per_class.sql"));
    pub const LABEL_TOP_PAIRS: (&str, &str) = ("sql/audit/label_top_pairs.sql", include_str!("../../sql/audit/label_top_pairs.sql"));
    pub const CLASS_EXPOSURE: (&str, &str) = ("sql/report/class_exposure.sql", include_str!("../../sql/report/class_exposure.sql"));
    pub const TRAIN_CURVES: (&str, &str) = ("sql/report/train_curves.sql", include_str!("../../sql/report/train_curves.sql"));
    pub const DEMO_MODELS: (&str, &str) = ("sql/demo/models.sql", include_str!("../../sql/demo/models.sql"));
    pub const DEMO_LABEL_QUALITY: (&str, &str) = ("sql/demo/label_quality.sql", include_str!("../../sql/demo/label_quality.sql"));
    pub const STUDY_SUMMARY: (&str, &str) = ("sql/demo/study_summary.sql", include_str!("../../sql/demo/study_summary.sql"));
    pub const PER_CLASS_AP: (&str, &str) = ("sql/report/per_class_ap.sql", include_str!("../../sql/report/per_class_ap.sql"));
    pub const AP_VS_TRAINING_CLIPS: (&str, &str) =
        ("sql/report/ap_vs_training_clips.sql", include_str!("../../sql/report/ap_vs_training_clips.sql"));
}

/// Parameters of `report`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// Tables the report waits for in a pipeline (it shows every table of the run root it knows; these
    /// only order it after the stages that write them and rerun it when they change).
    #[serde(default)]
    pub after: Vec<String>,
    /// Where to write, relative to the run root.
    #[serde(default = "default_out")]
    pub out: String,
}

fn default_out() -> String {
    "report.html".into()
}

impl Stage for ReportParams {
    fn kind(&self) -> &'static str {
        "report"
    }

    fn io(&self) -> StageIo {
        StageIo { reads: self.after.clone(), ..Default::default() }
    }

    fn params_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize")
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutput> {
        let report = render(ctx.root)?;
        ctx.root.write_bytes(&self.out, report.html.into_bytes())?;
        Ok(StageOutput {
            detail: format!("{} sections, {} figures -> {}", report.sections, report.figures, ctx.root.url_of(&self.out)),
            ..Default::default()
        })
    }
}

/// A rendered report.
pub struct Report {
    pub html: String,
    pub sections: usize,
    pub figures: usize,
}

/// `psla report --root R [--out FILE]`: render and write; returns the summary line.
pub fn write_report(root: &RunRoot, out: Option<&std::path::Path>) -> Result<String> {
    let started = std::time::Instant::now();
    let report = render(root)?;
    let target = match out {
        Some(path) => {
            let tmp = path.with_extension("html.tmp");
            std::fs::write(&tmp, &report.html).map_err(|e| Error::file(&tmp, None, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::file(path, None, e))?;
            path.display().to_string()
        }
        None => {
            root.write_bytes("report.html", report.html.clone().into_bytes())?;
            root.url_of("report.html").to_string()
        }
    };
    Ok(format!(
        "report: {} sections, {} figures, {} KB in {:.2} s -> {target}",
        report.sections,
        report.figures,
        report.html.len() / 1024,
        started.elapsed().as_secs_f64()
    ))
}

/// Render the report of every table the run root has.
pub fn render(root: &RunRoot) -> Result<Report> {
    let manifest = root.manifest()?;
    let has = |t: &str| manifest.tables.contains_key(t);
    let session = Session::open(root)?;
    let mut page = Page::default();

    // Pipeline.
    page.section("pipeline", "Pipeline");
    if manifest.stages.is_empty() {
        page.missing("no stage has run in this run root yet");
    } else {
        let mut rows = Vec::new();
        for (id, s) in &manifest.stages {
            rows.push(vec![id.clone(), s.kind.clone(), s.rows_in.to_string(), s.rows_out.to_string(), s.rejects.to_string(),
                format!("{:.2}", s.seconds), s.outputs.join(", ")]);
        }
        page.table(&["stage", "kind", "rows in", "rows out", "rejects", "seconds", "tables written"], &rows);
        let mut rows = Vec::new();
        for (name, t) in &manifest.tables {
            rows.push(vec![name.clone(), t.rows.to_string(), t.version.to_string(), t.written_by.clone()]);
        }
        page.table(&["table", "rows", "version", "written by"], &rows);
    }

    // Label enhancement.
    page.section("label", "Label enhancement");
    if has("labels_enhanced") && has("classes") {
        let counts = query(&session, sql::LABEL_COUNTS, &[])?;
        let (orig, enh) = (col_f64(&counts, "original")?, col_f64(&counts, "enhanced")?);
        let total_o: f64 = orig.iter().sum();
        let total_e: f64 = enh.iter().sum();
        page.para(&format!("{} original labels, {} after enhancement (+{}).", total_o, total_e, total_e - total_o));
        let names = col_str(&counts, "display_name")?;
        let bars: Vec<(String, f64)> =
            names.iter().zip(orig.iter().zip(&enh)).map(|(n, (o, e))| (n.clone(), e - o)).filter(|b| b.1 > 0.0).take(30).collect();
        page.figure("Labels added per class (most first)", &bar_chart(&bars, "labels added"), sql::LABEL_COUNTS);
        let additions = query(&session, sql::LABEL_ADDITIONS, &[])?;
        page.table_of("Additions per class and rule", &additions, 30, sql::LABEL_ADDITIONS)?;
        let pairs = query(&session, sql::LABEL_TOP_PAIRS, &[])?;
        page.table_of("Most frequent (original label -> added label) pairs", &pairs, 20, sql::LABEL_TOP_PAIRS)?;
    } else {
        page.missing("no labels_enhanced table: the label stage has not run here");
    }

    // Sampling.
    page.section("sampling", "Sampling");
    if has("class_exposure") && has("sample_weights") && has("epoch_draws") && has("classes") {
        let x = query(&session, sql::CLASS_EXPOSURE, &[])?;
        let (clip, draw) = (col_f64(&x, "clip_share")?, col_f64(&x, "draw_share")?);
        let series = vec![
            ("share of clips".to_string(), clip.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect()),
            ("share of draws".to_string(), draw.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect()),
        ];
        page.para("Classes from the most to the least labeled: balanced sampling lifts the draws of rare classes above their share of clips.");
        page.figure("Share of clips vs share of draws per class", &line_chart(&series, "class rank (most clips first)", "share", true), sql::CLASS_EXPOSURE);
    } else {
        page.missing("no class_exposure, sample_weights and epoch_draws tables: the sample stage has not run here");
    }

    // Training.
    page.section("training", "Training");
    let train_tables: Vec<&String> = manifest.tables.keys().filter(|t| t.starts_with("train_metrics")).collect();
    if train_tables.is_empty() {
        page.missing("no train_metrics table: no model was trained here");
    }
    for t in train_tables {
        let curves = query(&session, sql::TRAIN_CURVES, &[("train_metrics", t)])?;
        let (model, epoch) = (col_str(&curves, "model")?, col_f64(&curves, "epoch")?);
        for (metric, label) in [("train_loss", "training loss"), ("eval_loss", "eval loss"), ("map", "eval mAP"), ("lr", "learning rate")] {
            let values = col_f64(&curves, metric)?;
            let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
            for ((m, e), v) in model.iter().zip(&epoch).zip(&values) {
                match series.iter_mut().find(|s| &s.0 == m) {
                    Some(s) => s.1.push((*e, *v)),
                    None => series.push((m.clone(), vec![(*e, *v)])),
                }
            }
            page.figure(&format!("{label} per epoch ({t})"), &line_chart(&series, "epoch", label, false), sql::TRAIN_CURVES);
        }
    }

    // Evaluation.
    page.section("evaluation", "Evaluation");
    let summaries: Vec<&String> = manifest.tables.keys().filter(|t| t.ends_with("metrics_summary")).collect();
    if summaries.is_empty() {
        page.missing("no metrics_summary table: nothing was evaluated here");
    } else {
        let mut rows = Vec::new();
        for t in &summaries {
            let s = session.query_read_only(&format!("SELECT map, mauc, d_prime, clips, classes_evaluated FROM {t}"))?;
            let f = |c: &str| col_f64(&s, c).map(|v| v.first().copied().unwrap_or(f64::NAN));
            rows.push(vec![t.trim_end_matches("_summary").to_string(), format!("{:.4}", f("map")?), format!("{:.4}", f("mauc")?),
                format!("{:.3}", f("d_prime")?), format!("{}", f("clips")?), format!("{}", f("classes_evaluated")?)]);
        }
        page.table(&["model (metrics table)", "mAP", "mean AUC", "d'", "clips", "classes"], &rows);
    }
    for t in &summaries {
        let metrics = t.trim_end_matches("_summary");
        if !has(metrics) {
            continue;
        }
        let ap = query(&session, sql::PER_CLASS_AP, &[("metrics", metrics)])?;
        let bars: Vec<(String, f64)> = col_str(&ap, "display_name")?.into_iter().zip(col_f64(&ap, "ap")?).collect();
        page.figure(&format!("Per-class AP, best first ({metrics})"), &bar_chart(&bars, "AP"), sql::PER_CLASS_AP);
        if has("class_exposure") {
            let ap = query(&session, sql::AP_VS_TRAINING_CLIPS, &[("metrics", metrics)])?;
            let points: Vec<(f64, f64)> = col_f64(&ap, "train_clips")?.into_iter().zip(col_f64(&ap, "ap")?).collect();
            page.figure(
                &format!("AP vs training clips per class ({metrics})"),
                &scatter(&points, "training clips with the class", "AP"),
                sql::AP_VS_TRAINING_CLIPS,
            );
        }
    }

    // The demo's known truth: what only a generated dataset can tell.
    if has("demo_truth") {
        page.section("truth", "Against the hidden truth (demo data)");
        if has("labels_enhanced") {
            let t = session.query_read_only(sql::DEMO_LABEL_QUALITY.1)?;
            page.table_of("Label enhancement: precision and recall of the added labels, train split", &t, 10, sql::DEMO_LABEL_QUALITY)?;
        } else if !has("study_label_quality") {
            page.missing("no labels_enhanced table: label enhancement has not run");
        }
        // The models table names the demo pipeline's tables; another pipeline over demo data may lack them.
        if let Ok(t) = session.query_read_only(sql::DEMO_MODELS.1) {
            page.table_of("The demo's models on the clean eval split", &t, 20, sql::DEMO_MODELS)?;
        }
        // The study (pipelines/demo_study.toml).
        if has("study_results") {
            let t = session.query_read_only(sql::STUDY_SUMMARY.1)?;
            let labels: Vec<String> = col_str(&t, "comparison")?.into_iter().zip(col_str(&t, "setting")?).map(|(c, s)| format!("{c}: {s}")).collect();
            let bars: Vec<(String, f64)> = labels.into_iter().zip(col_f64(&t, "map_mean")?).collect();
            page.figure("Study: eval mAP per setting, mean over seeds", &bar_chart(&bars, "mAP"), sql::STUDY_SUMMARY);
            page.table_of("Study: every setting, mean and spread over seeds", &t, 50, sql::STUDY_SUMMARY)?;
        }
        if has("study_label_quality") {
            let t = session.query_read_only("SELECT * FROM study_label_quality")?;
            page.table_of(
                "Study: label enhancement per threshold kind and rule set vs the hidden truth",
                &t,
                20,
                ("pipelines/demo_study.toml", "SELECT * FROM study_label_quality -- written by the study_label_quality stage"),
            )?;
        }
    }

    Ok(page.finish(root.location()))
}

fn query(session: &Session, (_, text): (&str, &str), values: &[(&str, &str)]) -> Result<TableData> {
    session.query_read_only(&bind(text, values)?)
}

fn col_f64(t: &TableData, name: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for b in &t.batches {
        let c = b.column_by_name(name).ok_or_else(|| Error::Sql(format!("report query has no column `{name}`")))?;
        let c = arrow::compute::cast(c, &DataType::Float64)?;
        let c = c.as_primitive::<Float64Type>();
        out.extend((0..c.len()).map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) }));
    }
    Ok(out)
}

fn col_str(t: &TableData, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in &t.batches {
        let c = b.column_by_name(name).ok_or_else(|| Error::Sql(format!("report query has no column `{name}`")))?;
        out.extend(cells(c)?);
    }
    Ok(out)
}

fn cells(c: &dyn Array) -> Result<Vec<String>> {
    let formatter = arrow::util::display::ArrayFormatter::try_new(c, &arrow::util::display::FormatOptions::default())?;
    Ok((0..c.len()).map(|i| formatter.value(i).to_string()).collect())
}

/// XML-escape text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[derive(Default)]
struct Page {
    body: String,
    nav: Vec<(String, String)>,
    figures: usize,
}

impl Page {
    fn section(&mut self, id: &str, title: &str) {
        if !self.nav.is_empty() {
            self.body.push_str("</section>\n");
        }
        let _ = writeln!(self.body, "<section id=\"{id}\"><h2>{}</h2>", esc(title));
        self.nav.push((id.into(), title.into()));
    }

    fn para(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", esc(text));
    }

    fn missing(&mut self, why: &str) {
        let _ = writeln!(self.body, "<p class=\"missing\">Not in this run root: {}.</p>", esc(why));
    }

    fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.body.push_str("<table><tr>");
        for h in header {
            let _ = write!(self.body, "<th>{}</th>", esc(h));
        }
        self.body.push_str("</tr>\n");
        for r in rows {
            self.body.push_str("<tr>");
            for c in r {
                let _ = write!(self.body, "<td>{}</td>", esc(c));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</table>\n");
    }

    /// A query result as a table (its first `limit` rows), with the query under it.
    fn table_of(&mut self, title: &str, t: &TableData, limit: usize, (path, text): (&str, &str)) -> Result<()> {
        let _ = writeln!(self.body, "<figure><figcaption>{}</figcaption>", esc(title));
        let header: Vec<String> = t.schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut columns = Vec::new();
        for i in 0..header.len() {
            let mut col = Vec::new();
            for b in &t.batches {
                col.extend(cells(b.column(i).as_ref())?);
            }
            columns.push(col);
        }
        let n = columns.first().map_or(0, Vec::len).min(limit);
        let rows: Vec<Vec<String>> = (0..n).map(|r| columns.iter().map(|c| c[r].clone()).collect()).collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        self.table(&header, &rows);
        self.sql(path, text);
        self.body.push_str("</figure>\n");
        self.figures += 1;
        Ok(())
    }

    fn figure(&mut self, title: &str, svg: &str, (path, text): (&str, &str)) {
        let _ = writeln!(self.body, "<figure><figcaption>{}</figcaption>\n{svg}", esc(title));
        self.sql(path, text);
        self.body.push_str("</figure>\n");
        self.figures += 1;
    }

    fn sql(&mut self, path: &str, text: &str) {
        let _ = writeln!(
            self.body,
            "<details><summary>SQL: <a href=\"{p}\">{p}</a></summary><pre>{}</pre></details>",
            esc(text.trim()),
            p = esc(path)
        );
    }

    fn finish(mut self, location: &str) -> Report {
        if !self.nav.is_empty() {
            self.body.push_str("</section>\n");
        }
        let mut html = String::new();
        html.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/>");
        let _ = write!(html, "<title>psla report: {}</title><style>{STYLE}</style></head><body>", esc(location));
        let _ = write!(html, "<h1>psla report</h1><p>Run root <code>{}</code>, psla {}.</p><nav>", esc(location), crate::table::psla_version());
        for (id, title) in &self.nav {
            let _ = write!(html, "<a href=\"#{id}\">{}</a> ", esc(title));
        }
        html.push_str("</nav>\n");
        html.push_str(&self.body);
        html.push_str("</body></html>\n");
        Report { html, sections: self.nav.len(), figures: self.figures }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:.5em 0;font-size:90%}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}\
figure{margin:1.5em 0}figcaption{font-weight:600;margin-bottom:.3em}.missing{color:#a40}pre{background:#f6f6f6;padding:.5em;\
overflow-x:auto}nav a{margin-right:1em}svg text{font-size:11px}";

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
const W: f64 = 720.0;
const H: f64 = 260.0;
const PAD: f64 = 48.0;

/// Range of finite values, widened when empty or flat.
fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.filter(|x| x.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

fn axes(svg: &mut String, x: (f64, f64), y: (f64, f64), xl: &str, yl: &str) {
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#444\"/><line x1=\"{PAD}\" y1=\"{t}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#444\"/>\
         <text x=\"{PAD}\" y=\"{lb}\">{x0}</text><text x=\"{r}\" y=\"{lb}\" text-anchor=\"end\">{x1}</text>\
         <text x=\"{c}\" y=\"{lb}\" text-anchor=\"middle\">{xl}</text>\
         <text x=\"4\" y=\"{b}\">{y0}</text><text x=\"4\" y=\"{tt}\">{y1}</text><text x=\"4\" y=\"12\">{yl}</text>",
        b = H - PAD,
        r = W - 10.0,
        t = 10.0,
        tt = 20.0,
        lb = H - PAD + 16.0,
        c = W / 2.0,
        x0 = fmt_num(x.0),
        x1 = fmt_num(x.1),
        y0 = fmt_num(y.0),
        y1 = fmt_num(y.1),
        xl = esc(xl),
        yl = esc(yl)
    );
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        return format!("{v:.0}");
    }
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) { format!("{v:.2e}") } else { format!("{v:.3}") }
}

fn map(v: f64, (lo, hi): (f64, f64), a: f64, b: f64) -> f64 {
    a + (v - lo) / (hi - lo) * (b - a)
}

/// Lines, one per series; `log_y` plots log10 of positive values.
fn line_chart(series: &[(String, Vec<(f64, f64)>)], xl: &str, yl: &str, log_y: bool) -> String {
    let ty = |v: f64| if log_y { if v > 0.0 { v.log10() } else { f64::NAN } } else { v };
    let xr = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let yr = range(series.iter().flat_map(|s| s.1.iter().map(|p| ty(p.1))));
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">");
    let ylabel = if log_y { format!("log10 {yl}") } else { yl.to_string() };
    axes(&mut svg, xr, yr, xl, &ylabel);
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .filter(|p| ty(p.1).is_finite())
            .map(|p| format!("{:.1},{:.1}", map(p.0, xr, PAD, W - 10.0), map(ty(p.1), yr, H - PAD, 10.0)))
            .collect();
        let _ = write!(svg, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>", path.join(" "));
        let _ = write!(svg, "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>", W - 200.0, 20.0 + 14.0 * i as f64, esc(name));
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars with labels.
fn bar_chart(bars: &[(String, f64)], xl: &str) -> String {
    let row = 14.0;
    let h = 24.0 + row * bars.len() as f64;
    let max = bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-12);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\">");
    let left = 260.0;
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let w = if v.is_finite() { (W - left - 60.0) * v / max } else { 0.0 };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            left - 4.0,
            y + 10.0,
            esc(&label.chars().take(40).collect::<String>()),
            row - 3.0,
            COLORS[0],
            left + w + 4.0,
            y + 10.0,
            fmt_num(*v)
        );
    }
    let _ = write!(svg, "<text x=\"{left}\" y=\"{}\">{}</text></svg>", h - 4.0, esc(xl));
    svg
}

/// Points on a log10 x axis.
fn scatter(points: &[(f64, f64)], xl: &str, yl: &str) -> String {
    let lx = |x: f64| (x.max(1.0)).log10();
    let xr = range(points.iter().map(|p| lx(p.0)));
    let yr = range(points.iter().map(|p| p.1));
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">");
    axes(&mut svg, xr, yr, &format!("log10 {xl}"), yl);
    for p in points {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\" fill-opacity=\"0.6\"/>",
            map(lx(p.0), xr, PAD, W - 10.0),
            map(p.1, yr, H - PAD, 10.0),
            COLORS[0]
        );
    }
    svg.push_str("</svg>");
    svg
}
