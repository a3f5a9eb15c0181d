"""Settings of our own labeler (group "labeler"): its signing key and the stream's bounds.

The key is the hex of a 32-byte secp256k1 secret, given inline (PLYR_LABELER_KEY, e.g. from a
secret store) or in a file (PLYR_LABELER_KEY_FILE, written by `plyr labeler keygen`). Like ssh
with a private key, a key file that group or others may access is refused. The text of the key
never reaches a message, a log line or a repr.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.settings import core_or_env
from core.settings_spec import Settings, setting
from protocol.crypto import KeyFormatError, PrivateKey

MAX_KEY_FILE_BYTES = 1024  # a key file holds 64 hex digits and a newline


class Secret:
    """A setting's text that must not be shown: repr and str hide it; `reveal()` gives it."""

    __slots__ = ("_text",)

    def __init__(self, text: str | Secret) -> None:
        self._text = text.reveal() if isinstance(text, Secret) else text

    def reveal(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return "Secret('<hidden>')"

    __str__ = __repr__


def parse_key_hex(text: str, source: str) -> PrivateKey:
    """The k256 key whose 32-byte secret `text` is in hex; a ConfigError naming `source` (never
    the text) otherwise."""
    digits = text.strip()
    try:
        raw = bytes.fromhex(digits)
        if len(raw) != 32:
            raise ValueError("length")
        return PrivateKey.from_bytes(raw, "k256")
    except (ValueError, KeyFormatError):
        raise ConfigError(
            f"{source} is not the hex of a 32-byte secp256k1 secret key (64 hex digits; "
            f"`plyr labeler keygen --out FILE` writes one)"
        ) from None


def read_key_file(path: str) -> PrivateKey:
    """The key in `path`, refused when the file is missing, not a regular file, too big, or
    accessible by group or others."""
    name = f"PLYR_LABELER_KEY_FILE={path}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot open it ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{name} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{name} is accessible by group or others (mode {mode:04o}): a secret key file "
                f"must be private, as ssh requires of its keys; run `chmod 600 {path}`"
            )
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{name} is larger than a key file ({MAX_KEY_FILE_BYTES} bytes at most)")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return parse_key_hex(text, name)


DEFAULT_KEY_FILE = "labeler.key"


def default_key_path(core: Settings | None) -> Path:
    """Where `plyr up` keeps a labeler key it made (the data folder), used when none is set."""
    return core_or_env(core).data_dir / DEFAULT_KEY_FILE


def write_new_key(path: Path) -> PrivateKey:
    """A new secp256k1 key written to `path` as hex, mode 0600 from the first byte on disk;
    never replaces an existing file (FileExistsError: a key that signed labels must stay)."""
    key = PrivateKey.generate("k256")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did
        os.write(fd, key.to_bytes().hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


@dataclass(frozen=True, kw_only=True)
class LabelerSettings(Settings):
    key_hex: Secret | None = setting(
        "PLYR_LABELER_KEY", None,
        "hex of our labeler's 32-byte secp256k1 signing key (a secret); unset with no key file: no labeler",
        convert=Secret, group="labeler",
    )  # fmt: skip
    key_file: str | None = setting(
        "PLYR_LABELER_KEY_FILE", None,
        "file holding that hex (mode 600, as `plyr labeler keygen --out FILE` writes it)",
        default_text="`labeler.key` in the data folder when it exists (`plyr up` makes it)", group="labeler",
    )  # fmt: skip
    max_subscribers: int = setting(
        "PLYR_LABELER_MAX_SUBSCRIBERS", 100,
        "subscribeLabels connections one AppView process serves at once (429 above)",
        minimum=1, maximum=100_000, group="labeler",
    )  # fmt: skip
    send_buffer: int = setting(
        "PLYR_LABELER_SEND_BUFFER", 1000,
        "label frames queued for one subscriber; a subscriber that falls further behind is disconnected",
        minimum=1, maximum=1_000_000, group="labeler",
    )  # fmt: skip
    poll_seconds: float = setting(
        "PLYR_LABELER_POLL_SECONDS", 1.0,
        "how often subscribeLabels looks for new labels when no notification came (LISTEN down, or a missed one)",
        above=0, maximum=60, group="labeler",
    )  # fmt: skip
    # The key itself, from one of the two above (not a setting: derived in `finish`).
    key: PrivateKey | None = field(default=None, repr=False, compare=False)

    @classmethod
    def finish(cls, values: dict[str, Any], core: Settings | None) -> None:
        secret: Secret | None = values.get("key_hex")
        path: str | None = values.get("key_file")
        if secret is not None and path is not None:
            raise ConfigError("set PLYR_LABELER_KEY or PLYR_LABELER_KEY_FILE, not both")
        if values.get("key") is None:
            if secret is not None:
                values["key"] = parse_key_hex(secret.reveal(), "PLYR_LABELER_KEY")
            elif path is not None:
                values["key"] = read_key_file(path)
            else:
                default = default_key_path(core)
                if default.exists():  # `plyr up` made it: `plyr serve` on the same data signs alike
                    values["key_file"] = str(default)
                    values["key"] = read_key_file(str(default))

    @property
    def enabled(self) -> bool:
        return self.key is not None
