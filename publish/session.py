"""Logging in to the artist's own PDS, and the session every `plyr publish` command uses.

    plyr publish login HANDLE   handle -> DID (protocol.identity: PLYR_HANDLE_RESOLVER_URL, else
                                DNS / HTTPS) -> DID document (PLYR_PLC_URL for did:plc) -> its PDS
                                -> com.atproto.server.createSession with an app password
    load_session()              the stored session as a logged-in atproto `Client` (sync)

Only the artist's machine ever holds the password, and only for the login call: what is kept
is the session's tokens (publish/store.py). The SDK renews the access token when it is within
15 minutes of expiring; here that renewal happens under the session lock, after re-reading the
file, so that two commands running at once renew it once (the second takes the first's tokens)
and the file always holds the newest pair.

Interface other commands code against (publish/account_data.py among them):

    PdsSession: did, handle, pds_url, client (atproto.Client, logged in)
        service_auth(aud, lxm, expires_in_s=120) -> str     # com.atproto.server.getServiceAuth
    load_session(config_dir=None) -> PdsSession              # raises NotLoggedIn
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from atproto import Client  # type: ignore[import-untyped]
from atproto_client.client.session import Session  # type: ignore[import-untyped]
from atproto_client.request import Request  # type: ignore[import-untyped]

from publish.errors import NotLoggedIn, PublishError, pds_failure
from publish.store import SessionStore, StoredSession

REFRESH_MARGIN_S = 15 * 60  # the SDK renews an access token this long before it expires
HTTP_TIMEOUT_S = 60.0


def _jwt_exp(token: str) -> float | None:
    """The `exp` claim of a JWT, read without checking anything (only to decide on renewal)."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, orjson.JSONDecodeError, AttributeError):
        return None


def fresh_enough(access_jwt: str, *, now: float | None = None) -> bool:
    """True when the access token has more than REFRESH_MARGIN_S left."""
    exp = _jwt_exp(access_jwt)
    return exp is not None and exp - (now if now is not None else time.time()) > REFRESH_MARGIN_S


def _to_sdk(stored: StoredSession) -> Session:
    return Session(stored.handle, stored.did, stored.access_jwt, stored.refresh_jwt, stored.pds_url)


def _from_sdk(session: Session, fallback_pds: str) -> StoredSession:
    return StoredSession(
        did=session.did, handle=session.handle, pds_url=(session.pds_endpoint or fallback_pds).rstrip("/"),
        access_jwt=session.access_jwt, refresh_jwt=session.refresh_jwt, saved_at=time.time(),
    )  # fmt: skip


def renew_session(
    store: SessionStore, did: str, refresh_jwt: str, renew: Callable[[StoredSession], StoredSession]
) -> StoredSession | None:
    """Renew the session of `did` whose refresh token this process holds, under the session
    lock, after reading the file again: if another command renewed it meanwhile (the file holds
    another refresh token and a fresh access token), nothing is renewed and that session is
    returned for this process to use; otherwise `renew` (the PDS call) makes the new session,
    which is stored (returns None: this process has it already)."""
    taken: list[StoredSession] = []

    def change(current: StoredSession | None) -> StoredSession | None:
        if current is None or current.did != did:
            raise NotLoggedIn("logged out meanwhile: run `plyr publish login HANDLE` again")
        if current.refresh_jwt != refresh_jwt and fresh_enough(current.access_jwt):
            taken.append(current)
            return None
        return renew(current)

    store.update(change)
    return taken[0] if taken else None


class StoredClient(Client):
    """The SDK's client, renewing its tokens through the session file under its lock."""

    def __init__(self, base_url: str, store: SessionStore) -> None:
        # The SDK's default timeout (5 s) is short for a busy PDS.
        super().__init__(base_url, request=Request(timeout=HTTP_TIMEOUT_S))
        self._store = store
        self.refreshes = 0  # renewals this process made itself (tests read it)

    def _refresh_and_set_session(self) -> Any:
        mine = self._session
        if mine is None:
            raise NotLoggedIn()

        def renew(current: StoredSession) -> StoredSession:
            try:
                Client._refresh_and_set_session(self)
            except Exception as exc:
                raise pds_failure(exc, "renew the session", pds_url=current.pds_url) from None
            self.refreshes += 1
            assert self._session is not None
            return _from_sdk(self._session, current.pds_url)

        taken = renew_session(self._store, mine.did, mine.refresh_jwt, renew)
        if taken is not None:
            self._import_session_string(_to_sdk(taken).encode())
        return None

    def refresh_now(self) -> None:
        """Renew the tokens now (unless another command just did): `whoami --refresh`."""
        with self._refresh_lock:
            self._refresh_and_set_session()


class PdsSession:
    """A logged-in session on the artist's PDS."""

    def __init__(self, stored: StoredSession, client: StoredClient, store: SessionStore) -> None:
        self.did = stored.did
        self.handle = stored.handle
        self.pds_url = stored.pds_url
        self.client: Client = client
        self.store = store

    def service_auth(self, aud: str, lxm: str, expires_in_s: int = 120) -> str:
        """A service-auth token from the PDS (com.atproto.server.getServiceAuth): signed with
        the account's key, for the service `aud` (a DID) and the one method `lxm`."""
        params = {"aud": aud, "lxm": lxm, "exp": int(time.time()) + expires_in_s}
        try:
            return str(self.client.com.atproto.server.get_service_auth(params).token)
        except PublishError:
            raise
        except Exception as exc:
            raise pds_failure(exc, f"get a token for {lxm}", pds_url=self.pds_url) from None

    def fail(self, exc: Exception, doing: str) -> PublishError:
        """The one-line error for a failed call to this PDS."""
        return exc if isinstance(exc, PublishError) else pds_failure(exc, doing, pds_url=self.pds_url)


def config_dir_of(config_dir: Path | None) -> Path:
    if config_dir is not None:
        return config_dir
    from publish.settings import PublishSettings

    return PublishSettings.from_env().config_dir


def load_session(config_dir: Path | None = None) -> PdsSession:
    """The stored session, as a logged-in client (no request made yet); NotLoggedIn without one."""
    store = SessionStore(config_dir_of(config_dir))
    stored = store.read()
    if stored is None:
        raise NotLoggedIn()
    client = StoredClient(stored.pds_url, store)
    client.login(session_string=_to_sdk(stored).encode(), fetch_bsky_profile=False)
    return PdsSession(stored, client, store)


async def resolve_account(name: str) -> tuple[str, str, str | None]:
    """(DID, PDS URL, handle in the DID document) of a handle or DID, through the project's
    identity resolver (PLYR_PLC_URL, PLYR_HANDLE_RESOLVER_URL, PLYR_ALLOW_PRIVATE_NETWORK)."""
    from core.identity import resolver_from_env
    from core.settings import CoreSettings
    from protocol.identity import IdentityError, is_valid_did, normalize_handle

    async with resolver_from_env(settings=CoreSettings.from_env()) as resolver:
        if name.startswith("did:"):
            if not is_valid_did(name):
                raise PublishError(f"{name} is not a valid DID")
            did = name
        else:
            handle = normalize_handle(name.removeprefix("@"))
            if handle is None:
                raise PublishError(f"{name!r} is not a valid handle (like alice.bsky.social)")
            found = await resolver.resolve_handle(handle)
            if found is None:
                raise PublishError(
                    f"handle not found: {handle} does not resolve to an account "
                    "(or the service that answers for it cannot be reached now)"
                )
            did = found
        try:
            doc = await resolver.resolve_did(did)
        except IdentityError as exc:
            raise PublishError(f"cannot resolve {did}: {exc}") from None
    if doc.pds_endpoint is None:
        raise PublishError(f"{did} names no PDS in its DID document")
    return did, doc.pds_endpoint.rstrip("/"), doc.handle


def login(name: str, password: str, *, config_dir: Path | None = None) -> PdsSession:
    """Log in to the PDS of `name` (handle or DID) and store the session."""
    from core.cli import run_async

    did, pds_url, _ = run_async(resolve_account(name))
    store = SessionStore(config_dir_of(config_dir))
    client = StoredClient(pds_url, store)
    try:
        client.login(did, password, fetch_bsky_profile=False)  # the DID: exact, whatever the handle's case
    except Exception as exc:
        raise pds_failure(exc, "log in", pds_url=pds_url) from None
    session = client._session
    assert session is not None
    if session.did != did:
        raise PublishError(f"the PDS at {pds_url} logged in {session.did}, not {did}")
    stored = _from_sdk(session, pds_url)
    store.save(stored)
    return PdsSession(stored, client, store)


def logout(config_dir: Path | None = None) -> StoredSession | None:
    """Revoke the stored session at its PDS (best effort) and forget it; the session it was."""
    store = SessionStore(config_dir_of(config_dir))
    stored = store.read()
    if stored is None:
        return None
    client = Client(stored.pds_url)
    try:
        client.com.atproto.server.delete_session(
            headers={"Authorization": f"Bearer {stored.refresh_jwt}"}
        )
    except Exception:  # noqa: S110 - an expired or revoked session is logged out all the same
        pass
    store.delete()
    return stored
