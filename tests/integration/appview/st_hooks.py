"""Schemathesis hooks (loaded by SCHEMATHESIS_HOOKS in the fuzz test's subprocess): strategies
for the AT Protocol string formats, so generated requests reach the handlers instead of
stopping at parameter validation. Real identifiers of the seeded index come in through
PLYR_FUZZ_KNOWN (JSON: {"dids": [...], "handles": [...], "uris": [...]})."""

from __future__ import annotations

import ast
import json
import os
import threading
from typing import Any

import schemathesis
from hypothesis import strategies as st

# CPython's AST constructor keeps its recursion counter in per-interpreter state: two threads
# in `ast.parse` at once can trip "SystemError: AST constructor recursion depth mismatch"
# (seen here with before=219, after=175: the other thread's starting depth). Schemathesis runs
# two worker threads and hypothesis parses lambda sources to describe strategies: one at a time.
_parse_lock = threading.Lock()
_parse = ast.parse


def _one_parse_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _parse_lock:
        return _parse(*args, **kwargs)


ast.parse = _one_parse_at_a_time

_known = json.loads(os.environ.get("PLYR_FUZZ_KNOWN", "{}"))
_b32 = "abcdefghijklmnopqrstuvwxyz234567"

random_did = st.text(_b32, min_size=24, max_size=24).map(lambda s: "did:plc:" + s)
random_handle = st.from_regex(r"[a-z][a-z0-9-]{0,15}\.[a-z]{2,8}", fullmatch=True)
random_tid = st.from_regex(r"[2-7a-j][a-z2-7]{12}", fullmatch=True)
random_uri = st.tuples(
    random_did, st.sampled_from(["fm.plyr.track", "fm.plyr.list", "fm.plyr.like"]), random_tid
).map(lambda t: f"at://{t[0]}/{t[1]}/{t[2]}")


def _with_known(kind: str, strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    values = _known.get(kind) or []
    return st.one_of(st.sampled_from(values), strategy) if values else strategy


dids = _with_known("dids", random_did)
handles = _with_known("handles", random_handle)
schemathesis.openapi.format("did", dids)
schemathesis.openapi.format("handle", handles)
schemathesis.openapi.format("at-identifier", st.one_of(dids, handles))
schemathesis.openapi.format("at-uri", _with_known("uris", random_uri))
