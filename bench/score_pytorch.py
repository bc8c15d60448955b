#!/usr/bin/env python3
"""The reference side of bench/score.sh: PSLA's eval-time path in PyTorch, from 10 s wav files to predictions.

    score_pytorch.py init --arch b2 --heads 4 --classes 527 --calibrate CLIPS_DIR --out MODEL.safetensors
    score_pytorch.py run MODEL.safetensors CLIPS_DIR --batch-size 16 --threads 2 --out PRED.npy [--forward-only]
    score_pytorch.py check-reference DIR        # this model against PSLA's own B0 files (shared/reference/model)
    score_pytorch.py compare PRED.npy PSLA_PREDICTIONS.parquet [--features F.parquet --model M --threads 2]

The model is PSLA's `EffNetAttention` written from its facts: efficientnet_pytorch 0.7.1
`EfficientNet.from_name('efficientnet-bN', in_channels=1)` (its `_fc` replaced by an identity), input
[B, T, 128] -> unsqueeze(1).transpose(2, 3) -> `extract_features` -> AvgPool2d((4, 1)) (the mean of the 4
frequency rows left after stride 32) -> transpose(2, 3) -> the pooling head over time:
  heads 0: mean_t sigmoid(cla(x));  heads 1: sum_t att_norm * sigmoid(cla(x)) with
  att = clamp(sigmoid(att(x)), 1e-7, 1 - 1e-7), att_norm = att / sum_t att;
  heads H > 1: H such heads, sum_h head_weight[h] * out_h (head_weight initialised 1/H).
att and cla are 1x1 Conv2d C -> classes. The parameter names are PSLA's state-dict keys
(`effnet._conv_stem.weight`, ..., `attention.att.0.weight`, `attention.head_weight`), so the file `init`
writes is a PSLA state dict (no metadata), which `psla score` loads by its tensor names and shapes.

`init` builds that model with PyTorch's default initialisation (seeded), then gives every BatchNorm
random affine parameters and sets its running statistics from one train-mode pass over the first clips
of CLIPS_DIR (momentum None: the statistics of that batch exactly), so that eval-mode activations keep
their spread through all the blocks; the heads' 1x1 convolutions are scaled so that their logits on that
batch have a standard deviation of --logit-std (2), with N(0, 1) biases. So the predictions spread over
(0, 1) and differ from clip to clip (a fresh model's eval output is nearly constant, 0.5 +- 0.01, which
would make the agreement check weak).

`run` is PSLA's eval path, per clip: soundfile.read -> float32 [channels, samples] (as torchaudio.load),
waveform - waveform.mean(), kaldi.fbank(waveform, htk_compat=True, sample_frequency=sr, use_energy=False,
window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10), zero-padded (or cut) to 1056 frames,
(fbank - -4.6476) / 4.5699 (PSLA's src/dataloaders/audioset_dataset.py divides by the std, no factor 2);
clips in file-name order, --batch-size at a time, stacked and run through the model in eval mode under
torch.no_grad(). Timed: the whole loop from the list of paths to one [clips, classes] numpy array
(imports, model construction and the safetensors load are timed apart and reported separately). With
--forward-only the features are computed first, untimed, and only the forwards of the same batches are
timed. Prints one line of key=value pairs on stdout.
"""

import time

_t_script = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchaudio  # noqa: E402
import torchaudio.compliance.kaldi as kaldi  # noqa: E402
from efficientnet_pytorch import EfficientNet  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _t_script

TARGET_FRAMES = 1056  # PSLA's AudioSet target_length
NORM_MEAN, NORM_STD = -4.6476, 4.5699  # PSLA's run.py defaults (AudioSet)
ATT_EPSILON = 1e-7


class Conv1x1Heads(nn.Module):
    """PSLA's pooling heads over time; input [B, C, T, 1], output [B, classes]."""

    def __init__(self, channels, classes, heads):
        super().__init__()
        self.heads = heads
        if heads == 0:
            self.cla = nn.Conv2d(channels, classes, (1, 1))
        elif heads == 1:
            self.att = nn.Conv2d(channels, classes, (1, 1))
            self.cla = nn.Conv2d(channels, classes, (1, 1))
        else:
            self.att = nn.ModuleList(nn.Conv2d(channels, classes, (1, 1)) for _ in range(heads))
            self.cla = nn.ModuleList(nn.Conv2d(channels, classes, (1, 1)) for _ in range(heads))
            self.head_weight = nn.Parameter(torch.full((heads,), 1.0 / heads))

    @staticmethod
    def attend(att, cla, x):
        a = torch.sigmoid(att(x))[:, :, :, 0].clamp(ATT_EPSILON, 1.0 - ATT_EPSILON)  # [B, classes, T]
        c = torch.sigmoid(cla(x))[:, :, :, 0]
        norm = a / a.sum(dim=2, keepdim=True)
        return (norm * c).sum(dim=2)

    def forward(self, x):
        if self.heads == 0:
            return torch.sigmoid(self.cla(x))[:, :, :, 0].mean(dim=2)
        if self.heads == 1:
            return self.attend(self.att, self.cla, x)
        outs = [self.attend(a, c, x) * self.head_weight[i] for i, (a, c) in enumerate(zip(self.att, self.cla))]
        return torch.stack(outs, dim=0).sum(dim=0)


class PslaModel(nn.Module):
    """PSLA's EffNetAttention: [B, T, 128] normalised log-mel -> [B, classes]."""

    def __init__(self, arch, heads, classes):
        super().__init__()
        self.effnet = EfficientNet.from_name(f"efficientnet-{arch}", in_channels=1)
        self.effnet._fc = nn.Identity()  # as PSLA: no ImageNet classifier (and no `_fc` keys)
        channels = self.effnet._conv_head.out_channels
        self.attention = Conv1x1Heads(channels, classes, heads)

    def forward(self, x):
        x = x.unsqueeze(1).transpose(2, 3)  # [B, 1, 128 (frequency), T]
        x = self.effnet.extract_features(x)  # [B, C, 4, T / 32]
        x = F.avg_pool2d(x, (4, 1))  # PSLA's nn.AvgPool2d((4, 1))
        return self.attention(x.transpose(2, 3))  # [B, C, T', 1] -> [B, classes]


def config_from_state_dict(sd):
    """(arch, heads, classes) from PSLA's key names and shapes, as `psla score` infers them."""
    cla = sd.get("attention.cla.weight", sd.get("attention.cla.0.weight"))
    classes = cla.shape[0]
    if "attention.head_weight" in sd:
        heads = sd["attention.head_weight"].shape[0]
    else:
        heads = 1 if "attention.att.weight" in sd else 0
    channels = sd["effnet._conv_head.weight"].shape[0]
    blocks = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("effnet._blocks."))
    for b in range(8):
        params = EfficientNet.from_name(f"efficientnet-b{b}", in_channels=1)
        if params._conv_head.out_channels == channels and len(params._blocks) == blocks:
            return f"b{b}", heads, classes
    sys.exit(f"score_pytorch: no EfficientNet variant has {channels} channels out and {blocks} blocks")


def load_model(path):
    sd = load_file(path)
    arch, heads, classes = config_from_state_dict(sd)
    model = PslaModel(arch, heads, classes)
    model.load_state_dict(sd, strict=True)
    return model.eval(), (arch, heads, classes)


def fbank_of(path):
    """PSLA's log-mel fbank of one file: [frames, 128]."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    waveform = torch.from_numpy(np.ascontiguousarray(data.T))  # [channels, samples], like torchaudio.load
    waveform = waveform - waveform.mean()
    return kaldi.fbank(
        waveform,
        htk_compat=True,
        sample_frequency=sr,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )


def model_input(fbank):
    """Zero-padded (or cut) to 1056 frames, normalised: PSLA's eval-time input."""
    p = TARGET_FRAMES - fbank.shape[0]
    if p > 0:
        fbank = F.pad(fbank, (0, 0, 0, p))  # zeros after the last frame (PSLA's ZeroPad2d((0, 0, 0, p)))
    elif p < 0:
        fbank = fbank[:TARGET_FRAMES, :]
    return (fbank - NORM_MEAN) / NORM_STD


def featurise(path):
    return model_input(fbank_of(path))


def wav_paths(directory):
    paths = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".wav"))
    if not paths:
        sys.exit(f"score_pytorch: no .wav files in {directory}")
    return paths


def cmd_init(a):
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    arch = a.arch.lower().removeprefix("efficientnet-")
    model = PslaModel(arch, a.heads, a.classes)
    # BatchNorm: random affine parameters, running statistics of one train-mode batch of real clips.
    g = torch.Generator().manual_seed(a.seed + 1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.empty(bn.num_features).uniform_(0.5, 1.5, generator=g))
            bn.bias.copy_(torch.empty(bn.num_features).normal_(0.0, 0.2, generator=g))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: after one batch, exactly its statistics
        x = torch.stack([featurise(p) for p in wav_paths(a.calibrate)[: a.calibrate_clips]])
        model.train()
        model.effnet._global_params = model.effnet._global_params._replace(drop_connect_rate=None)
        model(x)
        for bn in bns:
            bn.momentum = 0.01  # efficientnet_pytorch's (1 - 0.99)
        # The heads: scale each 1x1 convolution so that its logits over the batch have a spread of
        # --logit-std (PyTorch's default init gives ~0.1: every score near 0.5).
        model.eval()
        feats = F.avg_pool2d(model.effnet.extract_features(x.unsqueeze(1).transpose(2, 3)), (4, 1)).transpose(2, 3)
        convs = [m for m in model.attention.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            logits = conv(feats)
            conv.weight.mul_(a.logit_std / logits.std().item())
            conv.bias.copy_(torch.empty_like(conv.bias).normal_(0.0, 1.0, generator=g))
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file(sd, a.out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model=efficientnet-{arch} heads={a.heads} classes={a.classes} tensors={len(sd)} parameters={n_params} "
          f"calibrated_on={x.shape[0]} out={a.out}")


def cmd_run(a):
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, (arch, heads, classes) = load_model(a.model)
    load_seconds = time.perf_counter() - t0
    paths = wav_paths(a.clips)
    batches = [paths[i : i + a.batch_size] for i in range(0, len(paths), a.batch_size)]

    feature_s = forward_s = 0.0
    first_batch_s = None
    outs = []
    if not a.forward_only:
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for batch in batches:
                tb = time.perf_counter()
                x = torch.stack([featurise(p) for p in batch])
                tf = time.perf_counter()
                outs.append(model(x).numpy())
                te = time.perf_counter()
                feature_s += tf - tb
                forward_s += te - tf
                if first_batch_s is None:
                    first_batch_s = te - tb
        preds = np.concatenate(outs)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    else:
        inputs = [torch.stack([featurise(p) for p in batch]) for batch in batches]
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for x in inputs:
                tf = time.perf_counter()
                outs.append(model(x).numpy())
                if first_batch_s is None:
                    first_batch_s = time.perf_counter() - tf
        preds = np.concatenate(outs)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        forward_s = seconds
    if a.out:
        np.save(a.out, preds)
        with open(a.out + ".ids", "w") as f:
            f.write("\n".join(os.path.splitext(os.path.basename(p))[0] for p in paths) + "\n")
    print(
        f"mode={'forward_only' if a.forward_only else 'end_to_end'} clips={len(paths)} classes={classes} "
        f"model=efficientnet-{arch} heads={heads} batch_size={a.batch_size} seconds={seconds:.4f} "
        f"cpu_seconds={cpu:.4f} clips_per_s={len(paths) / seconds:.2f} features_s={feature_s:.4f} "
        f"forward_s={forward_s:.4f} first_batch_s={first_batch_s:.4f} imports_s={IMPORT_SECONDS:.4f} "
        f"model_load_s={load_seconds:.4f} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"torchaudio={torchaudio.__version__}"
    )


def cmd_check_reference(a):
    """Our model against PSLA's own saved files: every effnet_b0_heads*.safetensors with its _io file."""
    torch.set_num_threads(a.threads)
    worst = 0.0
    names = sorted(f for f in os.listdir(a.dir) if f.endswith(".safetensors") and not f.endswith("_io.safetensors"))
    if not names:
        sys.exit(f"score_pytorch: no PSLA model files in {a.dir}")
    for name in names:
        model, cfg = load_model(os.path.join(a.dir, name))  # strict: PSLA's keys are ours
        io = load_file(os.path.join(a.dir, name.replace(".safetensors", "_io.safetensors")))
        with torch.no_grad():
            d = (model(io["input"]) - io["output"]).abs().max().item()
        worst = max(worst, d)
        print(f"  {name}: {cfg[0]}, {cfg[1]} heads, {cfg[2]} classes: max |ours - PSLA's output| = {d:.2e}", file=sys.stderr)
    print(f"reference_max_abs_diff={worst:.3e} files={len(names)}")
    if worst > 1e-5:
        sys.exit(f"score_pytorch: the model differs from PSLA's reference outputs by {worst:.2e}")


def read_psla_predictions(path, ids):
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["clip_id", "class_index", "score"]).to_pydict()
    row = {c: i for i, c in enumerate(ids)}
    classes = max(t["class_index"]) + 1
    out = np.full((len(ids), classes), np.nan, dtype=np.float32)
    for c, j, s in zip(t["clip_id"], t["class_index"], t["score"]):
        key = os.path.splitext(os.path.basename(c))[0]
        if key not in row:
            sys.exit(f"score_pytorch: psla scored clip `{c}`, which is not among the PyTorch clips")
        out[row[key], j] = s
    return out


def cmd_compare(a):
    ours = np.load(a.pred)
    ids = open(a.pred + ".ids").read().split()
    theirs = read_psla_predictions(a.psla, ids)
    if theirs.shape != ours.shape or np.isnan(theirs).any():
        sys.exit(f"score_pytorch: psla's predictions are {theirs.shape} with {np.isnan(theirs).sum()} missing, PyTorch's {ours.shape}")
    d = np.abs(ours.astype(np.float64) - theirs)
    line = (
        f"max_abs_diff={d.max():.3e} mean_abs_diff={d.mean():.3e} clips={ours.shape[0]} classes={ours.shape[1]} "
        f"pred_min={ours.min():.4f} pred_max={ours.max():.4f} pred_std_over_clips={ours.std(axis=0).mean():.4f}"
    )
    if a.features:
        # The model alone: PyTorch's model on psla's own features (pad, normalise as above).
        import pyarrow.parquet as pq

        torch.set_num_threads(a.threads)
        model, _ = load_model(a.model)
        t = pq.read_table(a.features, columns=["clip_id", "fbank"])
        col = t.column("fbank").combine_chunks()  # List<FixedSizeList<Float32, 128>>
        values = col.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, 128)
        offsets = col.offsets.to_numpy()
        row = {os.path.splitext(os.path.basename(c))[0]: i for i, c in enumerate(t.column("clip_id").to_pylist())}
        xs, fdiff = [], 0.0
        for i, p in enumerate(ids):
            r = row[p]
            fb = torch.from_numpy(values[offsets[r] : offsets[r + 1]].astype(np.float32))
            if i < a.fbank_clips:  # psla's fbank against torchaudio's on the same wav
                ref = fbank_of(os.path.join(a.clips, p + ".wav"))
                if ref.shape != fb.shape:
                    sys.exit(f"score_pytorch: clip {p}: psla's fbank is {tuple(fb.shape)}, torchaudio's {tuple(ref.shape)}")
                fdiff = max(fdiff, (ref - fb).abs().max().item())
            xs.append(model_input(fb))
        with torch.no_grad():
            same = np.concatenate([model(torch.stack(xs[i : i + 16])).numpy() for i in range(0, len(xs), 16)])
        dm = np.abs(same.astype(np.float64) - theirs)
        line += f" model_only_max_abs_diff={dm.max():.3e} fbank_max_abs_diff={fdiff:.3e} fbank_clips={min(a.fbank_clips, len(ids))}"
    print(line)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--arch", default="b2")
    i.add_argument("--heads", type=int, default=4)
    i.add_argument("--classes", type=int, default=527)
    i.add_argument("--seed", type=int, default=1)
    i.add_argument("--calibrate", required=True, metavar="CLIPS_DIR")
    i.add_argument("--calibrate-clips", type=int, default=8)
    i.add_argument("--logit-std", type=float, default=2.0)
    i.add_argument("--threads", type=int, default=2)
    i.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("model")
    r.add_argument("clips")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out")
    r.add_argument("--forward-only", action="store_true")
    c = sub.add_parser("check-reference")
    c.add_argument("dir")
    c.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("compare")
    m.add_argument("pred")
    m.add_argument("psla")
    m.add_argument("--features", help="psla's features Parquet: also score it with the PyTorch model")
    m.add_argument("--model")
    m.add_argument("--clips", help="the wav folder (for the fbank check)")
    m.add_argument("--fbank-clips", type=int, default=4)
    m.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    {"init": cmd_init, "run": cmd_run, "check-reference": cmd_check_reference, "compare": cmd_compare}[a.cmd](a)


if __name__ == "__main__":
    main()
