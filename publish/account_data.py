"""`plyr publish delete-account-data`: ask plyr to delete everything it holds about you that is
not in your repo (plays, queue, preferences, reports you filed, uploads and our copies of your
media, exports, jobs), and print the receipt; with `--delete-records`, first delete your
`fm.plyr.*` records from your own PDS too.

You confirm by typing your handle exactly (as plyr.fm asks), or by passing it as `--confirm`.
The AppView is called with a service-auth token your PDS mints for it
(`com.atproto.server.getServiceAuth`, aud = the AppView's DID, lxm = the method), or, with
`--via-pds`, through your PDS (`atproto-proxy: <AppView DID>#plyr_appview`). The AppView's DID
is read from its `/.well-known/did.json` unless given (`--appview-did`).

This module needs only a logged-in session with the `PdsSession` interface of publish/session.py
(`did`, `handle`, `pds_url`, `client`: a logged-in sync `atproto.Client`, `service_auth(aud,
lxm)`); the `publish` group hands one over in `ctx.obj["pds_session"]`, else it is loaded with
`publish.session.load_session()`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

import atproto  # type: ignore[import-untyped]
import click
from atproto import models
from atproto.exceptions import AtProtocolError, RequestErrorBase  # type: ignore[import-untyped]

from core.errors import PlyrError
from core.lexicons import LEXICONS_DIR

DELETE_NSID = "fm.plyr.actor.deleteAccountData"
APPVIEW_SERVICE = "plyr_appview"  # the service id of our AppView in its DID document
RECORD_PREFIX = "fm.plyr."
LIST_LIMIT = 100  # the PDS's page size limit for listRecords
WRITES_PER_CALL = 200  # the PDS's limit for applyWrites
TIMEOUT_S = 120.0  # the AppView waits up to PLYR_APPVIEW_ERASURE_WAIT_SECONDS (30 s) for media


class PdsSessionLike(Protocol):
    did: str
    handle: str
    pds_url: str
    client: atproto.Client

    def service_auth(self, aud: str, lxm: str, expires_in_s: int = 120) -> str: ...


def _http_json(url: str, *, body: bytes | None = None, token: str | None = None,
               timeout: float = TIMEOUT_S) -> Any:  # fmt: skip
    """GET (or POST `body`) and decode the JSON answer; an XRPC error becomes a PlyrError with
    its name and message."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http(s) URLs the user gave)
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw)
            detail = f"{err.get('error')}: {err.get('message')}"
        except (ValueError, AttributeError):
            detail = raw[:200].decode(errors="replace")
        raise PlyrError(f"{url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise PlyrError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise PlyrError(f"{url}: the answer is not JSON") from None


def appview_did_of(appview_url: str) -> str:
    """The DID the AppView at `appview_url` serves as its did:web document."""
    doc = _http_json(appview_url.rstrip("/") + "/.well-known/did.json", timeout=30)
    did = doc.get("id") if isinstance(doc, dict) else None
    if not isinstance(did, str) or not did.startswith("did:"):
        raise PlyrError(f"{appview_url} serves no DID document; pass --appview-did")
    return did


def request_deletion(session: PdsSessionLike, *, appview_url: str | None, appview_did: str,
                     via_pds: bool = False) -> dict[str, Any]:  # fmt: skip
    """Call deleteAccountData for the session's account; returns the receipt."""
    if via_pds:
        try:
            proxied = session.client.with_proxy(APPVIEW_SERVICE, appview_did)
            response = proxied.invoke_procedure(DELETE_NSID, content=b"{}",
                                                headers={"Content-Type": "application/json"})  # fmt: skip
        except RequestErrorBase as exc:
            raise PlyrError(f"{DELETE_NSID} through {session.pds_url}: {_sdk_error(exc)}") from None
        except AtProtocolError as exc:
            raise PlyrError(f"{DELETE_NSID} through {session.pds_url}: {exc}") from None
        content = response.content
        if not isinstance(content, dict):
            raise PlyrError(f"{DELETE_NSID}: unexpected answer {str(content)[:200]}")
        return content
    if appview_url is None:
        raise PlyrError("give --appview URL (or --via-pds with --appview-did)")
    try:
        token = session.service_auth(appview_did, DELETE_NSID)
    except RequestErrorBase as exc:
        raise PlyrError(f"getServiceAuth at {session.pds_url}: {_sdk_error(exc)}") from None
    receipt = _http_json(f"{appview_url.rstrip('/')}/xrpc/{DELETE_NSID}", body=b"{}", token=token)
    if not isinstance(receipt, dict):
        raise PlyrError(f"{DELETE_NSID}: unexpected answer {str(receipt)[:200]}")
    return receipt


def _sdk_error(exc: RequestErrorBase) -> str:
    response = exc.response
    if response is None:
        return str(exc.__cause__ or exc) or type(exc).__name__
    content = response.content
    error = getattr(content, "error", None) or (content.get("error") if isinstance(content, dict) else None)
    message = getattr(content, "message", None) or (content.get("message") if isinstance(content, dict) else None)
    return f"HTTP {response.status_code} {error or ''}: {message or ''}".strip()


def known_collections() -> set[str]:
    """The record types our lexicons define under fm.plyr (lexicons/)."""
    found = set()
    for path in (LEXICONS_DIR / "fm" / "plyr").rglob("*.json"):
        doc = json.loads(path.read_text())
        if doc.get("defs", {}).get("main", {}).get("type") == "record":
            found.add(doc["id"])
    return found


def plyr_collections(session: PdsSessionLike) -> list[str]:
    """The `fm.plyr.*` collections to empty: those our lexicons define, and any other the repo
    holds (describeRepo; a PDS that cannot describe the repo leaves the known ones)."""
    collections = known_collections()
    try:
        repo = session.client.com.atproto.repo.describe_repo({"repo": session.did})
        collections |= {c for c in repo.collections if c.startswith(RECORD_PREFIX)}
    except RequestErrorBase:
        pass
    return sorted(collections)


def delete_records(session: PdsSessionLike, echo: Callable[[str], None] = click.echo) -> dict[str, int]:
    """Delete every `fm.plyr.*` record of the session's repo (listRecords, then applyWrites
    deletes, WRITES_PER_CALL at a time, with progress); returns how many per collection."""
    deleted: dict[str, int] = {}
    repo = session.client.com.atproto.repo
    try:
        for collection in plyr_collections(session):
            rkeys: list[str] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"repo": session.did, "collection": collection, "limit": LIST_LIMIT}
                if cursor:
                    params["cursor"] = cursor
                page = repo.list_records(params)
                rkeys += [r.uri.rsplit("/", 1)[1] for r in page.records]
                cursor = page.cursor
                if not cursor or not page.records:
                    break
            done = 0
            if not rkeys:
                continue
            for start in range(0, len(rkeys), WRITES_PER_CALL):
                batch = rkeys[start:start + WRITES_PER_CALL]
                writes = [models.ComAtprotoRepoApplyWrites.Delete(collection=collection, rkey=rkey) for rkey in batch]
                repo.apply_writes({"repo": session.did, "writes": writes})
                done += len(batch)
                echo(f"  {collection}: {done}/{len(rkeys)} records deleted")
            deleted[collection] = done
    except RequestErrorBase as exc:
        raise PlyrError(f"deleting records on {session.pds_url}: {_sdk_error(exc)}") from None
    return deleted


def format_receipt(receipt: dict[str, Any]) -> list[str]:
    """The receipt as lines for people."""
    lines = [f"request {receipt['request']} ({receipt['status']}): {receipt['message']}"]
    for part in receipt.get("parts", []):
        lines.append(f"  {part['service']}: {part['status']}")
        for item in part.get("removed", []):
            if item["count"]:
                lines.append(f"    removed {item['count']:>6} {item['kind']}")
        for item in part.get("kept", []):
            if item["count"]:
                lines.append(f"    kept    {item['count']:>6} {item['kind']}")
        for key in part.get("storageKeys", []):
            lines.append(f"    deleted file {key}")
    return lines


def confirmed(session: PdsSessionLike, typed: str | None, prompt: Callable[[str], str]) -> None:
    """The user typed their handle exactly; otherwise nothing happens (PlyrError)."""
    if typed is None:
        typed = prompt(f"Type your handle ({session.handle}) to confirm")
    if typed != session.handle:
        raise PlyrError(f"{typed!r} is not your handle ({session.handle}): nothing was deleted")


def run(session: PdsSessionLike, *, appview_url: str | None, appview_did: str | None, via_pds: bool,
        with_records: bool, typed: str | None, prompt: Callable[[str], str],
        echo: Callable[[str], None] = click.echo) -> dict[str, Any]:  # fmt: skip
    """The command without click: confirm, delete records (asked), request the deletion, print."""
    did = appview_did or (appview_did_of(appview_url) if appview_url else None)
    if did is None:
        raise PlyrError("give --appview URL or --appview-did")
    echo(f"This deletes everything plyr ({appview_url or did}) holds about {session.handle} ({session.did}) "
         "beyond your repo: plays, queue, preferences, reports you filed, uploads and our copies of your media, "
         "exports." + (" It first deletes your fm.plyr.* records from your PDS." if with_records else ""))  # fmt: skip
    confirmed(session, typed, prompt)
    if with_records:
        echo(f"deleting your fm.plyr.* records on {session.pds_url}")
        counts = delete_records(session, echo)
        echo(f"records deleted: {sum(counts.values())}" + (f" ({counts})" if counts else ""))
    receipt = request_deletion(session, appview_url=appview_url, appview_did=did, via_pds=via_pds)
    for line in format_receipt(receipt):
        echo(line)
    return receipt
