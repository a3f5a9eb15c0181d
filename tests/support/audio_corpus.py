"""Synthesized music for the fingerprint tests and benchmark, made by the bundled ffmpeg.

A piece is an `aevalsrc` expression drawn from a seed: a melody of eighth notes (pseudo-random
scale degrees, some rests) with harmonics and a decay per note, a bass note per bar, and a
noise hit on every beat; tempo, scale, root, timbre and tuning come from the seed. Pure sine
tones fingerprint poorly (too few distinct values); these give distinct fingerprints: two seeds
share no exact sub-fingerprint value in 2 minutes. The per-note state is computed once per note
(`if` evaluates one branch), so a minute of audio takes about 0.3 s to make.

Variants (re-encodes, cuts, mixes, tempo and speed changes) are plain ffmpeg runs.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RATE = 11025  # what Chromaprint resamples to; the variants are encoded at 44.1 kHz
SCALES = ([0, 2, 4, 5, 7, 9, 11], [0, 2, 3, 5, 7, 8, 10], [0, 3, 5, 7, 10], [0, 2, 4, 7, 9], [0, 2, 3, 5, 7, 9, 10])


def piece_expr(seed: int, *, detune_cents: float = 0.0) -> str:
    """The aevalsrc expression of piece `seed` (its notes `detune_cents` off A440 tuning)."""
    r = random.Random(seed)
    beat = 60.0 / r.choice([84, 96, 104, 112, 120, 128, 140])
    step = beat / 2
    scale = r.choice(SCALES)
    n = len(scale)
    root = r.choice([196.0, 220.0, 246.94, 261.63, 293.66]) * 2 ** (detune_cents / 1200)
    a, b, c, d = (r.uniform(1.0, 9.0) for _ in range(4))
    h2, h3, decay = r.uniform(0.1, 0.6), r.uniform(0.05, 0.4), r.uniform(2.0, 8.0)
    semitone = "+".join(f"eq(mod(ld(3),{n}),{i})*{s}" for i, s in enumerate(scale)) + f"+12*gte(ld(3),{n})"
    note = (  # once per note: st(0) note number + 1, st(3) degree, st(1) frequency, st(6) gate
        f"if(eq(floor(t/{step:.6f})+1,ld(0)),0,"
        f"st(0,floor(t/{step:.6f})+1)+st(3,floor(mod(abs(sin(ld(0)*{a:.5f}+{b:.5f}))*1000,{2 * n})))"
        f"+st(1,{root:.4f}*pow(2,({semitone})/12))+st(6,gt(mod(abs(sin(ld(0)*{c:.5f}))*1000,1),0.15)));"
    )
    bar = (  # once per bar: st(4) bar number + 1, st(5) bass frequency
        f"if(eq(floor(t/{beat * 4:.6f})+1,ld(4)),0,"
        f"st(4,floor(t/{beat * 4:.6f})+1)+st(5,{root / 2:.4f}*pow(2,floor(mod(abs(sin(ld(4)*{d:.5f}))*100,7))/12)));"
    )
    body = (
        f"0.45*ld(6)*exp(-{decay:.3f}*(t-(ld(0)-1)*{step:.6f}))"
        f"*(sin(2*PI*ld(1)*t)+{h2:.3f}*sin(4*PI*ld(1)*t)+{h3:.3f}*sin(6*PI*ld(1)*t))"
        f"+0.25*sin(2*PI*ld(5)*t)+0.3*lt(mod(t,{beat:.6f}),0.04)*(random(0)-0.5)"
    )
    return note + bar + body


def run(args: Sequence[str]) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def make_piece(out: Path, seed: int, seconds: float, *, detune_cents: float = 0.0) -> Path:
    """Piece `seed`, `seconds` long, as 16-bit mono WAV (or whatever `out`'s suffix says)."""
    run(["-f", "lavfi", "-i", f"aevalsrc=exprs='{piece_expr(seed, detune_cents=detune_cents)}':s={RATE}:d={seconds}",
         *(["-c:a", "pcm_s16le"] if out.suffix == ".wav" else []), str(out)])  # fmt: skip
    return out


def make_noise(out: Path, seconds: float) -> Path:
    run(["-f", "lavfi", "-i", f"anoisesrc=d={seconds}:c=pink:a=0.3:sample_rate={RATE}", str(out)])
    return out


def make_silence(out: Path, seconds: float) -> Path:
    run(["-f", "lavfi", "-i", f"anullsrc=r={RATE}:cl=mono", "-t", str(seconds), str(out)])
    return out


def encode(src: Path, out: Path, *, filters: str | None = None, start: float | None = None,
           duration: float | None = None, codec: Sequence[str] = ()) -> Path:
    """`src` cut from `start` for `duration`, through the audio `filters`, into `out`."""
    run([*(["-ss", str(start)] if start is not None else []), *(["-t", str(duration)] if duration else []),
         "-i", str(src), *(["-af", filters] if filters else []), *codec, str(out)])  # fmt: skip
    return out


Part = tuple[Path, float, float] | tuple[Path, float, float, str]


def make_mix(out: Path, parts: Sequence[Part], codec: Sequence[str] = ()) -> Path:
    """Concatenate (file, start, duration[, filters]) parts, each resampled to 44.1 kHz stereo:
    `duration` seconds of the file from `start`, then through `filters` (`atempo=1.02`)."""
    inputs: list[str] = []
    chains = []
    for i, (path, start, duration, *filters) in enumerate(parts):
        inputs += ["-i", str(path)]
        extra = "".join(f"{f}," for f in filters)
        chains.append(f"[{i}]atrim={start}:{start + duration},asetpts=PTS-STARTPTS,{extra}"
                      f"aresample=44100,aformat=channel_layouts=stereo[p{i}]")  # fmt: skip
    graph = ";".join(chains) + ";" + "".join(f"[p{i}]" for i in range(len(parts)))
    graph += f"concat=n={len(parts)}:v=0:a=1[out]"
    run([*inputs, "-filter_complex", graph, "-map", "[out]", *codec, str(out)])
    return out


MP3_64K = ("-c:a", "libmp3lame", "-b:a", "64k")
MP3_128K = ("-c:a", "libmp3lame", "-b:a", "128k")
MP3_192K = ("-c:a", "libmp3lame", "-b:a", "192k")
