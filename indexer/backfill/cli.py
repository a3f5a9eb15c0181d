"""`plyr backfill` and `plyr audit`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from core.cli import load_settings, run_async
from core.errors import PlyrError
from core.settings import env_str
from indexer.backfill.discovery import check_dids, read_dids_file
from indexer.backfill.http import Politeness

DEFAULT_RELAY = "https://relay1.us-east.bsky.network"

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _politeness(concurrency: int, per_host: int, retries: int, timeout: float) -> Politeness:
    if concurrency < 1 or per_host < 1 or retries < 0 or timeout <= 0:
        raise PlyrError(
            "--concurrency and --per-host must be at least 1, --retries at least 0, --timeout above 0"
        )
    return Politeness(
        concurrency=concurrency, per_host=per_host, retries=retries, read_timeout=timeout,
        request_timeout=timeout,
    )  # fmt: skip


_polite_options = [
    click.option(
        "--concurrency", default=8, show_default=True, help="Repos fetched at once, overall."
    ),
    click.option(
        "--per-host", default=2, show_default=True, help="Requests at once to one PDS host."
    ),
    click.option(
        "--retries", default=4, show_default=True, help="Retries of a transient failure (backoff)."
    ),
    click.option(
        "--timeout",
        default=60.0,
        show_default=True,
        help="Seconds without data before a request fails.",
    ),
]


def polite(func: _Command) -> _Command:
    for option in reversed(_polite_options):
        func = option(func)
    return func


@click.command()
@click.option(
    "--relay",
    default=None,
    help="Relay whose listReposByCollection lists the repos "
    f"(default when no other source is given: $PLYR_BACKFILL_RELAY_URL or {DEFAULT_RELAY}).",
)
@click.option(
    "--pds",
    "pds_urls",
    multiple=True,
    help="Fetch every active repo of this PDS (listRepos). Repeatable.",
)
@click.option("--did", "dids", multiple=True, help="Fetch this repo. Repeatable.")
@click.option(
    "--dids-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File with one DID a line (# comments allowed).",
)
@click.option("--retry-failed", is_flag=True, help="Also fetch repos whose earlier attempt failed.")
@click.option("--force", is_flag=True, help="Fetch again repos that are already done.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only discover: print how many repos would be fetched and an estimate.",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Do not check commit signatures (block hashes are still checked).",
)
@click.option(
    "--spill-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where large repo CARs are spooled while read (default: the system temp folder).",
)
@polite
def backfill(
    relay: str | None, pds_urls: tuple[str, ...], dids: tuple[str, ...], dids_file: Path | None,
    retry_failed: bool, force: bool, dry_run: bool, no_verify: bool, spill_dir: Path | None,
    concurrency: int, per_host: int, retries: int, timeout: float,
) -> None:  # fmt: skip
    """Fetch whole repos (getRepo) and index their fm.plyr.* records.

    Repos come from a relay, a PDS, or DIDs given; each one's state is kept in the database, so
    an interrupted backfill continues where it stopped. Exit status 1 when any repo failed.
    """
    from core.runtime import open_runtime
    from indexer.backfill.runner import BackfillOptions, BackfillSummary, run_backfill

    settings = load_settings()
    all_dids = check_dids(dids)
    if dids_file is not None:
        all_dids += read_dids_file(dids_file)
    if not relay and not pds_urls and not all_dids:
        relay = env_str("PLYR_BACKFILL_RELAY_URL", DEFAULT_RELAY)
    opts = BackfillOptions(
        relay=relay, pds=list(pds_urls), dids=all_dids, retry_failed=retry_failed, force=force,
        dry_run=dry_run, verify_signatures=not no_verify,
        politeness=_politeness(concurrency, per_host, retries, timeout), spill_dir=spill_dir,
    )  # fmt: skip
    if no_verify:
        click.echo("warning: commit signatures will NOT be checked (--no-verify)", err=True)

    async def _run() -> BackfillSummary:
        async with open_runtime(settings) as rt:
            return await run_backfill(rt.pool, opts)

    summary = run_async(_run())
    for line in summary.lines(dry_run=dry_run):
        click.echo(line)
    if summary.failures:
        sys.exit(1)


@click.command()
@click.option(
    "--sample", type=int, default=None, help="Audit N random repos the index knows (default 20)."
)
@click.option("--all", "all_repos", is_flag=True, help="Audit every repo the index knows.")
@click.option("--did", "dids", multiple=True, help="Audit this repo. Repeatable.")
@click.option("--repair", is_flag=True, help="Fetch drifted repos again and check them once more.")
@polite
def audit(
    sample: int | None, all_repos: bool, dids: tuple[str, ...], repair: bool,
    concurrency: int, per_host: int, retries: int, timeout: float,
) -> None:  # fmt: skip
    """Compare the index with each PDS's listRecords: missing, extra and stale records.

    Exit status 1 when drift remains (after --repair, if given) or a repo could not be checked.
    """
    from core.runtime import open_runtime
    from indexer.backfill.audit import AuditReport, pick_repos, run_audit
    from indexer.backfill.runner import open_syncer

    if all_repos and sample is not None:
        raise PlyrError("give --sample N or --all, not both")
    if sample is not None and sample < 1:
        raise PlyrError("--sample must be at least 1")
    settings = load_settings()
    rules = _politeness(concurrency, per_host, retries, timeout)
    wanted = check_dids(dids)

    async def _run() -> AuditReport:
        async with open_runtime(settings) as rt:
            repos = await pick_repos(
                rt.pool, sample=None if all_repos else (sample or 20), dids=wanted
            )
            async with open_syncer(rt.pool, politeness=rules) as syncer:
                return await run_audit(syncer, repos, repair=repair, workers=concurrency)

    report = run_async(_run())
    for line in report.lines():
        click.echo(line)
    remaining = [r for r in report.repos if (r.drifted and not r.repaired) or r.error]
    if remaining:
        sys.exit(1)


commands = [backfill, audit]
