"""Labels in views (specs/label.md): which labelers a request hears, the labels each view
carries, and what labels take out of views.

Three rules decide what a response holds:

- **Removal, for everyone.** A subject labelled `!takedown`, `!suspend` or `!hide` by a
  moderation labeler (PLYR_MODERATION_LABELERS) is gone from every view, list and count: SQL
  says `@removed(<subject>, ...)` and `Moderation.sql` turns it into an anti-join on the partial
  index labels_removing (or `false` when no moderation labeler is configured), or, over label
  rows a statement reads anyway (track views: appview/hydrate.py), `@removing(<alias>)` into
  the same condition on one row; counters are
  corrected by subtracting the few removed rows they hold, found from `@removed_uris` (the
  subjects removed now, read from that small index alone). Subjects are
  record URIs and, as a safety net for content of a taken-down account (the indexer hides those
  accounts itself), DIDs. A removing label applies to every version of a record, its `cid`
  notwithstanding: editing a record must not undo a takedown.
- **Negotiation, per request.** `atproto-accept-labelers` names the labelers whose labels the
  client wants (`negotiate`): no header -> PLYR_DEFAULT_LABELERS (or the moderation labelers
  when that is empty), an empty header -> none, bad syntax -> 400. Only labelers we subscribe to
  (PLYR_LABELERS) can apply; `atproto-content-labelers` names those that did. A labeler accepted
  with `;redact` removes, for that request, what it labels `!takedown` or `!suspend`.
- **hiddenLabels, per viewer.** Items of a list (feeds, search, likes, comments, lists, the
  tracks of a list...) carrying a label value the viewer hides (their preferences'
  `hiddenLabels`; `DEFAULT_HIDDEN_LABELS` for anonymous requests and viewers who never set it)
  are left out. A single item asked for by name (getTrack, getList, getProfile, the web pages)
  is returned with its labels: the client asked for exactly that and can warn.

Views are built once for every request (SQL, shared caches): they carry self labels in
`labels`, already final, and the active labels of every labeler in `_labels` (on the view, and
on its `author`/`actor` for account labels), present only when there are any. `finish` turns
such a shared result into one request's answer, copying only the views it changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from appview.errors import invalid_request, not_found
from core.settings import LabelSettings
from protocol.labels import (
    ACCEPT_LABELERS_HEADER,
    AcceptedLabeler,
    LabelError,
    format_content_labelers,
    parse_accept_labelers,
)

# Values that remove content when a moderation labeler applies them (migrations/0040's
# labels_removing index is on exactly these: keep them equal).
REMOVING_VALUES = ("!takedown", "!suspend", "!hide")
# Values with which a labeler accepted with `;redact` removes content from that request.
REDACTING_VALUES = frozenset({"!takedown", "!suspend"})

# What anonymous requests, and viewers who never set `hiddenLabels`, do not see in lists: the
# adult and graphic content values of com.atproto.label.defs (graphic-media, and its older
# names gore and nsfl). A viewer's own `hiddenLabels` replaces this set entirely (an empty list
# hides nothing). Removal (above) does not depend on it.
DEFAULT_HIDDEN_LABELS: frozenset[str] = frozenset({"porn", "sexual", "nudity", "graphic-media", "gore", "nsfl"})
# Returned, never hidden, whatever a viewer's preferences say: a warning is for showing.
NEVER_HIDDEN: frozenset[str] = frozenset({"!warn"})

# Result keys holding lists of views (filtered) and single views (never hidden; a redacted one
# is a NotFound), and the keys of a view's person (artistView) whose account labels count too.
LIST_KEYS = ("tracks", "lists", "likes", "comments", "actors")
SINGLE_KEYS = ("track", "list", "profile")
_PERSON_KEYS = ("author", "actor")


def labels_sql(subject: str, *, cid: str | None = None) -> str:
    """SQL: a JSON array of the active labels (not negated, not expired) of every labeler on
    `subject` (an SQL expression: a record URI or a DID), NULL when there are none. With `cid`
    (the record's cid column), labels naming another version are left out. One probe of the
    labels primary key per row: no statement of its own."""
    version = f" AND (lb.cid IS NULL OR lb.cid = {cid})" if cid else ""
    return (
        "(SELECT json_agg(lb.view ORDER BY lb.src, lb.val) FROM labels lb "
        f"WHERE lb.uri = {subject} AND NOT lb.neg AND (lb.exp IS NULL OR lb.exp > now()){version})"
    )


_VALUES_SQL = "(" + ", ".join(f"'{v}'" for v in REMOVING_VALUES) + ")"
_MARKER = re.compile(r"@removed\(([^()]*)\)")
_ROW_MARKER = re.compile(r"@removing\(([a-z_][a-z0-9_]*)\)")
_SAFE_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]+$")


class Moderation:
    """The moderation labelers of this process, and SQL written with them: `sql(template)`
    expands every `@removed(a, b, ...)` of a statement into "a moderation labeler removes one
    of the subjects a, b, ..." (SQL expressions). The labelers are inlined as constants (DIDs,
    checked against the DID syntax: no quote can get in), so each statement's text is fixed
    for the process and stays prepared."""

    MAX_TEMPLATES = 512

    def __init__(self, labelers: Sequence[str]) -> None:
        bad = [did for did in labelers if not _SAFE_DID.match(did)]
        if bad:
            raise ValueError(f"not a DID: {bad[0]!r}")
        self.labelers = tuple(labelers)
        self._array = "ARRAY[" + ", ".join(f"'{did}'" for did in self.labelers) + "]::text[]"
        self._expanded: dict[str, str] = {}

    def rows(self, alias: str) -> str:
        """SQL condition on a labels row `alias`: a removing label of a moderation labeler, in
        force now. Implies labels_removing's predicate, so that index serves it."""
        if not self.labelers:
            return "false"
        return (
            f"{alias}.src = ANY({self._array}) AND NOT {alias}.neg AND {alias}.val IN {_VALUES_SQL} "
            f"AND ({alias}.exp IS NULL OR {alias}.exp > now())"
        )

    def removed(self, subjects: str) -> str:
        """SQL: true when a moderation labeler removes one of `subjects` (comma-separated SQL
        expressions). `OFFSET 0` keeps the EXISTS a per-row probe of labels_removing instead of
        an anti-join the planner would fold into the statement's join search: with a page's
        many joins, that search cost more than the probes (planning is paid per execution
        when the plan depends on the page size)."""
        if not self.labelers:
            return "false"
        return f"EXISTS (SELECT 1 FROM labels rm WHERE rm.uri IN ({subjects}) AND {self.rows('rm')} OFFSET 0)"

    def removed_uris(self) -> str:
        """SQL: the subjects (URIs and DIDs) a moderation labeler removes now, a small set read
        from labels_removing alone (for subtracting removed rows from counters)."""
        return f"SELECT rm.uri FROM labels rm WHERE {self.rows('rm')}"

    def sql(self, template: str) -> str:
        """`template` with its `@removed(...)` conditions, `@removing(alias)` row conditions
        (`rows`) and `@removed_uris` subqueries written out (cached per template)."""
        found = self._expanded.get(template)
        if found is None:
            found = _MARKER.sub(lambda m: self.removed(m.group(1)), template)
            found = _ROW_MARKER.sub(lambda m: f"({self.rows(m.group(1))})", found)
            found = found.replace("@removed_uris", f"({self.removed_uris()})")
            if len(self._expanded) >= self.MAX_TEMPLATES:
                self._expanded.clear()
            self._expanded[template] = found
        return found


# The part of the platform counters (index_totals: visible actors' rows; play_totals: every
# play) that a moderation labeler removed, as CTEs `gone_tracks` and `gone_totals` (one row:
# tracks, artists, duration, plays, likes, comments), for a statement through Moderation.sql.
# Read-side and small: the removed subjects come from labels_removing, each joined to its row by
# primary key. An artist stops counting when all their tracks are removed; likes and comments
# count out when the like or comment itself is removed.
REMOVED_TOTALS_SQL = """
gone_tracks AS (
  SELECT t.did, coalesce(t.duration_s, 0)::numeric AS seconds, coalesce(a.visible, true) AS visible,
         coalesce(pc.play_count, 0) AS plays
  FROM tracks t LEFT JOIN actors a ON a.did = t.did LEFT JOIN play_counts pc ON pc.track_uri = t.uri
  WHERE t.uri IN @removed_uris
), gone_totals AS (
  SELECT (SELECT count(*) FROM gone_tracks WHERE visible) AS tracks,
         (SELECT count(*) FROM (SELECT did, count(*) AS n FROM gone_tracks WHERE visible GROUP BY did) x
            JOIN actor_counts ac ON ac.did = x.did WHERE x.n >= ac.track_count) AS artists,
         (SELECT coalesce(sum(seconds), 0) FROM gone_tracks WHERE visible) AS duration,
         (SELECT coalesce(sum(plays), 0) FROM gone_tracks) AS plays,
         (SELECT count(*) FROM likes l LEFT JOIN actors a ON a.did = l.did
            WHERE l.uri IN @removed_uris AND coalesce(a.visible, true)) AS likes,
         (SELECT count(*) FROM comments c LEFT JOIN actors a ON a.did = c.did
            WHERE c.uri IN @removed_uris AND coalesce(a.visible, true)) AS comments
)"""


@dataclass(frozen=True)
class RequestLabels:
    """The labelers one request hears: accepted by it (or by default) and subscribed to."""

    applied: tuple[AcceptedLabeler, ...]
    srcs: frozenset[str] = field(init=False)
    redact: frozenset[str] = field(init=False)
    header: str = field(init=False)  # atproto-content-labelers; also the cache key part

    def __post_init__(self) -> None:
        object.__setattr__(self, "srcs", frozenset(a.did for a in self.applied))
        object.__setattr__(self, "redact", frozenset(a.did for a in self.applied if a.redact))
        object.__setattr__(self, "header", format_content_labelers(list(self.applied)))


NO_LABELERS = RequestLabels(())


def negotiate(values: Sequence[str], settings: LabelSettings) -> RequestLabels:
    """The labelers of a request whose `atproto-accept-labelers` header values are `values`
    (none: the header is absent). Bad syntax is a 400 InvalidRequest. Labelers we do not
    subscribe to are dropped: we hold none of their labels."""
    if not values:
        dids = settings.default_labelers or settings.moderation_labelers
        accepted = [AcceptedLabeler(did) for did in dids]
    else:
        try:
            accepted = parse_accept_labelers(list(values))
        except LabelError as exc:
            raise invalid_request(str(exc)) from None
    subscribed = set(settings.labelers)
    return RequestLabels(tuple(a for a in accepted if a.did in subscribed))


def header_values(headers: Any) -> list[str]:
    """Every `atproto-accept-labelers` value of a request's headers (a multidict)."""
    return list(headers.getall(ACCEPT_LABELERS_HEADER, []))


def hidden_labels(preference: Any) -> frozenset[str]:
    """The values a viewer hides, from their stored `hiddenLabels` (JSON text, or None when
    they never set it): the default when absent or unusable."""
    if preference is None:
        return DEFAULT_HIDDEN_LABELS
    try:
        values = orjson.loads(preference) if isinstance(preference, str | bytes) else preference
    except orjson.JSONDecodeError:
        return DEFAULT_HIDDEN_LABELS
    if not isinstance(values, list):
        return DEFAULT_HIDDEN_LABELS
    return frozenset(v for v in values if isinstance(v, str)) - NEVER_HIDDEN


def _redacted(labels: Iterable[dict[str, Any]] | None, req: RequestLabels) -> bool:
    return labels is not None and any(
        lb["src"] in req.redact and lb["val"] in REDACTING_VALUES for lb in labels
    )


def _applied(view: dict[str, Any], req: RequestLabels) -> dict[str, Any]:
    """`view` with its labeler labels cut to the request's labelers (a copy; the keys in their
    order, `labels` where it was)."""
    out = view.copy()  # a C copy: a third of what a comprehension over the keys costs
    theirs = out.pop("_labels")
    srcs = req.srcs
    out["labels"] = [*view.get("labels", ()), *(lb for lb in theirs if lb["src"] in srcs)]
    return out


def finish_view(view: dict[str, Any], req: RequestLabels) -> dict[str, Any] | None:
    """One view as this request sees it (the shared one when nothing changes, else a copy);
    None when a labeler accepted with `;redact` took it (or its author) down."""
    person_key = None
    for key in _PERSON_KEYS:
        if isinstance(view.get(key), dict):
            person_key = key
            break
    person = view[person_key] if person_key is not None else None
    own = view.get("_labels")
    theirs = person.get("_labels") if person is not None else None
    if own is None and theirs is None:
        return view
    if req.redact and (_redacted(own, req) or _redacted(theirs, req)):
        return None
    out = _applied(view, req) if own is not None else dict(view)
    if person_key is not None and theirs is not None:
        out[person_key] = _applied(person, req)  # type: ignore[arg-type]
    return out


def _bare(view: dict[str, Any]) -> bool:
    """No label at all on `view` or on its person (most views): nothing to cut, redact or
    hide, so the shared view is the answer as it is, what finish_view and is_hidden would find
    at about three times the cost (50 views: 77 us before this check, measured)."""
    if "_labels" in view or view.get("labels"):
        return False
    for key in _PERSON_KEYS:
        person = view.get(key)
        if isinstance(person, dict) and ("_labels" in person or person.get("labels")):
            return False
    return True


def is_hidden(view: dict[str, Any], hidden: frozenset[str]) -> bool:
    """Whether a finished view carries a value in `hidden` (on itself or its author)."""
    if not hidden:
        return False
    if any(lb["val"] in hidden for lb in view.get("labels", ())):
        return True
    for key in _PERSON_KEYS:
        person = view.get(key)
        if isinstance(person, dict) and any(lb["val"] in hidden for lb in person.get("labels", ())):
            return True
    return False


def finish(
    result: dict[str, Any],
    req: RequestLabels,
    hidden: frozenset[str],
    liked: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A handler's shared result as one request's answer: labels of its labelers only, items a
    `;redact` labeler took down or carrying a `hidden` value left out of lists, a single item
    taken down a NotFound; with `liked` (an authenticated viewer's likes: {track uri: like
    uri}) every track gets the viewer's state. The shared result is never changed."""
    out = dict(result)
    for key in SINGLE_KEYS:
        view = result.get(key)
        if isinstance(view, dict):
            done = finish_view(view, req)
            if done is None:
                raise not_found(f"{key} not found")
            if liked is not None and key == "track":
                done = _with_like(done, liked)
            out[key] = done
    for key in LIST_KEYS:
        views = result.get(key)
        if not isinstance(views, list):
            continue
        kept = []
        for view in views:
            if _bare(view):
                done = view
            else:
                done = finish_view(view, req)
                if done is None or is_hidden(done, hidden):
                    continue
            if liked is not None and key == "tracks":
                done = _with_like(done, liked)
            kept.append(done)
        out[key] = kept
    return out


def _with_like(view: dict[str, Any], liked: dict[str, str]) -> dict[str, Any]:
    like = liked.get(view["uri"])
    return {**view, "viewer": {"like": like} if like else {}}


def track_uris(result: dict[str, Any]) -> list[str]:
    """The URIs of the tracks a result holds (for the viewer's likes)."""
    uris = [v["uri"] for v in result.get("tracks") or () if isinstance(v, dict)]
    track = result.get("track")
    if isinstance(track, dict):
        uris.append(track["uri"])
    return uris
