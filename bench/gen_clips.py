#!/usr/bin/env python3
"""Deterministic speech-like test clips for the features benchmark.

    gen_clips.py DIR COUNT [--seconds 10] [--rate 16000] [--jobs N]
    gen_clips.py DIR COUNT --link-from SRC_DIR   (hard links to SRC_DIR's clips, cycling)

Writes DIR/clip_00000.wav ... as 16-bit PCM mono. Clip i is seeded with i alone, so the same index
has the same samples whatever COUNT is, and a rerun reproduces the files bit for bit. Each file is
written under a temporary name and renamed, and existing files are kept, so an interrupted run
resumes. The signal is a voiced source (a harmonic series on a gliding pitch, shaped by two formant
resonances) gated by a syllable-rate envelope, with fricative-like noise bursts and a quiet noise
floor: not speech, but with speech's spectral tilt and its loud/quiet alternation.

With --link-from, DIR gets COUNT hard links named the same way, link i pointing at SRC_DIR's clip
(i mod the number of clips there): a large clip set that costs no disk (the clip ids still differ,
they come from the file names).
"""

import argparse
import functools
import multiprocessing
import os
import sys

import numpy as np
import soundfile as sf


def name(i):
    return f"clip_{i:05d}.wav"


@functools.lru_cache(maxsize=None)
def one_pole_response(n, a):
    w = 2 * np.pi * np.fft.rfftfreq(n)
    return (1 - a) / (1 - a * np.exp(-1j * w))


def one_pole_lowpass(x, a):
    """A one-pole low-pass, y[n] = (1 - a) x[n] + a y[n-1], applied in the frequency domain
    (circularly: the clip wraps around, which does not matter for a test signal)."""
    return np.fft.irfft(np.fft.rfft(x) * one_pole_response(len(x), a), len(x))


def formants(x, peaks, rate):
    """x through a sum of resonances [(centre Hz, bandwidth Hz, gain)], in the frequency domain."""
    f = np.fft.rfftfreq(len(x), 1.0 / rate)
    response = sum(g / np.sqrt(1.0 + ((f - fc) / (bw / 2.0)) ** 2) for fc, bw, g in peaks)
    return np.fft.irfft(np.fft.rfft(x) * response, len(x))


def clip(i, seconds, rate):
    rng = np.random.default_rng(1_000_003 + i)
    n = int(seconds * rate)
    t = np.arange(n) / rate

    # Voiced source: harmonics of a pitch gliding slowly around a speaker-specific base.
    f0_base = rng.uniform(95.0, 230.0)
    f0 = f0_base * (1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.7) * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    # sum over h of sin(h phase) / h, with sin(h x) = 2 cos(x) sin((h-1) x) - sin((h-2) x).
    two_cos = 2 * np.cos(phase)
    prev, cur = np.zeros(n), np.sin(phase)
    voiced = cur.copy()
    for h in range(2, 25):
        prev, cur = cur, two_cos * cur - prev
        voiced += cur / h
    # Two formant resonances, moving between syllables (fixed per clip here, mixed by the envelope).
    f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2500)
    voiced = formants(voiced, [(f1, 120.0, 1.0), (f2, 200.0, 0.6)], rate)

    # Syllable envelope: ~4 Hz bursts with random gaps (pauses between words).
    syll_rate = rng.uniform(3.0, 5.5)
    env = np.clip(np.sin(2 * np.pi * syll_rate * t + rng.uniform(0, 6.3)), 0, None) ** 1.5
    words = rng.random(int(seconds * 2) + 1) < 0.75  # 0.5 s blocks: speech or pause
    env *= np.repeat(words, rate // 2)[:n]
    env = one_pole_lowpass(env, 0.995)

    # Fricatives: high-passed noise in short bursts.
    noise = rng.standard_normal(n)
    hiss = noise - one_pole_lowpass(noise, 0.6)
    bursts = np.zeros(n)
    for start in rng.integers(0, n - rate // 10, size=int(seconds * 1.5)):
        bursts[start : start + int(rng.uniform(0.03, 0.09) * rate)] = 1.0
    bursts = one_pole_lowpass(bursts, 0.99)

    floor = 0.003 * rng.standard_normal(n)
    x = env * voiced / (np.abs(voiced).max() + 1e-9) + 0.25 * bursts * hiss / (np.abs(hiss).max() + 1e-9) + floor
    x *= rng.uniform(0.3, 0.8) / (np.abs(x).max() + 1e-9)
    return np.round(x * 32767).astype(np.int16)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("count", type=int)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=16000)
    p.add_argument("--link-from", metavar="SRC_DIR")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="generator processes [all cores]")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)

    if a.link_from:
        src = sorted(f for f in os.listdir(a.link_from) if f.startswith("clip_") and f.endswith(".wav"))
        if not src:
            sys.exit(f"gen_clips: no clips in {a.link_from}")
        for i in range(a.count):
            dst = os.path.join(a.dir, name(i))
            if not os.path.exists(dst):
                os.link(os.path.join(a.link_from, src[i % len(src)]), dst)
        return

    todo = [i for i in range(a.count) if not os.path.exists(os.path.join(a.dir, name(i)))]
    jobs = [(a.dir, i, a.seconds, a.rate) for i in todo]
    if a.jobs > 1 and len(jobs) > 1:
        with multiprocessing.Pool(a.jobs) as pool:
            for made, _ in enumerate(pool.imap_unordered(write_clip, jobs, chunksize=8), 1):
                if made % 1000 == 0:
                    print(f"gen_clips: {made} of {len(jobs)} written", file=sys.stderr)
    else:
        for job in jobs:
            write_clip(job)


def write_clip(job):
    directory, i, seconds, rate = job
    dst = os.path.join(directory, name(i))
    tmp = dst + ".tmp"
    sf.write(tmp, clip(i, seconds, rate), rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, dst)

if __name__ == "__main__":
    main()
