"""An OpenAPI 3.0 document generated from the query/procedure lexicons (served at /openapi.json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from appview.context import Route
from appview.xrpc_schema import LexiconSet
from protocol.labels import ACCEPT_LABELERS_HEADER, CONTENT_LABELERS_HEADER

_ERROR = {"$ref": "#/components/schemas/XrpcError"}
_ACCEPT_LABELERS: dict[str, Any] = {
    "name": ACCEPT_LABELERS_HEADER,
    "in": "header",
    "required": False,
    "description": "Labelers whose labels the views carry: comma-separated DIDs, each optionally "
    "`;redact` (their !takedown and !suspend remove content). Absent: the AppView's default "
    "labelers; empty: none.",
    "schema": {"type": "string"},
}
_CONTENT_LABELERS: dict[str, Any] = {
    "description": "The labelers whose labels were applied (those accepted that this AppView subscribes to).",
    "schema": {"type": "string"},
}


def _component_name(ref: str, context_nsid: str) -> str:
    nsid, _, name = ref.partition("#")
    return f"{nsid or context_nsid}.{name or 'main'}"


def to_json_schema(schema: dict[str, Any], nsid: str, refs: set[str]) -> dict[str, Any]:
    """A lexicon field schema as JSON Schema; refs used are collected into `refs`."""
    kind = schema.get("type")
    out: dict[str, Any] = {}
    if "description" in schema:
        out["description"] = schema["description"]
    if kind == "ref":
        name = _component_name(schema["ref"], nsid)
        refs.add(name)
        return {"$ref": f"#/components/schemas/{name}"}
    if kind == "union":
        # Each member carries its `$type` (the lexicon requires it; JSON Schema cannot say so
        # without repeating every member's definition).
        out["anyOf"] = [to_json_schema({"type": "ref", "ref": ref}, nsid, refs) for ref in schema.get("refs", [])]
        return out
    if kind == "object":
        out["type"] = "object"
        out["properties"] = {k: to_json_schema(v, nsid, refs) for k, v in schema.get("properties", {}).items()}
        if schema.get("required"):
            out["required"] = list(schema["required"])
        return out
    if kind == "array":
        out["type"] = "array"
        out["items"] = to_json_schema(schema["items"], nsid, refs)
        if "minLength" in schema:
            out["minItems"] = schema["minLength"]
        if "maxLength" in schema:
            out["maxItems"] = schema["maxLength"]
        return out
    if kind in ("integer", "boolean", "string"):
        out["type"] = kind
        for lex_key, js_key in (("minimum", "minimum"), ("maximum", "maximum"), ("enum", "enum"),
                                ("default", "default"), ("format", "format"),
                                ("minLength", "minLength"), ("maxLength", "maxLength")):
            if lex_key in schema:
                out[js_key] = schema[lex_key]
        return out
    return out  # unknown: any JSON value


def _subscription(lexicons: LexiconSet, nsid: str, refs: set[str]) -> dict[str, Any]:
    """A subscription (WebSocket event stream) as the GET that upgrades: OpenAPI cannot
    describe the frames, so the description says where they are defined."""
    main = lexicons.docs[nsid]["defs"]["main"]
    params = [
        {"name": name, "in": "query", "required": False, "schema": to_json_schema(schema, nsid, refs)}
        for name, schema in (main.get("parameters") or {}).get("properties", {}).items()
    ]
    errors = ", ".join(e["name"] for e in main.get("errors", []))
    op: dict[str, Any] = {
        "operationId": nsid,
        "summary": main.get("description", ""),
        "description": (
            "A WebSocket event stream (atproto event-stream spec): each binary message is a DAG-CBOR "
            f"header and body, the bodies as in the {nsid} lexicon"
            + (f"; error frames: {errors}." if errors else ".")
        ),
        "tags": [nsid.rsplit(".", 2)[-2]],
        "responses": {
            "101": {"description": "Switching Protocols: the stream follows"},
            "400": {"description": "Invalid request", "content": {"application/json": {"schema": _ERROR}}},
            "426": {"description": "Upgrade Required", "content": {"application/json": {"schema": _ERROR}}},
            "default": {"description": "An XRPC error", "content": {"application/json": {"schema": _ERROR}}},
        },
    }
    if params:
        op["parameters"] = params
    return {"get": op}


def build(
    lexicons: LexiconSet, routes: dict[str, Route], public_url: str, *, subscriptions: Sequence[str] = ()
) -> dict[str, Any]:
    """`routes`: the XRPC methods served; `subscriptions`: the event streams served."""
    paths: dict[str, Any] = {}
    refs: set[str] = set()
    for nsid in subscriptions:
        paths[f"/xrpc/{nsid}"] = _subscription(lexicons, nsid, refs)
    for nsid in sorted(routes):
        method = lexicons.methods[nsid]
        op: dict[str, Any] = {
            "operationId": nsid,
            "summary": method.description,
            "tags": [nsid.rsplit(".", 2)[-2]],
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Invalid request", "content": {"application/json": {"schema": _ERROR}}},
                "default": {"description": "An XRPC error", "content": {"application/json": {"schema": _ERROR}}},
            },
        }
        if method.output and method.output.get("schema"):
            op["responses"]["200"]["content"] = {
                "application/json": {"schema": to_json_schema(method.output["schema"], nsid, refs)}
            }
        required = set(method.params.get("required", []))
        params = []
        for name, schema in method.params.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": to_json_schema(schema, nsid, refs),
            }
            if schema.get("type") == "array":
                param.update(style="form", explode=True)
            params.append(param)
        if method.kind == "query":
            # Every query negotiates labelers (appview/labels.py): bad syntax is a 400.
            params.append(_ACCEPT_LABELERS)
            op["responses"]["200"]["headers"] = {CONTENT_LABELERS_HEADER: _CONTENT_LABELERS}
        if params:
            op["parameters"] = params
        if routes[nsid].auth == "required":
            op["security"] = [{"serviceAuth": []}]
            op["responses"]["401"] = {"description": "Service auth required",
                                      "content": {"application/json": {"schema": _ERROR}}}
        elif routes[nsid].auth == "optional":
            op["security"] = [{}, {"serviceAuth": []}]
        if method.kind == "procedure":
            schema = (method.input or {}).get("schema", {"type": "object"})
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": to_json_schema(schema, nsid, refs)}},
            }
        paths[f"/xrpc/{nsid}"] = {"post" if method.kind == "procedure" else "get": op}

    components: dict[str, Any] = {
        "XrpcError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
        }
    }
    # Referenced definitions, following refs inside them until none are new.
    pending = set(refs)
    while pending:
        name = pending.pop()
        nsid, _, def_name = name.rpartition(".")
        found: set[str] = set()
        components[name] = to_json_schema(lexicons.docs[nsid]["defs"][def_name], nsid, found)
        pending |= {r for r in found if r not in components}

    paths["/oembed"] = {
        "get": {
            "operationId": "oembed",
            "summary": "oEmbed for track URLs of this site (JSON only).",
            "parameters": [
                {"name": "url", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "maxwidth", "in": "query", "schema": {"type": "integer"}},
                {"name": "maxheight", "in": "query", "schema": {"type": "integer"}},
                # json only: any other format is a 501, as the oEmbed spec asks.
                {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json"]}},
            ],
            "responses": {
                "200": {"description": "oEmbed response", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "error", "content": {"application/json": {"schema": _ERROR}}},
            },
        }
    }
    paths["/health"] = {"get": {"operationId": "health", "responses": {"200": {"description": "healthy"},
                                                                          "503": {"description": "no database"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "plyr AppView", "version": "1", "description": "XRPC methods fm.plyr.* (and our labeler's com.atproto.label.* when it has a key), from the lexicons."},
        "servers": [{"url": public_url}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"serviceAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
