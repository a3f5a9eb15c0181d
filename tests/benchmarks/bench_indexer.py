"""Indexer benchmarks (a plain script, not collected by pytest).

    .venv/bin/python tests/benchmarks/bench_indexer.py [decode|websocket|e2e|all] [--frames N]

- decode: a generated capture shaped like the network (~99.9% app.bsky.* commits, ~0.1%
  fm.plyr.*, real signed commits and diff CARs with MST proof nodes, mean ~2.8 KB) read from a
  capture file through the indexer's decode + filter (+ verification of the matched commits),
  against libipld decoding header + body of the same frames in the same run (one core).
- websocket: the same frames over a loopback websocket (server in another process): the
  indexer's consumer (decode, filter, verify, batches and cursor into Postgres) against a bare
  receive loop.
- e2e: a capture that is all fm.plyr.* (tracks, likes, comments, lists, profiles), replayed
  into a fresh Postgres database through the consumer and writer; records/s.

Postgres: PLYR_TEST_DATABASE_URL or DATABASE_URL (a database is created and dropped), else an
embedded one. Captures are cached in $PLYR_BENCH_DIR (default /tmp/plyr-bench). `--smoke`: small
captures in a scratch folder and one round of each part, to check that the benchmark works.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import random
import string
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libipld

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from indexer.frames import CommitEvent, FrameDecoder  # noqa: E402
from indexer.sources import CaptureSource  # noqa: E402
from indexer.verify import Verifier  # noqa: E402
from protocol.crypto import PrivateKey  # noqa: E402
from tests.support.bench_setup import ScratchDatabase, isolate, server_url  # noqa: E402
from tests.support.frames import write_capture  # noqa: E402
from tests.support.repo_builder import RepoBuilder, TidClock  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """How the generated captures look and where they are cached."""

    cache_dir: Path
    repos: int = 300  # network-shaped capture: repos with some history
    prefill: int = 80  # records per repo before the capture starts
    plyr_every: int = 1000  # one fm.plyr.* commit in this many frames
    plyr_repos: int = 500  # all-plyr capture
    plyr_prefill: int = 5


TIME = "2026-01-01T00:00:00.000Z"
WORDS = [
    "".join(random.Random(i).choices(string.ascii_lowercase, k=random.Random(i).randint(2, 9)))
    for i in range(2000)
]


def _did(i: int) -> str:
    rnd = random.Random(i)
    return "did:plc:" + "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz234567", k=24))


def _text(rnd: random.Random, lo: int, hi: int) -> str:
    n = rnd.randint(lo, hi)
    out: list[str] = []
    size = 0
    while size < n:
        w = rnd.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def bsky_record(rnd: random.Random) -> tuple[str, dict[str, Any]]:
    kind = rnd.random()
    if kind < 0.45:
        rec: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": _text(rnd, 10, 220), "createdAt": TIME, "langs": ["en"]}
        if rnd.random() < 0.3:
            rec["reply"] = {
                "root": {"uri": f"at://{_did(rnd.randrange(10**6))}/app.bsky.feed.post/3k{rnd.randrange(10**9)}", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
                "parent": {"uri": f"at://{_did(rnd.randrange(10**6))}/app.bsky.feed.post/3k{rnd.randrange(10**9)}", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
            }
        return "app.bsky.feed.post", rec
    subject = {"uri": f"at://{_did(rnd.randrange(10**6))}/app.bsky.feed.post/3k{rnd.randrange(10**9)}", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
    if kind < 0.80:
        return "app.bsky.feed.like", {"$type": "app.bsky.feed.like", "subject": subject, "createdAt": TIME}
    if kind < 0.90:
        return "app.bsky.feed.repost", {"$type": "app.bsky.feed.repost", "subject": subject, "createdAt": TIME}
    return "app.bsky.graph.follow", {"$type": "app.bsky.graph.follow", "subject": _did(rnd.randrange(10**6)), "createdAt": TIME}


def plyr_record(rnd: random.Random, did: str, tracks: list[str]) -> tuple[str, dict[str, Any]]:
    kind = rnd.random()
    ref = {"uri": rnd.choice(tracks) if tracks else f"at://{did}/fm.plyr.track/3kaaaaaaaaa22", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
    if kind < 0.35 or not tracks:
        return "fm.plyr.track", {
            "$type": "fm.plyr.track", "title": _text(rnd, 5, 40), "artist": _text(rnd, 3, 20),
            "fileType": "mp3", "audioUrl": f"https://cdn.plyr.example/{rnd.randrange(10**9)}.mp3",
            "imageUrl": f"https://cdn.plyr.example/{rnd.randrange(10**9)}.jpg", "duration": rnd.randint(30, 600),
            "description": _text(rnd, 0, 200), "createdAt": TIME,
        }  # fmt: skip
    if kind < 0.75:
        return "fm.plyr.like", {"$type": "fm.plyr.like", "subject": ref, "createdAt": TIME}
    if kind < 0.95:
        return "fm.plyr.comment", {"$type": "fm.plyr.comment", "subject": ref, "text": _text(rnd, 5, 200), "timestampMs": rnd.randint(0, 300_000), "createdAt": TIME}
    return "fm.plyr.list", {
        "$type": "fm.plyr.list", "name": _text(rnd, 3, 30), "listType": "playlist", "createdAt": TIME,
        "items": [{"subject": {"uri": t, "cid": ref["cid"]}} for t in rnd.sample(tracks, min(len(tracks), 5))],
    }  # fmt: skip


class Net:
    """Repos with some history, producing one-record commits as frames."""

    def __init__(self, n_repos: int, prefill: int, seed: int = 7) -> None:
        self.rnd = random.Random(seed)
        self.repos: list[RepoBuilder] = []
        self.keys: dict[str, Any] = {}
        self.tracks: dict[str, list[str]] = {}
        for i in range(n_repos):
            key = PrivateKey.generate("k256" if i % 2 else "p256")
            did = _did(i)
            repo = RepoBuilder(did, key, clock=TidClock(i % 1024))
            for _ in range(prefill):
                coll, rec = bsky_record(self.rnd)
                repo.put(coll, repo.clock.next(), rec)
            repo.commit()
            self.repos.append(repo)
            self.keys[did] = key.public_key()
            self.tracks[did] = []

    def frame(self, seq: int, plyr: bool) -> bytes:
        repo = self.rnd.choice(self.repos)
        if plyr:
            all_tracks = [t for ts in self.tracks.values() for t in ts[-3:]]
            coll, rec = plyr_record(self.rnd, repo.did, all_tracks[-200:])
        else:
            coll, rec = bsky_record(self.rnd)
        rkey = repo.clock.next()
        repo.put(coll, rkey, rec)
        if coll == "fm.plyr.track":
            self.tracks[repo.did].append(f"at://{repo.did}/{coll}/{rkey}")
        return repo.commit().firehose_frame(seq, TIME)


def network_capture(n_frames: int, shape: Shape) -> tuple[Path, dict[str, Any]]:
    plyr_every = shape.plyr_every
    path = shape.cache_dir / f"network-{n_frames}-{plyr_every}-{shape.repos}x{shape.prefill}.bin"
    keys_path = path.with_suffix(".keys")
    if not path.exists() or not keys_path.exists():
        shape.cache_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        net = Net(n_repos=shape.repos, prefill=shape.prefill)
        frames = [net.frame(seq, plyr=(seq % plyr_every == plyr_every // 2)) for seq in range(1, n_frames + 1)]
        write_capture(path, frames)
        import orjson

        keys_path.write_bytes(orjson.dumps({d: k.did_key() for d, k in net.keys.items()}))
        print(f"  generated {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    import orjson

    from protocol.crypto import parse_did_key

    keys = {d: parse_did_key(k) for d, k in orjson.loads(keys_path.read_bytes()).items()}
    return path, keys


def plyr_capture(n_frames: int, shape: Shape) -> Path:
    path = shape.cache_dir / f"plyr-{n_frames}-{shape.plyr_repos}x{shape.plyr_prefill}.bin"
    if not path.exists():
        shape.cache_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        net = Net(n_repos=shape.plyr_repos, prefill=shape.plyr_prefill)
        frames = [net.frame(seq, plyr=True) for seq in range(1, n_frames + 1)]
        write_capture(path, frames)
        print(f"  generated {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


def load_frames(path: Path) -> list[bytes]:
    from indexer.sources import split_frames

    frames, _ = split_frames(path.read_bytes(), 0)
    return frames


class DictResolver:
    """Signing keys from memory: the benchmark measures verification, not the network."""

    def __init__(self, keys: dict[str, Any]) -> None:
        self.keys = keys

    async def signing_key(self, did: str, *, fresh: bool = False) -> Any:
        return self.keys[did]

    def invalidate(self, did: str) -> None:
        pass


# ---- decode ------------------------------------------------------------------------------------


def bench_decoder_in_memory(frames: list[bytes]) -> float:
    decode = FrameDecoder().decode
    t0 = time.perf_counter()
    for f in frames:
        decode(f)
    return len(frames) / (time.perf_counter() - t0)


def bench_bare(frames: list[bytes]) -> float:
    decode = libipld.decode_dag_cbor_multi
    t0 = time.perf_counter()
    for f in frames:
        decode(f)
    return len(frames) / (time.perf_counter() - t0)


async def _pipeline(path: Path, verifier: Verifier | None) -> tuple[float, int, int]:
    """Capture file -> source batches -> decoder -> verification of matched commits."""
    decoder = FrameDecoder()
    decode = decoder.decode
    matched = ops = 0
    t0 = time.perf_counter()
    async for batch in CaptureSource(path).batches(lambda: None):
        for raw in batch:
            ev = decode(raw)
            if ev is not None and type(ev) is CommitEvent:
                matched += 1
                if verifier is not None:
                    ops += len(await verifier.commit_ops(ev))
    return decoder.frames / (time.perf_counter() - t0), matched, ops


def bench_decode(n_frames: int, repeat: int, shape: Shape) -> dict[str, float]:
    path, keys = network_capture(n_frames, shape)
    frames = load_frames(path)
    mean = sum(len(f) for f in frames) / len(frames)
    plyr = sum(
        1 for f in frames if any(op["path"].startswith("fm.plyr.") for op in libipld.decode_dag_cbor_multi(f)[1]["ops"])
    )
    print(f"capture: {len(frames)} frames, mean {mean:.0f} B, {plyr} with fm.plyr ops ({plyr / len(frames):.2%})")
    verifier_on = Verifier(DictResolver(keys), verify_signatures=True)
    verifier_off = Verifier(None, verify_signatures=False)
    best: dict[str, float] = {"bare": 0, "decoder": 0, "filter": 0, "filter+cid": 0, "filter+verify": 0}
    gc.collect()
    for _ in range(repeat):
        best["bare"] = max(best["bare"], bench_bare(frames))
        best["decoder"] = max(best["decoder"], bench_decoder_in_memory(frames))
        best["filter"] = max(best["filter"], asyncio.run(_pipeline(path, None))[0])
        rate, m, n = asyncio.run(_pipeline(path, verifier_off))
        best["filter+cid"] = max(best["filter+cid"], rate)
        rate, m, n = asyncio.run(_pipeline(path, verifier_on))
        best["filter+verify"] = max(best["filter+verify"], rate)
    assert m == plyr and n >= m, (m, n, plyr)
    print(f"libipld bare header+body decode (in memory):        {best['bare']:>10,.0f} frames/s")
    print(f"indexer FrameDecoder.decode (in memory):            {best['decoder']:>10,.0f} frames/s  ({best['decoder'] / best['bare']:.0%} of bare)")
    print(f"indexer decode+filter from the capture file:        {best['filter']:>10,.0f} frames/s  ({best['filter'] / best['bare']:.0%} of bare)")
    print(f"  + CIDs of matched commits checked (--no-verify):  {best['filter+cid']:>10,.0f} frames/s  ({best['filter+cid'] / best['bare']:.0%})")
    print(f"  + signatures verified too (default):              {best['filter+verify']:>10,.0f} frames/s  ({best['filter+verify'] / best['bare']:.0%})")
    return best


# ---- websocket ---------------------------------------------------------------------------------


def _ws_frame(payload: bytes) -> bytes:
    """An unmasked binary websocket frame (server to client), RFC 6455."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, n])
    elif n < 65536:
        head = bytes([0x82, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, 127]) + n.to_bytes(8, "big")
    return head + payload


def _serve(path: str, port_q: Any, rounds: int) -> None:
    """Server process: a minimal websocket server that writes pre-encoded frames in big chunks,
    so that the sender is never the bottleneck of the receive benchmark."""
    import base64
    import hashlib

    frames = load_frames(Path(path))
    chunks: list[bytes] = []
    buf: list[bytes] = []
    size = 0
    for f in frames:
        buf.append(_ws_frame(f))
        size += len(f)
        if size > 1 << 20:
            chunks.append(b"".join(buf))
            buf, size = [], 0
    chunks.append(b"".join(buf))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        for _ in range(rounds):
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
        writer.write(b"\x88\x02\x03\xe8")  # close 1000
        await writer.drain()
        try:
            # The client's close frame (it sends nothing else); then the TCP close, which the
            # client waits for before its close() returns.
            await asyncio.wait_for(reader.read(64), 5)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_q.put(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    import uvloop

    uvloop.run(main())


async def _bare_receive(url: str, n_expected: int) -> tuple[int, float]:
    from websockets.asyncio.client import connect

    n = 0
    t0 = 0.0
    async with connect(url, compression=None, max_size=None) as ws:
        async for _msg in ws:
            if n == 0:
                t0 = time.perf_counter()  # timed from the first message, like the indexer
            n += 1
            if n == n_expected:
                break
        elapsed = time.perf_counter() - t0
    return n, elapsed


async def _indexer_receive(url: str, database_url: str, keys: dict[str, Any], n_expected: int) -> tuple[int, float]:
    """The real consumer (decode, filter, verify, batches + cursor into Postgres) on a websocket."""
    from core import db
    from core.backoff import Backoff
    from core.settings import CoreSettings
    from indexer.consumer import Consumer
    from indexer.sources import RelaySource
    from indexer.writer import default_lexicons

    pool = await db.create_pool(database_url, CoreSettings.from_env(), min_size=1, max_size=4)
    source = RelaySource(url, name=f"bench-{uuid.uuid4().hex[:6]}", backoff=Backoff(5, 5))
    consumer = Consumer(pool, source, lexicons=default_lexicons(), verifier=Verifier(DictResolver(keys)), status_interval=3600)
    task = asyncio.create_task(consumer.run())
    while consumer.decoder.frames == 0 and not task.done():  # noqa: ASYNC110 - polls a counter
        await asyncio.sleep(0.001)
    if task.done():
        await pool.close()
        task.result()  # raises what stopped the consumer
    t0 = time.perf_counter()
    while consumer.decoder.frames < n_expected and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    n = consumer.decoder.frames
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pool.close()
    return n, elapsed


def bench_websocket(n_frames: int, server: str, rounds: int, shape: Shape, passes: int = 2) -> dict[str, float]:
    import uvloop

    path, keys = network_capture(n_frames, shape)
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, float] = {}
    for name in ("bare", "indexer") * passes:  # alternating, so both see the same load
        q = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(str(path), q, rounds), daemon=True)
        proc.start()
        try:
            url = f"ws://127.0.0.1:{q.get(timeout=60)}"
            if name == "bare":
                n, elapsed = uvloop.run(_bare_receive(url, n_frames * rounds))
            else:
                with ScratchDatabase(server) as db_url:
                    n, elapsed = uvloop.run(_indexer_receive(url, db_url, keys, n_frames * rounds))
        finally:
            proc.kill()
            proc.join()
        out[name] = max(out.get(name, 0), n / elapsed)
    print(f"websocket bare receive loop (loopback):             {out['bare']:>10,.0f} frames/s")
    print(f"websocket indexer consumer (decode+verify+cursor):  {out['indexer']:>10,.0f} frames/s  ({out['indexer'] / out['bare']:.0%} of bare)")
    return out


# ---- end to end ----------------------------------------------------------------------------------


async def _e2e(path: Path, database_url: str, verify: bool, keys: dict[str, Any] | None) -> tuple[int, float, int]:
    from core import db
    from core.settings import CoreSettings
    from indexer.consumer import Consumer
    from indexer.writer import default_lexicons

    pool = await db.create_pool(database_url, CoreSettings.from_env(), min_size=1, max_size=4)
    try:
        verifier = Verifier(DictResolver(keys or {}) if verify else None, verify_signatures=verify)
        consumer = Consumer(pool, CaptureSource(path, name=f"bench-{uuid.uuid4().hex[:6]}"), lexicons=default_lexicons(), verifier=verifier, status_interval=3600, batch_size=int(os.environ.get("BATCH", "1000")))
        t0, c0 = time.perf_counter(), time.process_time()
        await consumer.run()
        elapsed = time.perf_counter() - t0
        print(f"  (indexer process CPU {time.process_time() - c0:.2f}s of {elapsed:.2f}s wall)")
        rows = await pool.fetchval(
            "SELECT (SELECT count(*) FROM tracks) + (SELECT count(*) FROM likes) + (SELECT count(*) FROM comments)"
            " + (SELECT count(*) FROM lists)"
        )
        return consumer.stats.written, elapsed, rows
    finally:
        await pool.close()


def bench_e2e(n_frames: int, server: str, shape: Shape) -> dict[str, float]:
    import uvloop

    path = plyr_capture(n_frames, shape)
    out: dict[str, float] = {}
    for verify in (False,):
        with ScratchDatabase(server) as url:
            written, elapsed, rows = uvloop.run(_e2e(path, url, verify, None))
        out["no-verify"] = written / elapsed
        print(f"end to end into Postgres (--no-verify):             {written / elapsed:>10,.0f} records/s  ({written} records, {rows} rows, {elapsed:.2f}s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="all", choices=["decode", "websocket", "e2e", "all"])
    parser.add_argument("--frames", type=int, default=30_000, help="frames in the network-shaped capture")
    parser.add_argument("--plyr-frames", type=int, default=30_000, help="frames in the all-plyr capture")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="times the websocket server sends the capture")
    parser.add_argument("--smoke", action="store_true", help="small captures, one round: checks that it works")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("PLYR_BENCH_DIR", "/tmp/plyr-bench"))
    server = server_url()
    scratch = isolate()
    shape = Shape(cache_dir)
    if args.smoke:
        args.frames, args.plyr_frames, args.repeat, args.rounds = 500, 300, 1, 1
        shape = Shape(scratch / "captures", repos=20, prefill=10, plyr_every=50, plyr_repos=20)
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, libipld {getattr(libipld, '__version__', '?')}")
    if args.what in ("decode", "all"):
        bench_decode(args.frames, args.repeat, shape)
    if args.what in ("websocket", "all"):
        bench_websocket(args.frames, server, args.rounds, shape, passes=1 if args.smoke else 2)
    if args.what in ("e2e", "all"):
        bench_e2e(args.plyr_frames, server, shape)


if __name__ == "__main__":
    main()
