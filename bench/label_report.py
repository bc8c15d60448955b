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


def psla_phases(run):
    """Durations of psla's steps from the strace of its openat calls. Every query reads the score
    file with a burst of opens (one per row-group range), and opens labels.parquet before that burst;
    so the first labels.parquet open after each burst starts the next query (checks, thresholds,
    type1, type2, merge), and the output's .tmp file starts the write."""
    p = os.path.join(run, "psla.strace")
    if not os.path.exists(p):
        return None
    runs, first = [], None  # [kind, first time, count] of consecutive opens of the same file kind
    for line in open(p):
        parts = line.split(None, 2)
        if len(parts) < 3 or "openat(" not in parts[2]:
            continue
        t = float(parts[1])
        first = t if first is None else first
        m = re.search(r'"([^"]*)"', parts[2])
        name = m.group(1) if m else ""
        kind = ("labels" if name.endswith("labels.parquet") else "teacher" if name.endswith("teacher_scores.parquet")
                else "out" if name.endswith(".parquet.tmp") else None)
        if kind is None:
            continue
        if runs and runs[-1][0] == kind:
            runs[-1][2] += 1
        else:
            runs.append([kind, t, 1])
    starts, after_burst, write_at = [], True, None
    for kind, t, n in runs:
        if kind == "labels" and after_burst:
            starts.append(t)
            after_burst = False
        elif kind == "teacher" and n >= 3:
            after_burst = True
        elif kind == "out" and write_at is None:
            write_at = t
    names = ["checks", "thresholds", "type1", "type2", "merge+changes"]
    if len(starts) != len(names) or write_at is None:
        return None
    bounds = starts + [write_at]
    out = {n: round(bounds[i + 1] - bounds[i], 1) for i, n in enumerate(names)}
    out["start"] = round(starts[0] - first, 1)
    return out


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
    peak = lambda r: max(r["peak_rss_mb"], r["peak_rss_polled_mb"])  # ru_maxrss; the poll if a kill hid it
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
            print(f"{name:<32} {r['wall_s']:>8.1f} {peak(r):>12.0f} {cpu(r):>8.1f}  {status(r)}")
    ps = res["psla"]
    if ps:
        print()
        for k, name in RUNS[1:]:
            r = res[k]
            if r and status(r) == "ok":
                print(f"psla / {name + ':':<31} time {ps['wall_s'] / r['wall_s']:.2f}x, peak RSS {peak(ps) / peak(r):.2f}x,"
                      f" CPU {cpu(ps) / max(cpu(r), 1e-9):.2f}x")
        log = open(os.path.join(run, "psla.log")).read().strip()
        m = re.search(r"^label: .*$", log, re.M)
        ph = psla_phases(run)
        if ph:
            print("psla steps (wall s, from its file opens): " + ", ".join(f"{k} {v}" for k, v in ph.items() if k != "start")
                  + "; then the writes")
            res["psla"]["phases_s"] = ph
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
