#!/usr/bin/env python3
"""The summary table of bench/label.sh, from the files of its run folder.

    label_report.py RUN_DIR PARAMS_JSON MACHINE LOAD_BEFORE LOAD_AFTER DUCKDB_THREADS REPEAT

Writes RUN_DIR/results.json (everything measured) and prints the table: per run kind, the median
wall time, the largest peak RSS and the median CPU time over the REPEAT rounds.
"""

import json
import os
import re
import statistics
import sys

RUNS = [("psla", "psla label"), ("duckdb", "DuckDB, psla's SQL (same job)"),
        ("duckdb_native", "DuckDB, its own query (same job)"),
        ("psla_full", "psla label --check full"), ("duckdb_full", "DuckDB, psla's SQL, --check full")]
PAIRS = [("psla", "duckdb"), ("psla", "duckdb_native"), ("psla_full", "duckdb_full")]  # (psla run, the DuckDB run of the same job)
NAMES = dict(RUNS)


def main():
    run, params_path, machine, load_before, load_after, threads, repeat = sys.argv[1:]
    repeat = int(repeat)
    gen = json.load(open(params_path))

    def status(r):
        if r["timed_out"]:
            return f"TIMEOUT at {r['timeout_s']:.0f} s"
        if r["mem_capped"]:
            return f"KILLED at the {r['mem_cap_mb']:.0f} MB RSS cap"
        if r["rc"] != 0:
            return f"FAILED (rc {r['rc']})"
        return "ok"

    def log_of(name):
        p = os.path.join(run, name + ".log")
        return open(p).read() if os.path.exists(p) else ""

    def last_json(text):
        for line in reversed(text.splitlines()):
            if line.startswith("{"):
                return json.loads(line)

    res = {}
    for k, _ in RUNS:
        rounds = []
        for i in range(1, repeat + 1):
            p = os.path.join(run, f"{k}-{i}.json")
            if os.path.exists(p):
                r = json.load(open(p))
                r["status"] = status(r)
                r["log_tail"] = log_of(f"{k}-{i}")[-3000:]
                rounds.append(r)
        if rounds:
            res[k] = rounds

    med = statistics.median
    cpu = lambda r: r["user_s"] + r["sys_s"]
    peak = lambda r: max(r["peak_rss_mb"], r["peak_rss_polled_mb"])  # ru_maxrss; the poll if a kill hid it
    summary = {}
    for k, rounds in res.items():
        ok = [r for r in rounds if r["status"] == "ok"]
        use = ok or rounds
        summary[k] = {"wall_s": med(r["wall_s"] for r in use), "peak_mb": max(peak(r) for r in use),
                      "cpu_s": med(cpu(r) for r in use), "ok": len(ok), "runs": len(rounds),
                      "status": "ok" if len(ok) == len(rounds) else "; ".join(r["status"] for r in rounds)}

    print(f"\nLabel enhancement (mean threshold, type1,type2), {gen['params']['clips']:,} clips x {gen['classes']} classes"
          f" = {gen['teacher_rows']:,} teacher scores, {gen['labels_rows']:,} original labels")
    print(f"data: teacher_scores.parquet {gen['teacher_bytes'] / 1e9:.2f} GB, labels.parquet {gen['labels_bytes'] / 1e6:.1f} MB,"
          f" generated in {gen['generation_s']:.0f} s (cached after the first run)")
    print(f"machine: {machine}; load average before / after the runs: {load_before} / {load_after}; DuckDB threads={threads};"
          f" {'medians of ' + str(repeat) + ' alternating rounds' if repeat > 1 else 'one round'}\n")
    print(f"{'run':<34} {'wall s':>8} {'peak RSS MB':>12} {'CPU s':>8}  status")
    for k, name in RUNS:
        if k in summary:
            s = summary[k]
            print(f"{name:<34} {s['wall_s']:>8.1f} {s['peak_mb']:>12.0f} {s['cpu_s']:>8.1f}  {s['status']}")
    ps = summary.get("psla")
    if ps:
        print()
        for pk, dk in PAIRS:
            p, s = summary.get(pk), summary.get(dk)
            if p and s and p["ok"] and s["ok"]:
                print(f"{NAMES[pk]} / {NAMES[dk] + ':':<33} time {p['wall_s'] / s['wall_s']:.2f}x, peak RSS {p['peak_mb'] / s['peak_mb']:.2f}x,"
                      f" CPU {p['cpu_s'] / max(s['cpu_s'], 1e-9):.2f}x")
        log = res["psla"][-1]["log_tail"]
        m = re.search(r"^label: .*$", log, re.M)
        st = re.search(r"^label steps: .*$", log, re.M)
        print("\npsla: " + (m.group(0) if m else "(no summary line) " + (log.strip().splitlines() or ["(no output)"])[-1][:300]))
        if st:
            print("psla " + st.group(0))
    for k, name in RUNS[1:]:
        if k in res and k.startswith("duckdb"):
            j = last_json(res[k][-1]["log_tail"])
            if j:
                print(f"{name}: {j['original']:,} original + type1 {j['added_type1']:,}, type2 {j['added_type2']:,}"
                      f" = {j['enhanced']:,} labels; steps (s) {j['steps_s']}")
    compares = {}
    for k, name in RUNS[1:]:
        p = os.path.join(run, f"compare-{k}.json")
        if os.path.exists(p):
            c = compares[k] = json.load(open(p))
            print(f"psla vs {name}: {'EQUAL' if c['equal'] else 'DIFFERENT'}: labels {c['psla_rows']:,} / {c['duckdb_rows']:,};"
                  f" (clip_id, mid, origin, via_mid) rows only in psla {c['only_psla']:,}, only in DuckDB {c['only_duckdb']:,};"
                  f" thresholds {c['thresholds'][0]} / {c['thresholds'][1]}, max |diff| {c['threshold_max_abs_diff']}")
    json.dump({"gen": gen, "runs": res, "summary": summary, "machine": machine, "load_before": load_before,
               "load_after": load_after, "compare": compares}, open(os.path.join(run, "results.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
