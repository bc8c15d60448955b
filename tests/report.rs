//! report.html: well-formed, self-contained, every section present with figures from the run's tables.

use crate::common::*;

#[test]
fn demo_report_is_well_formed_self_contained_and_shows_the_runs_figures() {
    let demo = demo_run();
    let root = &demo.root;
    assert!(demo.log.contains("report: "), "{}", demo.log);
    let html = std::fs::read_to_string(root.join("report.html")).expect("the demo writes report.html");

    // Well-formed XML (XHTML) with no scripts and nothing loaded from elsewhere, checked by Python's
    // strict XML parser; it also lists the section ids and figure captions.
    let py = python();
    let check = r#"
import sys, xml.etree.ElementTree as ET
ns = {"h": "http://www.w3.org/1999/xhtml"}
root = ET.parse(sys.argv[1]).getroot()
assert not root.findall(".//h:script", ns), "script found"
for tag in ("img", "link", "iframe"):
    assert not root.findall(f".//h:{tag}", ns), tag
print("sections", " ".join(s.get("id") for s in root.iter("{http://www.w3.org/1999/xhtml}section")))
for f in root.iter("{http://www.w3.org/1999/xhtml}figcaption"):
    print("figure", f.text)
print("svg", sum(1 for _ in root.iter("{http://www.w3.org/2000/svg}svg")))
"#;
    let out = stdout(&run_ok(std::process::Command::new(&py).args(["-c", check]).arg(root.join("report.html"))));
    assert!(out.contains("sections pipeline label sampling training evaluation truth"), "{out}");
    for caption in ["Labels added per class", "Most frequent (original label -> added label) pairs", "Share of clips vs share of draws",
        "Per-class AP, best first (teacher_metrics)", "AP vs training clips per class (teacher_metrics)",
        "Per-class AP, best first (ensemble_metrics)", "Label enhancement: precision and recall of the added labels, train split",
        "The demo's models on the clean eval split"] {
        assert!(out.contains(caption), "missing figure {caption}:\n{out}");
    }
    let svgs: usize = out.lines().find_map(|l| l.strip_prefix("svg ")).unwrap().parse().unwrap();
    assert!(svgs >= 4, "{out}");

    // The figures carry the run's numbers: the label totals and the teacher's mAP.
    let original = sql_count(root, "SELECT count(*) FROM labels_enhanced WHERE origin = 'original'");
    let total = sql_count(root, "SELECT count(*) FROM labels_enhanced");
    assert!(html.contains(&format!("{original} original labels, {total} after enhancement (+{})", total - original)), "label totals");
    let map = sql_csv(root, "SELECT round(map, 4) FROM teacher_metrics_summary");
    assert!(html.contains(&format!("<td>{:.4}</td>", map[1].parse::<f64>().unwrap())), "teacher mAP {} not in the report", map[1]);
    // The truth section holds the label quality the demo printed: every cell of its `all` row.
    let quality = stdout(&run_ok(psla().args(["sql", "--file", "sql/demo/label_quality.sql", "--format", "csv", "--root"]).arg(root)
        .current_dir(env!("CARGO_MANIFEST_DIR"))));
    let all = quality.lines().find(|l| l.starts_with("all,")).unwrap_or_else(|| panic!("{quality}"));
    for cell in all.split(',') {
        assert!(html.contains(&format!("<td>{cell}</td>")), "label quality cell {cell} not in the report");
    }
    // Each figure shows its SQL.
    assert!(html.contains("sql/report/label_counts.sql") && html.contains("sql/audit/label_top_pairs.sql"));
    // The training section shows the curves of every train_metrics table, or says there is none.
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("manifest.json")).unwrap()).unwrap();
    let trained: Vec<&String> = manifest["tables"].as_object().unwrap().keys().filter(|t| t.starts_with("train_metrics")).collect();
    if trained.is_empty() {
        assert!(html.contains("Not in this run root: no train_metrics table"));
    } else {
        for t in trained {
            assert!(out.contains(&format!("eval mAP per epoch ({t})")), "{out}");
        }
    }
}
