"""`plyr admin`: the operators' moderation commands, on the database directly.

The same functions as the `fm.plyr.moderation.*` methods (actions.py, reports.py), with the
moderator recorded as `cli:<OS user>`. Results are JSON, one object a line. Everything beyond
click is imported when a command runs (`plyr --help` imports this module).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from appview.labeler.store import LabelSigner
    from appview.moderation.actions import Outcome
    from core.db import Connection


def _moderator() -> str:
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment nor in the password database
        return "cli:unknown"


def _emit(obj: Any) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def _signer() -> LabelSigner:
    from appview.moderation.signer import signer_from_settings
    from appview.settings import AppviewSettings
    from core.cli import load_settings
    from core.errors import PlyrError

    signer = signer_from_settings(AppviewSettings.from_env(core=load_settings()))
    if signer is None:
        raise PlyrError("no labeler key: set PLYR_LABELER_KEY or PLYR_LABELER_KEY_FILE (the AppView's labeler signs takedowns)")
    return signer


def _run(work: Callable[[Connection], Awaitable[None]]) -> None:
    """Run `work` on a connection of the configured database (migrated first, as every
    command does); a refused subject or value is one line, exit 1."""
    from appview.moderation.subjects import ModerationError
    from core.cli import load_settings, run_async
    from core.errors import PlyrError
    from core.runtime import open_runtime

    async def _go() -> None:
        async with open_runtime(load_settings()) as rt, rt.pool.acquire() as conn:
            await work(conn)

    try:
        run_async(_go())
    except ModerationError as exc:
        raise PlyrError(str(exc)) from None


def _subject(text: str, cid: str | None = None) -> Any:
    from appview.moderation.subjects import ModerationError, parse_subject
    from core.errors import PlyrError

    try:
        return parse_subject(text, cid)
    except ModerationError as exc:
        raise PlyrError(str(exc)) from None


def _outcome(done: Outcome) -> dict[str, Any]:
    return {"action": done.action, "labels": [label.to_json() for label in done.labels],
            "resolvedReports": done.resolved_reports}  # fmt: skip


@click.group("admin")
def admin() -> None:
    """Moderation: take down, restore, label; the audit log and the review queue of reports."""


@admin.command("takedown")
@click.argument("subject")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option("--cid", help="Only this version of the record.")
def takedown_cmd(subject: str, reason: str, cid: str | None) -> None:
    """Take down SUBJECT (a DID or an at:// record URI): our `!takedown` label, an audit row,
    and its open reports resolved. Taking down twice signs no second label."""
    from appview.moderation import actions

    target, signer = _subject(subject, cid), _signer()

    async def work(conn: Connection) -> None:
        _emit(_outcome(await actions.takedown(conn, signer, target, reason=reason, moderator=_moderator())))

    _run(work)


@admin.command("restore")
@click.argument("subject")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option("--cid", help="The version the takedown named, if any.")
def restore_cmd(subject: str, reason: str, cid: str | None) -> None:
    """Undo a takedown of SUBJECT: the negation of our `!takedown` label and an audit row."""
    from appview.moderation import actions

    target, signer = _subject(subject, cid), _signer()

    async def work(conn: Connection) -> None:
        _emit(_outcome(await actions.restore(conn, signer, target, reason=reason, moderator=_moderator())))

    _run(work)


@admin.command("label")
@click.argument("subject")
@click.option("--add", "add", multiple=True, help="A label value to add (`!warn`, `porn`, ...); repeatable.")
@click.option("--remove", "remove", multiple=True, help="A label value to remove; repeatable.")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option("--cid", help="Only this version of the record.")
def label_cmd(subject: str, add: tuple[str, ...], remove: tuple[str, ...], reason: str, cid: str | None) -> None:
    """Add or remove label values other than `!takedown` on SUBJECT."""
    from appview.moderation import actions

    target, signer = _subject(subject, cid), _signer()

    async def work(conn: Connection) -> None:
        for done in await actions.set_labels(conn, signer, target, add=list(add), remove=list(remove),
                                             reason=reason, moderator=_moderator()):  # fmt: skip
            _emit(_outcome(done))

    _run(work)


@admin.command("resolve")
@click.argument("subject")
@click.option("--note", required=True, help="What the review found (kept in the audit log).")
def resolve_cmd(subject: str, note: str) -> None:
    """Close the open reports of SUBJECT without labelling it."""
    from appview.moderation import actions

    target = _subject(subject)

    async def work(conn: Connection) -> None:
        done = await actions.resolve_reports(conn, target, note=note, moderator=_moderator())
        _emit(_outcome(done))
        if done.action is None:
            click.echo(f"no open reports of {target.uri}", err=True)

    _run(work)


@admin.command("actions")
@click.option("--subject", help="Only the actions on this DID or record URI.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def actions_cmd(subject: str | None, limit: int) -> None:
    """The audit log, newest first: one JSON object a line."""
    from appview.moderation import actions

    uri = _subject(subject).uri if subject is not None else None

    async def work(conn: Connection) -> None:
        views, _ = await actions.list_actions(conn, limit=limit, subject=uri)
        for view in views:
            _emit(view)

    _run(work)


@admin.command("reports")
@click.option("--limit", type=click.IntRange(1, 10_000), default=25, show_default=True)
def reports_cmd(limit: int) -> None:
    """The review queue: open reports grouped by subject, waiting longest first; one JSON
    object a line."""
    from appview.moderation import reports

    async def work(conn: Connection) -> None:
        groups, _ = await reports.list_report_groups(conn, limit=limit)
        for group in groups:
            _emit(group)
        if not groups:
            click.echo("no open reports", err=True)

    _run(work)


commands: list[click.Command] = [admin]
