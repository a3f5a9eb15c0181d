"""Benchmark: extracting the verified plyr records of a repo CAR vs. decoding every block.

Part 1 (time): a generated repo of 100,000 records, 1% fm.plyr.track, blocks in shuffled order
(as a PDS serves them). In the same process, alternating runs: `libipld.decode_car` (decodes
every block) vs. `extract_from_bytes` (frame, commit signature, pruned MST walk, hash every
block used, decode the plyr records). Also the same CAR fed in 256 KiB chunks (the getRepo path).

Part 2 (memory): a ~300 MB repo written to a file, then read back in 256 KiB chunks through the
streaming path (CarIndex spills to a temp file) in a fresh subprocess; peak RSS above the
baseline (VmHWM - VmRSS at start) is reported.

Run: .venv/bin/python tests/benchmarks/bench_backfill_extract.py [--records 100000] [--big-mb 300]
     [--index native|python]   (default: what this installation uses, native when it was built)
     --smoke: 2,000 records, one round, a 5 MB repo: checks that the benchmark works.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import libipld  # noqa: E402

from indexer.backfill import extract  # noqa: E402
from indexer.backfill.car_index import NATIVE_FRAMING, NativeCarIndex, PythonCarIndex  # noqa: E402
from indexer.backfill.extract import extract_from_bytes, extract_records  # noqa: E402
from protocol.car import car_header, car_section  # noqa: E402
from protocol.cid import cid_for_cbor  # noqa: E402
from protocol.commit import encode_commit, sign_commit  # noqa: E402
from protocol.crypto import PrivateKey  # noqa: E402
from protocol.mst import build_mst  # noqa: E402
from tests.support.bench_setup import isolate  # noqa: E402
from tests.support.repo_builder import mixed_repo, post, tid, track  # noqa: E402

DID = "did:plc:benchbenchbenchbenchbenc"


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _bare_framing(car: bytes) -> int:
    """The least any Python framing can do: walk the section length varints, nothing else.

    Measured beside the real extraction to show the floor of a pure-Python CAR reader (every
    section must be framed to find blocks in storage order and to detect truncation).
    """
    hlen = car[0]  # headers of generated repos are < 128 bytes
    p = 1 + hlen
    n = len(car)
    while p < n:
        b = car[p]
        if b < 0x80:
            p += b + 1
        else:
            b2 = car[p + 1]
            if b2 >= 0x80:
                raise ValueError("benchmark CARs have no section above 16 KB")
            p += 2 + ((b & 0x7F) | (b2 << 7))
    return p


def _report(name: str, times: list[float], full: list[float]) -> None:
    # Two summaries that a loaded machine disturbs least: the median of the ratios paired per
    # round (same moment, same load) and the ratio of the best times. (The minimum of the paired
    # ratios is not shown: one round where decode_car alone was slowed makes it look too good.)
    ratios = [t / f for t, f in zip(times, full, strict=True)]
    print(
        f"{name:<33} median {statistics.median(times) * 1000:6.1f} ms, min {min(times) * 1000:6.1f} ms"
        f" -> of decode_car: {statistics.median(ratios):.1%} (median of paired ratios),"
        f" {min(times) / min(full):.1%} (min/min)"
    )


def part_time(n: int, rounds: int) -> None:
    t0 = time.perf_counter()
    repo = mixed_repo(DID, n, plyr_every=100)
    car = repo.car("shuffled")
    key = repo.key.public_key()
    print(
        f"generated {n} records ({len(repo.nodes)} MST nodes), CAR {len(car) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s"
    )
    # The chunks a getRepo response arrives in (the network hands over bytes objects like these).
    chunks = [car[i : i + 256 * 1024] for i in range(0, len(car), 256 * 1024)]
    full, ours, streamed, floor = [], [], [], []
    for _ in range(rounds):
        gc.collect()
        t = time.perf_counter()
        _h, blocks = libipld.decode_car(car)
        full.append(time.perf_counter() - t)
        del _h, blocks
        gc.collect()
        t = time.perf_counter()
        snap = extract_from_bytes(car, DID, key)
        ours.append(time.perf_counter() - t)
        gc.collect()
        t = time.perf_counter()
        index = extract.CarIndex()
        for chunk in chunks:
            index.feed(chunk)
        index.finish()
        snap2 = extract_records(index, DID, key)
        index.close()
        streamed.append(time.perf_counter() - t)
        assert len(snap.records) == len(snap2.records) == n // 100
        gc.collect()
        t = time.perf_counter()
        assert _bare_framing(car) == len(car)
        floor.append(time.perf_counter() - t)
    print(
        f"libipld.decode_car (every block):  median {statistics.median(full) * 1000:6.1f} ms, min {min(full) * 1000:6.1f} ms"
    )
    _report("plyr extraction, whole CAR:", ours, full)
    _report("plyr extraction, 256 KiB chunks:", streamed, full)
    _report("floor: bare Python varint walk:", floor, full)
    print(
        f"records extracted: {len(snap.records)} (signature, MST path and every record block verified)"
    )


def write_big_car(path: Path, target_mb: int) -> tuple[str, int]:
    """A repo of about `target_mb` MB, 1% plyr; returns (public key multibase, plyr count)."""
    rng = random.Random(3)
    key = PrivateKey.generate("k256")
    entries: list[tuple[str, bytes]] = []
    blocks_path = path.with_suffix(".blocks")
    size = 0
    i = 0
    plyr = 0
    with blocks_path.open("wb") as out:
        while size < target_mb * 1_000_000 * 0.8:
            if i % 100 == 0:
                coll, rec = "fm.plyr.track", track(i)
                plyr += 1
            else:
                coll, rec = "app.bsky.feed.post", post(i, rng)
            block = libipld.encode_dag_cbor(rec)
            cid = cid_for_cbor(block)
            section = car_section(cid, block)
            out.write(section)
            size += len(section)
            entries.append((f"{coll}/{tid(i)}", cid))
            i += 1
    root, nodes = build_mst(entries)
    del entries
    commit = sign_commit(did=DID, data=root, rev=tid(99_999_999), key=key)
    cblock = encode_commit(commit)
    ccid = cid_for_cbor(cblock)
    node_items = list(nodes.items())
    rng.shuffle(node_items)
    with path.open("wb") as out, blocks_path.open("rb") as records:
        # commit first, then the records, then the MST nodes: no node arrives before its
        # records, so the index must hold on to what it saw (the worst case for memory).
        out.write(car_header([ccid]))
        out.write(car_section(ccid, cblock))
        while chunk := records.read(8 * 1024 * 1024):
            out.write(chunk)
        for cid, block in node_items:
            out.write(car_section(cid, block))
    blocks_path.unlink()
    return key.public_key().multibase(), plyr


def measure_big(path: Path, key_multibase: str, plyr: int) -> None:
    """Runs in a fresh process: stream the file through CarIndex and extract."""
    from protocol.crypto import parse_multikey

    key = parse_multikey(key_multibase)
    base_rss = _status("VmRSS")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as spill, path.open("rb") as f:
        index = extract.CarIndex(spill_dir=spill)
        while chunk := f.read(256 * 1024):
            index.feed(chunk)
        index.finish()
        snap = extract_records(index, DID, key)
        kept = index.indexed_blocks
        spilled = index.spilled
        index_bytes = getattr(index, "index_memory", 0)
        index.close()
    elapsed = time.perf_counter() - t
    peak = _status("VmHWM")
    assert len(snap.records) == plyr, (len(snap.records), plyr)
    size = path.stat().st_size
    print(
        f"streamed {size / 1e6:.0f} MB repo: {len(snap.records)} plyr records in {elapsed:.1f} s "
        f"({size / 1e6 / elapsed:.0f} MB/s), index kept {kept} blocks"
        f" ({index_bytes / 1e6:.0f} MB of C index), spilled={spilled}"
    )
    print(
        f"peak RSS above baseline: {(peak - base_rss) / 1e6:.1f} MB (baseline {base_rss / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=300)
    ap.add_argument("--index", choices=["native", "python"], default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it works")
    ap.add_argument("--measure", nargs=3, metavar=("FILE", "KEY", "PLYR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.records, args.rounds, args.big_mb = 2_000, 1, 5
    isolate()
    if args.index:
        extract.CarIndex = NativeCarIndex if args.index == "native" else PythonCarIndex
    elif not args.measure:
        print(f"index: {'native (protocol._car_index)' if NATIVE_FRAMING else 'pure Python'}")
    if args.measure:
        measure_big(Path(args.measure[0]), args.measure[1], int(args.measure[2]))
        return
    print(
        "command:",
        " ".join([".venv/bin/python", "tests/benchmarks/bench_backfill_extract.py", *sys.argv[1:]]),
    )
    part_time(args.records, args.rounds)
    if args.big_mb > 0:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "big.car"
            t = time.perf_counter()
            key, plyr = write_big_car(path, args.big_mb)
            print(
                f"wrote {path.stat().st_size / 1e6:.0f} MB repo CAR in {time.perf_counter() - t:.0f} s"
            )
            subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    *(["--index", args.index] if args.index else []),
                    "--measure",
                    str(path),
                    key,
                    str(plyr),
                ],
                check=True,
            )


if __name__ == "__main__":
    main()
