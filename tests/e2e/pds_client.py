"""A small async XRPC client for the test PDS, and a firehose reader, for end-to-end tests.

`PdsClient` does what a user's app does through its PDS (accounts, records, blobs, handle and
account status changes, service-auth tokens), plus the admin calls a test needs (account
deletion). `read_firehose` reads `com.atproto.sync.subscribeRepos` frames with `websockets` and
decodes them with libipld, the way the indexer does.

Records of `fm.plyr.*` are always written with `validate: false`: the PDS does not know our
lexicons and answers `validate: true` with HTTP 400 "Unknown lexicon type".
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import libipld
import websockets

MAX_WRITES_PER_BATCH = 200  # the PDS's limit for com.atproto.repo.applyWrites
LIST_PAGE_SIZE = 100  # the PDS's limit for com.atproto.repo.listRecords

# $type of each applyWrites operation kind.
WRITE_TYPES = {
    "create": "com.atproto.repo.applyWrites#create",
    "update": "com.atproto.repo.applyWrites#update",
    "delete": "com.atproto.repo.applyWrites#delete",
}


class XrpcError(Exception):
    """A non-2xx answer from the PDS, with its XRPC error name and message."""

    def __init__(self, nsid: str, status: int, error: str | None, message: str | None) -> None:
        super().__init__(f"{nsid}: HTTP {status} {error or ''} {message or ''}".strip())
        self.nsid = nsid
        self.status = status
        self.error = error
        self.message = message


@dataclass
class Account:
    """An account on the test PDS and its current session."""

    did: str
    handle: str
    access_jwt: str
    refresh_jwt: str = field(repr=False, default="")
    password: str = field(repr=False, default="")
    email: str = ""


@dataclass(frozen=True)
class RecordRef:
    """A record as listRecords returns it."""

    uri: str
    cid: str
    value: dict[str, Any]

    @property
    def rkey(self) -> str:
        return self.uri.rsplit("/", 1)[1]


def rkey_of(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


def write_op(
    action: str, collection: str, *, rkey: str | None = None, value: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One applyWrites operation; `value` gets its `$type` when it has none."""
    op: dict[str, Any] = {"$type": WRITE_TYPES[action], "collection": collection}
    if rkey is not None:
        op["rkey"] = rkey
    if action != "delete":
        if value is None:
            raise ValueError(f"a {action} needs a value")
        op["value"] = {"$type": collection, **value}
    return op


class PdsClient:
    """XRPC calls against one PDS. Use as `async with PdsClient(url) as pds:`."""

    def __init__(
        self,
        pds_url: str,
        *,
        admin_password: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.pds_url = pds_url.rstrip("/")
        self.admin_password = admin_password
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def __aenter__(self) -> PdsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # --- plumbing -------------------------------------------------------------------------

    def _auth(self, account: Account | None, admin: bool) -> dict[str, str]:
        if admin:
            if not self.admin_password:
                raise ValueError("this PdsClient has no admin password")
            token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if account is not None:
            return {"Authorization": f"Bearer {account.access_jwt}"}
        return {}

    async def call(
        self,
        nsid: str,
        *,
        account: Account | None = None,
        admin: bool = False,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One XRPC call: a query (GET, params) or a procedure (POST, JSON body or raw data).

        `headers` are sent too, e.g. `atproto-proxy` to have the PDS forward the call."""
        sent = {**(headers or {}), **self._auth(account, admin)}
        if content_type:
            sent["Content-Type"] = content_type
        verb = method or ("POST" if body is not None or data is not None else "GET")
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        async with self._http().request(
            verb,
            f"{self.pds_url}/xrpc/{nsid}",
            params=query,
            json=body if body is not None else None,
            data=data,
            headers=sent,
        ) as resp:
            raw = await resp.read()
            payload: Any = None
            if raw and resp.content_type == "application/json":
                payload = await resp.json(content_type=None)
            if resp.status >= 400:
                error = payload.get("error") if isinstance(payload, dict) else None
                message = (
                    payload.get("message")
                    if isinstance(payload, dict)
                    else raw[:300].decode("utf-8", "replace")
                )
                raise XrpcError(nsid, resp.status, error, message)
            return payload if payload is not None else raw

    # --- server and accounts ----------------------------------------------------------------

    async def describe_server(self) -> dict[str, Any]:
        return await self.call("com.atproto.server.describeServer")

    async def create_account(self, handle: str, email: str, password: str) -> Account:
        r = await self.call(
            "com.atproto.server.createAccount",
            body={"handle": handle, "email": email, "password": password},
        )
        return Account(
            did=r["did"],
            handle=r["handle"],
            access_jwt=r["accessJwt"],
            refresh_jwt=r["refreshJwt"],
            password=password,
            email=email,
        )

    async def login(self, identifier: str, password: str) -> Account:
        """A new session (createSession) by handle, DID or email."""
        r = await self.call(
            "com.atproto.server.createSession",
            body={"identifier": identifier, "password": password},
        )
        return Account(
            did=r["did"],
            handle=r["handle"],
            access_jwt=r["accessJwt"],
            refresh_jwt=r["refreshJwt"],
            password=password,
            email=r.get("email", ""),
        )

    async def get_session(self, account: Account) -> dict[str, Any]:
        return await self.call("com.atproto.server.getSession", account=account)

    async def deactivate_account(self, account: Account) -> None:
        """The user deactivates their own account: the firehose says #account active=false."""
        await self.call("com.atproto.server.deactivateAccount", account=account, body={})

    async def activate_account(self, account: Account) -> None:
        await self.call("com.atproto.server.activateAccount", account=account, method="POST")

    async def delete_account(self, account: Account | str) -> None:
        """Delete an account for good (admin API; the user path needs an emailed token).

        The firehose says #account active=false status=deleted.
        """
        did = account.did if isinstance(account, Account) else account
        await self.call("com.atproto.admin.deleteAccount", admin=True, body={"did": did})

    async def takedown_account(self, account: Account | str, *, applied: bool = True) -> None:
        """Take an account down (or restore it) as the PDS operator: #account status=takendown."""
        did = account.did if isinstance(account, Account) else account
        await self.call(
            "com.atproto.admin.updateSubjectStatus",
            admin=True,
            body={
                "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
                "takedown": {"applied": applied, "ref": f"e2e-{int(time.time())}"},
            },
        )

    async def update_handle(self, account: Account, new_handle: str) -> None:
        """Change the handle (PLC update + #identity on the firehose); updates `account`."""
        await self.call(
            "com.atproto.identity.updateHandle", account=account, body={"handle": new_handle}
        )
        account.handle = new_handle

    async def resolve_handle(self, handle: str) -> str:
        r = await self.call("com.atproto.identity.resolveHandle", params={"handle": handle})
        return r["did"]

    async def get_service_auth(
        self, account: Account, aud: str, lxm: str | None = None, exp: int | None = None
    ) -> str:
        """A service-auth JWT signed with the account's key, for `aud` (a DID) and method `lxm`."""
        r = await self.call(
            "com.atproto.server.getServiceAuth",
            account=account,
            params={"aud": aud, "lxm": lxm, "exp": exp},
        )
        return r["token"]

    # --- records --------------------------------------------------------------------------

    async def create_record(
        self,
        account: Account,
        collection: str,
        record: Mapping[str, Any],
        rkey: str | None = None,
    ) -> tuple[str, str]:
        """Create a record (validate: false); returns (uri, cid)."""
        body: dict[str, Any] = {
            "repo": account.did,
            "collection": collection,
            "record": {"$type": collection, **record},
            "validate": False,
        }
        if rkey is not None:
            body["rkey"] = rkey
        r = await self.call("com.atproto.repo.createRecord", account=account, body=body)
        return r["uri"], r["cid"]

    async def put_record(
        self,
        account: Account,
        collection: str,
        rkey: str,
        record: Mapping[str, Any],
        *,
        swap_record: str | None = None,
    ) -> tuple[str, str]:
        """Create or replace the record at collection/rkey (validate: false); returns (uri, cid)."""
        body: dict[str, Any] = {
            "repo": account.did,
            "collection": collection,
            "rkey": rkey,
            "record": {"$type": collection, **record},
            "validate": False,
        }
        if swap_record is not None:
            body["swapRecord"] = swap_record
        r = await self.call("com.atproto.repo.putRecord", account=account, body=body)
        return r["uri"], r["cid"]

    async def delete_record(self, account: Account, collection: str, rkey: str) -> None:
        await self.call(
            "com.atproto.repo.deleteRecord",
            account=account,
            body={"repo": account.did, "collection": collection, "rkey": rkey},
        )

    async def get_record(self, did: str, collection: str, rkey: str) -> RecordRef:
        r = await self.call(
            "com.atproto.repo.getRecord",
            params={"repo": did, "collection": collection, "rkey": rkey},
        )
        return RecordRef(uri=r["uri"], cid=r["cid"], value=r["value"])

    async def apply_writes(
        self, account: Account, writes: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Apply writes (see `write_op`) in batches of up to 200, one commit per batch.

        Returns the per-write results ({uri, cid} for creates and updates, {} for deletes).
        """
        results: list[dict[str, Any]] = []
        for start in range(0, len(writes), MAX_WRITES_PER_BATCH):
            batch = list(writes[start : start + MAX_WRITES_PER_BATCH])
            r = await self.call(
                "com.atproto.repo.applyWrites",
                account=account,
                body={"repo": account.did, "writes": batch, "validate": False},
            )
            results.extend(r.get("results", []))
        return results

    async def list_records(self, did: str, collection: str) -> list[RecordRef]:
        """Every record of a collection, all pages."""
        out: list[RecordRef] = []
        cursor: str | None = None
        while True:
            r = await self.call(
                "com.atproto.repo.listRecords",
                params={
                    "repo": did,
                    "collection": collection,
                    "limit": LIST_PAGE_SIZE,
                    "cursor": cursor,
                },
            )
            out.extend(
                RecordRef(uri=x["uri"], cid=x["cid"], value=x["value"]) for x in r["records"]
            )
            cursor = r.get("cursor")
            if not cursor or not r["records"]:
                return out

    async def describe_repo(self, did: str) -> dict[str, Any]:
        return await self.call("com.atproto.repo.describeRepo", params={"repo": did})

    # --- blobs ----------------------------------------------------------------------------

    async def upload_blob(self, account: Account, data: bytes, mime: str) -> dict[str, Any]:
        """Upload bytes; returns the blob ref to put in a record ({$type: blob, ref, mimeType, size}).

        The PDS keeps an uploaded blob only once a record references it.
        """
        r = await self.call(
            "com.atproto.repo.uploadBlob", account=account, data=data, content_type=mime
        )
        return r["blob"]

    async def get_blob(self, did: str, cid: str) -> bytes:
        return await self.call("com.atproto.sync.getBlob", params={"did": did, "cid": cid})

    # --- sync -----------------------------------------------------------------------------

    async def get_repo(self, did: str) -> bytes:
        """The whole repo as a CAR file."""
        return await self.call("com.atproto.sync.getRepo", params={"did": did})

    async def get_latest_commit(self, did: str) -> dict[str, Any]:
        return await self.call("com.atproto.sync.getLatestCommit", params={"did": did})


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- firehose ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FirehoseFrame:
    """One subscribeRepos message: header {op, t} and body, decoded; raw as received."""

    header: dict[str, Any]
    body: dict[str, Any]
    raw: bytes

    @property
    def type(self) -> str:
        """'#commit', '#identity', '#account', '#sync', '#info'; 'error' for an error frame."""
        if self.header.get("op") == -1:
            return "error"
        return str(self.header.get("t", ""))

    @property
    def seq(self) -> int | None:
        return self.body.get("seq")

    @property
    def did(self) -> str | None:
        return self.body.get("repo") or self.body.get("did")

    def ops(self) -> list[dict[str, Any]]:
        return list(self.body.get("ops") or []) if self.type == "#commit" else []

    def blocks(self) -> dict[bytes, Any]:
        """The commit's CAR blocks, decoded, keyed by CID bytes (as op 'cid' links decode)."""
        if self.type != "#commit" or not self.body.get("blocks"):
            return {}
        _header, blocks = libipld.decode_car(self.body["blocks"])
        return blocks


def decode_frame(raw: bytes) -> FirehoseFrame:
    header, body = libipld.decode_dag_cbor_multi(raw)
    return FirehoseFrame(header=header, body=body, raw=raw)


async def read_firehose(
    firehose_url: str,
    *,
    cursor: int | None = 0,
    until: Callable[[list[FirehoseFrame]], bool] | None = None,
    max_frames: int | None = None,
    timeout_s: float = 20.0,
    idle_s: float | None = None,
) -> list[FirehoseFrame]:
    """Read frames from subscribeRepos until `until(frames)` is true, `max_frames` are read,
    or `idle_s` passes with no frame; raises TimeoutError after `timeout_s` in all.

    cursor=0 replays from the first event; None reads only new events.
    """
    url = firehose_url if cursor is None else f"{firehose_url}?cursor={cursor}"
    frames: list[FirehoseFrame] = []
    deadline = time.monotonic() + timeout_s
    async with websockets.connect(url, max_size=None, open_timeout=timeout_s) as ws:
        while True:
            if until is not None and until(frames):
                return frames
            if max_frames is not None and len(frames) >= max_frames:
                return frames
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"firehose: condition not met after {len(frames)} frames")
            wait = left if idle_s is None else min(left, idle_s)
            try:
                async with asyncio.timeout(wait):
                    msg = await ws.recv()
            except TimeoutError:
                if idle_s is not None and time.monotonic() < deadline:
                    return frames  # idle: nothing more is coming
                raise TimeoutError(
                    f"firehose: condition not met after {len(frames)} frames"
                ) from None
            if isinstance(msg, str):
                raise ValueError(f"firehose sent a text frame: {msg[:200]!r}")
            frames.append(decode_frame(msg))
