#!/usr/bin/env bash
# Benchmark: end to end from 10 s 16 kHz wav files to predictions, psla against PSLA's PyTorch +
# torchaudio path, on the CPU, with the same randomly initialised EfficientNet-B2 4-head model on both
# sides. Run from anywhere:  bench/score.sh [N_CLIPS]   (default 64)
#
#  0. set-up (cached): the venv of bench/features.sh plus efficientnet_pytorch, safetensors and pyarrow;
#     the clips of bench/gen_clips.py; the model: score_pytorch.py `init` builds PSLA's EffNetAttention
#     (efficientnet-b2, 4 heads, 527 classes, seeded, BatchNorm statistics from one batch of the clips)
#     and saves its state dict as safetensors with PSLA's key names (a PSLA state dict, no metadata);
#     score_pytorch.py `check-reference` first checks the PyTorch model against PSLA's own B0 files
#     in ../shared/reference/model (max |ours - PSLA's saved output|);
#  1. PyTorch (score_pytorch.py `run`, torch.set_num_threads(PSLA_BENCH_THREADS)): per clip
#     soundfile.read, mean removal, kaldi.fbank as PSLA calls it, pad to 1056 frames, PSLA's
#     normalisation; batches of PSLA_BENCH_BATCH through the eval-mode model under no_grad. Timed in
#     process around the whole loop from file paths to the predictions array (imports and model
#     construction + load timed apart); the process's wall time too;
#  2. psla, two processes, wall time of each: `psla features DIR --out F --rejects R --threads T`, then
#     `psla score --checkpoint C F --out P --batch-size B` (OMP_NUM_THREADS=T: libtorch's threads);
#  2b. when `psla score` takes audio INPUT: `psla score --checkpoint C DIR --out P --threads T ...`,
#     one process;
#  3. PyTorch's forward alone on the same batches (features computed first, untimed), for reference.
#  1, 2, 2b and 3 alternate, PSLA_BENCH_REPEAT times each, medians reported, so that a change in
#  machine load hits all alike. Then the predictions are compared: psla's (both paths) against
#  PyTorch's end to end (max |d|), and PyTorch's model on psla's own features against psla score on
#  them (the model alone), plus psla's fbank against torchaudio's on a few clips.
#
# Environment:
#  PSLA_BIN            the psla binary [target/release/psla]
#  PSLA_BENCH_REPEAT   timed runs of each side, median reported [3]
#  PSLA_BENCH_THREADS  threads on both sides [2]
#  PSLA_BENCH_BATCH    clips per forward on both sides [16]
#  PSLA_BENCH_ARCH     EfficientNet variant [b2]
#  PSLA_BENCH_ENV      extra VAR=VALUE words for every timed process, both sides (e.g.
#                      GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296) []
#  PSLA_BENCH_DIR      clips and outputs [${TMPDIR:-/tmp}/psla-bench-features, the clips features.sh uses]
#  PSLA_BENCH_KEEP_OUT 1: keep the output Parquet files and the PyTorch predictions (the model is
#                      cached in $PSLA_BENCH_DIR/score, by variant)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

N=${1:-64}
REPEAT=${PSLA_BENCH_REPEAT:-3}
THREADS=${PSLA_BENCH_THREADS:-2}
BATCH=${PSLA_BENCH_BATCH:-16}
ARCH=${PSLA_BENCH_ARCH:-b2}
HEADS=4
CLASSES=527
SEED=1
PSLA=${PSLA_BIN:-$ROOT/target/release/psla}
EXTRA_ENV=${PSLA_BENCH_ENV:-}
CACHE_DIR="${PSLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/psla}"   # as ./dev computes it
DATA_DIR=${PSLA_BENCH_DIR:-${TMPDIR:-/tmp}/psla-bench-features}
REFERENCE=$ROOT/../shared/reference/model
CORES=$(nproc)

# torch: the version and the pip --target tree that ./dev installs libtorch from.
TORCH_VERSION=$(sed -n 's/^TORCH_VERSION=\([0-9.]*\).*/\1/p' "$ROOT/dev")
TORCH_TREE="$CACHE_DIR/torch-$TORCH_VERSION"
# The venv of bench/features.sh (keep in step with it): torchaudio's last PyPI release is 2.11.0,
# whose kaldi.fbank is pure Python over torch ops and runs on torch 2.13.
TORCHAUDIO_VERSION=2.11.0
BENCH_PACKAGES="torchaudio==$TORCHAUDIO_VERSION(--no-deps) soundfile==0.14.0 numpy==2.4.6"
# What this benchmark adds to it: efficientnet_pytorch is pure Python (its only dependency is torch);
# safetensors' core has no dependencies; pyarrow (same pin as bench/label.sh) reads psla's outputs.
SCORE_PACKAGES="efficientnet_pytorch==0.7.1(--no-deps) safetensors==0.8.0(--no-deps) pyarrow==26.0.1"

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $N =~ ^[1-9][0-9]*$ ]] || die "usage: bench/score.sh [N_CLIPS]  (a positive integer, got '$N')"
[[ $BATCH =~ ^[1-9][0-9]*$ ]] || die "PSLA_BENCH_BATCH must be a positive integer, got '$BATCH'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "PSLA_BENCH_THREADS must be one positive integer, got '$THREADS'"
[ -x "$PSLA" ] || die "no psla binary at $PSLA: run ./dev build first (or set PSLA_BIN)"
if ! "$PSLA" --version >/dev/null 2>&1; then
  eval "$(./dev env)"   # libtorch's lib folder on LD_LIBRARY_PATH
  "$PSLA" --version >/dev/null || die "$PSLA does not start"
fi

# ---------------------------------------------------------------- the reference Python environment
VENV="$CACHE_DIR/bench-venv"
PY="$VENV/bin/python"
# As bench/features.sh's ensure_venv (the same venv, the same stamp): keep the two in step.
ensure_venv() {
  [ -f "$TORCH_TREE/torch/__init__.py" ] || die "no torch tree at $TORCH_TREE: run ./dev build first (it installs torch $TORCH_VERSION there)"
  local stamp="$VENV/.psla-bench" want="$BENCH_PACKAGES torch=$TORCH_TREE"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  # The torch tree holds compiled modules for one CPython (the python3 that ./dev used).
  local tag pytag
  tag=$(sed -n 's/^Tag: \(cp[0-9]*\)-.*/\1/p' "$TORCH_TREE"/torch-"$TORCH_VERSION"*.dist-info/WHEEL | head -1)
  pytag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  [ -z "$tag" ] || [ "$tag" = "$pytag" ] || die "torch tree is for $tag but python3 is $pytag"
  log "creating $VENV: torchaudio $TORCHAUDIO_VERSION (--no-deps), soundfile, numpy; torch from $TORCH_TREE"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "torchaudio==$TORCHAUDIO_VERSION"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check soundfile==0.14.0 numpy==2.4.6
  local site
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$TORCH_TREE" > "$site/psla-torch.pth"
  "$PY" -c "
import torch, torchaudio.compliance.kaldi
assert torch.__version__.split('+')[0] == '$TORCH_VERSION', torch.__version__
print('torch', torch.__version__, 'torchaudio', __import__('torchaudio').__version__)" >&2
  echo "$want" > "$stamp"
}
# This benchmark's additions, with their own stamp (a venv that features.sh recreates loses both).
ensure_score_packages() {
  local stamp="$VENV/.psla-bench-score" want="$SCORE_PACKAGES"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "adding to $VENV: $SCORE_PACKAGES"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps efficientnet_pytorch==0.7.1 safetensors==0.8.0
  "$VENV/bin/pip" install --quiet --disable-pip-version-check pyarrow==26.0.1 numpy==2.4.6
  "$PY" -c "
import efficientnet_pytorch, safetensors.torch, pyarrow
print('efficientnet_pytorch', efficientnet_pytorch.__version__, 'safetensors', safetensors.__version__, 'pyarrow', pyarrow.__version__)" >&2
  echo "$want" > "$stamp"
}
ensure_venv
ensure_score_packages

# ---------------------------------------------------------------- clips (bench/features.sh's)
gen() {
  local dir=$1 count=$2; shift 2
  local stamp="$dir/.complete" want="count=$count $*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "generating $count clips in $dir $*"
  mkdir -p "$dir"
  nice -n 10 "$PY" "$ROOT/bench/gen_clips.py" "$dir" "$count" "$@"
  echo "$want" > "$stamp"
}
mkdir -p "$DATA_DIR"
CLIPS="$DATA_DIR/clips-$N"
gen "$CLIPS" "$N"

OUT_DIR="$DATA_DIR/score"
mkdir -p "$OUT_DIR"
PT="$ROOT/bench/score_pytorch.py"

# ---------------------------------------------------------------- the model and the reference check
if [ -d "$REFERENCE" ]; then
  log "PyTorch model against PSLA's own B0 files ($REFERENCE)"
  REF_LINE=$("$PY" "$PT" check-reference "$REFERENCE" --threads "$THREADS")
else
  log "warning: no $REFERENCE: the PyTorch model is not checked against PSLA's saved outputs"
  REF_LINE="reference_max_abs_diff=n/a"
fi
# Clip i is the same whatever N, and the model is calibrated on the first 8 clips: one model per variant.
MODEL="$OUT_DIR/model-$ARCH-h$HEADS-c$CLASSES-s$SEED.safetensors"
if [ ! -f "$MODEL" ]; then
  CAL="$DATA_DIR/clips-8"
  gen "$CAL" 8
  log "building the model: efficientnet-$ARCH, $HEADS heads, $CLASSES classes, seed $SEED -> $MODEL"
  "$PY" "$PT" init --arch "$ARCH" --heads "$HEADS" --classes "$CLASSES" --seed "$SEED" --calibrate "$CAL" \
    --threads "$THREADS" --out "$MODEL.tmp" >&2
  mv "$MODEL.tmp" "$MODEL"
fi

# Does `psla score` take audio INPUT (files, folders)?
AUDIO_SCORE=0
if "$PSLA" score --help 2>/dev/null | grep -q -- '--features-out'; then AUDIO_SCORE=1; fi

# ---------------------------------------------------------------- measuring
busy() { pgrep -c -x 'rustc|cargo|cc1|cc1plus|ld|ld.lld|ld.gold' 2>/dev/null || true; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_BEFORE=$(uptime)
BUSY_BEFORE=$(busy)
# Anything else on the CPU (another benchmark's python, a test binary): name and %CPU, from ps.
OTHERS_BEFORE=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 {printf "%s%s (%s%%)", sep, $2, $1; sep = ", "}')
[ -z "$OTHERS_BEFORE" ] || log "warning: other processes are using the CPU: $OTHERS_BEFORE"
[ "${BUSY_BEFORE:-0}" = 0 ] || log "warning: $BUSY_BEFORE compiler processes are running: timings will be low"
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# measure NAME CMD...: run CMD, append "wall_seconds peak_rss_kb cpu_seconds system_seconds
# minor_page_faults" to $OUT_DIR/NAME.runs (as bench/features.sh's measure, plus the last two), the
# 1-minute load after it to NAME.runs.load; CMD's stdout goes to NAME.runs.out, its stderr to NAME.runs.err.
measure() {
  local res="$OUT_DIR/$1.runs"; shift
  local t0 t1 usage
  t0=$(date +%s%N)
  /usr/bin/time -v -o "$res.time" env $EXTRA_ENV "$@" >"$res.out" 2>"$res.err" || { cat "$res.err" >&2; die "failed: $*"; }
  t1=$(date +%s%N)
  usage=$(awk -F': *' '/Maximum resident set size/ {rss = $2} /User time \(seconds\)/ {u = $2}
                       /System time \(seconds\)/ {s = $2} /Minor .*page faults/ {f = $2} END {print rss, u + s, s, f}' "$res.time")
  echo "$(( (t1 - t0) / 1000 )) $usage" | awk '{printf "%.4f %d %.2f %.2f %d\n", $1 / 1e6, $2, $3, $4, $5}' >> "$res"
  cut -d' ' -f1 /proc/loadavg >> "$res.load"
}
[ -x /usr/bin/time ] || die "bench/score.sh needs /usr/bin/time (Debian package time)"
# kv FILE KEY: the value of KEY=... on FILE's last line.
kv() { tail -1 "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
last() { tail -1 "$OUT_DIR/$1.runs" | cut -d' ' -f1; }

for name in pytorch forward features score audio; do rm -f "$OUT_DIR/$name.runs" "$OUT_DIR/$name".runs.*; done
rm -f "$OUT_DIR"/*.vals
keep() { echo "$2" >> "$OUT_DIR/$1.vals"; }   # keep NAME VALUE: one value per run
F_OUT="$OUT_DIR/features.parquet"
P_OUT="$OUT_DIR/predictions.parquet"
A_OUT="$OUT_DIR/predictions-audio.parquet"
PT_OUT="$OUT_DIR/pytorch.npy"

log "machine: $CORES cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load $LOAD_BEFORE"
log "$N clips, efficientnet-$ARCH $HEADS heads $CLASSES classes, batch $BATCH, $THREADS threads, $REPEAT runs of each, alternating"
for r in $(seq "$REPEAT"); do
  measure pytorch "$PY" "$PT" run "$MODEL" "$CLIPS" --batch-size "$BATCH" --threads "$THREADS" --out "$PT_OUT"
  L="$OUT_DIR/pytorch.runs.out"
  for k in seconds cpu_seconds features_s forward_s first_batch_s imports_s model_load_s; do keep "pt_$k" "$(kv "$L" "$k")"; done
  echo "  [$r] PyTorch: in process $(kv "$L" seconds) s (features $(kv "$L" features_s), forward $(kv "$L" forward_s)), process $(last pytorch) s" >&2

  rm -rf "$F_OUT" "$F_OUT.partial" "$OUT_DIR/rejects.parquet" "$P_OUT" "$P_OUT.tmp"
  measure features "$PSLA" features "$CLIPS" --out "$F_OUT" --rejects "$OUT_DIR/rejects.parquet" --threads "$THREADS"
  grep -q ' 0 rejects' "$OUT_DIR/features.runs.err" || { cat "$OUT_DIR/features.runs.err" >&2; die "psla features rejected clips"; }
  measure score env OMP_NUM_THREADS="$THREADS" "$PSLA" score --checkpoint "$MODEL" "$F_OUT" --out "$P_OUT" --batch-size "$BATCH" --device cpu
  S_LINE=$(grep '^score:' "$OUT_DIR/score.runs.err" | tail -1)
  [ -n "$S_LINE" ] || { cat "$OUT_DIR/score.runs.err" >&2; die "psla score printed no summary"; }
  keep score_own "$(sed -n 's/.* in \([0-9.]*\) s -> .*/\1/p' <<<"$S_LINE")"
  echo "  [$r] psla: features $(last features) s + score $(last score) s; $S_LINE" >&2

  if [ "$AUDIO_SCORE" = 1 ]; then
    rm -rf "$A_OUT" "$A_OUT.tmp" "$OUT_DIR/audio-rejects.parquet"
    measure audio env OMP_NUM_THREADS="$THREADS" "$PSLA" score --checkpoint "$MODEL" "$CLIPS" --out "$A_OUT" \
      --rejects "$OUT_DIR/audio-rejects.parquet" --threads "$THREADS" --batch-size "$BATCH" --device cpu
    A_LINE=$(grep '^score:' "$OUT_DIR/audio.runs.err" | tail -1)
    keep audio_own "$(sed -n 's/.* in \([0-9.]*\) s -> .*/\1/p' <<<"$A_LINE")"
    echo "  [$r] psla score on the wavs: $(last audio) s; $A_LINE" >&2
  fi

  measure forward "$PY" "$PT" run "$MODEL" "$CLIPS" --batch-size "$BATCH" --threads "$THREADS" --forward-only
  keep fw_seconds "$(kv "$OUT_DIR/forward.runs.out" seconds)"
  echo "  [$r] PyTorch forward only: $(kv "$OUT_DIR/forward.runs.out" seconds) s" >&2
done
BUSY_AFTER=$(busy)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_AFTER=$(uptime)

# ---------------------------------------------------------------- correctness
log "comparing predictions"
CMP=$("$PY" "$PT" compare "$PT_OUT" "$P_OUT" --features "$F_OUT" --model "$MODEL" --clips "$CLIPS" --threads "$THREADS")
CMP_AUDIO=""
[ "$AUDIO_SCORE" = 0 ] || CMP_AUDIO=$("$PY" "$PT" compare "$PT_OUT" "$A_OUT")

# ---------------------------------------------------------------- report
med() { median < "$OUT_DIR/$1.vals"; }
wall() { cut -d' ' -f1 "$OUT_DIR/$1.runs" | median; }
cpu() { cut -d' ' -f3 "$OUT_DIR/$1.runs" | median; }
sys() { cut -d' ' -f4 "$OUT_DIR/$1.runs" | median; }
faults() { cut -d' ' -f5 "$OUT_DIR/$1.runs" | median | awk '{printf "%.2fM", $1 / 1e6}'; }
rss() { cut -d' ' -f2 "$OUT_DIR/$1.runs" | sort -n | tail -1 | awk '{printf "%.0f MiB", $1 / 1024}'; }
loads() { tr '\n' ' ' < "$OUT_DIR/$1.runs.load" | sed 's/ $//'; }
runs() { cut -d' ' -f1 "$OUT_DIR/$1.runs" | tr '\n' ' ' | sed 's/ $//'; }
vals() { tr '\n' ' ' < "$OUT_DIR/$1.vals" | sed 's/ $//'; }
rate() { awk -v n="$N" -v s="$1" 'BEGIN {printf "%.1f", n / s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f", a + b}'; }

# psla's path: per run, features wall + score wall; the median of those sums.
paste -d' ' <(cut -d' ' -f1 "$OUT_DIR/features.runs") <(cut -d' ' -f1 "$OUT_DIR/score.runs") | awk '{printf "%.4f\n", $1 + $2}' > "$OUT_DIR/psla2.vals"
paste -d' ' <(cut -d' ' -f3 "$OUT_DIR/features.runs") <(cut -d' ' -f3 "$OUT_DIR/score.runs") | awk '{printf "%.2f\n", $1 + $2}' > "$OUT_DIR/psla2cpu.vals"
PT_S=$(med pt_seconds); PT_PROC=$(wall pytorch); FW_S=$(med fw_seconds)
PSLA2=$(med psla2)
RATIO=$(ratio "$PT_S" "$PSLA2")
MET=$(awk -v r="$RATIO" 'BEGIN {print (r >= 1.2) ? "MET" : "NOT MET"}')

echo
echo "score benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'): $N clips of 10 s, 16 kHz, 16-bit mono wav -> predictions;"
echo "efficientnet-$ARCH, $HEADS attention heads, $CLASSES classes, 1056 frames, batch $BATCH, $THREADS threads, CPU; median of $REPEAT alternating runs"
echo "$CORES cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)); load average (1, 5, 15 min): $LOAD_BEFORE before, $LOAD_AFTER after"
echo "uptime before: $UPTIME_BEFORE"
echo "uptime after:  $UPTIME_AFTER"
echo "compiler processes running: ${BUSY_BEFORE:-0} before, ${BUSY_AFTER:-0} after; other processes using CPU before: ${OTHERS_BEFORE:-none}"
[ -z "$EXTRA_ENV" ] || echo "extra environment of every timed process: $EXTRA_ENV"
echo
F='%-62s %8s %8s %9s  %s\n'
printf "$F" "run" "seconds" "clips/s" "peak RSS" "per run (s) | 1-min load after each"
printf "$F" "PyTorch: in process, wav paths -> predictions" "$PT_S" "$(rate "$PT_S")" "" "$(vals pt_seconds)"
printf "$F" "  of which decode + fbank + pad + normalise" "$(med pt_features_s)" "" "" "$(vals pt_features_s)"
printf "$F" "  of which model forward" "$(med pt_forward_s)" "" "" "$(vals pt_forward_s)"
printf "$F" "  (first batch, included above)" "$(med pt_first_batch_s)" "" "" "$(vals pt_first_batch_s)"
printf "$F" "PyTorch: imports (not in the row above)" "$(med pt_imports_s)" "" "" "$(vals pt_imports_s)"
printf "$F" "PyTorch: model construction + safetensors load (not above)" "$(med pt_model_load_s)" "" "" "$(vals pt_model_load_s)"
printf "$F" "PyTorch: whole process (interpreter, imports, all above)" "$PT_PROC" "$(rate "$PT_PROC")" "$(rss pytorch)" "$(runs pytorch) | $(loads pytorch)"
printf "$F" "PyTorch: forward only, same batches (reference)" "$FW_S" "$(rate "$FW_S")" "" "$(vals fw_seconds)"
printf "$F" "psla features --threads $THREADS (whole process)" "$(wall features)" "$(rate "$(wall features)")" "$(rss features)" "$(runs features) | $(loads features)"
printf "$F" "psla score on the features (whole process)" "$(wall score)" "$(rate "$(wall score)")" "$(rss score)" "$(runs score) | $(loads score)"
printf "$F" "  its own total (model load, read, forward, write)" "$(med score_own)" "$(rate "$(med score_own)")" "" "$(vals score_own)"
printf "$F" "psla features + score (two processes)" "$PSLA2" "$(rate "$PSLA2")" "" "$(vals psla2)"
if [ "$AUDIO_SCORE" = 1 ]; then
  printf "$F" "psla score on the wavs (one process)" "$(wall audio)" "$(rate "$(wall audio)")" "$(rss audio)" "$(runs audio) | $(loads audio)"
  printf "$F" "  its own total" "$(med audio_own)" "$(rate "$(med audio_own)")" "" "$(vals audio_own)"
fi
echo
echo "CPU seconds, user + system (median): PyTorch process $(cpu pytorch) (in-process loop $(med pt_cpu_seconds)), psla features + score $(med psla2cpu)$([ "$AUDIO_SCORE" = 0 ] || echo ", psla score on the wavs $(cpu audio)")"
echo "  of which system (median; minor page faults): PyTorch process $(sys pytorch) ($(faults pytorch)), PyTorch forward only $(sys forward) ($(faults forward)), psla score on the features $(sys score) ($(faults score))$([ "$AUDIO_SCORE" = 0 ] || echo ", psla score on the wavs $(sys audio) ($(faults audio))")"
echo
echo "PyTorch / psla, wall time:"
echo "  PyTorch's in-process loop / psla features + score (whole processes): ${RATIO}x; target 1.2x: $MET"
echo "  PyTorch's whole process / psla features + score: $(ratio "$PT_PROC" "$PSLA2")x"
if [ "$AUDIO_SCORE" = 1 ]; then
  echo "  PyTorch's in-process loop / psla score on the wavs: $(ratio "$PT_S" "$(wall audio)")x; whole process: $(ratio "$PT_PROC" "$(wall audio)")x"
else
  echo "  (this psla binary's score takes no audio INPUT: the one-command path was not measured)"
fi
echo "  PyTorch's forward alone / psla features + score: $(ratio "$FW_S" "$PSLA2")x (psla's whole path against PyTorch's forward alone)"
echo
echo "agreement (same model, same clips):"
echo "  PyTorch model vs PSLA's own saved outputs (B0 reference files): $REF_LINE"
echo "  psla features + score vs PyTorch end to end: $CMP"
[ -z "$CMP_AUDIO" ] || echo "  psla score on the wavs vs PyTorch end to end: $CMP_AUDIO"
echo "  (model_only: PyTorch's model on psla's features vs psla score on them; fbank: psla's vs torchaudio's log-mel)"

if [ "${PSLA_BENCH_KEEP_OUT:-0}" != 1 ]; then
  rm -f "$F_OUT" "$P_OUT" "$A_OUT" "$OUT_DIR/rejects.parquet" "$OUT_DIR/audio-rejects.parquet" "$PT_OUT" "$PT_OUT.ids"
fi
