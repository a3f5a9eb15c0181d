"""A human-readable API reference generated from the loaded lexicons (the data /openapi.json is
built from): every fm.plyr.* query and procedure with its description, parameters, input,
output, errors, auth and an example call. Returns an HTML fragment; front_door.py wraps it in
the page shell. Everything taken from a lexicon is HTML-escaped: a lexicon is data, and custom
lexicon folders are not trusted to be free of markup."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from appview.context import Route
from appview.xrpc_schema import LexiconSet, Method

NAMESPACE = "fm.plyr."

# Example values by string format: syntactically valid, obviously made up.
_FORMAT_EXAMPLES = {
    "at-uri": "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/fm.plyr.track/3l2uygzaf5q2b",
    "did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
    "handle": "artist.example.com",
    "at-identifier": "artist.example.com",
    "datetime": "2026-01-01T00:00:00.000Z",
    "uri": "https://example.com/",
    "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
    "language": "en",
    "nsid": "fm.plyr.track",
    "tid": "3l2uygzaf5q2b",
    "record-key": "3l2uygzaf5q2b",
}

_AUTH_TEXT = {
    "none": "none (public)",
    "optional": "optional (a token adds the viewer's own state)",
    "required": "required (service-auth JWT)",
}


def _ref_key(ref: str, nsid: str) -> str:
    """`nsid#name` for a ref written as `#name`, `nsid#name` or `nsid` (its main def)."""
    target, _, name = ref.partition("#")
    return f"{target or nsid}#{name or 'main'}"


def _anchor(key: str) -> str:
    # `#` may not appear inside a URL fragment: defs are anchored as def-<nsid>.<name>.
    return "def-" + key.replace("#", ".")


def _href(key: str) -> str:
    return "#" + quote(_anchor(key), safe="")


def _code(text: Any) -> str:
    return f"<code>{escape(str(text))}</code>"


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode() if not isinstance(value, str) else value


class _Doc:
    """Rendering state for one page: the lexicons and the defs referenced so far."""

    def __init__(self, lexicons: LexiconSet) -> None:
        self.lexicons = lexicons
        self.refs: list[str] = []  # in first-seen order, for the definitions section

    def resolve(self, key: str) -> dict[str, Any] | None:
        nsid, _, name = key.partition("#")
        found = self.lexicons.docs.get(nsid, {}).get("defs", {}).get(name)
        return found if isinstance(found, dict) else None

    def note_ref(self, key: str) -> None:
        if key not in self.refs:
            self.refs.append(key)

    # ---- types and constraints ---------------------------------------------------------------

    def type_html(self, schema: dict[str, Any], nsid: str) -> str:
        kind = schema.get("type", "unknown")
        if kind == "ref" and isinstance(schema.get("ref"), str):
            key = _ref_key(schema["ref"], nsid)
            self.note_ref(key)
            return f'<a href="{escape(_href(key))}">{escape(key.removesuffix("#main"))}</a>'
        if kind == "union":
            keys = [_ref_key(r, nsid) for r in schema.get("refs", []) if isinstance(r, str)]
            for key in keys:
                self.note_ref(key)
            parts = [f'<a href="{escape(_href(k))}">{escape(k.removesuffix("#main"))}</a>' for k in keys]
            return "union of " + (" | ".join(parts) or "anything")
        if kind == "array" and isinstance(schema.get("items"), dict):
            return "array of " + self.type_html(schema["items"], nsid)
        if kind == "string" and schema.get("format"):
            return f"string ({escape(str(schema['format']))})"
        if kind == "object" and isinstance(schema.get("properties"), dict):
            return "object {" + ", ".join(escape(str(k)) for k in schema["properties"]) + "}"
        return escape(str(kind))

    @staticmethod
    def constraints(schema: dict[str, Any]) -> list[str]:
        """Each constraint as escaped HTML."""
        out: list[str] = []
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        if schema.get("type") == "array":
            # minLength/maxLength of an array count its items.
            low, high = schema.get("minLength"), schema.get("maxLength")
            if low is not None or high is not None:
                out.append(escape(f"{low if low is not None else 0}–{high if high is not None else '∞'} items"))
            if items:
                out += _Doc.constraints(items)
            return out
        for key, label in (("minimum", "≥"), ("maximum", "≤")):
            if key in schema:
                out.append(escape(f"{label} {schema[key]}"))
        if "minLength" in schema or "maxLength" in schema:
            out.append(escape(f"{schema.get('minLength', 0)}–{schema.get('maxLength', '∞')} bytes"))
        if "maxGraphemes" in schema:
            out.append(escape(f"≤ {schema['maxGraphemes']} graphemes"))
        if isinstance(schema.get("enum"), list):
            out.append("one of " + ", ".join(_code(v) for v in schema["enum"]))
        if isinstance(schema.get("knownValues"), list):
            out.append("known values " + ", ".join(_code(v) for v in schema["knownValues"]))
        if "const" in schema:
            out.append("always " + _code(_json_text(schema["const"])))
        if "default" in schema:
            out.append("default " + _code(_json_text(schema["default"])))
        return out

    def fields_table(self, schema: dict[str, Any], nsid: str) -> str:
        """A table of an object's (or params') properties: name, type, required, constraints,
        description."""
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        if not props:
            return '<p class="none">none</p>'
        required = set(schema.get("required") or [])
        rows = []
        for name, field in props.items():
            field = field if isinstance(field, dict) else {}
            rows.append(
                "<tr>"
                f"<td>{_code(name)}</td>"
                f"<td>{self.type_html(field, nsid)}</td>"
                f"<td>{'required' if name in required else 'optional'}</td>"
                f"<td>{'; '.join(self.constraints(field))}</td>"
                f"<td>{escape(str(field.get('description', '')))}</td>"
                "</tr>"
            )
        return (
            '<div class="scroll"><table><thead><tr><th>name</th><th>type</th><th>required</th>'
            "<th>constraints</th><th>description</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table></div>"
        )

    def body_html(self, body: dict[str, Any] | None, nsid: str) -> str:
        """A lexicon input/output: its encoding and a summary of its schema."""
        if not body:
            return '<p class="none">none</p>'
        encoding = f"<p>{_code(body.get('encoding', 'application/json'))}</p>"
        schema = body.get("schema")
        if not isinstance(schema, dict):
            return encoding
        if schema.get("type") == "object":
            return encoding + self.fields_table(schema, nsid)
        return encoding + f"<p>{self.type_html(schema, nsid)}</p>"

    # ---- examples ----------------------------------------------------------------------------

    def example_value(self, schema: dict[str, Any], nsid: str, depth: int = 0) -> Any:
        kind = schema.get("type")
        if "default" in schema:
            return schema["default"]
        if "const" in schema:
            return schema["const"]
        if kind == "string":
            for key in ("enum", "knownValues"):
                if isinstance(schema.get(key), list) and schema[key]:
                    return schema[key][0]
            return _FORMAT_EXAMPLES.get(str(schema.get("format")), "text")
        if kind == "integer":
            low = schema.get("minimum", 1)
            return min(low, schema.get("maximum", low))
        if kind == "boolean":
            return True
        if depth >= 4:
            return {}
        if kind == "array" and isinstance(schema.get("items"), dict):
            count = 1 if schema.get("minLength", 0) >= 1 else 0
            return [self.example_value(schema["items"], nsid, depth + 1) for _ in range(count)]
        if kind == "ref" and isinstance(schema.get("ref"), str):
            key = _ref_key(schema["ref"], nsid)
            target = self.resolve(key)
            return self.example_value(target, key.partition("#")[0], depth + 1) if target else {}
        if kind == "object":
            props = schema.get("properties")
            if not isinstance(props, dict):
                props = {}
            return {
                name: self.example_value(props[name], nsid, depth + 1)
                for name in schema.get("required") or []
                if isinstance(props.get(name), dict)
            }
        return {}

    def example(self, method: Method, auth: str | None, public_url: str) -> str:
        """A curl line for the method: required params (or the first one, when none is
        required), a minimal body for procedures, a bearer token when auth is required."""
        props = method.params.get("properties") or {}
        names = [n for n in props if n in set(method.params.get("required") or [])]
        if not names and props:
            names = [next(iter(props))]
        pairs: list[tuple[str, str]] = []
        for name in names:
            if not isinstance(props[name], dict):
                continue
            value = self.example_value(props[name], method.nsid)
            # An array param repeats its name; booleans are spelled as in JSON.
            for item in (value or [self.example_value(props[name].get("items") or {}, method.nsid)]
                         if isinstance(value, list) else [value]):
                pairs.append((name, orjson.dumps(item).decode() if isinstance(item, bool) else str(item)))
        query = urlencode(pairs, safe=":/")  # readable: both are legal in a query
        url = f"{public_url}/xrpc/{method.nsid}" + (f"?{query}" if query else "")
        parts = ["curl"]
        if method.kind == "procedure":
            parts += ["-X", "POST", "-H", shlex.quote("Content-Type: application/json")]
        if auth == "required":
            parts += ["-H", '"Authorization: Bearer $TOKEN"']  # $TOKEN expands in the shell
        if method.kind == "procedure":
            schema = (method.input or {}).get("schema") or {"type": "object"}
            body = self.example_value(schema, method.nsid) if isinstance(schema, dict) else {}
            parts += ["-d", shlex.quote(orjson.dumps(body).decode())]
        parts.append(shlex.quote(url))
        return " ".join(parts)

    # ---- sections ----------------------------------------------------------------------------

    def method_section(self, method: Method, route: Route | None, public_url: str) -> str:
        main = self.lexicons.docs.get(method.nsid, {}).get("defs", {}).get("main", {})
        verb = "POST" if method.kind == "procedure" else "GET"
        auth = route.auth if route else None
        auth_text = _AUTH_TEXT.get(auth or "", "not served by this instance")
        errors = [e for e in main.get("errors", []) if isinstance(e, dict)]
        error_items = "".join(
            f"<li>{_code(e.get('name', ''))}"
            + (f" {escape(str(e['description']))}" if e.get("description") else "")
            + "</li>"
            for e in errors
        )
        parts = [
            f'<section class="method" id="{escape(method.nsid)}">',
            f'<h3><a href="#{escape(quote(method.nsid, safe=""))}">{escape(method.nsid)}</a></h3>',
            f'<p class="meta">{escape(method.kind)} · {_code(f"{verb} /xrpc/{method.nsid}")} · auth: '
            f"{escape(auth_text)}</p>",
        ]
        if method.description:
            parts.append(f"<p>{escape(method.description)}</p>")
        if method.kind == "query" or method.params.get("properties"):
            parts += ["<h4>Parameters</h4>", self.fields_table(method.params, method.nsid)]
        if method.kind == "procedure":
            parts += ["<h4>Input</h4>", self.body_html(method.input, method.nsid)]
        parts += ["<h4>Output</h4>", self.body_html(method.output, method.nsid)]
        parts += ["<h4>Errors</h4>",
                  f"<ul>{error_items}</ul>" if error_items else '<p class="none">only the common ones</p>']
        if route is not None:
            parts += ["<h4>Example</h4>",
                      f'<pre><code>{escape(self.example(method, auth, public_url))}</code></pre>']
        parts.append("</section>")
        return "\n".join(parts)

    def definitions(self) -> str:
        """Every def referenced from a method, and the defs those refer to in turn."""
        parts: list[str] = []
        done = 0
        while done < len(self.refs):  # rendering a def may note new refs: keep going
            key = self.refs[done]
            done += 1
            schema = self.resolve(key) or {}
            nsid = key.partition("#")[0]
            label = key.removesuffix("#main")
            body = [f'<section class="def" id="{escape(_anchor(key))}">', f"<h3>{escape(label)}</h3>"]
            if not schema:
                body.append('<p class="none">not found in the loaded lexicons</p>')
            elif schema.get("description"):
                body.append(f"<p>{escape(str(schema['description']))}</p>")
            if schema.get("type") == "object":
                body.append(self.fields_table(schema, nsid))
            elif schema.get("type") == "record" and isinstance(schema.get("record"), dict):
                body.append(self.fields_table(schema["record"], nsid))
            elif schema:
                extra = "; ".join(self.constraints(schema))
                body.append(f"<p>{self.type_html(schema, nsid)}{' · ' + extra if extra else ''}</p>")
            body.append("</section>")
            parts.append("\n".join(body))
        return "\n".join(parts)


def render_api_body(lexicons: LexiconSet, routes: Mapping[str, Route], public_url: str, service_did: str) -> str:
    """The API reference as the inside of <body>."""
    doc = _Doc(lexicons)
    methods = [m for nsid, m in sorted(lexicons.methods.items()) if nsid.startswith(NAMESPACE)]
    groups: dict[str, list[Method]] = {}
    for method in methods:
        groups.setdefault(method.nsid.removeprefix(NAMESPACE).rpartition(".")[0] or "other", []).append(method)
    toc = "".join(
        f"<li>{escape(area)}: "
        + ", ".join(f'<a href="#{escape(quote(m.nsid, safe=""))}">{escape(m.nsid.rpartition(".")[2])}</a>'
                    for m in group)
        + "</li>"
        for area, group in groups.items()
    )
    sections = "\n".join(doc.method_section(m, routes.get(m.nsid), public_url) for m in methods)
    definitions = doc.definitions()
    return f"""<header><p><a href="/">plyr AppView</a></p><h1>API reference</h1></header>
<main>
<p>Every method is XRPC over HTTP: a <strong>query</strong> is <code>GET /xrpc/&lt;method&gt;</code> with
its parameters in the query string; a <strong>procedure</strong> is <code>POST</code> with a JSON body.
Errors are JSON <code>{{"error": "Name", "message": "..."}}</code> with a 4xx status (400 InvalidRequest
for bad parameters; 503 ServiceUnavailable with <code>Retry-After</code> when the index is unreachable).
Generated from the lexicons this instance loaded; the same data as
<a href="/openapi.json">/openapi.json</a> (OpenAPI 3).</p>
<p>Authenticated calls carry a service-auth JWT from the caller's PDS
(<code>com.atproto.server.getServiceAuth</code>) with <code>aud</code> {_code(service_did)} and
<code>lxm</code> the method's name, sent as <code>Authorization: Bearer $TOKEN</code>.</p>
<nav aria-label="methods"><h2>Methods</h2><ul>{toc}</ul></nav>
<h2>Methods in detail</h2>
{sections}
<h2 id="definitions">Definitions</h2>
{definitions or '<p class="none">none referenced</p>'}
</main>"""
