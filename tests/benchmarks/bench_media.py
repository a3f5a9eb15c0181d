# The script measures; blocking calls (the by-hand ffmpeg run, file reads) are deliberate here.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC230
"""Media benchmarks (a plain script, not collected by pytest).

    PLYR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python tests/benchmarks/bench_media.py [--only transcode|upload|export] [--s3]

1. transcode: a 10-minute stereo AIFF to MP3 320k through a job (claim, ffmpeg with progress,
   output probe, store, complete) against the same ffmpeg command run by hand, in the same run.
   Target: the job reaches >= 95% of the hand speed.
2. upload: a 1 GB WAV streamed to a real `plyr media` process; the peak growth of that
   process's RSS (read from /proc/PID/status every 20 ms) must stay < 64 MB.
3. export: a zip of 1 GB of tracks built by a job in that process; same RSS rule.
With --s3 the server stores into a moto S3 server (run in this script's process), which
exercises the multipart upload's bounded buffer.

It creates a scratch database on the server (PLYR_TEST_DATABASE_URL or DATABASE_URL, else the
embedded one; dropped at the end) and a scratch folder. `--smoke`: a 5 s track, a 10 MB upload
and one round, to check that the benchmark works (the targets are not judged then).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the media fixtures import their siblings (unit.media)

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from tests.support.bench_setup import ScratchDatabase, child_env, isolate, server_url  # noqa: E402

MB = 1024 * 1024
OWNER = "did:plc:benchartist0000000000000"
KEY = "bench-server-key-" + "x" * 16


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_audio(out: Path, seconds: int, fmt_args: list[str]) -> None:
    # Pink-ish noise plus a tone: lame has real work to do (silence would encode trivially).
    subprocess.run(
        [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:c=pink:a=0.2:sample_rate=44100",
         "-f", "lavfi", "-i", f"sine=f=330:d={seconds}:sample_rate=44100",
         "-filter_complex", "[0][1]amix=inputs=2,aformat=channel_layouts=stereo",
         *fmt_args, str(out)],
        check=True,
    )


class RssSampler:
    """Samples VmRSS of a process from /proc every `every` seconds, in a thread."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid, self.every = pid, every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except OSError:
                return
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------- transcode

async def bench_transcode(db_url: str, work: Path, rounds: int, seconds: int) -> dict[str, Any]:
    import hashlib

    from core import db
    from core.settings import CoreSettings
    from media import jobs
    from media.ingest import MediaContext, ingest_audio, stream_key
    from media.receive import Received
    from media.storage import LocalStorage
    from media.transcode import mp3_command
    from media.worker import Worker
    from tests.integration.media.conftest import media_settings

    aiff = work / "master.aiff"
    make_audio(aiff, seconds, ["-c:a", "pcm_s16be"])
    settings = media_settings(work / "data", transcode_timeout_s=600)
    pool = await db.create_pool(db_url, CoreSettings.from_env(), min_size=1, max_size=4)
    storage = LocalStorage(settings.media_dir, settings.public_url)
    ctx = MediaContext(settings=settings, pool=pool, storage=storage, ffmpeg=ffmpeg())
    digest = hashlib.sha256()
    with open(aiff, "rb") as fh:
        while block := fh.read(8 * MB):
            digest.update(block)
    with open(aiff, "rb") as fh:
        head = fh.read(65536)
    staged = work / "staged.aiff"
    shutil.copyfile(aiff, staged)
    info = await ingest_audio(
        ctx, Received(path=staged, size=aiff.stat().st_size, sha256=digest.hexdigest(), head=head),
        owner=OWNER, title="Bench", artist="Bench", queue_transcode=False,
    )
    sha = info["sha256"]
    master = storage.path(f"audio/{sha[:2]}/{sha}.aiff")
    hand_out = work / "by-hand.mp3"
    command = [ffmpeg(), "-hide_banner", "-nostdin", *mp3_command(master, hand_out, title="Bench", artist="Bench", progress=False, source_format="aiff")]
    hand: list[float] = []
    job_times: list[float] = []
    worker = Worker(ctx, name="bench")
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        hand.append(time.perf_counter() - start)
        await pool.execute("DELETE FROM media_renditions")
        (storage.path(stream_key(sha))).unlink(missing_ok=True)
        job_id = await jobs.enqueue(pool, kind="transcode", owner=OWNER,
                                    payload={"sha256": sha, "title": "Bench", "artist": "Bench"})
        start = time.perf_counter()
        assert await worker.run_once()
        job_times.append(time.perf_counter() - start)
        job = await jobs.get_job(pool, job_id)
        assert job is not None and job.status == "done", job and job.error
    await pool.close()
    best_hand, best_job = min(hand), min(job_times)
    return {
        "audio": f"{seconds} s stereo 44.1 kHz 16-bit AIFF ({aiff.stat().st_size / MB:.0f} MB)",
        "command": " ".join(command),
        "by_hand_s": [round(t, 3) for t in hand],
        "job_s": [round(t, 3) for t in job_times],
        "speed_ratio_best": round(best_hand / best_job, 4),
        "speed_ratio_median": round(sorted(hand)[len(hand) // 2] / sorted(job_times)[len(job_times) // 2], 4),
        "realtime_x_job": round(seconds / best_job, 1),
    }


# ---------------------------------------------------------------------------- upload + export

async def bench_upload_export(db_url: str, work: Path, use_s3: bool, only: str | None,
                              seconds: int) -> dict[str, Any]:
    wav = work / "upload.wav"  # 176,400 bytes a second
    make_audio(wav, seconds, ["-c:a", "pcm_s16le"])
    size = wav.stat().st_size
    port = free_port()
    env = child_env(
        DATABASE_URL=db_url, PLYR_DATA_DIR=str(work / "server"),
        PLYR_MEDIA_SERVER_KEY=KEY, PLYR_MEDIA_PORT=str(port), PLYR_MEDIA_WORKERS="1",
        PLYR_LOG_LEVEL="WARNING",
    )
    moto = None
    if use_s3:
        from moto.server import ThreadedMotoServer

        moto_port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                     aws_access_key_id="t", aws_secret_access_key="t").create_bucket(Bucket="bench")
        env.update(PLYR_STORAGE="s3", PLYR_S3_BUCKET="bench", PLYR_S3_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}",
                   PLYR_S3_REGION="us-east-1", AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t")
    proc = subprocess.Popen([sys.executable, "-m", "plyr", "media"], cwd=str(work), env=env)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}", "X-Plyr-Did": OWNER}
    results: dict[str, Any] = {"file_bytes": size, "storage": "s3 (moto)" if use_s3 else "local"}
    try:
        timeout = aiohttp.ClientTimeout(total=3600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(300):
                try:
                    async with session.get(f"{base}/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            # Warm up: the first upload loads code paths (ffmpeg probe, Pillow, storage client).
            small = work / "small.mp3"
            make_audio(small, 5, ["-c:a", "libmp3lame", "-b:a", "128k"])
            async with session.post(f"{base}/upload/audio", data=small.read_bytes(), headers=headers) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(1)
            sampler = RssSampler(proc.pid)
            base_rss = sampler.rss()
            with sampler:
                start = time.perf_counter()
                with open(wav, "rb") as fh:
                    async with session.post(f"{base}/upload/audio", data=fh, headers=headers) as resp:
                        body = await resp.json()
                        assert resp.status == 201, body
                upload_s = time.perf_counter() - start
            results["upload"] = {
                "seconds": round(upload_s, 2),
                "mb_per_s": round(size / MB / upload_s, 1),
                "rss_before_mb": round(base_rss / MB, 1),
                "rss_peak_mb": round(sampler.peak / MB, 1),
                "rss_growth_mb": round((sampler.peak - base_rss) / MB, 1),
            }
            print("upload:", results["upload"], flush=True)
            if only == "upload":
                return results
            # The 1 GB WAV's transcode job runs in the background worker; let it finish first so
            # the export measures the export alone.
            await _wait_job(session, base, body["jobId"])
            pool = await asyncpg.connect(db_url)
            try:
                now = datetime.now(UTC)
                await pool.execute(
                    """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url,
                                           record, created_at, sort_at)
                       VALUES ($1, $2, 'big', 'c', 'r', 'One gigabyte', 'Bench', 'wav', $3, '{}'::jsonb, $4, $4)""",
                    f"at://{OWNER}/fm.plyr.track/big", OWNER, body["streamUrl"], now,
                )
            finally:
                await pool.close()
            await asyncio.sleep(1)
            base_rss = sampler.rss()
            sampler = RssSampler(proc.pid)
            with sampler:
                start = time.perf_counter()
                async with session.post(f"{base}/exports", headers=headers) as resp:
                    job_id = (await resp.json())["jobId"]
                job = await _wait_job(session, base, job_id)
                export_s = time.perf_counter() - start
                assert job["status"] == "done", job
                start = time.perf_counter()
                got = 0
                async with session.get(f"{base}/exports/{job_id}/download", headers=headers) as resp:
                    assert resp.status == 200
                    async for chunk in resp.content.iter_chunked(MB):
                        got += len(chunk)
                download_s = time.perf_counter() - start
            results["export"] = {
                "zip_bytes": job["result"]["size"],
                "build_seconds": round(export_s, 2),
                "download_seconds": round(download_s, 2),
                "downloaded_bytes": got,
                "rss_before_mb": round(base_rss / MB, 1),
                "rss_peak_mb": round(sampler.peak / MB, 1),
                "rss_growth_mb": round((sampler.peak - base_rss) / MB, 1),
            }
            print("export:", results["export"], flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        if moto is not None:
            moto.stop()
    return results


async def _wait_job(session: aiohttp.ClientSession, base: str, job_id: int) -> dict[str, Any]:
    final: dict[str, Any] = {}
    # Jobs are read by their owner only (media/http.py): the same trusted caller that uploaded.
    headers = {"Authorization": f"Bearer {KEY}", "X-Plyr-Did": OWNER}
    async with session.get(f"{base}/jobs/{job_id}/events", headers=headers) as resp:
        async for line in resp.content:
            if line.startswith(b"data: "):
                final = orjson.loads(line[6:])
    return final


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["transcode", "upload", "export"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--s3", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny files, one round: checks that it works")
    args = parser.parse_args()
    # 600 s to transcode; 6000 s x 176,400 B/s = 1.058e9 bytes to upload: just under the 1 GiB limit
    transcode_s, upload_s = (5, 60) if args.smoke else (600, 6000)
    if args.smoke:
        args.rounds = 1
    server = server_url()
    work = isolate()
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv])}
    async with ScratchDatabase(server) as url:
        if args.only in (None, "transcode"):
            report["transcode"] = await bench_transcode(url, work, args.rounds, transcode_s)
            print("transcode:", report["transcode"], flush=True)
        if args.only in (None, "upload", "export"):
            report.update(await bench_upload_export(url, work, args.s3, args.only, upload_s))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if args.smoke:
        print("RESULT: not judged (--smoke)")
        return
    ok = True
    if "transcode" in report:
        ok &= report["transcode"]["speed_ratio_best"] >= 0.95
    for part in ("upload", "export"):
        if part in report:
            ok &= report[part]["rss_growth_mb"] < 64
    print("RESULT:", "PASS" if ok else "FAIL")


if __name__ == "__main__":
    asyncio.run(main())
