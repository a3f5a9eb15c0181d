"""A DNS stand-in for aiohttp connectors: fixed answers, so tests never leave this machine."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp.abc import AbstractResolver


class StubResolver(AbstractResolver):
    """Answers from a fixed table of name -> addresses; `answers[name]` may be changed between
    lookups (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"stub resolver: no such name {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        pass
