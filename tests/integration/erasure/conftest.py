"""Fixtures of the account data erasure tests: the AppView's (a PLC directory, accounts, the
index written through the indexer's writer, the AppView app) and media's (the real media app,
ffmpeg, local storage or S3 through moto)."""

from integration.appview.conftest import make_client, plc, world  # noqa: F401  (fixtures)
from integration.media.conftest import moto_url, samples  # noqa: F401  (fixtures)
