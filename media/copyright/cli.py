"""`plyr moderation catalog add` and `plyr moderation scan`: media's side of copyright scanning
(plyr/cli.py puts them in the `moderation` group with the AppView's `review`).

`catalog add` fingerprints reference recordings into the catalog and scans again the audio
they are found in (rescan.py: a reverse lookup, not a rescan of everything); `scan` works through a
backlog of audio objects in this process (the same scan as the media job, one row per attempt),
with a progress bar on stderr; an attempt that fails is handed to the media workers to retry.
Everything beyond click is imported when a command runs (`plyr --help` imports this module).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from core.runtime import Runtime
    from media.ingest import MediaContext

ISRC = re.compile(r"[A-Z]{2}[A-Z0-9]{3}[0-9]{7}")


def _emit(obj: Any) -> None:
    import sys

    import orjson

    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def clock(seconds: float) -> str:
    """h:mm:ss (or m:ss) of a number of seconds."""
    total = int(round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _isrc(value: str | None) -> str | None:
    from core.errors import PlyrError

    if value is None:
        return None
    code = value.replace("-", "").strip().upper()
    if not ISRC.fullmatch(code):
        raise PlyrError(f"--isrc {value!r} is not an ISRC (CC-XXX-YY-NNNNN: 12 letters and digits)")
    return code


@click.group("catalog")
def catalog() -> None:
    """The reference catalog: recordings whose copies the scans look for."""


@catalog.command("add")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--artist", required=True, help="Who the recordings are by.")
@click.option("--title", help="The recording's title (one file); default: each file's name.")
@click.option("--isrc", help="The recording's ISRC (one file).")
def catalog_add(files: tuple[Path, ...], artist: str, title: str | None, isrc: str | None) -> None:
    """Fingerprint FILES (any audio ffmpeg reads, any length) into the reference catalog; one JSON
    object a line, with each recording's reference id. The audio already scanned that a new
    recording is found in is scanned again (said on stderr)."""
    from tqdm import tqdm

    from core.cli import load_settings, run_async
    from core.errors import PlyrError
    from core.runtime import open_runtime
    from media import fingerprint
    from media.copyright.rescan import add_and_rescan

    if len(files) > 1 and (title is not None or isrc is not None):
        raise PlyrError("--title and --isrc name one recording: give one file, or leave them out")
    code = _isrc(isrc)
    if not artist.strip():
        raise PlyrError("--artist is empty")
    failed: list[str] = []

    async def _add() -> None:
        async with open_runtime(load_settings()) as rt:
            media = _media_context(rt)
            try:
                for path in tqdm(files, desc="fingerprinting", unit="file", disable=len(files) < 2):
                    name = title if title is not None else path.stem
                    try:
                        async with rt.pool.acquire() as conn:
                            ref, rescans = await add_and_rescan(media, conn, path, artist=artist.strip(),
                                                                title=name, isrc=code)  # fmt: skip
                    except fingerprint.FingerprintError as exc:
                        failed.append(f"{path}: {exc}")
                        click.echo(f"{path}: {exc}", err=True)
                        continue
                    _emit({"referenceId": ref, "file": str(path), "artist": artist.strip(), "title": name,
                           "isrc": code})  # fmt: skip
                    for found, outcome in rescans:
                        click.echo(f"reference {ref} is in audio {found.sha256} at {clock(found.offset_s)}: scanned "
                                   f"again (scan {outcome.scan_id}): {outcome.status}", err=True)  # fmt: skip
            finally:
                await media.storage.close()

    run_async(_add())
    if failed:
        raise PlyrError(f"{len(failed)} of {len(files)} files could not be added (see above)")


def _media_context(rt: Runtime) -> MediaContext:
    from core.cli import load_settings
    from media.ffmpeg import ffmpeg_exe
    from media.ingest import MediaContext
    from media.settings import MediaSettings
    from media.storage import storage_from_settings

    settings = MediaSettings.from_env(core=load_settings())
    return MediaContext(settings=settings, pool=rt.pool, storage=storage_from_settings(settings),
                        ffmpeg=ffmpeg_exe(settings.ffmpeg))  # fmt: skip


@click.command("scan")
@click.option("--unscanned", "which", flag_value="unscanned", help="Audio never scanned (nor being scanned).")
@click.option("--errors", "which", flag_value="errors", help="Audio whose newest scan failed, with no retry pending.")
@click.option("--all", "which", flag_value="all", help="All the audio we hold, again (after loading references).")
@click.option("--max-duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Leave out audio longer than S seconds.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what would be scanned; scan nothing.")
def scan(which: str | None, max_duration: float | None, dry_run: bool) -> None:
    """Scan a backlog of the audio we hold in this process, with a progress bar.

    Each audio gets a `copyright_scans` row (clear, flagged, or error with the message), as the
    media job writes it; a failed attempt is queued for the media workers to retry with backoff.
    """
    from tqdm import tqdm

    from core.cli import load_settings, run_async
    from core.errors import PlyrError
    from core.runtime import open_runtime
    from media.copyright import store
    from media.copyright.scan import scan_audio
    from media.jobs import backoff_s

    if which is None:
        raise PlyrError("say what to scan: --unscanned, --errors or --all")
    counts = {"clear": 0, "flagged": 0, "error": 0}

    async def _scan() -> tuple[int, float, int]:
        async with open_runtime(load_settings()) as rt:
            n, seconds, skipped = await store.backlog_size(rt.pool, which, max_duration)
            if dry_run:
                async for audio in store.backlog(rt.pool, which, max_duration):
                    click.echo(f"would scan {audio.sha256} ({clock(audio.duration_s or 0)}) {audio.storage_key}")
                return n, seconds, skipped
            media = _media_context(rt)
            try:
                with tqdm(total=round(seconds), unit="s", unit_scale=True, desc="scanning", smoothing=0.1) as bar:
                    async for audio in store.backlog(rt.pool, which, max_duration):
                        attempt = await store.attempts_so_far(rt.pool, audio.sha256) + 1
                        outcome = await scan_audio(media, audio.sha256, attempt=attempt, retry_in_s=backoff_s(1))
                        counts[outcome.status] += 1
                        if outcome.status == "error" and not outcome.audio_missing:
                            await store.request_scan(rt.pool, audio.sha256, owner=audio.uploaded_by,
                                                     previous_attempts=attempt, delay_s=backoff_s(1), force=True)  # fmt: skip
                        if outcome.status != "clear":
                            detail = outcome.error if outcome.error else f"{len(outcome.matches)} matches"
                            tqdm.write(f"{outcome.status} {audio.sha256} (scan {outcome.scan_id}): {detail}")
                        bar.update(round(audio.duration_s or 0))
                        bar.set_postfix(flagged=counts["flagged"], errors=counts["error"], refresh=False)
            finally:
                await media.storage.close()
            return n, seconds, skipped

    n, seconds, skipped = run_async(_scan())
    left_out = f"; {skipped} longer than {max_duration:g} s left out" if skipped else ""
    if dry_run:
        click.echo(f"would scan {n} audio objects ({clock(seconds)} of audio){left_out}")
        return
    click.echo(
        f"scanned {sum(counts.values())} audio objects ({clock(seconds)} of audio): {counts['clear']} clear, "
        f"{counts['flagged']} flagged, {counts['error']} errors"
        + (" (queued for the media workers to retry)" if counts["error"] else "") + left_out
    )


commands: list[click.Command] = [catalog, scan]
