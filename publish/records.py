"""The artist's records in their own repository: written, read, changed and deleted through the
PDS (com.atproto.repo.*), and checked against our lexicons before anything is written.

Records go out with `validate: false`: a PDS validates only the lexicons it knows, and the
reference PDS refuses `fm.plyr.*` with `validate: true` ("Unknown lexicon type"), so the check
that matters is ours (`check_record`, the project's lexicons/). Changes swap on the CID that
was read (`swapRecord`): a concurrent edit makes the write fail rather than be lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from atproto_client.models.dot_dict import DotDict  # type: ignore[import-untyped]

from publish.errors import PublishError, pds_failure
from publish.session import PdsSession

TRACK = "fm.plyr.track"
LIST = "fm.plyr.list"
JSON = "application/json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_record(collection: str, record: dict[str, Any]) -> None:
    """PublishError listing what our lexicon refuses in `record` (nothing is written then)."""
    from core.lexicons import project_lexicons

    problems = project_lexicons().validate_record(collection, record)
    if problems:
        raise PublishError(f"the {collection} record would be invalid: " + "; ".join(problems[:5]))


def parse_uri(uri: str, *, collection: str | None = None) -> tuple[str, str, str]:
    """(repo, collection, rkey) of an at:// URI of a record."""
    parts = uri.removeprefix("at://").split("/") if uri.startswith("at://") else []
    if len(parts) != 3 or not all(parts):
        raise PublishError(f"{uri!r} is not a record URI (at://DID/COLLECTION/RKEY)")
    if collection is not None and parts[1] != collection:
        raise PublishError(f"{uri} is not a {collection} record")
    return parts[0], parts[1], parts[2]


class RecordGone(PublishError):
    pass


class Repo:
    """The logged-in account's repository."""

    def __init__(self, session: PdsSession) -> None:
        self.session = session
        self.did = session.did

    def _call(self, kind: str, nsid: str, doing: str, **kwargs: Any) -> dict[str, Any]:
        client = self.session.client
        try:
            if kind == "query":
                resp = client.invoke_query(nsid, params=DotDict(kwargs["params"]), output_encoding=JSON)
            else:
                resp = client.invoke_procedure(
                    nsid, data=DotDict(kwargs["data"]), input_encoding=JSON, output_encoding=JSON
                )
        except PublishError:
            raise
        except Exception as exc:
            failure = pds_failure(exc, doing, pds_url=self.session.pds_url)
            status = getattr(getattr(exc, "response", None), "status_code", None)
            content = getattr(getattr(exc, "response", None), "content", None)
            if status == 400 and getattr(content, "error", None) == "RecordNotFound":
                raise RecordGone(str(failure)) from None
            raise failure from None
        return dict(resp.content) if isinstance(resp.content, dict) else {}

    def _own(self, uri: str, collection: str | None) -> tuple[str, str]:
        repo, coll, rkey = parse_uri(uri, collection=collection)
        if repo not in (self.did, self.session.handle):
            raise PublishError(f"{uri} is in another account's repository ({repo}); you are {self.did}")
        return coll, rkey

    def create(self, collection: str, record: dict[str, Any], what: str) -> tuple[str, str]:
        """Write a new record (checked first); (uri, cid)."""
        record = {"$type": collection, **record}
        check_record(collection, record)
        out = self._call("procedure", "com.atproto.repo.createRecord", f"write the {what} record",
                         data={"repo": self.did, "collection": collection, "validate": False, "record": record})  # fmt: skip
        return str(out["uri"]), str(out["cid"])

    def get(self, uri: str, collection: str | None = None) -> tuple[str, dict[str, Any]]:
        """(cid, value) of one of the account's records; RecordGone when it does not exist."""
        coll, rkey = self._own(uri, collection)
        out = self._call("query", "com.atproto.repo.getRecord", f"read {uri}",
                         params={"repo": self.did, "collection": coll, "rkey": rkey})  # fmt: skip
        return str(out["cid"]), dict(out["value"])

    def put(self, uri: str, record: dict[str, Any], swap_cid: str, what: str) -> tuple[str, str]:
        """Replace a record if it is still at `swap_cid` (checked first); (uri, new cid)."""
        coll, rkey = self._own(uri, None)
        record = {**record, "$type": coll}
        check_record(coll, record)
        out = self._call("procedure", "com.atproto.repo.putRecord", f"write the {what} record",
                         data={"repo": self.did, "collection": coll, "rkey": rkey, "validate": False,
                               "record": record, "swapRecord": swap_cid})  # fmt: skip
        return str(out["uri"]), str(out["cid"])

    def delete(self, uri: str, swap_cid: str | None = None) -> None:
        coll, rkey = self._own(uri, None)
        data: dict[str, Any] = {"repo": self.did, "collection": coll, "rkey": rkey}
        if swap_cid is not None:
            data["swapRecord"] = swap_cid
        self._call("procedure", "com.atproto.repo.deleteRecord", f"delete {uri}", data=data)

    def records(self, collection: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Every record of `collection` in the repository: (uri, cid, value), a page at a time."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"repo": self.did, "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            out = self._call("query", "com.atproto.repo.listRecords", f"list your {collection} records", params=params)
            items = out.get("records") or []
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("value"), dict):
                    yield str(item["uri"]), str(item["cid"]), dict(item["value"])
            cursor = out.get("cursor")
            if not cursor or not items:
                return


def swap_conflict(exc: PublishError) -> bool:
    """True for the PDS's answer to a swap on a CID that is no longer the record's."""
    return "InvalidSwap" in str(exc)
