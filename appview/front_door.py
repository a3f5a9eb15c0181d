"""The AppView's front door: `/` (what this instance indexes, how fresh it is) and `/api` (the
XRPC methods, generated from the lexicons)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from appview.context import AppState, Route
from appview.xrpc_schema import LexiconSet


def add_routes(app: web.Application, state: AppState, lexicons: LexiconSet, routes: Mapping[str, Route]) -> None:
    """Registers `/` and `/api` (filled in by the next commit)."""
