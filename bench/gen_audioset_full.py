#!/usr/bin/env python3
"""Deterministic AudioSet-full-scale labels and teacher scores for the label / sample benchmarks.

    gen_audioset_full.py OUT_DIR [--clips 2041789] [--seed 1] [--chunk-clips 2000] [--labels-only]

Writes, under OUT_DIR:
  labels.parquet          (clip_id string, mid string): every clip's label set, drawn with
                          replacement from the REAL label sets of the balanced train segments
                          (../shared/reference/label_stage/labels.parquet, 22,160 clips, 52,882
                          labels): about 2.39 labels per clip, ~4.87M labels at full scale.
  teacher_scores.parquet  (clip_id string, mid string, score float): every clip x every class of
                          class_labels_indices.csv (527), 1.076 billion rows at full scale, zstd,
                          one row group per --chunk-clips clips (2,000 clips = 1,054,000 rows),
                          clips in clip_id order, classes in vocabulary-index order.
  labels.json             the parameters and the label counts; written right after labels.parquet.
  params.json             the parameters, sizes and generation time; written last, so its presence
                          with the same parameters means the data is complete (the caller's cache).

--labels-only stops after labels.parquet and labels.json (bench/sample.sh needs no scores). The
labels do not depend on the scores: a later full run with the same parameters draws the same labels
(the same random stream, in the same order) and keeps labels.parquet when labels.json matches.

Clip ids are unique 11-character YouTube-like ids (A-Z a-z 0-9 - _), seeded and sorted.

Scores, like the reference teacher (see ../shared/README.md): hidden "true" labels are the clip's
labels plus each in-vocabulary child (of a non-abstract labeled parent) and ancestor (through
non-abstract parents) of its labels with probability --p-hidden (0.25); true cells score
Beta(4, 2), the others Beta(0.6, 12), 0.2% of cells are uniform noise; every score is rounded to 4
decimals, then float32. Beta draws go through a quantised inverse CDF: a 2^20-entry table built from
a seeded sample of the distribution (already rounded), indexed by uniform integers, which is ~50x
cheaper than numpy's beta sampler at a billion draws and gives the same 4-decimal distribution
(to 1 / 2^20 in the tails). Memory stays bounded by one chunk (a few tens of MB).

The clip-id and score columns are written as Arrow dictionary arrays (the Parquet file is then what
a writer of plain strings would produce with dictionary encoding, without materialising a billion
Python/Arrow strings) and the Arrow schema is not stored, so every reader sees plain strings.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
FULL_CLIPS = 2_041_789
VERSION = 1  # bump when the generated data changes
TABLE_BITS = 20
ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)


def beta_table(rng, a, b, bits=TABLE_BITS, sample=8_000_000):
    """Quantised inverse CDF of Beta(a, b): table[k] ~ the (k + 0.5) / 2^bits quantile, rounded
    to 4 decimals, float32."""
    x = np.sort(rng.beta(a, b, size=sample))
    q = (np.arange(1 << bits, dtype=np.float64) + 0.5) / (1 << bits)
    return np.round(x[np.minimum((q * sample).astype(np.int64), sample - 1)], 4).astype(np.float32)


def clip_ids(rng, n):
    """n unique sorted 11-character ids."""
    while True:
        raw = ALPHABET[rng.integers(0, 64, size=(n, 11), dtype=np.uint8)]
        ids = np.unique(raw.view("S11").ravel())
        if len(ids) == n:
            return ids
        # a collision (p ~ 1e-8 at 2M ids): draw again, still deterministic


def ontology_related(ontology_path, mids):
    """R[i, j] = class j is a Type I child or a Type II ancestor of class i (vocabulary indexes)."""
    onto = {o["id"]: o for o in json.load(open(ontology_path))}
    index = {m: i for i, m in enumerate(mids)}
    abstract = {k for k, o in onto.items() if o.get("restrictions") == ["abstract"]}
    parents = {}
    for k, o in onto.items():
        for c in o.get("child_ids", []):
            parents.setdefault(c, set()).add(k)
    r = np.zeros((len(mids), len(mids)), dtype=np.float32)
    for m, i in index.items():
        o = onto.get(m)
        if o is None:
            continue
        if m not in abstract:  # Type I: children of a non-abstract label
            for c in o.get("child_ids", []):
                if c in index:
                    r[i, index[c]] = 1
        seen, stack = set(), [m]  # Type II: ancestors through non-abstract parents
        while stack:
            for p in parents.get(stack.pop(), ()):
                if p not in abstract and p not in seen:
                    seen.add(p)
                    stack.append(p)
        for p in seen:
            if p in index:
                r[i, index[p]] = 1
    np.fill_diagonal(r, 0)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--clips", type=int, default=FULL_CLIPS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk-clips", type=int, default=2000, help="clips per teacher row group")
    ap.add_argument("--p-hidden", type=float, default=0.25)
    ap.add_argument("--noise", type=float, default=0.002)
    ap.add_argument("--labels-src", default=os.path.join(SHARED, "reference/label_stage/labels.parquet"))
    ap.add_argument("--classes", default=os.path.join(SHARED, "data/audioset/class_labels_indices.csv"))
    ap.add_argument("--ontology", default=os.path.join(SHARED, "data/audioset/ontology.json"))
    ap.add_argument("--labels-only", action="store_true", help="write labels.parquet (and labels.json) only")
    args = ap.parse_args()
    params = {
        "version": VERSION, "clips": args.clips, "seed": args.seed, "chunk_clips": args.chunk_clips,
        "p_hidden": args.p_hidden, "noise": args.noise,
        "labels_src": os.path.abspath(args.labels_src), "classes": os.path.abspath(args.classes),
        "ontology": os.path.abspath(args.ontology),
    }
    # what the labels depend on (the scores come later from the same random stream)
    label_params = {k: params[k] for k in ("version", "clips", "seed", "labels_src", "classes")}
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = os.path.join(args.out_dir, "params.json")
    label_stamp = os.path.join(args.out_dir, "labels.json")

    def stamped(path, want):
        return os.path.exists(path) and json.load(open(path)).get("params") == want

    if stamped(stamp, params) or (args.labels_only and stamped(label_stamp, label_params)):
        print(f"cached: {args.out_dir}", file=sys.stderr)
        return
    labels_cached = stamped(label_stamp, label_params)
    for path in (stamp, label_stamp) if not labels_cached else (stamp,):
        if os.path.exists(path):
            os.remove(path)
    started = time.time()

    mids = pacsv.read_csv(args.classes).sort_by("index")["mid"].to_pylist()
    n_classes = len(mids)
    index = {m: i for i, m in enumerate(mids)}
    related = ontology_related(args.ontology, mids)

    # the real label sets, one per source clip, as vocabulary indexes in their stored order
    src = pq.read_table(args.labels_src, columns=["clip_id", "mid"])
    src_clip = src["clip_id"].to_pylist()
    src_mid = src["mid"].to_pylist()
    sets, order = {}, []
    for c, m in zip(src_clip, src_mid):
        if m not in index:
            raise SystemExit(f"{args.labels_src}: label {m} is not in {args.classes}")
        if c not in sets:
            sets[c] = []
            order.append(c)
        if index[m] not in sets[c]:
            sets[c].append(index[m])
    set_len = np.array([len(sets[c]) for c in order], dtype=np.int64)
    set_off = np.concatenate([[0], np.cumsum(set_len)])
    set_mid = np.array([i for c in order for i in sets[c]], dtype=np.int32)

    rng = np.random.default_rng(args.seed)
    ids = clip_ids(rng, args.clips)
    pick = rng.integers(0, len(order), size=args.clips)
    n_lab = set_len[pick]
    lab_off = np.concatenate([[0], np.cumsum(n_lab)])
    total_labels = int(lab_off[-1])
    # label k of clip i: set_mid[set_off[pick[i]] + (k - lab_off[i])]
    lab_clip = np.repeat(np.arange(args.clips, dtype=np.int64), n_lab)
    lab_mid = set_mid[np.repeat(set_off[pick], n_lab) + (np.arange(total_labels) - np.repeat(lab_off[:-1], n_lab))]

    # labels.parquet: plain strings
    id_array = pa.array(ids, type=pa.binary(11)).cast(pa.string())
    mid_array = pa.array(mids, type=pa.string())
    lab_path = os.path.join(args.out_dir, "labels.parquet")
    if not labels_cached:
        labels = pa.table({"clip_id": id_array.take(pa.array(lab_clip)), "mid": mid_array.take(pa.array(lab_mid))})
        pq.write_table(labels, lab_path + ".partial", compression="zstd")
        os.replace(lab_path + ".partial", lab_path)
        del labels
        with open(label_stamp + ".partial", "w") as f:
            json.dump({"params": label_params, "labels_rows": total_labels, "clips": args.clips,
                       "labels_bytes": os.path.getsize(lab_path),
                       "generation_s": round(time.time() - started, 1)}, f, indent=1)
        os.replace(label_stamp + ".partial", label_stamp)
        print(f"labels: {args.clips:,} clips, {total_labels:,} labels -> {lab_path}", file=sys.stderr)
    if args.labels_only:
        return
    t_neg = beta_table(rng, 0.6, 12)
    t_pos = beta_table(rng, 4, 2)

    # teacher_scores.parquet, chunk by chunk
    schema = pa.schema([("clip_id", pa.dictionary(pa.int32(), pa.string())),
                        ("mid", pa.dictionary(pa.int32(), pa.string())),
                        ("score", pa.float32())])
    out_path = os.path.join(args.out_dir, "teacher_scores.parquet")
    writer = pq.ParquetWriter(out_path + ".partial", schema, compression="zstd", store_schema=False)
    mid_idx_full = np.tile(np.arange(n_classes, dtype=np.int32), args.chunk_clips)
    positives = hidden = noisy = 0
    last_report = time.time()
    for start in range(0, args.clips, args.chunk_clips):
        stop = min(start + args.chunk_clips, args.clips)
        c = stop - start
        true = np.zeros((c, n_classes), dtype=bool)
        a, b = lab_off[start], lab_off[stop]
        true[lab_clip[a:b] - start, lab_mid[a:b]] = True
        positives += int(b - a)
        cand = (true.astype(np.float32) @ related > 0) & ~true
        extra = cand & (rng.random(cand.shape, dtype=np.float32) < args.p_hidden)
        hidden += int(extra.sum())
        true |= extra
        u = rng.integers(0, 1 << TABLE_BITS, size=c * n_classes, dtype=np.uint32)
        score = np.where(true.ravel(), t_pos[u], t_neg[u])
        k = rng.binomial(c * n_classes, args.noise)
        noisy += k
        score[rng.integers(0, c * n_classes, size=k)] = np.round(rng.random(k), 4).astype(np.float32)
        clip_col = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(c, dtype=np.int32), n_classes)), id_array.slice(start, c))
        mid_col = pa.DictionaryArray.from_arrays(pa.array(mid_idx_full[: c * n_classes]), mid_array)
        batch = pa.record_batch([clip_col, mid_col, pa.array(score)], schema=schema)
        writer.write_batch(batch, row_group_size=c * n_classes)
        if time.time() - last_report > 30:
            last_report = time.time()
            print(f"  {stop:,} / {args.clips:,} clips, {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    writer.close()
    os.replace(out_path + ".partial", out_path)

    info = {
        "params": params,
        "labels_rows": total_labels,
        "teacher_rows": args.clips * n_classes,
        "classes": n_classes,
        "hidden_labels": hidden,
        "noisy_scores": int(noisy),
        "labels_bytes": os.path.getsize(lab_path),
        "teacher_bytes": os.path.getsize(out_path),
        "generation_s": round(time.time() - started, 1),
    }
    with open(stamp + ".partial", "w") as f:
        json.dump(info, f, indent=1)
    os.replace(stamp + ".partial", stamp)
    print(json.dumps(info), file=sys.stderr)


if __name__ == "__main__":
    main()
