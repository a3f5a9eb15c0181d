"""Where plyr keeps its lexicon documents (the repository's `lexicons/` folder), and loading
them. The protocol layer validates against any folder it is given; this names ours."""

from __future__ import annotations

import functools
from pathlib import Path

from protocol.lexicon import Lexicons

LEXICONS_DIR: Path = Path(__file__).resolve().parent.parent / "lexicons"


def load_lexicons() -> Lexicons:
    """plyr's lexicons, checked and compiled (raises LexiconError for a broken document)."""
    return Lexicons.load(LEXICONS_DIR)


@functools.cache
def project_lexicons() -> Lexicons:
    """The one shared instance per process (the runtime's, the writer's, the AppView's): loaded
    and compiled once, never changed after. Tests that add documents use `load_lexicons()`."""
    return load_lexicons()
