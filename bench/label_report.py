#!/usr/bin/env python3
"""The summary table of bench/label.sh, from the files of its run folder.

    label_report.py RUN_DIR PARAMS_JSON MACHINE LOAD_AFTER DUCKDB_THREADS

Writes RUN_DIR/results.json (everything measured) and prints the table.
"""

import json
import os
import re
import sys

RUNS = [("psla", "psla label"), ("duckdb", "DuckDB port (a pass per step)"),
        ("duckdb_onepass", "DuckDB one pass"), ("duckdb_checks", "DuckDB port + checks.sql")]


def main():
    run, params_path, machine, load_after, threads = sys.argv[1:]
    gen = json.load(open(params_path))

    def load(name):
        p = os.path.join(run, name + ".json")
        return json.load(open(p)) if os.path.exists(p) else None

    def status(r):
        if r["timed_out"]:
            return f"TIMEOUT at {r['timeout_s']:.0f} s"
        if r["mem_capped"]:
            return f"KILLED at the {r['mem_cap_mb']:.0f} MB RSS cap"
        if r["rc"] != 0:
            return f"FAILED (rc {r['rc']})"
        return "ok"

    def last_json(name):
        p = os.path.join(run, name + ".log")
        if not os.path.exists(p):
            return None
        for line in reversed(open(p).read().splitlines()):
            if line.startswith("{"):
                return json.loads(line)

    cpu = lambda r: r["user_s"] + r["sys_s"]
    res = {k: load(k) for k, _ in RUNS}
    print(f"\nLabel enhancement (mean threshold, type1,type2), {gen['params']['clips']:,} clips x {gen['classes']} classes"
          f" = {gen['teacher_rows']:,} teacher scores, {gen['labels_rows']:,} original labels")
    print(f"data: teacher_scores.parquet {gen['teacher_bytes'] / 1e9:.2f} GB, labels.parquet {gen['labels_bytes'] / 1e6:.1f} MB,"
          f" generated in {gen['generation_s']:.0f} s (cached after the first run)")
    print(f"machine: {machine}; load average after the runs: {load_after}; DuckDB threads={threads}\n")
    print(f"{'run':<32} {'wall s':>8} {'peak RSS MB':>12} {'CPU s':>8}  status")
    for k, name in RUNS:
        r = res[k]
        if r:
            print(f"{name:<32} {r['wall_s']:>8.1f} {r['peak_rss_mb']:>12.0f} {cpu(r):>8.1f}  {status(r)}")
    ps = res["psla"]
    if ps:
        print()
        for k, name in RUNS[1:]:
            r = res[k]
            if r and status(r) == "ok":
                print(f"psla / {name + ':':<31} time {ps['wall_s'] / r['wall_s']:.2f}x, peak RSS {ps['peak_rss_mb'] / r['peak_rss_mb']:.2f}x,"
                      f" CPU {cpu(ps) / max(cpu(r), 1e-9):.2f}x")
        log = open(os.path.join(run, "psla.log")).read().strip()
        m = re.search(r"^label: .*$", log, re.M)
        print("\npsla: " + (m.group(0) if m else "(no summary line) " + (log.splitlines()[-1][:300] if log else "(no output)")))
    for k, name in RUNS[1:]:
        j = last_json(k)
        if j:
            print(f"{name}: {j['original']:,} original + type1 {j['added_type1']:,}, type2 {j['added_type2']:,}"
                  f" = {j['enhanced']:,} labels; steps (s) {j['steps_s']}")
    compares = {}
    for k, f in (("duckdb", "compare.json"), ("duckdb_onepass", "compare_onepass.json")):
        p = os.path.join(run, f)
        if os.path.exists(p):
            c = compares[k] = json.load(open(p))
            print(f"label count: psla {c['psla_rows']:,}, {dict(RUNS)[k]} {c['duckdb_rows']:,}:"
                  f" {'EQUAL' if c['psla_rows'] == c['duckdb_rows'] else 'DIFFERENT'}; (clip_id, mid, origin, via_mid) rows only in"
                  f" psla {c['only_psla']:,}, only in DuckDB {c['only_duckdb']:,}; thresholds max |diff| {c['threshold_max_abs_diff']}")
    json.dump({"gen": gen, "runs": res, "machine": machine, "load_after": load_after, "compare": compares},
              open(os.path.join(run, "results.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
