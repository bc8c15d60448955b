#!/usr/bin/env python3
"""The reference side of bench/features.sh: decode + fbank of every wav in DIR, as PSLA does it.

    torchaudio_fbank.py DIR [--warmup 5] [--repeat 1] [--threads 1]

Per clip, exactly PSLA's dataloader (torchaudio.load replaced by soundfile, as on this project's
reference setup):

    waveform, sr = soundfile.read(path) -> float32 tensor [channels, samples]
    waveform = waveform - waveform.mean()
    torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=sr, use_energy=False,
                                      window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)

with torch.set_num_threads(1). Only that is timed (not the interpreter start or the imports), after
decoding and featurising the first --warmup clips untimed. With --repeat R the whole set is timed R
times and the median pass is reported. Prints one line of key=value pairs on stdout: seconds is wall
time, cpu_seconds the process's CPU time (user + system, all threads) over the same passes.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import soundfile as sf
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi


def featurise(path):
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    paths = sorted(os.path.join(a.dir, f) for f in os.listdir(a.dir) if f.endswith(".wav"))
    if not paths:
        sys.exit(f"torchaudio_fbank: no .wav files in {a.dir}")
    for path in paths[: a.warmup]:
        featurise(path)

    passes, cpu = [], []
    frames = 0
    for _ in range(a.repeat):
        frames = 0
        start, start_cpu = time.perf_counter(), time.process_time()
        for path in paths:
            frames += featurise(path).shape[0]
        passes.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    seconds = statistics.median(passes)
    print(
        f"clips={len(paths)} frames={frames} seconds={seconds:.4f} cpu_seconds={statistics.median(cpu):.4f} "
        f"clips_per_s={len(paths) / seconds:.1f} "
        f"ms_per_clip={1000 * seconds / len(paths):.3f} passes={','.join(f'{s:.3f}' for s in passes)} "
        f"torch={torch.__version__} torchaudio={torchaudio.__version__} threads={torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
