#!/usr/bin/env python3
"""The label-enhancement job of `psla label` in DuckDB: psla's own SQL files (sql/label/*.sql), run
by DuckDB on the same Parquet inputs, in the order src/stages/label.rs runs them.

    label_duckdb.py --labels L --teacher S --ontology O --classes C --out OUT.parquet
                    [--threshold mean] [--rules type1,type2] [--threads 2] [--check needed|full]

What psla does, in its order:
  checks.sql         --check full only: a pass over the whole score table, grouped by clip
  ancestors.sql      -> temp table ontology_ancestors (the ontology's ancestor closure, recursive)
  class_order.sql    -> temp table class_order (each ontology class's rank in mid order)
  needed_pairs.sql   -> temp table needed_pairs (original labels, each rule's candidates and their via)
  score_pass.sql     -> temp table pair_scores: the one pass over the scores, by pair number
  needed_scores.sql  -> temp table needed_scores: the needed pairs with their scores
                        (needed_pairs dropped after it, pair_scores after the checks, needed_scores
                        after type2: where psla drops them)
  needed_checks.sql  the input checks on the needed pairs' scores (psla's default --check needed)
  thresholds.sql     -> temp table thresholds
  type1.sql, type2.sql -> temp tables added_type1, added_type2
  merge.sql          -> temp table labels_enhanced, written to OUT (zstd Parquet)
  changes.sql        -> OUT.changes.parquet; thresholds -> OUT.thresholds.parquet
labels and teacher_scores are views over read_parquet(): nothing is loaded beforehand, as in psla.
The SQL is psla's text with its ${placeholders} bound as psla binds them; the only dialect change is
merge.sql's ordered aggregate first_value(x ORDER BY ...) -> DuckDB's first(x ORDER BY ...).
The vocabulary tables are built as psla's ingest builds them (src/stages/ingest.rs vocabulary_tables:
ontology edges only to children that are ontology entries).

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


def connect(threads, temp_dir=None):
    """A DuckDB connection with `threads` threads, spilling to `temp_dir` when given."""
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    if temp_dir:
        con.execute(f"SET temp_directory = {quote(temp_dir)}")
    return con


def register_ontology(con, path):
    """Register the ontology tables `ontology` (id, is_abstract) and `ontology_edges` (parent, child)
    as psla's ingest builds them (src/stages/ingest.rs vocabulary_tables): abstract means
    restrictions == ["abstract"], and edges go only to children that are ontology entries."""
    onto = json.load(open(path))
    con.register("ontology", pa.table({
        "id": [o["id"] for o in onto],
        "is_abstract": [o.get("restrictions") == ["abstract"] for o in onto],
    }))
    ids = {o["id"] for o in onto}
    edges = [(o["id"], c) for o in onto for c in o.get("child_ids", []) if c in ids]
    con.register("ontology_edges", pa.table({"parent": [p for p, _ in edges], "child": [c for _, c in edges]}))


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
    ap.add_argument("--check", default="needed", choices=["needed", "full"],
                    help="as psla's --check: needed (the default) or full (checks.sql first)")
    ap.add_argument("--temp-dir", default=None)
    args = ap.parse_args()
    rules = set(r.strip() for r in args.rules.split(","))
    t1, t2 = "type1" in rules, "type2" in rules

    steps = {}
    started = time.monotonic()
    con = connect(args.threads, args.temp_dir)
    register_ontology(con, args.ontology)
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

    checks = None
    if args.check == "full":
        checks = step("full_checks", lambda: con.execute(sql("checks.sql")).fetchone())
        assert checks[4:7] == (0, 0, 0), f"checks.sql: {checks}"   # psla would refuse these scores
    step("ancestors", lambda: con.execute("CREATE TEMP TABLE ontology_ancestors AS " + sql("ancestors.sql")))
    step("class_order", lambda: con.execute("CREATE TEMP TABLE class_order AS " + sql("class_order.sql")))
    step("needed_pairs", lambda: con.execute("CREATE TEMP TABLE needed_pairs AS " + sql(
        "needed_pairs.sql", enable_type1="TRUE" if t1 else "FALSE", enable_type2="TRUE" if t2 else "FALSE")))
    step("score_pass", lambda: con.execute("CREATE TEMP TABLE pair_scores AS " + sql("score_pass.sql")))
    step("needed_scores", lambda: con.execute("CREATE TEMP TABLE needed_scores AS " + sql("needed_scores.sql")))
    con.execute("DROP TABLE needed_pairs")   # psla drops the large intermediates where it does
    needed_checks = step("checks", lambda: con.execute(sql("needed_checks.sql")).fetchone())
    con.execute("DROP TABLE pair_scores")
    steps["kept_scores"] = needed_checks[3]
    assert needed_checks[4:7] == (0, 0, 0), f"needed_checks.sql: {needed_checks}"
    kind, pct = KINDS[args.threshold]
    step("thresholds", lambda: con.execute("CREATE TEMP TABLE thresholds AS " + sql(
        "thresholds.sql", kind=kind, percentile=pct, min_support="1", threshold_kind=args.threshold)))
    con.execute("CREATE VIEW label_thresholds AS SELECT * FROM thresholds")
    step("type1", lambda: con.execute("CREATE TEMP TABLE added_type1 AS " + sql("type1.sql")))
    step("type2", lambda: con.execute("CREATE TEMP TABLE added_type2 AS " + sql("type2.sql")))
    con.execute("DROP TABLE needed_scores")
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
    }
    if checks is not None:
        result["checks_row"] = list(checks)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
