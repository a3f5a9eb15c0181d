"""`plyr moderation review`: flagged copyright scans and the decisions on them, on the database
directly (plyr/cli.py puts it in the `moderation` group with media's `catalog` and `scan`).

The same functions as `fm.plyr.moderation.listScans`/`resolveScan` (copyright.py), the reviewer
recorded as `cli:<OS user>`. Everything beyond click is imported when a command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from appview.moderation.cli import _emit, _moderator, _run

if TYPE_CHECKING:
    from core.db import Connection

RESOLUTIONS = ("violation", "false_positive", "original_artist")


def clock(ms: int) -> str:
    """h:mm:ss (or m:ss) of milliseconds."""
    h, rest = divmod(int(round(ms / 1000)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render(scan: dict[str, Any]) -> str:
    """A scan as a moderator reads it: what was scanned, each match with its offsets."""
    lines = [
        f"scan {scan['id']}  {scan['status']}  {scan['finishedAt'][:19].replace('T', ' ')}  "
        f"audio {scan['audio'][:12]}… ({clock(scan.get('durationMs', 0))})  attempt {scan['attempt']}"
    ]
    tracks = scan["tracks"] or ([scan["trackUri"]] if "trackUri" in scan else [])
    for uri in tracks:
        lines.append(f"  track {uri}")
    if not tracks:
        lines.append("  no track plays it yet")
    if "uploadedBy" in scan:
        lines.append(f"  uploaded by {scan['uploadedBy']}")
    for m in scan["matches"]:
        start, length = m["offsetMs"], m["lengthMs"]
        span = f"{clock(start)}-{clock(start + length)} ({clock(length)})"
        if "referenceId" in m:
            ref = m.get("reference")
            what = f"reference {m['referenceId']}" + (
                f" {ref['artist']} - {ref['title']}" + (f" [{ref['isrc']}]" if "isrc" in ref else "") if ref else ""
            )
        elif "recognition" in m:
            rec = m["recognition"]
            what = f"recording {rec.get('artist', '')} - {rec.get('title', '')} ({scan.get('engine', 'external')})"
        else:
            what = (f"track {m['trackUri']}" if "trackUri" in m else f"audio {m['audio'][:12]}…" if "audio" in m
                    else f"fingerprint {m.get('fingerprintId')}")  # fmt: skip
        if "copier" in m:
            what = f"the same audio as {what}, brought later by {m['copier']}"
        decided = (f"; decided before: {m['decidedResolution']} (review {m['decidedReviewId']})"
                   if "decidedReviewId" in m else "")  # fmt: skip
        lines.append(f"  {span}  matches {what} at {clock(m['referenceOffsetMs'])}, "
                     f"similarity {m['similarity'] / 1000:.2f}{decided}")  # fmt: skip
    if "error" in scan:
        lines.append(f"  error: {scan['error']}")
    if "review" in scan:
        r = scan["review"]
        lines.append(f"  reviewed: {r['resolution']} by {r['reviewer']} {r['createdAt'][:19].replace('T', ' ')}: {r['note']}")
    return "\n".join(lines)


@click.group("review", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Reviewed flagged scans too, with their decision.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line (the listScans view).")
@click.pass_context
def review(ctx: click.Context, show_all: bool, limit: int, as_json: bool) -> None:
    """Flagged copyright scans not reviewed yet (--all: reviewed too), newest first, with their
    matches and where they occur; `review resolve` decides on one."""
    if ctx.invoked_subcommand is not None:
        return
    from appview.moderation import copyright

    async def work(conn: Connection) -> None:
        views, _ = await copyright.list_scans(conn, limit=limit, status="flagged", unreviewed=not show_all)
        for view in views:
            if as_json:
                _emit(view)
            else:
                click.echo(render(view) + "\n")
        if not views:
            click.echo("no flagged scans" + ("" if show_all else " to review"), err=True)

    _run(work)


@review.command("resolve")
@click.argument("scan_id", type=click.IntRange(min=1))
@click.argument("resolution", type=click.Choice(RESOLUTIONS))
@click.option("--note", required=True, help="What the review found (kept with the decision).")
@click.option("--track", "tracks", multiple=True,
              help="A track the decision is about (repeatable); default: every track that plays the audio.")  # fmt: skip
def resolve(scan_id: int, resolution: str, note: str, tracks: tuple[str, ...]) -> None:
    """Decide on flagged scan SCAN_ID: `violation` takes its tracks down (our labeler's
    `!takedown`), `original_artist` allow-lists their artists for the matched references,
    `false_positive` records the decision. Prints the result as JSON."""
    from appview.moderation import copyright
    from appview.moderation.cli import _signer

    signer = _signer() if resolution == "violation" else None

    async def work(conn: Connection) -> None:
        done = await copyright.resolve_scan(conn, signer, scan_id=scan_id, resolution=resolution, note=note,
                                            reviewer=_moderator(), tracks=list(tracks) or None)  # fmt: skip
        _emit({"review": done.review, "actions": done.actions, "labels": [lb.to_json() for lb in done.labels],
               "allowlisted": done.allowlisted})  # fmt: skip

    _run(work)


commands: list[click.Command] = [review]
