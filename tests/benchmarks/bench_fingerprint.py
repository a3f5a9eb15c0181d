# The script measures; blocking calls (ffmpeg runs that make the audio) are deliberate here.
# ruff: noqa: ASYNC221
"""Copyright fingerprint benchmarks (issue 16; a plain script, not collected by pytest).

    PLYR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        nice -n 19 .venv/bin/python tests/benchmarks/bench_fingerprint.py [--references N] [--smoke]

1. speed: `fingerprint_file` on a 90-minute MP3 mix (192 kbps, 44.1 kHz stereo) as a scan runs
   it, with the speed variants (QUERY_SPEEDS), and without them: seconds of audio per second of
   CPU (ffmpeg runs with -threads 1, so one core; the probe child counted too) and per second of
   wall time. Target: >= 100x real time (with the variants: the whole scan's fingerprinting).
2. matching: that mix against a catalog of N references (default 10,000): N synthetic ones
   (random sub-fingerprints of 2-5 minutes, written with their index terms the way
   store_fingerprint writes them) plus 8 synthesized pieces added with add_reference, 6 of which
   are in the mix (whole, cut, 2 % faster and slower in tempo, 2 % faster with pitch in two
   tunings). Time of find_matches with the variants, as a scan matches (cold, then best and
   median of 5), and of the plain values alone; per piece, what was found and where. Target: < 1 s.
3. false positives: each synthesized piece not in the catalog (the mix's 24 others), noise and
   silence queried alone (with their variants), and whatever the mix matches besides the pieces
   put in it.
4. pitch (not with --smoke): a 60 s piece in tune and one 25 cents sharp, played 0.975-1.025
   times as fast with the pitch (a plain resample), matched against the piece: found or not,
   and similarity.

Audio is made with tests/support/audio_corpus.py into PLYR_BENCH_DIR (kept between runs) or the
scratch folder. `--smoke`: 30 s pieces, a 3-minute mix, 200 synthetic references.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import sys
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from media.fingerprint import (  # noqa: E402
    ENGINE,
    FRAME_S,
    QUERY_SPEEDS,
    Fingerprint,
    Match,
    add_reference,
    find_matches,
    fingerprint_file,
)
from media.fingerprint.align import signed, terms  # noqa: E402
from tests.support import audio_corpus as ac  # noqa: E402
from tests.support.bench_setup import ScratchDatabase, isolate, server_url  # noqa: E402


@dataclass
class Slot:
    """One stretch of the mix: `seconds` of `piece` from `start`, through `filters`."""

    piece: str
    start: float
    seconds: float
    filters: str = ""
    expect: str = ""  # for catalog pieces: what the row says
    speed: float = 1.0  # reference seconds per mix second


def plan(smoke: bool) -> tuple[float, list[Slot], list[str], dict[str, float]]:
    """(piece length, the mix's slots, the catalog's pieces, detuning per piece)."""
    piece_s = 30.0 if smoke else 180.0
    slots_n = 6 if smoke else 30
    special = {  # slot -> the catalog piece put there
        1: Slot("R0", 0, piece_s, expect="whole"),
        3: Slot("R1", piece_s / 4, piece_s * 2 / 3, expect="cut from 1/4, 2/3 long"),
        5: Slot("R2", 0, piece_s, "atempo=1.02", "tempo +2 % (pitch kept)", 1.02),
    }
    if not smoke:
        special.update({
            9: Slot("R3", 0, piece_s, "atempo=0.98", "tempo -2 % (pitch kept)", 0.98),
            14: Slot("R4", 0, piece_s, "asetrate=11025*1.02", "speed +2 % with pitch, tuned +25 cents", 1.02),
            20: Slot("R5", 0, piece_s, "asetrate=11025*1.02", "speed +2 % with pitch, in tune", 1.02),
        })  # fmt: skip
    slots, u = [], 0
    for i in range(slots_n):
        if i in special:
            slots.append(special[i])
            if special[i].expect.startswith("cut"):  # fill the rest of the slot
                slots.append(Slot(f"U{u}", 0, piece_s - special[i].seconds))
                u += 1
        else:
            slots.append(Slot(f"U{u}", 0, piece_s))
            u += 1
    catalog = [f"R{i}" for i in range(3 if smoke else 8)]
    return piece_s, slots, catalog, {"R4": 25.0}


def make_audio(folder: Path, smoke: bool) -> tuple[dict[str, Path], list[Slot], list[str]]:
    piece_s, slots, catalog, detune = plan(smoke)
    unrelated = sorted({s.piece for s in slots if s.piece.startswith("U")}, key=lambda n: int(n[1:]))
    names = catalog + unrelated
    seeds = {name: (1000 if name[0] == "R" else 2000) + int(name[1:]) for name in names}
    files = {name: folder / f"{name}-{seeds[name]}-{piece_s:g}s.wav" for name in names}

    def make(name: str) -> None:
        if not files[name].exists():
            tmp = files[name].with_suffix(".tmp.wav")
            ac.make_piece(tmp, seeds[name], piece_s, detune_cents=detune.get(name, 0.0))
            tmp.rename(files[name])

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(make, names))
    files["noise"] = ac.make_noise(folder / "noise.wav", 60)
    files["silence"] = ac.make_silence(folder / "silence.wav", 30)
    mix = folder / f"mix-{len(slots)}x{piece_s:g}s.mp3"
    if not mix.exists():
        parts: list[ac.Part] = [
            (files[s.piece], s.start, s.seconds, s.filters) if s.filters else (files[s.piece], s.start, s.seconds)
            for s in slots
        ]
        ac.make_mix(mix.with_suffix(".tmp.mp3"), parts, ac.MP3_192K)
        mix.with_suffix(".tmp.mp3").rename(mix)
    files["mix"] = mix
    return files, slots, catalog


async def bench_speed(path: Path, speeds: tuple[float, ...] = QUERY_SPEEDS) -> tuple[Fingerprint, dict[str, float]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    fp = await fingerprint_file(path, speeds=speeds)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return fp, {"audio_s": fp.duration_s, "wall_s": wall, "cpu_s": cpu,
                "x_cpu": fp.duration_s / cpu, "x_wall": fp.duration_s / wall}  # fmt: skip


async def insert_synthetic(conn: asyncpg.Connection, n: int, seed: int) -> float:
    """N references with random fingerprints of 2-5 minutes, written as store_fingerprint does."""
    rng = random.Random(seed)
    started = time.monotonic()
    batch = 250
    for first in range(0, n, batch):
        count = min(batch, n - first)
        ref_ids = await conn.fetch(
            """INSERT INTO copyright_references (artist, title, sha256, duration_s)
               SELECT 'Synthetic', 'Reference ' || i, md5(random()::text || i) || md5(i::text), 0
               FROM generate_series($1::int, $2::int) AS i RETURNING id""",
            first, first + count - 1,
        )  # fmt: skip
        prints = []
        for row in ref_ids:
            values = array("I")
            values.frombytes(rng.randbytes(4 * int(rng.uniform(120, 300) / FRAME_S)))
            prints.append((row["id"], values))
        fids = await conn.fetch(
            """INSERT INTO audio_fingerprints (reference_id, engine, duration_s, value_count, fingerprint)
               SELECT r, $1, c * $2, c, f FROM unnest($3::bigint[], $4::int[], $5::bytea[]) AS t(r, c, f)
               RETURNING id, reference_id""",
            ENGINE, FRAME_S, [r for r, _ in prints], [len(v) for _, v in prints], [v.tobytes() for _, v in prints],
        )  # fmt: skip
        by_ref = {row["reference_id"]: row["id"] for row in fids}
        rows = [(by_ref[r], signed(t), p) for r, values in prints for t, p in terms(values)]
        await conn.copy_records_to_table("audio_fingerprint_index", records=rows,
                                         columns=["fingerprint_id", "hash", "position"])  # fmt: skip
    return time.monotonic() - started


PITCH_SPEEDS = (0.975, 0.98, 0.985, 0.99, 0.995, 1.005, 1.01, 1.015, 1.02, 1.025)


async def pitch_sweep(conn: asyncpg.Connection, folder: Path) -> None:
    """Which speed changes with pitch (a plain resample) are found, in tune and off A440."""
    print("pitch: 60 s piece (in tune / 25 cents sharp) played N times as fast with its pitch -> similarity or -")
    print("  speed  " + " ".join(f"{s:>6}" for s in PITCH_SPEEDS))
    for cents in (0, 25):
        piece = ac.make_piece(folder / f"pitch-{cents}.wav", 3000 + cents, 60, detune_cents=cents)
        ref = await add_reference(conn, piece, artist="Pitch", title=f"{cents} cents", isrc=None)
        row = []
        for speed in PITCH_SPEEDS:
            copy = ac.encode(piece, folder / f"pitch-{cents}-{speed}.mp3",
                             filters=f"asetrate=11025*{speed},aresample=44100", codec=ac.MP3_128K)  # fmt: skip
            fp = await fingerprint_file(copy, speeds=QUERY_SPEEDS)
            found = [m for m in await find_matches(conn, fp) if m.reference_id == ref]
            row.append(f"{found[0].similarity:.2f}" if found else "-")
        print(f"  {cents:2d} cents " + " ".join(f"{r:>6}" for r in row), flush=True)


def describe(m: Match) -> str:
    return (f"at {m.offset_s:8.1f} s (reference {m.reference_offset_s:6.1f} s), {m.length_s:6.1f} s long, "
            f"similarity {m.similarity:.2f}, speed {m.speed:.3f}")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", type=int, default=10_000, help="synthetic references in the catalog")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="short pieces, 200 references: checks that it works")
    args = parser.parse_args()
    if args.smoke:
        args.references, args.rounds = min(args.references, 200), 2
    bench_dir = os.environ.get("PLYR_BENCH_DIR")
    server = server_url()
    work = isolate()
    folder = Path(bench_dir) / "fingerprint" if bench_dir else work
    folder.mkdir(parents=True, exist_ok=True)
    print(f"command: {' '.join([sys.executable, *sys.argv])}; load average {os.getloadavg()[0]:.2f}", flush=True)

    started = time.monotonic()
    files, slots, catalog = make_audio(folder, args.smoke)
    print(f"audio made or reused in {time.monotonic() - started:.1f} s ({folder})", flush=True)

    _, plain_speed = await bench_speed(files["mix"], ())
    print(f"fingerprinting without speed variants: {plain_speed['cpu_s']:.2f} s CPU -> {plain_speed['x_cpu']:.0f}x "
          f"real time on one core ({plain_speed['x_wall']:.0f}x by the wall clock)", flush=True)  # fmt: skip
    mix_fp, speed = await bench_speed(files["mix"])
    print(f"fingerprinting: {speed['audio_s'] / 60:.1f} min of MP3 in {speed['wall_s']:.2f} s wall, "
          f"{speed['cpu_s']:.2f} s CPU -> {speed['x_cpu']:.0f}x real time on one core "
          f"({speed['x_wall']:.0f}x by the wall clock), {len(mix_fp.values)} values, "
          f"with {len(mix_fp.variants)} speed variants", flush=True)  # fmt: skip

    async with ScratchDatabase(server) as url:
        conn = await asyncpg.connect(url)
        try:
            seconds = await insert_synthetic(conn, args.references, seed=16)
            refs: dict[int, str] = {}
            for name in catalog:
                ref = await add_reference(conn, files[name], artist="Bench", title=name, isrc=None)
                refs[ref] = name
            await conn.execute("VACUUM ANALYZE audio_fingerprint_index")
            await conn.execute("VACUUM ANALYZE audio_fingerprints")
            rows = await conn.fetchval("SELECT count(*) FROM audio_fingerprint_index")
            size = await conn.fetchval(
                "SELECT pg_total_relation_size('audio_fingerprint_index') + pg_total_relation_size('audio_fingerprints')"
            )
            print(f"catalog: {len(refs) + args.references} references ({args.references} synthetic, written in "
                  f"{seconds:.1f} s), {rows:,} index rows, {size / 2**20:.0f} MB with indexes", flush=True)  # fmt: skip

            times = []
            found: list[Match] = []
            for _ in range(args.rounds + 1):
                t = time.monotonic()
                found = await find_matches(conn, mix_fp)
                times.append(time.monotonic() - t)
            cold, warm = times[0], times[1:]
            print(f"matched a {mix_fp.duration_s / 60:.0f}-minute mix against {len(refs) + args.references} references: "
                  f"cold {cold * 1000:.0f} ms, best {min(warm) * 1000:.0f} ms, median {statistics.median(warm) * 1000:.0f} ms "
                  f"(with its speed variants; load average {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
            plain = Fingerprint(mix_fp.values, mix_fp.duration_s)
            plain_times = []
            for _ in range(args.rounds):
                t = time.monotonic()
                await find_matches(conn, plain)
                plain_times.append(time.monotonic() - t)
            print(f"  the plain values alone: best {min(plain_times) * 1000:.0f} ms, "
                  f"median {statistics.median(plain_times) * 1000:.0f} ms", flush=True)  # fmt: skip

            # What was found where, against what was put in the mix.
            position = 0.0
            expected = []
            for slot in slots:
                length = slot.seconds / slot.speed
                if slot.piece in catalog:
                    expected.append((slot, position, length))
                position += length
            hits = 0
            claimed: set[int] = set()
            for slot, at, length in expected:
                mine = [m for m in found if refs.get(m.reference_id or -1) == slot.piece and abs(m.offset_s - at) < 5]
                claimed.update(id(m) for m in mine)
                ok = bool(mine) and abs(mine[0].reference_offset_s - slot.start) < 1 and abs(mine[0].offset_s - at) < 1
                hits += ok
                print(f"  {slot.piece} {slot.expect:42} at {at:7.1f} s (reference {slot.start:5.1f} s, {length:5.1f} s): "
                      + (describe(mine[0]) if mine else "not found"), flush=True)  # fmt: skip
            stray = [m for m in found if id(m) not in claimed]
            for m in stray:
                print(f"  unexpected: {refs.get(m.reference_id or -1, m.reference_id)} {describe(m)}")
            print(f"mix: {hits} of {len(expected)} pieces found with their offsets within 1 s; "
                  f"{len(stray)} unexpected matches", flush=True)  # fmt: skip

            queries = [n for n in files if n.startswith("U")] + ["noise", "silence"]
            false = 0
            for name in queries:
                fp = await fingerprint_file(files[name], speeds=QUERY_SPEEDS)
                ms = await find_matches(conn, fp)
                false += bool(ms)
                if ms:
                    print(f"  false positive: {name} -> {[describe(m) for m in ms]}")
            print(f"false positives: {false} of {len(queries)} unrelated queries ({100 * false / len(queries):.1f} %), "
                  f"{len(stray)} in the mix", flush=True)  # fmt: skip
            if not args.smoke:
                await pitch_sweep(conn, work)
        finally:
            await conn.close()

    if args.smoke:
        print("RESULT: not judged (--smoke)")
        return
    ok = speed["x_cpu"] >= 100 and min(warm) < 1.0 and false == 0 and not stray and hits == len(expected)
    print("RESULT:", "PASS" if ok else "FAIL")


if __name__ == "__main__":
    asyncio.run(main())
