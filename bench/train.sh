#!/usr/bin/env bash
# Benchmark (issue 6): PSLA's training step and eval forward on the CPU, psla against PSLA's PyTorch code,
# EfficientNet-B2 with 4 attention heads, 527 classes, batch 8, 1056 x 128 input, the same threads on both
# sides. Run from anywhere:  bench/train.sh [N_TRAIN_CLIPS]   (default 64)
#
#  0. set-up (cached): the venv of bench/features.sh + bench/score.sh (torch from ./dev's tree through a
#     .pth file, torchaudio 2.11.0, efficientnet_pytorch 0.7.1, ...); N + PSLA_BENCH_EVAL seeded 10 s 16 kHz
#     clips from bench/gen_clips.py (the clips features.sh and score.sh use: clip i is the same file
#     whatever the count); then, each invocation, a fresh run root: two AudioSet-style segment CSVs
#     (train_segments.csv: the first N clips, split `train`; eval_segments.csv: the next ones, split
#     `eval`), 1-3 labels per clip drawn (seeded) from class_labels_indices.csv, `psla ingest` with the
#     shared ontology and vocabulary, and the `features` stage through a one-stage pipeline TOML;
#  1. PyTorch (bench/train_pytorch.py with the recipe below, torch.set_num_threads(T)): PSLA's data set
#     (wav -> waveform mixup -> fbank -> SpecAugment -> normalise, in process), DataLoader, train-mode
#     forward, clamp, BCELoss, backward, Adam; samples/s per epoch, timed in process around each epoch's
#     loop (its first step, libtorch's set-up, included); then, in the same process, the eval-mode forward
#     under no_grad of all N + E clips (inputs precomputed, untimed);
#  2. psla: `psla train --root R --config bench/train_b2.toml --epochs EPOCHS --threads T --device cpu`
#     (OMP_NUM_THREADS=T); its train_metrics table gives each epoch's samples/s (the training loop only,
#     batches assembled ahead of the step, each clip read from the features Parquet when needed) and
#     seconds (the epoch with its evaluation on the E eval clips, metrics and checkpoint files); the
#     process's wall time too (reading the tables, building the model);
#  3. eval forward in fresh processes, both with psla's last checkpoint (PSLA's key names, so PyTorch loads
#     it): `psla score --checkpoint C F --batch-size B --device cpu` on the run root's features (all N + E
#     clips) and on the E eval clips alone: the rate from its own total (model load, Parquet read,
#     forward, write) and the marginal rate N / (total(all) - total(eval)), which leaves the fixed costs
#     out; and bench/score_pytorch.py `run C CLIPS --forward-only --batch-size B` (its forwards of the
#     same clips, timed in process; with and without the first batch).
#  1, 2 and 3 alternate, PSLA_BENCH_REPEAT times, medians reported. Before every timed run the script
#  waits until no compiler, test, psla stage or other benchmark is running (BUSY_RE below, this script's
#  own processes excepted); a run during which one ran, or other processes took more than
#  PSLA_BENCH_OTHER_CPU of its wall time in CPU (/proc/stat less the run's own CPU), is not counted and
#  is run again (PSLA_BENCH_RETRIES times at most; then kept and marked). `uptime` and the others' CPU
#  time are recorded with each figure.
#
# Environment:
#  PSLA_BIN            the psla binary [target/release/psla]
#  PSLA_BENCH_REPEAT   timed runs of each side, median reported [2]
#  PSLA_BENCH_EPOCHS   epochs per training run on both sides [2]
#  PSLA_BENCH_EVAL     eval clips (besides the N training clips) [16]
#  PSLA_BENCH_THREADS  threads on both sides [2]
#  PSLA_BENCH_RECIPE   the recipe TOML [bench/train_b2.toml]
#  PSLA_BENCH_DIR      clips and run root [${TMPDIR:-/tmp}/psla-bench-features, the clips of features.sh]
#  PSLA_BENCH_OTHER_CPU  others' CPU time during a run, as a fraction of its wall time, above which the
#                      run is repeated (if also above 1 s) [0.10]
#  PSLA_BENCH_RETRIES  tries of a run disturbed by other work before it is kept anyway [2]
#  PSLA_BENCH_NO_WAIT  1: neither wait for an idle machine nor repeat disturbed runs
#  GLIBC_TUNABLES      passed to both sides (and printed): e.g.
#                      glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 keeps freed
#                      tensor memory in the process (see bench/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

N=${1:-64}
REPEAT=${PSLA_BENCH_REPEAT:-2}
EPOCHS=${PSLA_BENCH_EPOCHS:-2}
EVAL_N=${PSLA_BENCH_EVAL:-16}
THREADS=${PSLA_BENCH_THREADS:-2}
RECIPE=${PSLA_BENCH_RECIPE:-$ROOT/bench/train_b2.toml}
SEED=1
PSLA=${PSLA_BIN:-$ROOT/target/release/psla}
CACHE_DIR="${PSLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/psla}"   # as ./dev computes it
DATA_DIR=${PSLA_BENCH_DIR:-${TMPDIR:-/tmp}/psla-bench-features}
AUDIOSET=$ROOT/../shared/data/audioset
CORES=$(nproc)

# torch: the version and the pip --target tree that ./dev installs libtorch from.
TORCH_VERSION=$(sed -n 's/^TORCH_VERSION=\([0-9.]*\).*/\1/p' "$ROOT/dev")
TORCH_TREE="$CACHE_DIR/torch-$TORCH_VERSION"
# The venv of bench/features.sh and bench/score.sh (keep in step with them).
TORCHAUDIO_VERSION=2.11.0
BENCH_PACKAGES="torchaudio==$TORCHAUDIO_VERSION(--no-deps) soundfile==0.14.0 numpy==2.4.6"
SCORE_PACKAGES="efficientnet_pytorch==0.7.1(--no-deps) safetensors==0.8.0(--no-deps) pyarrow==26.0.1"

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $N =~ ^[1-9][0-9]*$ ]] || die "usage: bench/train.sh [N_TRAIN_CLIPS]  (a positive integer, got '$N')"
for v in REPEAT EPOCHS EVAL_N THREADS; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"; done
[ -f "$RECIPE" ] || die "no recipe at $RECIPE"
[ -x "$PSLA" ] || die "no psla binary at $PSLA: run ./dev build first (or set PSLA_BIN)"
if ! "$PSLA" --version >/dev/null 2>&1; then
  eval "$(./dev env)"   # libtorch's lib folder on LD_LIBRARY_PATH
  "$PSLA" --version >/dev/null || die "$PSLA does not start"
fi
for f in class_labels_indices.csv ontology.json balanced_train_segments.csv; do
  [ -f "$AUDIOSET/$f" ] || die "no $AUDIOSET/$f (the shared AudioSet metadata)"
done
[ -x /usr/bin/time ] || die "bench/train.sh needs /usr/bin/time (Debian package time)"

# ---------------------------------------------------------------- the reference Python environment
VENV="$CACHE_DIR/bench-venv"
PY="$VENV/bin/python"
# As bench/features.sh's and bench/score.sh's ensure_venv (the same venv, the same stamp).
ensure_venv() {
  [ -f "$TORCH_TREE/torch/__init__.py" ] || die "no torch tree at $TORCH_TREE: run ./dev build first (it installs torch $TORCH_VERSION there)"
  local stamp="$VENV/.psla-bench" want="$BENCH_PACKAGES torch=$TORCH_TREE"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
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
# As bench/score.sh's ensure_score_packages (the same stamp).
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
TOTAL=$(( N + EVAL_N ))
mkdir -p "$DATA_DIR"
CLIPS="$DATA_DIR/clips-$TOTAL"
if [ ! -f "$CLIPS/.complete" ]; then
  # clip i is the same file whatever the count: link those of a smaller set already made
  for have in "$DATA_DIR"/clips-*; do
    k=${have##*-}
    if [[ $k =~ ^[0-9]+$ ]] && [ "$k" -lt "$TOTAL" ] && [ -f "$have/.complete" ] && [ "$(cat "$have/.complete")" = "count=$k " ]; then
      mkdir -p "$CLIPS"
      nice -n 10 "$PY" "$ROOT/bench/gen_clips.py" "$CLIPS" "$k" --link-from "$have"
      break
    fi
  done
fi
gen "$CLIPS" "$TOTAL"

# ---------------------------------------------------------------- the run root
WORK="$DATA_DIR/train"
RUN="$WORK/root-$N-$EVAL_N"
rm -rf "$RUN"
mkdir -p "$RUN/csv"
log "run root $RUN: segment CSVs ($N train, $EVAL_N eval clips, seeded labels), psla ingest, features"
"$PY" - "$AUDIOSET/class_labels_indices.csv" "$RUN/csv" "$N" "$EVAL_N" "$SEED" <<'EOF'
import csv, random, sys
vocab_csv, out, n, e, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mids = [r["mid"] for r in csv.DictReader(open(vocab_csv, newline=""))]
rng = random.Random(seed)
for name, ids in (("train", range(n)), ("eval", range(n, n + e))):
    rows = [(f"clip_{i:05d}", rng.sample(mids, rng.randint(1, 3))) for i in ids]
    with open(f"{out}/{name}_segments.csv", "w") as f:  # AudioSet's three header lines
        f.write("# Segments csv created by bench/train.sh (random labels, seed %d)\n" % seed)
        f.write("# num_ytids=%d, num_segs=%d, num_unique_labels=%d, num_positive_labels=%d\n"
                % (len(rows), len(rows), len({m for _, ms in rows for m in ms}), sum(len(ms) for _, ms in rows)))
        f.write("# YTID, start_seconds, end_seconds, positive_labels\n")
        for clip, ms in rows:
            f.write(f'{clip}, 0.000, 10.000, "{",".join(ms)}"\n')
EOF
"$PSLA" ingest --segments "$RUN/csv/train_segments.csv" --segments "$RUN/csv/eval_segments.csv" \
  --classes "$AUDIOSET/class_labels_indices.csv" --ontology "$AUDIOSET/ontology.json" --audio "$CLIPS" \
  --out "$RUN" > "$RUN/ingest.log" 2>&1 || { cat "$RUN/ingest.log" >&2; die "psla ingest failed"; }
grep -q ' 0 clips without audio' "$RUN/ingest.log" || { cat "$RUN/ingest.log" >&2; die "psla ingest: clips without audio"; }
cat > "$RUN/features.toml" <<EOF
# bench/train.sh: the features stage alone, over the clips table psla ingest wrote.
[pipeline]
name = "bench_train_features"
inputs = ["clips"]

[stage.features]
sample_rate = 16000
threads = $THREADS
EOF
"$PSLA" run "$RUN/features.toml" --root "$RUN" > "$RUN/features.log" 2>&1 || { cat "$RUN/features.log" >&2; die "psla features failed"; }
grep -q ' 0 rejects' "$RUN/features.log" || { cat "$RUN/features.log" >&2; die "psla features rejected clips"; }
# One features file of all clips and one of the eval clips, for psla score.
F_ALL="$WORK/features-all.parquet"
F_EVAL="$WORK/features-eval.parquet"
rm -f "$F_ALL" "$F_EVAL"
"$PSLA" sql "SELECT * FROM features ORDER BY clip_id" --root "$RUN" --out "$F_ALL" >/dev/null
"$PSLA" sql "SELECT f.* FROM features f JOIN clips c ON f.clip_id = c.clip_id WHERE c.split = 'eval' ORDER BY f.clip_id" \
  --root "$RUN" --out "$F_EVAL" >/dev/null

# The recipe's figures, for the report and for psla score's batch.
read -r ARCH HEADS FRAMES BATCH EVAL_BATCH AUG <<<"$("$PY" - "$RECIPE" <<'EOF'
import sys, tomllib
r = tomllib.load(open(sys.argv[1], "rb"))
g, d = r["augment"], r["data"]
aug = f"freqm={g.get('freqm', 0)},timem={g.get('timem', 0)},mixup={g.get('mixup', 0)},alpha={g.get('mixup_alpha', 10.0)},{g.get('mixup_domain', 'mel')}"
print(r["model"]["arch"], r["model"]["heads"], r["input"]["target_frames"], d["batch_size"], d.get("eval_batch_size", d["batch_size"]), aug)
EOF
)"

# ---------------------------------------------------------------- measuring
OUT_DIR="$WORK/out"
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
BUSY_RE='cargo |rustc|score_pytorch|bench/score.sh|bench/features.sh|psla (run|demo|train|score|features)'
# others_busy: prints one matching command line and succeeds when a process matching BUSY_RE runs that is
# not this script's own (its psla train and psla score match the pattern too).
others_busy() {
  local pid p
  for pid in $(pgrep -f "$BUSY_RE" || true); do
    p=$pid
    while [ -n "$p" ] && [ "$p" -gt 1 ] && [ "$p" != $$ ]; do p=$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' '); done
    if [ "$p" != $$ ] && [ -d "/proc/$pid" ]; then ps -o args= -p "$pid" | cut -c1-80; return 0; fi
  done
  return 1
}
WAITED=0
wait_idle() {
  [ "${PSLA_BENCH_NO_WAIT:-0}" = 1 ] && return
  local waited=0 what
  while what=$(others_busy); do
    [ "$waited" = 1 ] || log "waiting for the machine to be idle: $what"
    waited=1
    sleep 20
    WAITED=$(( WAITED + 20 ))
  done
  [ "$waited" = 0 ] || log "idle now: $(uptime)"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
cpu_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }   # all cores, clock ticks
TICK=$(getconf CLK_TCK)
OTHER_MAX=${PSLA_BENCH_OTHER_CPU:-0.10}
# measure NAME CMD...: run CMD; "wall_seconds peak_rss_kb cpu_seconds other_cpu_seconds" to NAME.runs, its
# stdout to NAME.runs.out, stderr to NAME.runs.err, `uptime` after it to NAME.runs.uptime. Other work
# during the run is looked for two ways: a watcher checks for BUSY_RE's processes every 5 s, and the
# machine's busy CPU time (/proc/stat) less the run's own (user + system of its process tree) is the CPU
# time others took. If a watched process ran, or others took more than OTHER_MAX of the wall time (and
# more than 1 s),
# nothing is recorded and measure returns 2 (unless FORCE=1).
measure() {
  local res="$OUT_DIR/$1.runs"; shift
  local t0 t1 b0 b1 usage own other watcher flag="$OUT_DIR/contended" why=""
  rm -f "$flag"
  ( while :; do others_busy > "$flag.now" && mv "$flag.now" "$flag"; sleep 5; done ) &
  watcher=$!
  b0=$(cpu_busy); t0=$(date +%s%N)
  /usr/bin/time -v -o "$res.time" "$@" >"$res.out" 2>"$res.err" || { kill "$watcher"; cat "$res.err" >&2; die "failed: $*"; }
  t1=$(date +%s%N); b1=$(cpu_busy)
  kill "$watcher"; wait "$watcher" 2>/dev/null || true
  rm -f "$flag.now"
  usage=$(awk -F': *' '/Maximum resident set size/ {rss = $2} /User time \(seconds\)/ {u = $2}
                       /System time \(seconds\)/ {s = $2} END {print rss, u + s}' "$res.time")
  own=${usage#* }
  other=$(awk -v b="$(( b1 - b0 ))" -v t="$TICK" -v o="$own" 'BEGIN {x = b / t - o; printf "%.2f", (x > 0) ? x : 0}')
  [ ! -s "$flag" ] || why="$(head -1 "$flag")"
  if awk -v x="$other" -v w="$(( (t1 - t0) / 1000000 ))" -v m="$OTHER_MAX" 'BEGIN {exit !(x > 1 && x > m * w / 1000)}'; then
    why="${why:+$why; }other processes took $other CPU s"
  fi
  if [ -n "$why" ] && [ "${PSLA_BENCH_NO_WAIT:-0}" != 1 ] && [ "${FORCE:-0}" != 1 ]; then
    log "other work ran during this run ($why): not counted, run again"
    echo "$(date -u +%H:%M:%S) $(basename "$res" .runs): $why" >> "$OUT_DIR/contended.log"
    return 2
  fi
  echo "$(( (t1 - t0) / 1000 )) $usage $other" | awk '{printf "%.3f %d %.2f %.2f\n", $1 / 1e6, $2, $3, $4}' >> "$res"
  echo "$(uptime | sed 's/^ *//'); others' CPU during the run $other s${why:+ (CONTENDED: $why)}" >> "$res.uptime"
}
RETRIES=${PSLA_BENCH_RETRIES:-2}
# [PRE=CMD] timed NAME CMD...: wait for an idle machine, PRE (untimed), measure; again (RETRIES times at
# most) while other work ran meanwhile; the last try is kept whatever happened, marked in its uptime line.
timed() {
  local try
  for try in $(seq "$RETRIES"); do
    wait_idle
    eval "${PRE:-:}"
    if measure "$@"; then return 0; fi
  done
  wait_idle
  eval "${PRE:-:}"
  FORCE=1 measure "$@"
}
kv() { tail -1 "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }           # kv FILE KEY: KEY=... of FILE's last line
kv_line() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
keep() { echo "$2" >> "$OUT_DIR/$1.vals"; }
last() { tail -1 "$OUT_DIR/$1.runs" | cut -d' ' -f1; }
up() { tail -1 "$OUT_DIR/$1.runs.uptime"; }
score_own() { grep '^score:' "$1" | tail -1 | sed -n 's/.* in \([0-9.]*\) s -> .*/\1/p'; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
binary() { echo "$("$PSLA" --version) ($(stat -c %y "$PSLA" | cut -d. -f1))"; }
BIN_BEFORE=$(binary)
log "machine: $CORES cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load $LOAD_BEFORE${GLIBC_TUNABLES:+; GLIBC_TUNABLES=$GLIBC_TUNABLES}"
log "$N train + $EVAL_N eval clips; $ARCH, $HEADS heads, 527 classes, $FRAMES frames, batch $BATCH, $AUG; $EPOCHS epochs, $THREADS threads, $REPEAT runs of each side, alternating"
BENCH_START=$(date +%s)
for r in $(seq "$REPEAT"); do
  # 1. PyTorch: training, then the eval forward in the same (warm) process
  timed pytorch "$PY" "$ROOT/bench/train_pytorch.py" --recipe "$RECIPE" --epochs "$EPOCHS" --threads "$THREADS" --seed "$SEED" \
    --clips "$CLIPS" --segments "$RUN/csv/train_segments.csv" --eval-segments "$RUN/csv/eval_segments.csv" \
    --classes "$AUDIOSET/class_labels_indices.csv"
  L="$OUT_DIR/pytorch.runs.out"
  grep '^epoch=' "$L" | while read -r line; do
    echo "$(kv_line "$line" epoch) $(kv_line "$line" samples_per_s) $(kv_line "$line" seconds) $(kv_line "$line" data_s) $(kv_line "$line" first_step_s)" >> "$OUT_DIR/pt_epochs.vals"
  done
  for k in samples_per_s eval_samples_per_s eval_warm_samples_per_s eval_first_batch_s; do keep "pt_$k" "$(kv "$L" "$k")"; done
  echo "  [$r] PyTorch: train $(kv "$L" samples_per_s) samples/s (epochs $(kv "$L" epoch_samples_per_s)), eval forward after training $(kv "$L" eval_samples_per_s) samples/s ($(kv "$L" eval_warm_samples_per_s) without the first batch); process $(last pytorch) s; $(up pytorch)" >&2

  # 2. psla train (its evaluation after each epoch on the eval clips, in the same process)
  PRE='rm -rf "$RUN/models/bench"' timed train env OMP_NUM_THREADS="$THREADS" "$PSLA" train --root "$RUN" --config "$RECIPE" --name bench \
    --epochs "$EPOCHS" --threads "$THREADS" --device cpu --seed "$SEED"
  T_LINE=$(grep '^train:' "$OUT_DIR/train.runs.err" | tail -1)
  [ -n "$T_LINE" ] || { cat "$OUT_DIR/train.runs.err" >&2; die "psla train printed no summary"; }
  keep train_own "$(sed -n 's/.*; \([0-9.]*\) s$/\1/p' <<<"$T_LINE")"
  # epoch, samples/s, seconds (the epoch with its evaluation and checkpoint), training loop s (N / samples/s)
  "$PSLA" sql "SELECT epoch, samples_per_s, seconds FROM train_metrics WHERE model = 'bench' ORDER BY epoch" --root "$RUN" --format csv \
    | tail -n +2 | awk -F, -v n="$N" '{printf "%d %.4f %.3f %.3f\n", $1, $2, $3, n / $2}' > "$OUT_DIR/train_metrics.$r"
  [ "$(wc -l < "$OUT_DIR/train_metrics.$r")" = "$EPOCHS" ] || { cat "$OUT_DIR/train.runs.err" >&2; die "train_metrics has not $EPOCHS rows"; }
  cat "$OUT_DIR/train_metrics.$r" >> "$OUT_DIR/psla_epochs.vals"
  # the run's samples/s: all epochs' samples over all epochs' training loops (as PyTorch's)
  keep psla_samples_per_s "$(awk -v n="$N" '{s += $4; c += n} END {printf "%.4f", c / s}' "$OUT_DIR/train_metrics.$r")"
  # eval after training (the last epoch's seconds beyond its loop: eval forward, metrics, checkpoint files)
  keep psla_eval_warm "$(tail -1 "$OUT_DIR/train_metrics.$r" | awk -v e="$EVAL_N" '{printf "%.4f", e / ($3 - $4)}')"
  echo "  [$r] psla train: $(awk '{printf "epoch %d %.3f samples/s (epoch %.1f s, of which eval + checkpoint %.1f s); ", $1, $2, $3, $3 - $4}' "$OUT_DIR/train_metrics.$r")process $(last train) s; $(up train)" >&2

  # 3. eval forward in fresh processes, the last checkpoint of psla's run on both sides
  CKPT="$RUN/models/bench/$(printf 'epoch-%02d.safetensors' "$EPOCHS")"
  PRE='rm -f "$OUT_DIR/p-all.parquet"' timed score_all env OMP_NUM_THREADS="$THREADS" "$PSLA" score --checkpoint "$CKPT" "$F_ALL" \
    --out "$OUT_DIR/p-all.parquet" --batch-size "$EVAL_BATCH" --device cpu
  PRE='rm -f "$OUT_DIR/p-eval.parquet"' timed score_eval env OMP_NUM_THREADS="$THREADS" "$PSLA" score --checkpoint "$CKPT" "$F_EVAL" \
    --out "$OUT_DIR/p-eval.parquet" --batch-size "$EVAL_BATCH" --device cpu
  S_ALL=$(score_own "$OUT_DIR/score_all.runs.err"); S_EVAL=$(score_own "$OUT_DIR/score_eval.runs.err")
  [ -n "$S_ALL" ] && [ -n "$S_EVAL" ] || { cat "$OUT_DIR/score_all.runs.err" "$OUT_DIR/score_eval.runs.err" >&2; die "psla score printed no summary"; }
  keep score_rate "$(awk -v n="$TOTAL" -v s="$S_ALL" 'BEGIN {printf "%.4f", n / s}')"
  keep score_marginal "$(awk -v n="$N" -v a="$S_ALL" -v b="$S_EVAL" 'BEGIN {printf "%.4f", (a > b) ? n / (a - b) : 0}')"
  echo "  [$r] psla score: $TOTAL clips in $S_ALL s ($(tail -1 "$OUT_DIR/score_rate.vals") clips/s own total), $EVAL_N in $S_EVAL s: marginal $(tail -1 "$OUT_DIR/score_marginal.vals") clips/s; $(up score_all)" >&2
  # PyTorch's forward of the same checkpoint (PSLA key names) on the same clips: score_pytorch.py --forward-only
  timed forward "$PY" "$ROOT/bench/score_pytorch.py" run "$CKPT" "$CLIPS" --batch-size "$EVAL_BATCH" --threads "$THREADS" --forward-only
  L="$OUT_DIR/forward.runs.out"
  keep fw_rate "$(kv "$L" clips_per_s)"
  keep fw_warm "$(awk -v n="$TOTAL" -v b="$EVAL_BATCH" -v s="$(kv "$L" seconds)" -v f="$(kv "$L" first_batch_s)" 'BEGIN {printf "%.4f", (n - b) / (s - f)}')"
  echo "  [$r] PyTorch forward, fresh process: $(kv "$L" clips_per_s) clips/s ($(tail -1 "$OUT_DIR/fw_warm.vals") without the first batch); $(up forward)" >&2
done
BENCH_SECONDS=$(( $(date +%s) - BENCH_START ))
BIN_AFTER=$(binary)
[ "$BIN_AFTER" = "$BIN_BEFORE" ] || log "warning: $PSLA changed during the benchmark ($BIN_BEFORE -> $BIN_AFTER)"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
med() { median < "$OUT_DIR/$1.vals"; }
vals() { tr '\n' ' ' < "$OUT_DIR/$1.vals" | sed 's/ $//'; }
col_med() { awk -v e="$2" -v c="$3" '$1 == e {print $c}' "$OUT_DIR/$1.vals" | median; }
col_vals() { awk -v e="$2" -v c="$3" '$1 == e {printf "%s%s", sep, $c; sep = " "}' "$OUT_DIR/$1.vals"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
met() { awk -v r="$1" 'BEGIN {print (r >= 1.0) ? "MET" : "NOT MET"}'; }
wall() { cut -d' ' -f1 "$OUT_DIR/$1.runs" | median; }
cpu() { cut -d' ' -f3 "$OUT_DIR/$1.runs" | median; }
rss() { cut -d' ' -f2 "$OUT_DIR/$1.runs" | sort -n | tail -1 | awk '{printf "%.0f MiB", $1 / 1024}'; }
sys_share() { awk -F': *' '/User time/ {u = $2} /System time/ {s = $2} /Minor .*page faults/ {f = $2} END {printf "%.0f%% system, %.1fM minor faults", 100 * s / (u + s), f / 1e6}' "$OUT_DIR/$1.runs.time"; }

PT_TRAIN=$(med pt_samples_per_s); PSLA_TRAIN=$(med psla_samples_per_s)
PT_E2=$(col_med pt_epochs "$EPOCHS" 2); PSLA_E2=$(col_med psla_epochs "$EPOCHS" 2)
PT_EVAL_WARM=$(med pt_eval_samples_per_s); PSLA_EVAL_WARM=$(med psla_eval_warm)
FW=$(med fw_rate); FW_W=$(med fw_warm); PSLA_EVAL=$(med score_rate); PSLA_EVAL_M=$(med score_marginal)
R_TRAIN=$(ratio "$PSLA_TRAIN" "$PT_TRAIN"); R_E2=$(ratio "$PSLA_E2" "$PT_E2")
R_WARM=$(ratio "$PSLA_EVAL_WARM" "$PT_EVAL_WARM"); R_EVAL=$(ratio "$PSLA_EVAL" "$FW"); R_EVAL_M=$(ratio "$PSLA_EVAL_M" "$FW_W")

echo
echo "train benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'): $ARCH, $HEADS attention heads, 527 classes, $FRAMES x 128 input, batch $BATCH;"
echo "augmentation $AUG (PyTorch mixes waveforms as PSLA's loader, psla as its recipe says); Adam (0.95, 0.999), weight decay 5e-7;"
echo "$N train clips x $EPOCHS epochs; eval forward on $TOTAL clips (batch $EVAL_BATCH); $THREADS threads each side, CPU; median of $REPEAT alternating runs"
echo "$CORES cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)); load average (1, 5, 15 min): $LOAD_BEFORE before, $LOAD_AFTER after; timed part $BENCH_SECONDS s (of which ~$WAITED s waiting for other work)${GLIBC_TUNABLES:+; GLIBC_TUNABLES=$GLIBC_TUNABLES}"
echo "psla: $BIN_BEFORE$([ "$BIN_AFTER" = "$BIN_BEFORE" ] || echo ", REPLACED during the run by $BIN_AFTER")"
echo
F='%-86s %9s  %s\n'
printf "$F" "run" "samples/s" "per run"
printf "$F" "PyTorch train, all epochs (data loading in process included)" "$PT_TRAIN" "$(vals pt_samples_per_s)"
for e in $(seq "$EPOCHS"); do
  printf "$F" "  epoch $e (its first step s: $(col_vals pt_epochs "$e" 5); waiting for data s: $(col_vals pt_epochs "$e" 4))" "$(col_med pt_epochs "$e" 2)" "$(col_vals pt_epochs "$e" 2)"
done
printf "$F" "psla train, all epochs (train_metrics: the epochs' training loops)" "$PSLA_TRAIN" "$(vals psla_samples_per_s)"
for e in $(seq "$EPOCHS"); do
  printf "$F" "  epoch $e" "$(col_med psla_epochs "$e" 2)" "$(col_vals psla_epochs "$e" 2)"
done
printf "$F" "PyTorch eval forward after training, same process ($TOTAL clips)" "$PT_EVAL_WARM" "$(vals pt_eval_samples_per_s)"
printf "$F" "psla eval after training, same process ($EVAL_N clips; + metrics, checkpoint files)" "$PSLA_EVAL_WARM" "$(vals psla_eval_warm)"
printf "$F" "PyTorch forward, fresh process (score_pytorch.py --forward-only, psla's checkpoint)" "$FW" "$(vals fw_rate)"
printf "$F" "  without its first batch" "$FW_W" "$(vals fw_warm)"
printf "$F" "psla score, fresh process: own total (model load, Parquet read, forward, write)" "$PSLA_EVAL" "$(vals score_rate)"
printf "$F" "  marginal: $N / (total($TOTAL clips) - total($EVAL_N clips))" "$PSLA_EVAL_M" "$(vals score_marginal)"
echo
echo "uptime after each run, and the CPU time other processes took during it:"
for r in $(seq "$REPEAT"); do
  for name in pytorch train score_all forward; do
    printf '  [%d] %-8s %s\n' "$r" "$name" "$(sed -n "${r}p" "$OUT_DIR/$name.runs.uptime")"
  done
done
echo
echo "psla per epoch (median s): $(for e in $(seq "$EPOCHS"); do printf 'epoch %d: %.1f s, of which training loop %.1f s, eval on %d clips + metrics + checkpoint %.1f s; ' \
  "$e" "$(col_med psla_epochs "$e" 3)" "$(col_med psla_epochs "$e" 4)" "$EVAL_N" "$(awk -v a="$(col_med psla_epochs "$e" 3)" -v b="$(col_med psla_epochs "$e" 4)" 'BEGIN {print a - b}')"; done)"
echo "whole processes, median wall s / CPU s / peak RSS (last run's CPU split):"
echo "  PyTorch train + eval  $(wall pytorch) / $(cpu pytorch) / $(rss pytorch) ($(sys_share pytorch))"
echo "  psla train            $(wall train) / $(cpu train) / $(rss train) ($(sys_share train)); its own total $(med train_own) s"
echo "  PyTorch forward       $(wall forward) / $(cpu forward) / $(rss forward) ($(sys_share forward))"
echo "  psla score ($TOTAL clips) $(wall score_all) / $(cpu score_all) / $(rss score_all) ($(sys_share score_all))"
echo
[ ! -f "$OUT_DIR/contended.log" ] || { echo "runs repeated because other work ran during them:"; sed 's/^/  /' "$OUT_DIR/contended.log"; echo; }
echo "psla / PyTorch (target: at least 1; the issue's anchors: PyTorch 2.60 samples/s train, 17.05 eval):"
echo "  train, all epochs:                                                     ${R_TRAIN}x  $(met "$R_TRAIN")"
echo "  train, epoch $EPOCHS alone (first epoch's one-off set-up left out):            ${R_E2}x  $(met "$R_E2")"
echo "  eval after training, same process (psla's incl. metrics + checkpoint): ${R_WARM}x  $(met "$R_WARM")"
echo "  eval, fresh processes, psla score's own total / PyTorch's forwards:    ${R_EVAL}x  $(met "$R_EVAL")"
echo "  eval, fresh processes, marginal / PyTorch without its first batch:     ${R_EVAL_M}x  $(met "$R_EVAL_M")"
