"""`plyr publish` settings, declared once each (see core/settings_spec.py).

A musician's machine has no plyr deployment of its own: these name the one they publish to
(its media service and AppView) and where the login session is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings_spec import Setting, Settings, setting


def _url(text: str) -> str:
    return text.rstrip("/")


def default_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("plyr", appauthor=False))


@dataclass(frozen=True, kw_only=True)
class PublishSettings(Settings):
    media_url: str | None = setting(
        "PLYR_PUBLISH_MEDIA_URL", None,
        "the plyr media service `plyr publish` uploads to (e.g. `http://localhost:8081` for `plyr up`)",
        convert=_url, group="publish",
    )  # fmt: skip
    media_did: str | None = setting(
        "PLYR_PUBLISH_MEDIA_DID", None,
        "that media service's DID, the audience of upload tokens",
        default_text="read from `<media>/.well-known/did.json`", group="publish",
    )  # fmt: skip
    appview_url: str | None = setting(
        "PLYR_PUBLISH_APPVIEW_URL", None,
        "the plyr AppView `plyr publish` links to and waits for (unset: it does not wait)",
        convert=_url, group="publish",
    )  # fmt: skip
    config_dir: Path = setting(
        "PLYR_CONFIG_DIR", None, "where `plyr publish` keeps its login session (folder mode 700, file 600)",
        required=True, convert=lambda text: Path(text).expanduser(),
        default_text="the user config dir (`~/.config/plyr`)", group="publish",
    )  # fmt: skip

    @classmethod
    def finish(cls, values: dict[str, Any], core: Settings | None) -> None:
        if values["config_dir"] is None:
            values["config_dir"] = default_config_dir()


# Read by `plyr publish login` only, and never kept: what is stored is the session's tokens.
PASSWORD = Setting(
    "PLYR_PUBLISH_PASSWORD", str, None,
    "the app password `plyr publish login` uses instead of asking for it (scripts, tests)",
    group="publish",
)  # fmt: skip
