#!/usr/bin/env python3
"""PSLA's balanced-sampling weights and one epoch of weighted draws in NumPy (the reference for
bench/sample.sh), and the check of psla's weights against it.

    sample_numpy.py run    --labels L --classes C --out W.parquet --draws-out D.parquet [--seed 1]
    sample_numpy.py check  --labels L --classes C --psla-weights W.parquet

run: reads the labels (pyarrow), then PSLA's gen_weight_file.py formula, vectorised:
    count[c]        = labels of class c             (np.bincount)
    label_weight[c] = 1000 / (count[c] + 0.01)
    weight[clip]    = sum of label_weight over the clip's labels   (np.bincount with weights)
one epoch: rng.choice(n, n, p=weight / weight.sum()) (with replacement: cumsum + searchsorted
inside numpy), and the per-class exposure of the draws (np.bincount); then writes the weights
(clip_id, weight, n_labels) and the draws (epoch, position, clip_id) as zstd Parquet, like psla.
Clip ids and mids are turned into integers with pyarrow's dictionary_encode (a hash, first
appearance order): NumPy has no fast string hashing, and this is what a NumPy user would do.
PSLA counts a repeated (clip, class) label twice; the benchmark's labels have no repeats.
Prints one JSON line of timings: read, encode, weights, draws (incl. exposure), write, and
compute = encode + weights + draws, total = all (in process: interpreter start and imports excluded).

check: recomputes the weights as above and compares psla's, clip by clip: prints the clip counts and
the max relative error |w_psla - w_numpy| / w_numpy.
"""

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def weights(labels_path, classes_path, t):
    t0 = time.perf_counter()
    tab = pq.read_table(labels_path, columns=["clip_id", "mid"])
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    vocab = pacsv.read_csv(classes_path).sort_by("index")["mid"].to_pylist()
    clip_enc = pc.dictionary_encode(tab["clip_id"]).combine_chunks()
    mid_enc = pc.dictionary_encode(tab["mid"]).combine_chunks()
    clip = clip_enc.indices.to_numpy()
    index = {m: i for i, m in enumerate(vocab)}
    mid_to_cls = np.array([index.get(m, -1) for m in mid_enc.dictionary.to_pylist()], dtype=np.int64)
    cls = mid_to_cls[mid_enc.indices.to_numpy()]
    known = cls >= 0
    if not known.all():  # PSLA would fail on a mid outside the vocabulary; psla skips it
        clip, cls = clip[known], cls[known]
    n = len(clip_enc.dictionary)
    t["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = np.bincount(cls, minlength=len(vocab))
    label_weight = 1000.0 / (count + 0.01)
    w = np.bincount(clip, weights=label_weight[cls], minlength=n)
    n_labels = np.bincount(clip, minlength=n).astype(np.int32)
    t["weights"] = time.perf_counter() - t0
    return clip_enc.dictionary, clip, cls, w, n_labels, len(vocab)


def run(args):
    t = {}
    started = time.perf_counter()
    ids, clip, cls, w, n_labels, n_classes = weights(args.labels, args.classes, t)
    n = len(w)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    draws = rng.choice(n, n, replace=True, p=w / w.sum())
    per_clip = np.bincount(draws, minlength=n)
    exposure = np.bincount(cls, weights=per_clip[clip], minlength=n_classes)
    t["draws"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pq.write_table(pa.table({"clip_id": ids, "weight": pa.array(w), "n_labels": pa.array(n_labels)}),
                   args.out, compression="zstd")
    pq.write_table(pa.table({"epoch": pa.array(np.zeros(n, dtype=np.int32)),
                             "position": pa.array(np.arange(n, dtype=np.int64)),
                             "clip_id": ids.take(pa.array(draws))}), args.draws_out, compression="zstd")
    t["write"] = time.perf_counter() - t0
    t["compute"] = t["encode"] + t["weights"] + t["draws"]
    t["total"] = time.perf_counter() - started
    out = {k: round(v, 3) for k, v in t.items()}
    out.update(clips=n, labels=int(len(clip)), weight_min=float(w.min()), weight_max=float(w.max()),
               exposure_sum=int(exposure.sum()))
    print(json.dumps(out))


def check(args):
    ids, _, _, w, n_labels, _ = weights(args.labels, args.classes, {})
    ps = pq.read_table(args.psla_weights)
    found = pc.index_in(ps["clip_id"], value_set=ids)
    missing = int(pc.sum(pc.is_null(found)).as_py() or 0)
    idx = np.asarray(pc.fill_null(found, -1).to_numpy(), dtype=np.int64)
    ok = idx >= 0
    wp = ps["weight"].to_numpy()
    rel = np.abs(wp[ok] - w[idx[ok]]) / w[idx[ok]]
    print(json.dumps({
        "clips_psla": ps.num_rows, "clips_numpy": len(w), "psla_clips_not_in_numpy": missing,
        "max_rel_error": float(rel.max()) if len(rel) else None,
        "n_labels_equal": bool((ps["n_labels"].to_numpy()[ok] == n_labels[idx[ok]]).all()),
        "weights_bit_equal": int((wp[ok] == w[idx[ok]]).sum()),
    }))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["run", "check"])
    ap.add_argument("--labels", required=True)
    ap.add_argument("--classes", required=True)
    ap.add_argument("--out")
    ap.add_argument("--draws-out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--psla-weights")
    args = ap.parse_args()
    run(args) if args.mode == "run" else check(args)


if __name__ == "__main__":
    main()
