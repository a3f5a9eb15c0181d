"""Browser tests reuse the AppView test fixtures (PLC directory on loopback)."""

from tests.integration.appview.conftest import plc  # noqa: F401  (a fixture, used by name)
