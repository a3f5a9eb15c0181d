"""`plyr publish edit URI` and `plyr publish delete URI`.

Edit reads the record, changes the fields given, checks it against our lexicons and writes it
back with `swapRecord` = the CID it read: an edit made meanwhile (another machine, another
client) makes the PDS refuse the write instead of being overwritten.

Delete removes the record (swapping on the CID read), takes it out of the account's lists,
then asks our media service to delete our copy of its audio and cover (DELETE /media/{sha256},
token lxm fm.plyr.media.deleteMedia) unless another of the account's records still uses them.
The media service has the last word: it deletes only for the account that uploaded the file
and keeps it while any other indexed track names it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from publish.errors import PublishError
from publish.media_client import LXM_DELETE_MEDIA, sha256_in_url
from publish.publisher import Publisher, TrackInput
from publish.records import LIST, TRACK, RecordGone, now_iso, parse_uri, swap_conflict


def edit_record(pub: Publisher, uri: str, given: TrackInput, *, clear: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """Change the given fields of a track (or the name of a list); (new cid, changed fields)."""
    _, collection, _ = parse_uri(uri)
    if collection not in (TRACK, LIST):
        raise PublishError(f"{uri}: only {TRACK} and {LIST} records can be edited here")
    try:
        cid, value = pub.repo.get(uri)
    except RecordGone:
        raise PublishError(f"{uri}: no such record") from None
    changes: dict[str, Any] = {}
    if collection == LIST:
        if given.title is not None:
            changes["name"] = given.title
        if any(v for v in (given.artist, given.album, given.description, given.cover, given.tags)) or clear:
            raise PublishError("a list's name (--title) is all that can be edited here")
    else:
        for name, new in (("title", given.title), ("artist", given.artist), ("album", given.album),
                          ("description", given.description)):  # fmt: skip
            if new is not None:
                changes[name] = new
        if given.tags:
            changes["tags"] = given.tags
        if given.cover is not None:
            changes["imageUrl"], _ = pub.upload_cover(given.cover)
    record = {k: v for k, v in value.items() if k not in clear}
    changed = sorted(k for k, v in changes.items() if record.get(k) != v) + sorted(k for k in clear if k in value)
    if not changed:
        return cid, []
    record.update(changes)
    if collection == LIST:
        record["updatedAt"] = now_iso()
    try:
        _, new_cid = pub.repo.put(uri, record, cid, collection.rsplit(".", 1)[-1])
    except PublishError as exc:
        if swap_conflict(exc):
            raise PublishError(f"{uri} changed while it was being edited; nothing was written: run the edit again") from None
        raise
    return new_cid, changed


def delete_record(pub: Publisher, uri: str, echo: Callable[[str], None], *, keep_media: bool = False) -> None:
    _, collection, _ = parse_uri(uri)
    try:
        cid, value = pub.repo.get(uri)
    except RecordGone:
        raise PublishError(f"{uri}: no such record") from None
    try:
        pub.repo.delete(uri, cid)
    except PublishError as exc:
        if swap_conflict(exc):
            raise PublishError(f"{uri} changed meanwhile; nothing was deleted: run the delete again") from None
        raise
    echo(f"deleted {uri}")
    if collection != TRACK:
        return
    _remove_from_lists(pub, uri, echo)
    if keep_media:
        return
    # The media this record used, unless another of the account's tracks uses it too.
    wanted = {sha for sha in (sha256_in_url(_text(value.get("audioUrl"))), sha256_in_url(_text(value.get("imageUrl")))) if sha}
    if not wanted:
        return
    in_use: set[str] = set()
    for other_uri, _, other in pub.repo.records(TRACK):
        if other_uri != uri:
            for field in ("audioUrl", "imageUrl"):
                if (used := sha256_in_url(_text(other.get(field)))) is not None:
                    in_use.add(used)
    for sha in sorted(wanted):
        if sha in in_use:
            echo(f"kept our copy of {sha[:12]}…: another of your tracks uses it")
            continue
        status, message = pub.media.delete(sha, pub.token(LXM_DELETE_MEDIA), [uri])
        if status == 200:
            echo(f"deleted our copy of {sha[:12]}…")
        elif status == 404:
            echo(f"no copy of {sha[:12]}… on {pub.media.url}: nothing to delete there")
        else:
            echo(f"kept our copy of {sha[:12]}…: {message or 'the media service refused'}")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _remove_from_lists(pub: Publisher, uri: str, echo: Callable[[str], None]) -> None:
    for list_uri, cid, value in list(pub.repo.records(LIST)):
        items = value.get("items")
        if not isinstance(items, list):
            continue
        kept = [i for i in items if not (isinstance(i, dict) and isinstance(i.get("subject"), dict) and i["subject"].get("uri") == uri)]
        if len(kept) == len(items):
            continue
        try:
            pub.repo.put(list_uri, {**value, "items": kept, "updatedAt": now_iso()}, cid, "list")
        except PublishError as exc:
            echo(f"could not take it out of the list {list_uri}: {exc}")
            continue
        echo(f"took it out of the list {value.get('name') or list_uri}")
