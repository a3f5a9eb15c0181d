"""XRPC errors: an HTTP status, an error name from the method's lexicon, and a message."""

from __future__ import annotations


class XRPCError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def invalid_request(message: str) -> XRPCError:
    return XRPCError(400, "InvalidRequest", message)


def not_found(message: str) -> XRPCError:
    return XRPCError(404, "NotFound", message)


def auth_required(message: str = "this method needs service authentication (Bearer JWT)") -> XRPCError:
    return XRPCError(401, "AuthRequired", message)
