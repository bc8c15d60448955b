#!/usr/bin/env bash
# Where `psla features` spends its time, by sampling it with perf (call stacks unwound with DWARF
# from .eh_frame: the release build has no debug info, but the function names are there).
#   bench/features_profile.sh [N_CLIPS] [THREADS]     (defaults 200 and 1)
# Uses the clips bench/features.sh generates (run it first, or it generates them here). Prints the
# share of CPU samples under each part of the work and what that is in CPU ms per clip, then runs
# torchaudio on the same clips for comparison. The shares are of on-CPU samples: a part that waits
# (disk) is undercounted, and perf slows the run a little.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-200}
THREADS=${2:-1}
PSLA=${PSLA_BIN:-$ROOT/target/release/psla}
CACHE_DIR="${PSLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/psla}"
DATA_DIR=${PSLA_BENCH_DIR:-${TMPDIR:-/tmp}/psla-bench-features}
PY="$CACHE_DIR/bench-venv/bin/python"
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }
[ -x "$PY" ] || { echo "no $PY: run bench/features.sh once first" >&2; exit 1; }

CLIPS="$DATA_DIR/clips-$N"
if [ ! -f "$CLIPS/.complete" ]; then
  mkdir -p "$CLIPS"
  "$PY" "$ROOT/bench/gen_clips.py" "$CLIPS" "$N"
  echo "count=$N " > "$CLIPS/.complete"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/psla-profile.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# psla's CPU time (user + system) under perf, from /usr/bin/time when there is one.
TIMER=()
[ -x /usr/bin/time ] && TIMER=(/usr/bin/time -f '%U %S' -o "$WORK/cpu")
t0=$(date +%s%N)
perf record -q --call-graph dwarf,16384 -F 499 -o "$WORK/perf.data" \
  "${TIMER[@]}" "$PSLA" features "$CLIPS" --out "$WORK/f.parquet" --threads "$THREADS" 2> "$WORK/err" >/dev/null
t1=$(date +%s%N)
grep '^features:' "$WORK/err" >&2 || { cat "$WORK/err" >&2; exit 1; }
COMPUTE_MS=$(sed -n 's/.*read + decode + fbank \([0-9.]*\) ms per clip.*/\1/p' "$WORK/err")
WALL=$(awk -v d=$(( (t1 - t0) / 1000 )) 'BEGIN {printf "%.3f", d / 1e6}')
if [ -s "$WORK/cpu" ]; then
  CPU=$(awk '{printf "%.3f", $1 + $2}' "$WORK/cpu"); BASIS="CPU time"
else
  CPU=$(awk -v w="$WALL" -v t="$THREADS" 'BEGIN {printf "%.3f", w * t}'); BASIS="wall x threads (no /usr/bin/time)"
fi

perf report -i "$WORK/perf.data" --children --sort symbol -g none --percent-limit 0 2>/dev/null \
  | grep -v '^#' > "$WORK/report"
# share SYMBOL: the inclusive ("children") percentage of the first symbol matching exactly.
share() { awk -v s="$1" '{ sym = $0; sub(/^ *[0-9.]+% +[0-9.]+% +\[[.k]\] /, "", sym); sub(/  .*/, "", sym)
                           if (sym == s) { sub(/%/, "", $1); print $1; exit } }' "$WORK/report"; }
row() {
  local pct
  pct=$(share "$2"); pct=${pct:-0}
  awk -v l="$1" -v p="$pct" -v c="$CPU" -v n="$N" \
    'BEGIN {printf "  %-52s %6.1f%%  %7.2f ms/clip\n", l, p, p / 100 * c * 1000 / n}'
}

echo
echo "psla features, $N clips, --threads $THREADS, under perf: wall $WALL s, CPU $CPU s; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  share of CPU samples (inclusive), and that share of $BASIS per clip:"
row "decode + resample + fbank (featurise)"               "psla::stages::features::featurise"
row "  of which fbank (psla_fbank)"                       "psla::audio::psla_fbank"
row "  of which decode"                                   "psla::audio::decode::decode"
row "staging Parquet write (TableWriter::write)"          "psla::table::store::TableWriter::write"
row "final file: row groups copied (concat_features)"     "psla::stages::features::concat_features"
row "all Parquet column writing (ArrowRowGroupWriter)"    "parquet::arrow::arrow_writer::ArrowRowGroupWriter::write"
row "  of which zstd compression (ZSTD_compress2)"        "ZSTD_compress2"
row "file writes (libc write, incl. kernel)"              "__GI___libc_write"

# The same clips through torchaudio (CPU time, one thread), to set psla's compute alone against it.
TA_LINE=$("$PY" "$ROOT/bench/torchaudio_fbank.py" "$CLIPS" --threads 1)
TA_CPU=$(sed -n 's/.* cpu_seconds=\([0-9.]*\) .*/\1/p' <<<"$TA_LINE")
FEAT=$(share "psla::stages::features::featurise")
awk -v ta="$TA_CPU" -v n="$N" -v f="${FEAT:-0}" -v c="$CPU" -v b="$BASIS" 'BEGIN {
  t = ta * 1000 / n; p = f / 100 * c * 1000 / n; a = c * 1000 / n
  printf "  torchaudio on the same clips, 1 thread: %.2f ms/clip CPU\n", t
  printf "  torchaudio / psla: %.2fx for decode + fbank alone, %.2fx for the whole psla run (by %s)\n", t / p, t / a, b
}'
[ -z "$COMPUTE_MS" ] || awk -v ta="$TA_CPU" -v n="$N" -v c="$COMPUTE_MS" 'BEGIN {
  printf "  psla in-process read + decode + fbank (its summary line): %.3f ms/clip: %.2fx torchaudio (whose figure is CPU time)\n", c, ta * 1000 / n / c }'
