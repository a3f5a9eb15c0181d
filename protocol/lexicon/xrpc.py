"""XRPC endpoints: what a query, procedure or subscription takes and returns, and the checks of
a request's query-string parameters, its bodies and a subscription's messages."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.lexicon.common import (
    MISSING,
    Check,
    LexiconError,
    json_preview,
    type_name,
    with_article,
)
from protocol.lexicon.data import check_data
from protocol.lexicon.validators import run_check

_PARAM_INT_RE = re.compile(r"-?[0-9]{1,19}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Param:
    """One query-string parameter of an endpoint, with its compiled check."""

    name: str
    kind: str  # boolean, integer, string or unknown (for arrays: of the items)
    is_array: bool
    required: bool
    default: Any
    check: Check


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a query, procedure or subscription takes and returns, compiled."""

    type: str
    params: tuple[Param, ...]
    input: Check | None
    output: Check | None
    # Subscriptions: message variants by `$type` value, and whether the union is closed.
    messages: dict[str, Check] | None = None
    closed: bool = False


def check_params(
    endpoint: Endpoint, params: Mapping[str, str | list[str]]
) -> tuple[dict[str, Any], list[str]]:
    """The query-string parameters converted to their declared types, with defaults filled
    in, and the problems found (see Lexicons.validate_params)."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for param in endpoint.params:
        raw = params.get(param.name)
        path = f"params/{param.name}"
        if raw is None or raw == []:
            if param.default is not MISSING:
                out[param.name] = copy.copy(param.default)
            elif param.required:
                problems.append(f"{path}: required parameter is missing")
            continue
        if param.is_array:
            raws = [raw] if isinstance(raw, str) else list(raw)
            start = len(problems)
            value: Any = [
                _coerce_param(param.kind, item, f"{path}/{i}", problems)
                for i, item in enumerate(raws)
            ]
        else:
            if not isinstance(raw, str):
                if len(raw) != 1:
                    problems.append(f"{path}: given {len(raw)} times, expected once")
                    continue
                raw = raw[0]
            start = len(problems)
            value = _coerce_param(param.kind, raw, path, problems)
        if len(problems) == start:
            param.check(value, path, problems)
        if len(problems) == start:
            out[param.name] = value
    return out, problems


def check_input(nsid: str, endpoint: Endpoint, body: Any) -> list[str]:
    """Problems with a request body of endpoint `nsid`."""
    if endpoint.type != "procedure":
        raise LexiconError(f"{nsid} is {with_article(endpoint.type)}, which takes no input body")
    return run_check(endpoint.input, body, "input") if endpoint.input else []


def check_output(nsid: str, endpoint: Endpoint, body: Any) -> list[str]:
    """Problems with a response body of endpoint `nsid`."""
    if endpoint.type == "subscription":
        raise LexiconError(f"{nsid} is a subscription, which has no output body")
    return run_check(endpoint.output, body, "output") if endpoint.output else []


def check_message(nsid: str, endpoint: Endpoint, body: Any, message_type: str | None) -> list[str]:
    """Problems with one message of subscription `nsid` (see Lexicons.validate_message)."""
    if endpoint.messages is None:
        raise LexiconError(f"{nsid} is {with_article(endpoint.type)}, which has no messages")
    if type(body) is not dict:
        return [f"message: must be an object, not {type_name(body)}"]
    type_ = message_type if message_type is not None else body.get("$type")
    if not isinstance(type_, str) or not type_:
        return ["message: its type is unknown (no message type and no $type)"]
    if type_.startswith("#"):
        type_ = nsid + type_
    check = endpoint.messages.get(type_)
    if check is not None:
        return run_check(check, body, "message")
    if endpoint.closed:
        return [f"message: unknown message type {json_preview(type_)}"]
    # Open union: messages of a type this schema does not know yet are fine, as data.
    return run_check(check_data, body, "message")


def _coerce_param(kind: str, raw: Any, path: str, problems: list[str]) -> Any:
    """Converts one query-string value to the parameter's declared type."""
    if not isinstance(raw, str):
        problems.append(f"{path}: must be a string from the query string")
        return None
    if kind == "integer":
        if _PARAM_INT_RE.fullmatch(raw):
            return int(raw)
        problems.append(f"{path}: must be an integer, got {json_preview(raw)}")
        return None
    if kind == "boolean":
        if raw == "true":
            return True
        if raw == "false":
            return False
        problems.append(f"{path}: must be true or false, got {json_preview(raw)}")
        return None
    return raw
