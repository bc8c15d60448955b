#!/usr/bin/env python3
"""The label-enhancement job written for DuckDB from scratch, as a DuckDB user would write it: not
psla's SQL files (label_duckdb.py runs those), so the benchmark also compares psla with DuckDB's
own best plan for the same job, not only with DuckDB running psla's plan.

    label_duckdb_native.py --labels L --teacher S --ontology O --classes C --out OUT.parquet
                           [--threads 2] [--temp-dir D]

Mean threshold, Type I + Type II, PSLA's rules (issue 4):
  candidates   each original label's in-vocabulary direct children (Type I; the label must not be
               abstract) and in-vocabulary ancestors (Type II; links only from non-abstract
               parents, shortest chain kept), with the original label behind each
  kept scores  one pass over the teacher scores: a SEMI JOIN with the distinct (clip, class) pairs
               the job reads (original labels and candidates)
  thresholds   per class, the mean of its original labels' scores (float64)
  additions    candidates not already labels whose score is above the threshold (strictly); via:
               Type I the smallest parent mid, Type II the closest descendant (depth, then mid), and
               Type I's via where both rules add a label, as psla and PSLA's scripts choose
Writes OUT (clip_id, mid, origin, via_mid, score, threshold, threshold_kind; the original labels
and the additions) and OUT.thresholds.parquet, so label_compare.py can compare it with psla's.
The ontology is read with Python's json (DuckDB's JSON reader is an extension, and the file is
small); every step over clips runs in DuckDB. Prints one JSON line: counts and step seconds.
"""

import argparse
import json
import time

import duckdb

from label_duckdb import connect, quote, register_ontology   # the input tables, as label_duckdb.py builds them


def main():
    ap = argparse.ArgumentParser()
    for a in ("--labels", "--teacher", "--ontology", "--classes", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temp-dir", default=None)
    args = ap.parse_args()

    started = time.monotonic()
    steps = {}
    con = connect(args.threads, args.temp_dir)
    register_ontology(con, args.ontology)

    def step(name, q):
        t = time.monotonic()
        con.execute(q)
        steps[name] = round(time.monotonic() - t, 2)

    step("vocabulary", f"""
        CREATE TEMP TABLE vocab AS SELECT DISTINCT mid FROM read_csv({quote(args.classes)}, header = true);
        CREATE TEMP TABLE links AS   -- child -> non-abstract parent
            SELECT DISTINCT e.child, e.parent FROM ontology_edges e JOIN ontology o ON o.id = e.parent
            WHERE NOT o.is_abstract;
        CREATE TEMP TABLE closure AS
            WITH RECURSIVE walk(descendant, ancestor, depth) AS (
                SELECT child, parent, 1 FROM links
                UNION ALL
                SELECT w.descendant, l.parent, w.depth + 1 FROM walk w JOIN links l ON l.child = w.ancestor
                WHERE w.depth < 64)
            SELECT descendant, ancestor, MIN(depth) AS depth FROM walk GROUP BY ALL;
        CREATE TEMP TABLE labels AS SELECT DISTINCT clip_id, mid FROM read_parquet({quote(args.labels)});
    """)
    step("candidates", """
        CREATE TEMP TABLE candidates AS
        WITH raw AS (
            SELECT l.clip_id, k.child AS mid, 1 AS rule, l.mid AS via, 0 AS depth
            FROM labels l JOIN links k ON k.parent = l.mid
            WHERE k.child IN (SELECT mid FROM vocab)
            UNION ALL
            SELECT l.clip_id, c.ancestor, 2, l.mid, c.depth
            FROM labels l JOIN closure c ON c.descendant = l.mid
            WHERE c.ancestor IN (SELECT mid FROM vocab))
        SELECT clip_id, mid, rule, arg_min(via, (depth, via)) AS via
        FROM raw ANTI JOIN labels USING (clip_id, mid)
        GROUP BY clip_id, mid, rule;
    """)
    step("score_pass", f"""
        CREATE TEMP TABLE kept AS
        SELECT s.clip_id, s.mid, s.score
        FROM read_parquet({quote(args.teacher)}) s
        SEMI JOIN (SELECT clip_id, mid FROM labels WHERE mid IN (SELECT mid FROM vocab)
                   UNION SELECT clip_id, mid FROM candidates) p USING (clip_id, mid);
    """)
    step("thresholds", """
        CREATE TEMP TABLE thresholds AS
        SELECT mid, 'mean' AS kind, SUM(CAST(score AS DOUBLE)) / COUNT(*) AS threshold, COUNT(*) AS support
        FROM labels JOIN kept USING (clip_id, mid) GROUP BY mid;
    """)
    step("additions", """
        CREATE TEMP TABLE enhanced AS
        WITH added AS (
            SELECT c.clip_id, c.mid, c.rule, c.via, k.score, t.threshold
            FROM candidates c JOIN kept k USING (clip_id, mid) JOIN thresholds t USING (mid)
            WHERE CAST(k.score AS DOUBLE) > t.threshold),
        per_label AS (
            SELECT clip_id, mid, string_agg(CASE rule WHEN 1 THEN 'type1' ELSE 'type2' END, ',' ORDER BY rule) AS origin,
                   arg_min(via, rule) AS via_mid, MIN(score) AS score, MIN(threshold) AS threshold
            FROM added GROUP BY clip_id, mid)
        SELECT clip_id, mid, 'original' AS origin, NULL::VARCHAR AS via_mid, NULL::FLOAT AS score,
               NULL::DOUBLE AS threshold, NULL::VARCHAR AS threshold_kind
        FROM labels
        UNION ALL
        SELECT clip_id, mid, origin, via_mid, score, threshold, 'mean' FROM per_label
        ORDER BY clip_id, mid;
    """)
    base = args.out[: -len(".parquet")] if args.out.endswith(".parquet") else args.out
    step("write", f"""
        COPY enhanced TO {quote(args.out)} (FORMAT parquet, COMPRESSION zstd);
        COPY thresholds TO {quote(base + '.thresholds.parquet')} (FORMAT parquet, COMPRESSION zstd);
    """)
    one = lambda q: con.execute(q).fetchone()[0]
    origin = dict(con.execute("SELECT origin, COUNT(*) FROM enhanced GROUP BY origin").fetchall())
    print(json.dumps({
        "original": origin.get("original", 0),
        "added_type1": one("SELECT COUNT(*) FROM enhanced WHERE origin LIKE '%type1%'"),
        "added_type2": one("SELECT COUNT(*) FROM enhanced WHERE origin LIKE '%type2%'"),
        "enhanced": sum(origin.values()),
        "origin": origin,
        "kept_scores": one("SELECT COUNT(*) FROM kept"),
        "thresholds": one("SELECT COUNT(*) FROM thresholds"),
        "steps_s": steps,
        "total_s": round(time.monotonic() - started, 2),
        "duckdb": duckdb.__version__,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
