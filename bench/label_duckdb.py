#!/usr/bin/env python3
"""The label-enhancement job of `psla label` in DuckDB: psla's own SQL files (sql/label/*.sql), run
by DuckDB on the same Parquet inputs.

    label_duckdb.py --labels L --teacher S --ontology O --classes C --out OUT.parquet
                    [--threshold mean] [--rules type1,type2] [--threads 2] [--checks]

What runs, in order (the steps of psla's label stage, src/stages/label.rs):
  [checks.sql     only with --checks: psla always runs it: one more pass over the scores]
  thresholds.sql  -> temp table thresholds   (a pass over teacher_scores joined to the labels)
  type1.sql       -> temp table added_type1  (a pass joined to the candidate children)
  type2.sql       -> temp table added_type2  (a pass joined to the candidate ancestors)
  merge.sql       -> temp table labels_enhanced, written to OUT (zstd Parquet)
  changes.sql     -> OUT.changes.parquet; thresholds -> OUT.thresholds.parquet
labels and teacher_scores are views over read_parquet(): nothing is loaded beforehand, as in psla.
The SQL is psla's text with its ${placeholders} bound as psla binds them; the only dialect change is
merge.sql's ordered aggregate first_value(x ORDER BY ...) -> DuckDB's first(x ORDER BY ...).

--plan onepass (not what psla does, a DuckDB user's shortcut): first keep, in ONE pass over the
scores, those of the (clip, class) pairs the steps can read (original labels and their children and
ancestors, a superset), as the temp table teacher_scores; then the same SQL on that small table.
(--checks still reads the whole file: checks.sql runs on teacher_scores_file then.)

Prints one JSON line: counts (original, added by type1 / type2, enhanced, per origin) and the
seconds of each step.
"""

import argparse
import json
import os
import time

import duckdb
import pyarrow as pa

SQL_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sql", "label"))
KINDS = {"mean": ("mean", "50"), "median": ("median", "50"), "p25": ("percentile", "25"),
         "p10": ("percentile", "10"), "p5": ("percentile", "5")}


def sql(name, **values):
    text = open(os.path.join(SQL_DIR, name)).read()
    for k, v in values.items():
        text = text.replace("${" + k + "}", v)
    code = "\n".join(line.split("--")[0] for line in text.splitlines())
    assert "${" not in code, f"{name}: unbound placeholder"
    return text.rstrip().rstrip(";")


def quote(path):
    return "'" + os.path.abspath(path).replace("'", "''") + "'"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--ontology", required=True)
    ap.add_argument("--classes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", default="mean", choices=sorted(KINDS))
    ap.add_argument("--rules", default="type1,type2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checks", action="store_true", help="also run checks.sql, as psla does")
    ap.add_argument("--temp-dir", default=None)
    ap.add_argument("--plan", default="port", choices=["port", "onepass"],
                    help="port: psla's SQL on the Parquet scores (a pass per step); onepass: first keep, in one "
                         "pass, only the scores the steps can read, then psla's SQL on those")
    args = ap.parse_args()
    rules = set(r.strip() for r in args.rules.split(","))
    t1, t2 = "type1" in rules, "type2" in rules

    steps = {}
    started = time.monotonic()
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    if args.temp_dir:
        con.execute(f"SET temp_directory = {quote(args.temp_dir)}")

    # the vocabulary tables, as psla's ingest builds them (src/stages/ingest.rs vocabulary_tables)
    onto = json.load(open(args.ontology))
    con.register("ontology", pa.table({
        "id": [o["id"] for o in onto],
        "is_abstract": [o.get("restrictions") == ["abstract"] for o in onto],
    }))
    edges = [(o["id"], c) for o in onto for c in o.get("child_ids", [])]
    con.register("ontology_edges", pa.table({"parent": [p for p, _ in edges], "child": [c for _, c in edges]}))
    con.execute(f"""CREATE TEMP TABLE classes AS
        SELECT CAST("index" AS INTEGER) AS "index", mid, display_name
        FROM read_csv({quote(args.classes)}, header = true)""")
    con.execute(f"CREATE VIEW labels AS SELECT clip_id, mid FROM read_parquet({quote(args.labels)})")
    con.execute(f"CREATE VIEW teacher_scores AS SELECT clip_id, mid, score FROM read_parquet({quote(args.teacher)})")
    steps["setup"] = time.monotonic() - started

    def step(name, fn):
        t = time.monotonic()
        out = fn()
        steps[name] = round(time.monotonic() - t, 2)
        return out

    if args.plan == "onepass":
        # The steps read a score only for an original label (thresholds) or for a child or ancestor
        # of one (type1, type2). Keep those (clip, class) pairs' scores in one pass (a superset: any
        # child, any ancestor, abstract or not), and let psla's SQL read them instead of the file.
        con.execute("ALTER VIEW teacher_scores RENAME TO teacher_scores_file")
        step("onepass_scan", lambda: con.execute("""
            CREATE TEMP TABLE teacher_scores AS
            WITH RECURSIVE walk (descendant, ancestor) AS (
                SELECT child, parent FROM ontology_edges
                UNION
                SELECT w.descendant, e.parent FROM walk AS w JOIN ontology_edges AS e ON e.child = w.ancestor
            ),
            related (mid, other) AS (
                SELECT parent, child FROM ontology_edges
                UNION SELECT descendant, ancestor FROM walk
            ),
            original AS (SELECT DISTINCT clip_id, mid FROM labels),
            wanted AS (
                SELECT clip_id, mid FROM original
                UNION
                SELECT o.clip_id, r.other FROM original AS o JOIN related AS r ON r.mid = o.mid
                WHERE r.other IN (SELECT mid FROM classes)
            )
            SELECT s.clip_id, s.mid, s.score
            FROM teacher_scores_file AS s
            SEMI JOIN wanted AS w ON w.clip_id = s.clip_id AND w.mid = s.mid"""))
        steps["kept_scores"] = con.execute("SELECT COUNT(*) FROM teacher_scores").fetchone()[0]

    checks = None
    if args.checks:
        checks = step("checks", lambda: con.execute(
            sql("checks.sql").replace("FROM teacher_scores AS s", "FROM teacher_scores_file AS s")
            if args.plan == "onepass" else sql("checks.sql")).fetchone())
    kind, pct = KINDS[args.threshold]
    step("thresholds", lambda: con.execute("CREATE TEMP TABLE thresholds AS " + sql(
        "thresholds.sql", kind=kind, percentile=pct, min_support="1", threshold_kind=args.threshold)))
    con.execute("CREATE VIEW label_thresholds AS SELECT * FROM thresholds")
    step("type1", lambda: con.execute("CREATE TEMP TABLE added_type1 AS " + sql("type1.sql")
                                      + ("" if t1 else " LIMIT 0")))
    step("type2", lambda: con.execute("CREATE TEMP TABLE added_type2 AS " + sql("type2.sql")
                                      + ("" if t2 else " LIMIT 0")))
    merge = sql("merge.sql", enable_type1="TRUE" if t1 else "FALSE", enable_type2="TRUE" if t2 else "FALSE",
                threshold_kind=args.threshold).replace("first_value(", "first(")
    step("merge", lambda: con.execute("CREATE TEMP TABLE labels_enhanced AS " + merge))

    def write():
        base = args.out[: -len(".parquet")] if args.out.endswith(".parquet") else args.out
        con.execute(f"COPY labels_enhanced TO {quote(args.out)} (FORMAT parquet, COMPRESSION zstd)")
        con.execute(f"COPY thresholds TO {quote(base + '.thresholds.parquet')} (FORMAT parquet, COMPRESSION zstd)")
        con.execute(f"COPY ({sql('changes.sql')}) TO {quote(base + '.changes.parquet')} (FORMAT parquet, COMPRESSION zstd)")
    step("write", write)

    origin = dict(con.execute("SELECT origin, COUNT(*) FROM labels_enhanced GROUP BY origin").fetchall())
    result = {
        "original": origin.get("original", 0),
        "added_type1": con.execute("SELECT COUNT(*) FROM added_type1").fetchone()[0],
        "added_type2": con.execute("SELECT COUNT(*) FROM added_type2").fetchone()[0],
        "enhanced": sum(origin.values()),
        "origin": origin,
        "thresholds": con.execute("SELECT COUNT(*) FROM thresholds").fetchone()[0],
        "steps_s": {k: round(v, 2) for k, v in steps.items()},
        "total_s": round(time.monotonic() - started, 2),
        "duckdb": duckdb.__version__,
        "threads": args.threads,
        "plan": args.plan,
    }
    if checks is not None:
        result["checks_row"] = list(checks)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
