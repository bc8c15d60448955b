#!/usr/bin/env python3
"""The reference side of bench/train.sh: PSLA's training step and eval forward in PyTorch, on the CPU.

    train_pytorch.py --recipe bench/train_b2.toml --clips DIR --segments TRAIN.csv --eval-segments EVAL.csv \
                     --classes class_labels_indices.csv [--epochs 2] [--threads 2] [--seed 1]

--recipe takes psla's recipe TOML (configs/*.toml keys) and sets from it what the step does: model.arch and
heads, input.target_frames, augment.freqm / timem / mixup / mixup_alpha, optim.lr / warmup_steps / betas /
weight_decay / eps, data.batch_size (and eval_batch_size) and optim.epochs; a flag given on the command line
wins. So the two sides of the benchmark run one recipe. (augment.mixup_domain is not read: this side always
mixes waveforms, as PSLA's loader does; psla's recipe default mixes the stored log-mel features.)

The model is bench/score_pytorch.py's `PslaModel` (PSLA's EffNetAttention: efficientnet_pytorch 0.7.1
`EfficientNet.from_name('efficientnet-b2', in_channels=1)` + PSLA's multi-head attention head), imported
from there, with PyTorch's default initialisation (seeded) and 527 classes (the vocabulary's size).

Training is PSLA's `src/traintest.py` loop over PSLA's `src/dataloaders/audioset_dataset.py`:
  - the data set, per clip (`__getitem__`): with probability --mixup, a partner drawn uniformly from the
    training clips and lambda ~ Beta(--mixup-alpha, --mixup-alpha) (np.random.beta); both waveforms read
    with soundfile (as torchaudio.load: float32 [channels, samples]) and centred, the partner padded with
    zeros or cut to the clip's length, mixed `lambda * w1 + (1 - lambda) * w2`, centred again; kaldi.fbank
    as PSLA calls it; zero-padded or cut to --target-frames; labels `lambda * y1 + (1 - lambda) * y2` (PSLA
    adds them, so a class both carry gets 1.0). Then torchaudio's FrequencyMasking(--freqm) and
    TimeMasking(--timem) on the [1, 128, frames] transpose, and (x - -4.6476) / 4.5699;
  - torch.utils.data.DataLoader(batch_size, shuffle=True (seeded), num_workers=--workers (default 0: the
    data work runs in this process, between the steps; psla assembles batches on a worker thread),
    drop_last=True as PSLA's train loader);
  - per batch: PSLA's warm-up (lr set to step / 1000 * lr at steps 0, 50, ...; no extra work), forward in
    train mode (drop-connect on), torch.clamp(out, 1e-7, 1 - 1e-7), nn.BCELoss, zero_grad, backward,
    torch.optim.Adam(lr 1e-3, weight_decay 5e-7, betas (0.95, 0.999)) over the trainable parameters
    (PSLA's values; here from the recipe).
Timed in process around each epoch's loop, from asking the loader for the first batch to the end of the
last step (data loading included, model construction and imports not); the time spent waiting on the
loader and the first step are reported too.

Evaluation (after the last epoch): every clip of both CSVs featurised as PSLA's eval loader does (fbank,
pad, normalise; no augmentation; untimed), then the model in eval mode under torch.no_grad(), --eval-batch
clips per forward; timed around the loop of forwards (score_pytorch.py's `--forward-only`): eval_samples_per_s
counts every batch, the first one (libtorch's one-off set-up for the new shapes) included;
eval_warm_samples_per_s leaves the first batch out.

Prints one line of key=value pairs per epoch (`epoch=...`) and a last summary line.
"""

import time

_t_script = time.perf_counter()

import argparse  # noqa: E402
import csv  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tomllib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchaudio  # noqa: E402
import torchaudio.transforms as T  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from score_pytorch import (  # noqa: E402  (the model and PSLA's eval input, one definition for both benchmarks)
    NORM_MEAN,
    NORM_STD,
    PslaModel,
    fbank_of,
)
import soundfile as sf  # noqa: E402
import torchaudio.compliance.kaldi as kaldi  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _t_script
EPSILON = 1e-7  # PSLA's traintest.py clamp


def read_segments(path):
    """AudioSet segment CSV -> [(ytid, [mid, ...])] (comment lines skipped)."""
    rows = []
    with open(path, newline="") as f:
        for rec in csv.reader((line for line in f if not line.startswith("#")), skipinitialspace=True):
            if rec:
                rows.append((rec[0], rec[3].split(",")))
    return rows


def read_vocabulary(path):
    with open(path, newline="") as f:
        return {r["mid"]: int(r["index"]) for r in csv.DictReader(f)}


def load_wave(path):
    data, _ = sf.read(path, dtype="float32", always_2d=True)  # as torchaudio.load: [channels, samples]
    return torch.from_numpy(np.ascontiguousarray(data.T))


class PslaTrainSet(torch.utils.data.Dataset):
    """PSLA's AudiosetDataset in training mode (audio_conf: freqm, timem, mixup, target_length; norm stats)."""

    def __init__(self, items, classes, target_frames, freqm, timem, mixup, alpha, rate=16000):
        self.items, self.classes, self.target_frames = items, classes, target_frames
        self.freqm, self.timem, self.mixup, self.alpha, self.rate = freqm, timem, mixup, alpha, rate

    def __len__(self):
        return len(self.items)

    def _wav2fbank(self, path, path2=None):
        if path2 is None:
            w = load_wave(path)
            w = w - w.mean()
            mix_lambda = 0.0
        else:
            w1, w2 = load_wave(path), load_wave(path2)
            w1, w2 = w1 - w1.mean(), w2 - w2.mean()
            if w1.shape[1] != w2.shape[1]:
                if w1.shape[1] > w2.shape[1]:
                    t = torch.zeros(1, w1.shape[1])
                    t[0, : w2.shape[1]] = w2
                    w2 = t
                else:
                    w2 = w2[:, : w1.shape[1]]
            mix_lambda = np.random.beta(self.alpha, self.alpha)
            w = mix_lambda * w1 + (1 - mix_lambda) * w2
            w = w - w.mean()
        fbank = kaldi.fbank(w, htk_compat=True, sample_frequency=self.rate, use_energy=False, window_type="hanning",
                            num_mel_bins=128, dither=0.0, frame_shift=10)
        p = self.target_frames - fbank.shape[0]
        if p > 0:
            fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank)
        elif p < 0:
            fbank = fbank[: self.target_frames, :]
        return fbank, mix_lambda

    def __getitem__(self, index):
        path, label = self.items[index]
        if random.random() < self.mixup:
            path2, label2 = self.items[random.randint(0, len(self.items) - 1)]
            fbank, lam = self._wav2fbank(path, path2)
            y = lam * label + (1.0 - lam) * label2  # PSLA's `+=` of lambda and 1 - lambda: 1.0 for a shared class
        else:
            fbank, _ = self._wav2fbank(path)
            y = label
        fbank = torch.transpose(fbank, 0, 1).unsqueeze(0)  # [1, 128, frames]
        if self.freqm:
            fbank = T.FrequencyMasking(self.freqm)(fbank)
        if self.timem:
            fbank = T.TimeMasking(self.timem)(fbank)
        fbank = torch.transpose(fbank.squeeze(0), 0, 1)
        return (fbank - NORM_MEAN) / NORM_STD, y


def eval_input(fbank, frames):
    """score_pytorch.py's model_input (PSLA's eval-time input) at the recipe's frames."""
    p = frames - fbank.shape[0]
    fbank = F.pad(fbank, (0, 0, 0, p)) if p > 0 else fbank[:frames, :]
    return (fbank - NORM_MEAN) / NORM_STD


def label_vector(mids, vocab):
    y = torch.zeros(len(vocab))
    for m in mids:
        y[vocab[m]] = 1.0
    return y


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", required=True, help="folder of <clip_id>.wav")
    p.add_argument("--segments", required=True, help="training segments CSV")
    p.add_argument("--eval-segments", required=True, help="eval segments CSV (evaluated with the training clips)")
    p.add_argument("--classes", required=True)
    p.add_argument("--arch", default="b2")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--target-frames", type=int, default=1056)
    p.add_argument("--freqm", type=int, default=48)
    p.add_argument("--timem", type=int, default=192)
    p.add_argument("--mixup", type=float, default=0.5)
    p.add_argument("--mixup-alpha", type=float, default=10.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--betas", type=float, nargs=2, default=[0.95, 0.999])
    p.add_argument("--weight-decay", type=float, default=5e-7)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--recipe", help="psla recipe TOML: the defaults of the flags above come from it")
    p.add_argument("--no-eval", action="store_true")
    if "--recipe" in sys.argv[1:]:
        r = tomllib.load(open(sys.argv[sys.argv.index("--recipe") + 1], "rb"))
        m, i, g, o, d = (r.get(k, {}) for k in ("model", "input", "augment", "optim", "data"))
        if g.get("mixup", 0) > 0 and g.get("mixup_domain", "mel") not in ("mel", "waveform"):
            sys.exit(f"train_pytorch: unknown mixup_domain {g['mixup_domain']}")
        if o.get("warmup", "linear") not in ("linear", "psla", "none"):
            sys.exit(f"train_pytorch: unknown warmup {o['warmup']}")
        defaults = {
            "arch": m.get("arch"), "heads": m.get("heads"), "target_frames": i.get("target_frames"),
            "freqm": g.get("freqm"), "timem": g.get("timem"), "mixup": g.get("mixup"), "mixup_alpha": g.get("mixup_alpha"),
            "lr": o.get("lr"), "warmup_steps": o.get("warmup_steps"), "betas": o.get("betas"),
            "weight_decay": o.get("weight_decay"), "eps": o.get("eps"), "epochs": o.get("epochs"),
            "batch_size": d.get("batch_size"), "eval_batch": d.get("eval_batch_size", d.get("batch_size")),
        }
        p.set_defaults(**{k: v for k, v in defaults.items() if v is not None})
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    np.random.seed(a.seed)
    vocab = read_vocabulary(a.classes)
    wav = lambda clip: os.path.join(a.clips, clip + ".wav")  # noqa: E731
    train_items = [(wav(c), label_vector(m, vocab)) for c, m in read_segments(a.segments)]
    eval_items = train_items + [(wav(c), label_vector(m, vocab)) for c, m in read_segments(a.eval_segments)]

    t0 = time.perf_counter()
    model = PslaModel(a.arch.lower().removeprefix("efficientnet-"), a.heads, len(vocab))
    trainables = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.Adam(trainables, a.lr, weight_decay=a.weight_decay, betas=tuple(a.betas), eps=a.eps)
    loss_fn = torch.nn.BCELoss()
    build_seconds = time.perf_counter() - t0

    data = PslaTrainSet(train_items, len(vocab), a.target_frames, a.freqm, a.timem, a.mixup, a.mixup_alpha)
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                                         drop_last=True, generator=torch.Generator().manual_seed(a.seed))
    global_step, train_s, train_n, rates = 0, 0.0, 0, []
    for epoch in range(1, a.epochs + 1):
        model.train()
        n = 0
        loss_sum = data_s = 0.0
        first_step_s = None
        start, start_cpu = time.perf_counter(), time.process_time()
        tw = start
        for x, y in loader:
            tb = time.perf_counter()
            data_s += tb - tw
            if global_step <= a.warmup_steps and global_step % 50 == 0:
                for g in optimizer.param_groups:
                    g["lr"] = global_step / a.warmup_steps * a.lr
            out = model(x)
            out = torch.clamp(out, EPSILON, 1.0 - EPSILON)
            loss = loss_fn(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            global_step += 1
            n += x.shape[0]
            loss_sum += loss.item() * x.shape[0]
            tw = time.perf_counter()
            if first_step_s is None:
                first_step_s = tw - tb
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        train_s += seconds
        train_n += n
        rates.append(n / seconds)
        print(f"epoch={epoch} samples={n} steps={global_step} seconds={seconds:.3f} cpu_seconds={cpu:.3f} "
              f"samples_per_s={n / seconds:.3f} data_s={data_s:.3f} first_step_s={first_step_s:.3f} "
              f"train_loss={loss_sum / max(n, 1):.4f}", flush=True)

    eval_line = ""
    if not a.no_eval:
        model.eval()
        xs = [eval_input(fbank_of(path), a.target_frames) for path, _ in eval_items]
        batches = [torch.stack(xs[i : i + a.eval_batch]) for i in range(0, len(xs), a.eval_batch)]
        with torch.no_grad():
            start = time.perf_counter()
            first = None
            for x in batches:
                tf = time.perf_counter()
                model(x)
                if first is None:
                    first = time.perf_counter() - tf
            eval_s = time.perf_counter() - start
        rest = len(xs) - batches[0].shape[0]
        warm = rest / (eval_s - first) if rest and eval_s > first else float("nan")
        eval_line = (f" eval_clips={len(xs)} eval_batch={a.eval_batch} eval_seconds={eval_s:.3f} "
                     f"eval_samples_per_s={len(xs) / eval_s:.3f} eval_first_batch_s={first:.3f} "
                     f"eval_warm_samples_per_s={warm:.3f}")
    print(f"summary=1 epochs={a.epochs} train_clips={len(train_items)} batch_size={a.batch_size} "
          f"model=efficientnet-{a.arch.lower().removeprefix('efficientnet-')} heads={a.heads} classes={len(vocab)} "
          f"frames={a.target_frames} freqm={a.freqm} timem={a.timem} mixup={a.mixup} mixup_alpha={a.mixup_alpha} "
          f"train_samples={train_n} train_seconds={train_s:.3f} samples_per_s={train_n / train_s:.3f} "
          f"epoch_samples_per_s={','.join(f'{r:.3f}' for r in rates)}{eval_line} imports_s={IMPORT_SECONDS:.3f} "
          f"build_s={build_seconds:.3f} threads={torch.get_num_threads()} workers={a.workers} "
          f"torch={torch.__version__} torchaudio={torchaudio.__version__}", flush=True)


if __name__ == "__main__":
    main()
