#!/usr/bin/env bash
# Benchmark: PSLA's balanced-sampling weights plus one epoch of weighted draws at AudioSet full scale,
# `psla sample` against a NumPy implementation of PSLA's formula run in the same benchmark.
# Run from anywhere:  bench/sample.sh [--clips N] [--seed S]   (default 2,041,789 clips, ~4.87M labels)
#
#  1. the labels of bench/label.sh's data set (bench/gen_audioset_full.py --labels-only, cached; the
#     same labels bench/label.sh uses; ~5 s to generate, no teacher scores needed);
#  2. `psla sample --labels L --classes C --out W --draws 1 --seed 1 --draws-out D` (weights, one
#     epoch of draws, exposure, three Parquet files): wall time of the process and peak RSS;
#  3. bench/sample_numpy.py: read the labels (pyarrow), ids to integers (pyarrow dictionary_encode),
#     PSLA's formula with np.bincount, one epoch with rng.choice(n, n, p=w/w.sum()), the exposure,
#     and the same two Parquet outputs: wall time of the process (interpreter start and imports
#     included, ~0.3 s) and its own in-process timings (total; compute = encode + weights + draws);
#  2 and 3 alternate PSLA_BENCH_REPEAT times (default 3), medians reported;
#  4. psla's weights checked against NumPy's, clip by clip, on the full set: max relative error.
#
# Environment: PSLA_BIN, PSLA_BENCH_DIR [/tmp/psla-bench], PSLA_CACHE_DIR, PSLA_BENCH_REPEAT [3],
# PSLA_BENCH_TIMEOUT [600 s per run] (as in bench/label.sh; the venv is bench/label.sh's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CLIPS=2041789
SEED=1
while [ $# -gt 0 ]; do
  case "$1" in
    --clips) CLIPS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "usage: bench/sample.sh [--clips N] [--seed S]" >&2; exit 2 ;;
  esac
done
log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
[[ $CLIPS =~ ^[1-9][0-9]*$ ]] || die "--clips must be a positive integer, got '$CLIPS'"

DATA_DIR=${PSLA_BENCH_DIR:-/tmp/psla-bench}
CACHE_DIR="${PSLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/psla}"
REPEAT=${PSLA_BENCH_REPEAT:-3}
TIMEOUT=${PSLA_BENCH_TIMEOUT:-600}
SHARED=$(cd "$ROOT/../shared" && pwd)
CLASSES=$SHARED/data/audioset/class_labels_indices.csv
mkdir -p "$DATA_DIR"

BENCH_PACKAGES="numpy==2.4.6 pyarrow==26.0.1 duckdb==2.0.1"   # keep in step with bench/label.sh
VENV="$CACHE_DIR/bench-label-venv"
PY="$VENV/bin/python"
if [ ! -f "$VENV/.psla-bench" ] || [ "$(cat "$VENV/.psla-bench")" != "$BENCH_PACKAGES" ]; then
  log "creating $VENV with $BENCH_PACKAGES"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $BENCH_PACKAGES
  echo "$BENCH_PACKAGES" > "$VENV/.psla-bench"
fi

PSLA_SRC=${PSLA_BIN:-$ROOT/target/release/psla}
[ -x "$PSLA_SRC" ] || die "no psla binary at $PSLA_SRC: run ./dev build first (or set PSLA_BIN)"
PSLA="$DATA_DIR/bin/psla-sample"
mkdir -p "$DATA_DIR/bin"
cp "$PSLA_SRC" "$PSLA.tmp" && mv "$PSLA.tmp" "$PSLA"
if ! "$PSLA" --version >/dev/null 2>&1; then
  eval "$(./dev env)"
  "$PSLA" --version >/dev/null || die "$PSLA does not start"
fi

DATA="$DATA_DIR/audioset-c$CLIPS-s$SEED"
"$PY" "$ROOT/bench/gen_audioset_full.py" "$DATA" --clips "$CLIPS" --seed "$SEED" --labels-only
LABELS=$DATA/labels.parquet

RUN="$DATA_DIR/run-sample-c$CLIPS"
rm -rf "$RUN" && mkdir -p "$RUN"
MACHINE="$(nproc) cores, $(awk '/^MemTotal:/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) RAM"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $MACHINE; load before: $LOAD_BEFORE; rustc running: $(pgrep -c rustc || true)"
for i in $(seq 1 "$REPEAT"); do
  log "round $i/$REPEAT"
  "$PY" "$ROOT/bench/label_measure.py" --json "$RUN/psla-$i.json" --log "$RUN/psla-$i.log" --timeout "$TIMEOUT" -- \
    "$PSLA" sample --labels "$LABELS" --classes "$CLASSES" --out "$RUN/w.parquet" --draws 1 --seed 1 --draws-out "$RUN/d.parquet"
  "$PY" "$ROOT/bench/label_measure.py" --json "$RUN/numpy-$i.json" --log "$RUN/numpy-$i.log" --timeout "$TIMEOUT" -- \
    "$PY" "$ROOT/bench/sample_numpy.py" run --labels "$LABELS" --classes "$CLASSES" --out "$RUN/np_w.parquet" \
    --draws-out "$RUN/np_d.parquet" --seed 1
done
log "checking psla's weights against NumPy's"
"$PY" "$ROOT/bench/sample_numpy.py" check --labels "$LABELS" --classes "$CLASSES" --psla-weights "$RUN/w.parquet" > "$RUN/check.json"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" - "$RUN" "$REPEAT" "$DATA/labels.json" "$MACHINE" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF' | tee "$RUN/summary.txt"
import json, os, re, statistics, sys
run, repeat, params, machine, load_before, load_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
gen = json.load(open(params))
med = statistics.median
def runs(name):
    out = []
    for i in range(1, repeat + 1):
        r = json.load(open(os.path.join(run, f"{name}-{i}.json")))
        if r["rc"] != 0 or r["timed_out"]:
            sys.exit(f"{name} run {i} failed: {r}; log: " + open(os.path.join(run, f"{name}-{i}.log")).read()[-2000:])
        r["log"] = open(os.path.join(run, f"{name}-{i}.log")).read()
        out.append(r)
    return out
ps, npy = runs("psla"), runs("numpy")
inproc = [json.loads([l for l in r["log"].splitlines() if l.startswith("{")][-1]) for r in npy]
psla_own = [float(m.group(1)) for r in ps for m in [re.search(r" in ([0-9.]+) s ->", r["log"])] if m]
chk = json.load(open(os.path.join(run, "check.json")))
line = [l for l in ps[-1]["log"].splitlines() if l.startswith("sample:")]
print(f"\nSampling weights + 1 epoch of weighted draws: {gen['params']['clips']:,} clips, {gen['labels_rows']:,} labels"
      f" (medians of {repeat} alternating runs)")
print(f"machine: {machine}; load average before / after the runs: {load_before} / {load_after}\n")
cpu = lambda rs: med(r["user_s"] + r["sys_s"] for r in rs)
print(f"{'run':<44} {'wall s':>8} {'peak RSS MB':>12} {'CPU s':>8}")
print(f"{'psla sample (process)':<44} {med(r['wall_s'] for r in ps):>8.2f} {max(r['peak_rss_mb'] for r in ps):>12.0f} {cpu(ps):>8.2f}")
if psla_own: print(f"{'  psla its own summary time':<44} {med(psla_own):>8.2f}")
print(f"{'NumPy (process, incl. interpreter+imports)':<44} {med(r['wall_s'] for r in npy):>8.2f} {max(r['peak_rss_mb'] for r in npy):>12.0f} {cpu(npy):>8.2f}")
for k, name in (("total", "in process: read+compute+write"), ("read", "  read labels"), ("compute", "  compute (encode+weights+draws)"),
                ("weights", "    weights"), ("draws", "    draws + exposure"), ("write", "  write weights + draws")):
    print(f"{'  NumPy ' + name:<44} {med(j[k] for j in inproc):>8.3f}")
print(f"\npsla / NumPy: {med(r['wall_s'] for r in ps) / med(r['wall_s'] for r in npy):.2f}x (process wall times);"
      f" psla / NumPy in process: {med(r['wall_s'] for r in ps) / med(j['total'] for j in inproc):.2f}x;"
      f" CPU time {cpu(ps) / cpu(npy):.2f}x")
print(f"weights: psla {chk['clips_psla']:,} clips, NumPy {chk['clips_numpy']:,}; max relative error {chk['max_rel_error']:.3g};"
      f" bit-equal {chk['weights_bit_equal']:,}; n_labels equal: {chk['n_labels_equal']}")
if line: print("psla: " + line[0])
json.dump({"gen": gen, "psla": ps, "numpy": npy, "numpy_inproc": inproc, "check": chk, "machine": machine,
           "load_after": load_after}, open(os.path.join(run, "results.json"), "w"), indent=1, default=str)
EOF
rm -f "$RUN"/*.parquet
