"""Lexicon schemas: load and check lexicon documents, then validate data against them.

`Lexicons.load(folder)` reads every `*.json` lexicon document below a folder (or takes a list of
already-parsed documents), checks each document against the rules of the Lexicon language (a
broken document raises `LexiconError` naming the file and the problem) and compiles every
definition into a tree of small closures. References are resolved once, at load time, so
validating a record is a single walk over the data with no schema lookups.

Data is given in the JSON form of the atproto data model: `{"$bytes": base64}` for bytes,
`{"$link": cid}` for CID links, `{"$type": "blob", ...}` for blobs. Raw `bytes` values (as a
DAG-CBOR decoder returns them) are also accepted for bytes and CID-link fields.

Validators return a list of problems, each one line starting with the JSON path of the bad value
(`record/features/0/did: must be a valid did`); an empty list means valid. Asking for a schema
that is not loaded is a caller error and raises `LexiconError`.

The modules, each importing only those listed before it: `common` (the error and message
helpers), `data` (schema-less data-model checks), `documents` (checking documents),
`validators` (compiling schemas into checks), `xrpc` (endpoint params, bodies and messages) and
`registry` (`Lexicons`, which ties them together).
"""

from protocol.lexicon.common import LexiconError
from protocol.lexicon.registry import Lexicons

__all__ = ["LexiconError", "Lexicons"]
