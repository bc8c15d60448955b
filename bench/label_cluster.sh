#!/usr/bin/env bash
# Benchmark: the full-scale label job (bench/label.sh's data: 2,041,789 clips x 527 classes = 1.076
# billion teacher scores) on the local engine, on a Ballista cluster of 1 executor and of 2 executors
# on this machine, in one run. Run from anywhere:  bench/label_cluster.sh [--clips N] [--seed S]
#
# Each configuration is `psla label --threshold mean --rules type1,type2` on the same files:
#   local        --engine local (DataFusion in the psla process)
#   1 executor   `psla cluster scheduler` + 1 `psla cluster executor` with as many slots as cores
#   2 executors  the same scheduler + 2 executors with half the slots each (the same cores in all)
# Reported: wall time, the client's peak RSS, and for the cluster runs the scheduler's and executors'
# peak RSS (VmHWM; the cluster processes are started fresh for each configuration), and the sum; the
# outputs are compared with the local engine's, label for label.
#
# The engine is ballista://127.0.0.1:PORT?partitions=P with P = the cores (the cluster's total slots),
# so that each slot builds the pass's hash table once; PSLA_BENCH_PARTITIONS=default leaves Ballista's
# default (16 tasks per scan).
#
# Environment: PSLA_BIN, PSLA_BENCH_DIR, PSLA_CACHE_DIR as bench/label.sh (the data are generated and
# cached by the same generator); PSLA_BENCH_TIMEOUT seconds per run [1800]; PSLA_BENCH_PARTITIONS.
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
    *) echo "usage: bench/label_cluster.sh [--clips N] [--seed S]" >&2; exit 2 ;;
  esac
done
log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

DATA_DIR=${PSLA_BENCH_DIR:-/tmp/psla-bench}
CACHE_DIR="${PSLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/psla}"
TIMEOUT=${PSLA_BENCH_TIMEOUT:-1800}
SHARED=$(cd "$ROOT/../shared" && pwd)
ONTOLOGY=$SHARED/data/audioset/ontology.json
CLASSES=$SHARED/data/audioset/class_labels_indices.csv
VENV="$CACHE_DIR/bench-label-venv"
PY="$VENV/bin/python"
DATA="$DATA_DIR/audioset-c$CLIPS-s$SEED"
[ -x "$PY" ] && [ -f "$DATA/params.json" ] || die "no data at $DATA: run bench/label.sh --clips $CLIPS --seed $SEED first (it makes the venv and the data)"

PSLA_SRC=${PSLA_BIN:-$ROOT/target/release/psla}
[ -x "$PSLA_SRC" ] || die "no psla binary at $PSLA_SRC: run ./dev build first (or set PSLA_BIN)"
mkdir -p "$DATA_DIR/bin"
PSLA="$DATA_DIR/bin/psla-cluster"
cp "$PSLA_SRC" "$PSLA.tmp" && mv "$PSLA.tmp" "$PSLA"
if ! "$PSLA" --version >/dev/null 2>&1; then eval "$(./dev env)"; fi

RUN="$DATA_DIR/run-label-cluster-c$CLIPS"
rm -rf "$RUN" && mkdir -p "$RUN"
CORES=$(nproc)
PARTITIONS=${PSLA_BENCH_PARTITIONS:-$CORES}
QUERY=""; [ "$PARTITIONS" = default ] || QUERY="?partitions=$PARTITIONS"
MACHINE="$CORES cores, $(awk '/^MemTotal:/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) RAM"
log "machine: $MACHINE; load before: $(cut -d' ' -f1-3 /proc/loadavg); rustc running: $(pgrep -c rustc || true)"

PIDS=()
stop_cluster() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap stop_cluster EXIT
hwm_mb() { awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$1/status" 2>/dev/null || echo 0; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; die "nothing listens on $1"; }

run_label() {  # NAME ENGINE
  "$PY" "$ROOT/bench/label_measure.py" --json "$RUN/$1.json" --log "$RUN/$1.log" --timeout "$TIMEOUT" -- \
    "$PSLA" label --labels "$DATA/labels.parquet" --teacher "$DATA/teacher_scores.parquet" --ontology "$ONTOLOGY" \
    --classes "$CLASSES" --threshold mean --rules type1,type2 --engine "$2" --out "$RUN/$1.parquet"
  tail -n 2 "$RUN/$1.log" | sed 's/^/    /' >&2
}

cluster_run() {  # NAME EXECUTORS
  local name=$1 n=$2 port=50350 slots=$(( CORES / $2 > 0 ? CORES / $2 : 1 ))
  "$PSLA" cluster scheduler --bind "127.0.0.1:$port" 2> "$RUN/$name.scheduler.log" & PIDS+=($!)
  wait_port $port
  for i in $(seq 1 "$n"); do
    "$PSLA" cluster executor --scheduler "127.0.0.1:$port" --slots "$slots" --flight-port $((port + 10 * i)) \
      --grpc-port $((port + 10 * i + 1)) --work-dir "$RUN/$name.executor-$i" 2> "$RUN/$name.executor-$i.log" & PIDS+=($!)
    wait_port $((port + 10 * i + 1))
  done
  sleep 2
  log "running $name: $n executor(s) x $slots slot(s), partitions: $PARTITIONS"
  run_label "$name" "ballista://127.0.0.1:$port$QUERY"
  local peaks=()
  for p in "${PIDS[@]}"; do peaks+=("$(hwm_mb "$p")"); done
  echo "${peaks[*]}" > "$RUN/$name.peaks"
  stop_cluster
}

log "running local"
run_label local local
cluster_run executors-1 1
cluster_run executors-2 2
for name in executors-1 executors-2; do
  [ -f "$RUN/$name.parquet" ] && "$PY" "$ROOT/bench/label_compare.py" "$RUN/local.parquet" "$RUN/$name.parquet" > "$RUN/compare-$name.json" || true
done

PARTITIONS=$PARTITIONS "$PY" - "$RUN" "$MACHINE" <<'EOF'
import json, os, sys
run, machine = sys.argv[1], sys.argv[2]
rows = []
for name in ["local", "executors-1", "executors-2"]:
    r = json.load(open(os.path.join(run, name + ".json")))
    peaks = [int(x) for x in open(os.path.join(run, name + ".peaks")).read().split()] if name != "local" else []
    same = "-"
    cmp = os.path.join(run, f"compare-{name}.json")
    if os.path.exists(cmp):
        same = "yes" if json.load(open(cmp)).get("equal") else "NO"
    rows.append((name, r["wall_s"], r["peak_rss_mb"], peaks, r["rc"], same))
print(f"label job, {machine}, partitions: {os.environ.get('PARTITIONS', '?')}")
print(f"{'engine':<13}{'wall s':>8}{'client MB':>11}{'scheduler MB':>14}{'executors MB':>16}{'total MB':>10}  same as local")
base = rows[0][1]
for name, wall, client, peaks, rc, same in rows:
    sched = peaks[0] if peaks else 0
    ex = peaks[1:]
    total = client + sched + sum(ex)
    status = "" if rc == 0 else f"  (rc {rc})"
    print(f"{name:<13}{wall:>8.1f}{client:>11.0f}{sched:>14}{'+'.join(map(str, ex)) or '-':>16}{total:>10.0f}  {same}  {wall / base:.2f}x local{status}")
EOF
rm -f "$RUN"/*.parquet
log "logs in $RUN"
