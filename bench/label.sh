#!/usr/bin/env bash
# Benchmark: PSLA label enhancement at AudioSet full scale, `psla label` against DuckDB running the
# same job. Run from anywhere:  bench/label.sh [--clips N] [--seed S]   (default 2,041,789 clips)
#
#  1. data (bench/gen_audioset_full.py, seeded, cached): N clips whose label sets are drawn with
#     replacement from the real balanced-train label sets (~2.39 labels per clip), and teacher
#     scores for every clip x every one of the 527 classes in long zstd Parquet (clip_id, mid, score):
#     1.076 billion rows at full scale (~1.9 GB);
#  2. `psla label --threshold mean --rules type1,type2` on it: wall time, peak RSS, CPU time, and
#     the seconds of its steps (its `label steps:` line);
#  3. DuckDB (from PyPI, in a venv, threads=2) running psla's own sql/label/*.sql on the same files,
#     in psla's order (bench/label_duckdb.py): needed pairs, the one pass keeping their scores,
#     the checks of those scores, thresholds, type1, type2, merge, outputs written: the same job,
#     the same SQL;
#     with PSLA_BENCH_FULL_CHECK=1, also both with --check full (checks.sql first: one more pass
#     over the whole score table);
#  3b. DuckDB running the same job written for DuckDB from scratch (bench/label_duckdb_native.py:
#     its own query, not psla's plan), so psla is also measured against DuckDB's own plan;
#  4. the outputs compared label for label (clip_id, mid, origin, via_mid; thresholds), untimed;
#  5. a summary table: times, peaks and the ratios psla / DuckDB.
#  PSLA_BENCH_REPEAT rounds (default 1) of 2 and 3, alternating; the table shows medians.
# Each timed run is a separate process under bench/label_measure.py: wall time, peak RSS (ru_maxrss),
# a timeout (PSLA_BENCH_TIMEOUT, default 1200 s) and a memory cap (PSLA_BENCH_MEM_CAP_MB, default
# MemAvailable - 2 GB, at most 22 GB): a run past either is killed and reported as such, with the
# RSS timeline in its log (*.log.rss).
#
# Environment:
#  PSLA_BIN               the psla binary [target/release/psla]; it is copied to the data dir first,
#                         so a rebuild during the run does not change what is measured
#  PSLA_BENCH_DIR         scratch and cached data [/tmp/psla-bench]
#  PSLA_CACHE_DIR         where the venv goes [~/.cache/psla]: bench-label-venv with numpy, pyarrow, duckdb
#  PSLA_BENCH_TIMEOUT     seconds per timed run [1200]
#  PSLA_BENCH_MEM_CAP_MB  RSS cap per timed run
#  PSLA_BENCH_THREADS     DuckDB threads [2]; psla uses all cores (DataFusion's default), pinned to
#                         that many cores (taskset) where the machine has more
#  PSLA_BENCH_FULL_CHECK  1: also time psla and DuckDB with --check full
#  PSLA_BENCH_REPEAT      rounds of the timed runs [1]
#  PSLA_BENCH_SKIP_PSLA / PSLA_BENCH_SKIP_DUCKDB / PSLA_BENCH_SKIP_NATIVE  1: skip that run
#                         (psla / DuckDB on psla's SQL / DuckDB's own query)
#  PSLA_BENCH_KEEP_OUT    1: keep the output Parquet files
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CLIPS=2041789
SEED=1
while [ $# -gt 0 ]; do
  case "$1" in
    --clips) CLIPS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "usage: bench/label.sh [--clips N] [--seed S]" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
[[ $CLIPS =~ ^[1-9][0-9]*$ ]] || die "--clips must be a positive integer, got '$CLIPS'"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer, got '$SEED'"

DATA_DIR=${PSLA_BENCH_DIR:-/tmp/psla-bench}
CACHE_DIR="${PSLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/psla}"
TIMEOUT=${PSLA_BENCH_TIMEOUT:-1200}
THREADS=${PSLA_BENCH_THREADS:-2}
SHARED=$(cd "$ROOT/../shared" && pwd)
ONTOLOGY=$SHARED/data/audioset/ontology.json
CLASSES=$SHARED/data/audioset/class_labels_indices.csv
[ -f "$ONTOLOGY" ] && [ -f "$CLASSES" ] || die "no AudioSet ontology / vocabulary under $SHARED/data/audioset"
mkdir -p "$DATA_DIR"

# ---------------------------------------------------------------- Python venv (numpy, pyarrow, duckdb)
BENCH_PACKAGES="numpy==2.4.6 pyarrow==26.0.1 duckdb==2.0.1"
VENV="$CACHE_DIR/bench-label-venv"
PY="$VENV/bin/python"
ensure_venv() {
  local stamp="$VENV/.psla-bench"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$BENCH_PACKAGES" ]; then return; fi
  log "creating $VENV with $BENCH_PACKAGES"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $BENCH_PACKAGES
  echo "$BENCH_PACKAGES" > "$stamp"
}
ensure_venv

# ---------------------------------------------------------------- psla, snapshotted
PSLA_SRC=${PSLA_BIN:-$ROOT/target/release/psla}
[ -x "$PSLA_SRC" ] || die "no psla binary at $PSLA_SRC: run ./dev build first (or set PSLA_BIN)"
PSLA="$DATA_DIR/bin/psla"
mkdir -p "$DATA_DIR/bin"
cp "$PSLA_SRC" "$PSLA.tmp" && mv "$PSLA.tmp" "$PSLA"
if ! "$PSLA" --version >/dev/null 2>&1; then
  eval "$(./dev env)"   # libtorch's lib folder on LD_LIBRARY_PATH
  "$PSLA" --version >/dev/null || die "$PSLA does not start"
fi

# ---------------------------------------------------------------- data
DATA="$DATA_DIR/audioset-c$CLIPS-s$SEED"
ROWS=$((CLIPS * 527))
if [ ! -f "$DATA/params.json" ]; then
  # ~1.76 bytes per score row, plus psla's and DuckDB's outputs and spill room: ~2.2 bytes per row
  avail_kb=$(df -Pk "$DATA_DIR" | awk 'NR==2 {print $4}')
  need_kb=$(( ROWS * 22 / 10 / 1024 + 4 * 1024 * 1024 ))
  [ "$avail_kb" -ge "$need_kb" ] || die "$DATA_DIR has $((avail_kb / 1024)) MB free, the data needs ~$((need_kb / 1024)) MB: use --clips N"
fi
log "data: $CLIPS clips x 527 classes = $ROWS teacher scores in $DATA"
"$PY" "$ROOT/bench/gen_audioset_full.py" "$DATA" --clips "$CLIPS" --seed "$SEED"
LABELS=$DATA/labels.parquet
TEACHER=$DATA/teacher_scores.parquet

# ---------------------------------------------------------------- timed runs
avail_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
MEM_CAP=${PSLA_BENCH_MEM_CAP_MB:-$(( avail_mb - 2048 < 22528 ? avail_mb - 2048 : 22528 ))}
RUN="$DATA_DIR/run-label-c$CLIPS"
rm -rf "$RUN" && mkdir -p "$RUN"
MACHINE="$(nproc) cores, $(awk '/^MemTotal:/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) RAM"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $MACHINE; load before: $LOAD_BEFORE; rustc running: $(pgrep -c rustc || true)"
log "limits per run: ${TIMEOUT} s, RSS cap ${MEM_CAP} MB"

measure() {  # NAME CMD...: run under label_measure.py, results in $RUN/NAME.json, log in $RUN/NAME.log
  local name=$1; shift
  log "running $name"
  "$PY" "$ROOT/bench/label_measure.py" --json "$RUN/$name.json" --log "$RUN/$name.log" \
    --timeout "$TIMEOUT" --mem-cap-mb "$MEM_CAP" -- "$@"
  tail -n 3 "$RUN/$name.log" | sed 's/^/    /' >&2
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print('    wall %.1f s, peak %.0f MB, cpu %.1f s, rc %s%s%s' % (r['wall_s'], r['peak_rss_mb'], r['user_s'] + r['sys_s'], r['rc'], ', TIMED OUT' if r['timed_out'] else '', ', KILLED AT THE MEMORY CAP' if r['mem_capped'] else ''))" "$RUN/$name.json" >&2
}

REPEAT=${PSLA_BENCH_REPEAT:-1}
# psla (DataFusion, tokio) uses as many threads as it has cores: on a machine with more cores than
# DuckDB's threads, give it as many cores as DuckDB has threads
PIN=()
if [ "$(nproc)" -gt "$THREADS" ] && command -v taskset >/dev/null; then PIN=(taskset -c "0-$((THREADS - 1))"); fi
duckdb_run() {  # NAME EXTRA_ARGS...
  local name=$1; shift
  measure "$name" "$PY" "$ROOT/bench/label_duckdb.py" --labels "$LABELS" --teacher "$TEACHER" --ontology "$ONTOLOGY" \
    --classes "$CLASSES" --out "$RUN/$name.parquet" --threads "$THREADS" --temp-dir "$RUN/duckdb.tmp" "$@"
}
for i in $(seq 1 "$REPEAT"); do
  [ "$REPEAT" = 1 ] || log "round $i/$REPEAT"
  if [ "${PSLA_BENCH_SKIP_PSLA:-0}" != 1 ]; then
    measure "psla-$i" "${PIN[@]}" "$PSLA" label --labels "$LABELS" --teacher "$TEACHER" --ontology "$ONTOLOGY" --classes "$CLASSES" \
      --threshold mean --rules type1,type2 --out "$RUN/psla.parquet"
  fi
  if [ "${PSLA_BENCH_SKIP_DUCKDB:-0}" != 1 ]; then
    duckdb_run "duckdb-$i"
  fi
  if [ "${PSLA_BENCH_SKIP_NATIVE:-0}" != 1 ]; then
    measure "duckdb_native-$i" "$PY" "$ROOT/bench/label_duckdb_native.py" --labels "$LABELS" --teacher "$TEACHER" \
      --ontology "$ONTOLOGY" --classes "$CLASSES" --out "$RUN/duckdb_native-$i.parquet" --threads "$THREADS" \
      --temp-dir "$RUN/duckdb.tmp"
  fi
  if [ "${PSLA_BENCH_FULL_CHECK:-0}" = 1 ]; then
    if [ "${PSLA_BENCH_SKIP_PSLA:-0}" != 1 ]; then
      measure "psla_full-$i" "${PIN[@]}" "$PSLA" label --labels "$LABELS" --teacher "$TEACHER" --ontology "$ONTOLOGY" \
        --classes "$CLASSES" --threshold mean --rules type1,type2 --check full --out "$RUN/psla_full.parquet"
    fi
    if [ "${PSLA_BENCH_SKIP_DUCKDB:-0}" != 1 ]; then duckdb_run "duckdb_full-$i" --check full; fi
  fi
done
for pair in psla:duckdb psla:duckdb_native psla_full:duckdb_full; do
  ours=${pair%%:*} name=${pair##*:}
  if [ -f "$RUN/$ours.parquet" ] && [ -f "$RUN/$name-1.parquet" ]; then
    log "comparing $ours's output with $name's"
    "$PY" "$ROOT/bench/label_compare.py" "$RUN/$ours.parquet" "$RUN/$name-1.parquet" > "$RUN/compare-$name.json"
  fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- summary
"$PY" "$ROOT/bench/label_report.py" "$RUN" "$DATA/params.json" "$MACHINE" "$LOAD_BEFORE" "$LOAD_AFTER" "$THREADS" "$REPEAT" \
  | tee "$RUN/summary.txt"
if [ "${PSLA_BENCH_KEEP_OUT:-0}" != 1 ]; then
  rm -rf "$RUN"/*.parquet "$RUN/duckdb.tmp"
fi
log "logs and results.json in $RUN"
